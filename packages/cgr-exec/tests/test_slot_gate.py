"""SlotGate: slots shared by real processes, freed by the kernel when a holder dies."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from cgr_exec import HeldSlot, SlotGate
from conftest import gone, wait_until

PY = sys.executable

# Takes a slot (waiting for it when argv[3] is "wait") and says which; gives it back when
# told (a line on stdin, or end-of-file); "exit" ends the process still holding it.
HOLDER = """
import sys, anyio
from cgr_exec import SlotGate
gate = SlotGate(sys.argv[1], int(sys.argv[2]))
count = int(sys.argv[4]) if len(sys.argv) > 4 else 1
if sys.argv[3] == "wait":
    held = [anyio.run(lambda: gate.acquire(poll_interval=30))]
else:
    held = [h for h in (gate.try_acquire() for _ in range(count)) if h is not None]
print(" ".join(str(h.index) for h in held) or "none", flush=True)
if sys.stdin.readline().strip() == "exit":
    import os
    os._exit(0)
for h in held:
    h.release()
print("released", flush=True)
"""


def start_holder(
    spawned: list[subprocess.Popen[bytes]],
    directory: Path,
    slots: int,
    mode: str = "try",
    count: int = 1,
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [PY, "-c", HOLDER, str(directory), str(slots), mode, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    spawned.append(proc)
    return proc


def answer(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    """The child's next line; fails if none comes within ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no answer from the child within {timeout} s"
    return proc.stdout.readline().decode().strip()


def tell(proc: subprocess.Popen[bytes], line: str = "") -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()
    proc.wait(timeout=10)


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    finish(proc)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def acquired_after(
    gate: SlotGate, free: Callable[[], object], *, poll_interval: float
) -> HeldSlot:
    """Wait in ``gate.acquire``; once the waiter has tried, failed and waits (0.3 s), call
    ``free()``; the slot the wait got, within 5 s of its start."""
    got: list[HeldSlot] = []

    async def wait() -> None:
        got.append(await gate.acquire(poll_interval=poll_interval))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.3)  # the waiter has tried, failed and waits
            assert not got
            free()
    (held,) = got
    return held


# -- one process ----------------------------------------------------------------------------


def test_try_acquire_hands_out_distinct_slots_up_to_the_limit(tmp_path: Path) -> None:
    gate = SlotGate(tmp_path / "gate", 3)
    assert gate.slots == 3
    assert gate.directory == tmp_path / "gate"
    first, second, third = (gate.try_acquire() for _ in range(3))
    assert first is not None
    assert second is not None
    assert third is not None
    assert [first.index, second.index, third.index] == [0, 1, 2]
    assert first.waited == 0.0
    assert gate.try_acquire() is None
    assert gate.held() == 3
    second.release()
    assert gate.held() == 2
    second.release()  # idempotent: frees nothing more
    assert gate.held() == 2
    again = gate.try_acquire()
    assert again is not None
    assert again.index == 1
    for held in (first, third, again):
        held.release()
    assert gate.held() == 0


def test_the_directory_and_its_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    gate = SlotGate(directory, 2)
    with gate.try_acquire() as held:
        assert isinstance(held, HeldSlot)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_ISFIFO((directory / "wake").stat().st_mode)
        assert stat.S_IMODE((directory / "0.lock").stat().st_mode) == 0o600
    assert gate.held() == 0  # the with block released it


def test_zero_slots_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="slots"):
        SlotGate(tmp_path, 0)
    with pytest.raises(ValueError, match="slots"):
        SlotGate(tmp_path, -1)


def test_a_lowered_limit_uses_only_the_low_slots(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"{index}.lock").touch()
    gate = SlotGate(tmp_path, 1)
    held = gate.try_acquire()
    assert held is not None
    assert held.index == 0
    assert gate.try_acquire() is None  # 1.lock and 2.lock are free, but above the limit
    assert gate.held() == 1
    assert SlotGate(tmp_path, 3).held() == 1
    held.release()


def test_a_symlink_planted_as_a_slot_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "gate"
    directory.mkdir()
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    (directory / "0.lock").symlink_to(precious)
    (directory / "1.lock").symlink_to(tmp_path / "nowhere")
    gate = SlotGate(directory, 2)
    with pytest.raises(ValueError, match=r"0\.lock.*symbolic link"):
        gate.try_acquire()
    with pytest.raises(ValueError, match=r"0\.lock"):
        gate.held()
    (directory / "0.lock").unlink()
    first = gate.try_acquire()
    assert first is not None
    with pytest.raises(ValueError, match=r"1\.lock.*symbolic link"):
        gate.try_acquire()
    first.release()
    assert precious.read_text() == "keep me"
    assert not (tmp_path / "nowhere").exists()  # nothing created through the dangling link


def test_a_wake_that_is_not_a_fifo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "wake").write_text("")
    with pytest.raises(ValueError, match=r"wake.*not a FIFO"):
        SlotGate(tmp_path, 1).try_acquire()
    assert (tmp_path / "wake").read_text() == ""
    (tmp_path / "wake").unlink()
    (tmp_path / "wake").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"wake.*not a FIFO"):
        SlotGate(tmp_path, 1).try_acquire()
    assert not (tmp_path / "elsewhere").exists()


def test_release_writes_nothing_into_a_wake_replaced_by_a_file(tmp_path: Path) -> None:
    gate = SlotGate(tmp_path, 1)
    held = gate.try_acquire()
    assert held is not None
    (tmp_path / "wake").unlink()
    (tmp_path / "wake").write_text("")
    held.release()  # the slot is free; the wake-up is skipped, not written into the file
    assert (tmp_path / "wake").read_text() == ""
    (tmp_path / "wake").unlink()
    assert gate.held() == 0


def test_a_slot_dropped_unreleased_is_freed_with_a_warning(tmp_path: Path) -> None:
    gate = SlotGate(tmp_path, 1)
    held = gate.try_acquire()
    assert held is not None
    with pytest.warns(ResourceWarning, match="never released"):
        del held
    assert gate.held() == 0


# -- across processes -------------------------------------------------------------------------


def test_processes_starting_at_once_share_the_slots(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    directory = tmp_path / "not" / "yet"  # created by whichever process comes first
    holders = [start_holder(spawned, directory, 4) for _ in range(6)]
    answers = sorted(answer(proc) for proc in holders)
    assert answers == ["0", "1", "2", "3", "none", "none"]
    gate = SlotGate(directory, 4)
    assert gate.try_acquire() is None
    assert gate.held() == 4
    for proc in holders:
        tell(proc)
    for proc in holders:
        assert answer(proc) == "released"
        finish(proc)
    assert gate.held() == 0


def test_a_killed_holder_gives_its_slot_back(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    gate = SlotGate(tmp_path, 1)
    holder = start_holder(spawned, tmp_path, 1)
    assert answer(holder) == "0"
    assert gate.try_acquire() is None
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    held = gate.try_acquire()
    assert held is not None
    with held:
        assert held.index == 0
    finish(holder)


def test_programs_executed_by_a_holder_do_not_hold_its_slot(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    # The holder starts `sleep` without closing its fds, then dies without releasing: had
    # the lock fd been inherited across exec, `sleep` would hold the slot on its own.
    program = """
import subprocess, sys
from cgr_exec import SlotGate
held = SlotGate(sys.argv[1], 1).try_acquire()
sleep = subprocess.Popen(["sleep", "30"], close_fds=False, start_new_session=True)
print(held.index, sleep.pid, flush=True)
sys.stdin.readline()
"""
    holder = subprocess.Popen(
        [PY, "-c", program, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    spawned.append(holder)
    index, sleep_pid = map(int, answer(holder).split())
    try:
        assert index == 0
        gate = SlotGate(tmp_path, 1)
        assert gate.held() == 1
        lock = str(tmp_path / "0.lock")
        inherited = [
            os.readlink(f"/proc/{sleep_pid}/fd/{fd}") for fd in os.listdir(f"/proc/{sleep_pid}/fd")
        ]
        assert lock not in inherited
        kill(holder)
        assert not gone(sleep_pid)
        assert gate.held() == 0
        taker = start_holder(spawned, tmp_path, 1)
        assert answer(taker) == "0"
        tell(taker)
        assert answer(taker) == "released"
        finish(taker)
    finally:
        os.kill(sleep_pid, signal.SIGKILL)
        wait_until(lambda: reaped(sleep_pid))


def reaped(pid: int) -> bool:
    """Gone, and reaped if it became our child (this process may be a subreaper)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return gone(pid)


@pytest.mark.anyio
async def test_a_waiter_is_woken_at_once_by_a_release_in_another_process(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    gate = SlotGate(tmp_path, 1)
    holder = start_holder(spawned, tmp_path, 1)
    assert answer(holder) == "0"
    # With a 30 s poll, only the byte the releaser writes to the FIFO can wake the waiter
    # within the 5 s.
    held = await acquired_after(gate, lambda: tell(holder), poll_interval=30)
    assert held.index == 0
    assert 0.2 < held.waited < 5
    assert answer(holder) == "released"
    finish(holder)
    held.release()


@pytest.mark.anyio
async def test_waiters_in_other_processes_all_get_slots_released_together(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    # One holder frees two slots at once: two waiters, each in its own process and with a
    # 30 s poll, must both be woken (the first to read the FIFO may read both bytes; it
    # must pass the second on).
    gate = SlotGate(tmp_path, 2)
    holder = start_holder(spawned, tmp_path, 2, count=2)
    assert answer(holder) == "0 1"
    waiters = [start_holder(spawned, tmp_path, 2, mode="wait") for _ in range(2)]
    await anyio.sleep(1)  # both waiters started, tried and wait
    tell(holder)
    assert sorted(answer(proc, timeout=5) for proc in waiters) == ["0", "1"]
    assert gate.held() == 2
    for proc in [holder, *waiters]:
        tell(proc)
        finish(proc)
    assert gate.held() == 0


@pytest.mark.anyio
async def test_a_waiter_that_drained_several_wake_ups_passes_the_rest_on(
    tmp_path: Path,
) -> None:
    # Three slots freed with no await in between: all three bytes are in the pipe when the
    # waiter wakes; it takes one slot and must write two wake-ups back for the others.
    gate = SlotGate(tmp_path, 3)
    slots = [gate.try_acquire() for _ in range(3)]
    # Our own reader keeps the bytes in the pipe (a FIFO nobody has open keeps none).
    reader = os.open(tmp_path / "wake", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def release_all() -> None:
        for held in slots:
            assert held is not None
            held.release()

    try:
        held = await acquired_after(gate, release_all, poll_interval=30)
        assert held.index == 0
        assert os.read(reader, 100) == b"\0\0"
        held.release()
    finally:
        os.close(reader)


@pytest.mark.anyio
async def test_a_slot_whose_holder_was_killed_is_found_by_the_poll(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    gate = SlotGate(tmp_path, 1)
    holder = start_holder(spawned, tmp_path, 1)
    assert answer(holder) == "0"
    # The killed holder writes no wake-up: only the poll finds the slot.
    held = await acquired_after(gate, lambda: kill(holder), poll_interval=0.05)
    assert held.index == 0
    held.release()


@pytest.mark.anyio
async def test_a_cancelled_acquire_holds_nothing_and_leaks_no_fd(tmp_path: Path) -> None:
    gate = SlotGate(tmp_path, 1)
    before = open_fds()
    mine = gate.try_acquire()
    assert mine is not None
    holding = open_fds()
    assert len(holding - before) == 1  # our lock fd
    with anyio.move_on_after(0.3) as scope:
        await gate.acquire(poll_interval=30)
    assert scope.cancelled_caught
    assert not open_fds() - holding  # the waiter's FIFO fd is closed, no lock fd left
    assert gate.held() == 1  # ours alone
    mine.release()
    assert gate.held() == 0
    assert not open_fds() - before


@pytest.mark.anyio
async def test_slot_releases_on_exception_and_cancellation(tmp_path: Path) -> None:
    gate = SlotGate(tmp_path, 1)
    before = open_fds()
    seen: list[int] = []

    async def fail() -> None:
        async with gate.slot() as held:
            seen.append(gate.held())
            raise RuntimeError(f"boom in slot {held.index}")

    with pytest.raises(RuntimeError, match="boom in slot 0"):
        await fail()
    assert seen == [1]
    assert gate.held() == 0
    with anyio.move_on_after(0.2):
        async with gate.slot():
            await anyio.sleep(30)
    assert gate.held() == 0
    assert not open_fds() - before
    async with gate.slot(poll_interval=0.1) as held:
        assert held.index == 0
        assert gate.try_acquire() is None
    assert gate.held() == 0


@pytest.mark.anyio
async def test_acquire_refuses_a_poll_interval_that_is_not_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        await SlotGate(tmp_path, 1).acquire(poll_interval=0)


def test_problem_says_what_use_would_refuse_and_creates_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "gate"
    gate = SlotGate(directory, 2)
    assert gate.problem() is None  # not made yet: the first use makes it
    assert not directory.exists()
    held = gate.try_acquire()
    assert held is not None
    assert gate.problem() is None  # in use, and fine
    held.release()
    (directory / "wake").unlink()
    (directory / "wake").write_text("")
    problem = gate.problem()
    assert problem is not None
    with pytest.raises(ValueError, match="not a FIFO") as refused:
        gate.try_acquire()
    assert str(refused.value) == problem  # the same words as the refusal
    (directory / "wake").unlink()
    (directory / "1.lock").symlink_to(tmp_path / "nowhere")
    (directory / "2.lock").mkdir()  # above the limit: the gate never opens it
    assert gate.problem() == f"slot file {directory / '1.lock'} is a symbolic link; remove it"
    assert not (directory / "wake").exists()  # problem() made nothing
    assert not (tmp_path / "nowhere").exists()
    file_not_dir = tmp_path / "file"
    file_not_dir.write_text("")
    expected = f"slot directory {file_not_dir} is not a directory"
    assert SlotGate(file_not_dir, 1).problem() == expected
