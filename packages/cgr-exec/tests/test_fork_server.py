"""Standbys forked by a fork server: one start-up for every job (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from cgr_exec import ExitStatus, SubprocessExecutor, read_stat
from conftest import gone, our_children

pytestmark = pytest.mark.anyio
PY = sys.executable

# A program that can be a standby, with a start-up worth skipping: it notes its start
# (once per process that ran the start-up) in STARTS, then waits for its job; the job
# prints its arguments, pid, parent, session and environment marker and exits with the
# code its first argument names, or kills itself with the signal "kill:N" names.
PROGRAM = """
import os, sys, time
started = time.time()
with open(os.environ["STARTS"], "a") as f:
    f.write(f"{os.getpid()}\\n")
if os.environ.get("CGR_EXEC_STANDBY") == "fork-server" and os.environ.get("SLOW_SERVER"):
    time.sleep(float(os.environ["SLOW_SERVER"]))  # a server whose start-up hangs
if os.environ.get("THREADED"):
    import threading
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
if os.environ.get("CGR_EXEC_STANDBY"):
    from cgr_exec import receive_job
    args = receive_job()
    if args is None:
        sys.exit(0)
else:
    args = sys.argv[1:]
print("args", args, "pid", os.getpid(), "ppid", os.getppid(), "sid", os.getsid(0),
      "marker", os.environ.get("CGR_EXEC_STANDBY"), "stdin", repr(sys.stdin.read()),
      "started", started, flush=True)
if args[0].startswith("kill:"):
    os.kill(os.getpid(), int(args[0][5:]))
if args[0] == "hang":
    time.sleep(60)
sys.exit(int(args[0]))
"""


def program(tmp_path: Path) -> list[str]:
    path = tmp_path / "program.py"
    path.write_text(PROGRAM)
    return [PY, str(path)]


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "STARTS": str(tmp_path / "starts"), **extra}


def starts(tmp_path: Path) -> list[int]:
    path = tmp_path / "starts"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


async def forked_standbys(executor: SubprocessExecutor, count: int = 1) -> list[int]:
    """Pids of the standbys once the server has forked ``count`` (it starts up first)."""
    with anyio.fail_after(20):
        while True:
            executor._collect_forked()
            if len(executor._standbys) >= count:
                return [s.process.pid for s in executor._standbys]
            await anyio.sleep(0.01)


async def test_every_job_runs_in_a_copy_of_one_started_program(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=2) as executor:
        executor.keep_warm(program(tmp_path), env=env(tmp_path), fork_server=True)
        server = executor._fork_server
        assert server is not None
        pids = []
        for n in range(3):
            (standby_pid,) = await forked_standbys(executor)
            handle = await executor.start_warm(
                [str(n), "x y"], log_path=tmp_path / f"{n}.log", key=f"j{n}", wait=True
            )
            assert handle.pid == standby_pid
            assert (await handle.wait()).status == ExitStatus(code=n)
            pids.append(handle.pid)
        assert executor.standby_starts == 3
    # One start-up (the server's) served all three jobs and the standby left over.
    assert starts(tmp_path) == [server.popen.pid]
    assert len(set(pids)) == 3
    for n, pid in enumerate(pids):
        log = (tmp_path / f"{n}.log").read_text()
        assert f"args ['{n}', 'x y'] pid {pid} ppid {server.popen.pid} sid {pid} marker None" in log
        assert "stdin ''" in log
    # Everything is gone: the server, its copies (the jobs, the last standby).
    assert gone(server.popen.pid)
    assert all(gone(pid) for pid in pids)


async def test_a_job_asked_for_during_the_servers_start_up_waits_for_its_copy(
    tmp_path: Path,
) -> None:
    # A cold start would do the same start-up, begun later: the job takes the copy.
    async with SubprocessExecutor(limit=1) as executor:
        executor.keep_warm(program(tmp_path), env=env(tmp_path), fork_server=True)
        assert executor._standbys == []  # the server is still starting
        handle = await executor.start_warm(["0"], log_path=tmp_path / "job.log")
        assert (await handle.wait()).status == ExitStatus(code=0)
        assert executor.standby_starts == 1
        server = executor._fork_server
        assert server is not None
    assert starts(tmp_path) == [server.popen.pid]
    assert f"ppid {server.popen.pid} " in (tmp_path / "job.log").read_text()


async def test_a_server_that_does_not_deliver_in_time_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job does not wait for ever for a copy: after the bound it starts cold, the server
    # is asked for no more copies, and standbys are processes of their own from then on.
    from cgr_exec import _daemon

    monkeypatch.setattr(_daemon, "_FORK_WAIT_SECONDS", 0.5)
    async with SubprocessExecutor(limit=1) as executor:
        executor.keep_warm(program(tmp_path), env=env(tmp_path, SLOW_SERVER="60"), fork_server=True)
        server = executor._fork_server
        assert server is not None
        started = time.monotonic()
        handle = await executor.start_warm(["5"], log_path=tmp_path / "job.log")
        assert 0.4 < time.monotonic() - started < 10
        assert (await handle.wait()).status == ExitStatus(code=5)
        assert executor.standby_starts == 0
        assert f"ppid {os.getpid()} " in (tmp_path / "job.log").read_text()
        assert server.retired
        with anyio.fail_after(20):
            while not executor._standbys:
                await anyio.sleep(0.05)
                executor._refill_standby()
        (standby,) = executor._standbys
        assert standby.process.pid != server.popen.pid
        stat = read_stat(standby.process.pid)
        assert stat is not None
        assert stat.ppid == os.getpid()  # spawned, not forked
    assert gone(server.popen.pid)


async def test_a_signal_that_ends_a_forked_job_is_reported(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=1) as executor:
        executor.keep_warm(program(tmp_path), env=env(tmp_path), fork_server=True)
        await forked_standbys(executor)
        handle = await executor.start_warm(["kill:9"], log_path=tmp_path / "job.log")
        assert (await handle.wait()).status == ExitStatus(signal=signal.SIGKILL)
        (exit_,) = executor.reap()
        assert exit_.status.signal_name == "SIGKILL"


async def test_terminate_ends_a_forked_job_through_its_own_group(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=1, grace=5) as executor:
        executor.keep_warm(program(tmp_path), env=env(tmp_path), fork_server=True)
        await forked_standbys(executor)
        handle = await executor.start_warm(["hang"], log_path=tmp_path / "job.log", key="h")
        with anyio.fail_after(10):
            while "args" not in (tmp_path / "job.log").read_text():  # noqa: ASYNC110
                await anyio.sleep(0.01)
        ended = await executor.terminate("h")
        assert ended.status == ExitStatus(signal=signal.SIGTERM)
        assert gone(handle.pid)


async def test_a_dead_server_means_standbys_of_their_own(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=2) as executor:
        executor.keep_warm(program(tmp_path), env=env(tmp_path), fork_server=True)
        await forked_standbys(executor)
        running = await executor.start_warm(["hang"], log_path=tmp_path / "hang.log", key="h")
        server = executor._fork_server
        assert server is not None
        os.kill(server.popen.pid, signal.SIGKILL)
        server.popen.wait()
        # The job it had forked runs on (re-parented); its end is still seen, though its
        # status died with the server.
        assert not gone(running.pid)
        os.kill(running.pid, signal.SIGTERM)
        with anyio.fail_after(20):
            assert (await running.wait()).status == ExitStatus()
        assert str(ExitStatus()) == "exit status unknown"
        # Later jobs still run: a copy forked before the server died may take the next
        # one (its status is then unknown too), then standbys are processes of our own.
        for n in range(3):
            log = tmp_path / f"{n}.log"
            handle = await executor.start_warm([str(n + 4)], log_path=log, wait=True)
            status = (await handle.wait()).status
            assert f"args ['{n + 4}']" in log.read_text()
            if f"ppid {os.getpid()} " in log.read_text():
                assert status == ExitStatus(code=n + 4)
                break
            assert status == ExitStatus()
        else:
            raise AssertionError("every job after the server's death went to a copy")
        assert n <= 1  # at most the one copy forked before the death
    assert server.popen.pid not in our_children()


async def test_a_threaded_program_is_not_forked(tmp_path: Path) -> None:
    # A copy of a threaded process could inherit a lock no thread will ever release: the
    # server refuses, and the jobs still run (standbys of their own).
    async with SubprocessExecutor(limit=1) as executor:
        executor.keep_warm(program(tmp_path), env=env(tmp_path, THREADED="1"), fork_server=True)
        server = executor._fork_server
        assert server is not None
        with anyio.fail_after(20):
            while not server.closed:
                await anyio.sleep(0.05)
                server.collect()
        handle = await executor.start_warm(["0"], log_path=tmp_path / "job.log", wait=True)
        assert (await handle.wait()).status == ExitStatus(code=0)
        log = (tmp_path / "job.log").read_text()
        assert f"ppid {os.getpid()}" in log  # our own child, not a copy


def test_a_killed_executor_leaves_no_server_and_no_copy(tmp_path: Path) -> None:
    # The executor (a whole process, SIGKILLed: no shutdown ran) held the server's control
    # socket and each copy's standby socket: both read end-of-file and exit.
    with subprocess.Popen(
        [PY, "-c", f"""
import anyio, sys
from cgr_exec import SubprocessExecutor
async def main():
    async with SubprocessExecutor() as executor:
        executor.keep_warm({program(tmp_path)!r}, env={env(tmp_path)!r}, fork_server=True)
        while not executor._standbys:
            await anyio.sleep(0.01)
            executor._collect_forked()
        print(executor._fork_server.popen.pid, executor._standbys[0].process.pid, flush=True)
        await anyio.sleep(60)
anyio.run(main)
"""],
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:  # fmt: skip
        assert parent.stdout is not None
        server_pid, copy_pid = map(int, parent.stdout.readline().split())
        parent.kill()
    deadline = time.monotonic() + 10
    while not (gone(server_pid) and gone(copy_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(server_pid)
    assert gone(copy_pid)
