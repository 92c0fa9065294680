from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cgr_exec import (
    ProcessIdentity,
    akill_identity_group,
    group_alive,
    group_members,
    kill_identity_group,
    signal_identity_group,
)
from conftest import PY, gone, wait_until

# A leader in its own session that starts a grandchild (which ignores SIGTERM when asked),
# writes the grandchild's pid, then sleeps (or traps SIGTERM too when asked).
FAMILY = """
import signal, subprocess, sys, time
stubborn = sys.argv[2] == "stubborn"
gc = "import signal,time\\n"
if stubborn:
    gc += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
gc += "time.sleep(60)"
child = subprocess.Popen([sys.executable, "-c", gc])
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").write(str(child.pid))
if sys.argv[3] == "exit":
    sys.exit(0)
time.sleep(60)
"""


def _family(
    spawned: list[subprocess.Popen[bytes]], pid_file: Path, mode: str, after: str = "stay"
) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([PY, "-c", FAMILY, str(pid_file), mode, after], start_new_session=True)
    spawned.append(proc)
    wait_until(lambda: pid_file.exists() and pid_file.read_text())
    grandchild = int(pid_file.read_text())
    # Let the grandchild interpreter install its SIGTERM handler before we test it.
    time.sleep(0.3)
    return proc, grandchild


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    # We are the leader's parent: collect it so no zombie is left behind.
    proc.wait(timeout=10)


def test_kill_group_reaches_grandchildren(
    spawned: list[subprocess.Popen[bytes]], pid_file: Path
) -> None:
    proc, grandchild = _family(spawned, pid_file, "polite")
    identity = ProcessIdentity.of(proc.pid)
    assert {m.pid for m in group_members(proc.pid)} == {proc.pid, grandchild}
    started = time.monotonic()
    assert kill_identity_group(identity, grace=5.0)
    assert time.monotonic() - started < 3.0  # SIGTERM was enough, no need to wait the grace
    _reap_later(proc)
    assert proc.returncode == -signal.SIGTERM
    wait_until(lambda: gone(grandchild))
    assert not group_alive(identity)


def test_kill_group_escalates_to_sigkill_after_grace(
    spawned: list[subprocess.Popen[bytes]], pid_file: Path
) -> None:
    proc, grandchild = _family(spawned, pid_file, "stubborn")
    identity = ProcessIdentity.of(proc.pid)
    started = time.monotonic()
    assert kill_identity_group(identity, grace=0.5)
    assert time.monotonic() - started >= 0.5
    _reap_later(proc)
    assert proc.returncode == -signal.SIGKILL
    wait_until(lambda: gone(grandchild))


def test_orphaned_group_members_are_killed_after_leader_was_reaped(
    spawned: list[subprocess.Popen[bytes]], pid_file: Path
) -> None:
    proc, grandchild = _family(spawned, pid_file, "polite", after="exit")
    identity = ProcessIdentity(proc.pid, ProcessIdentity.of(proc.pid).start_time)
    proc.wait(timeout=10)  # leader reaped: its pid names nothing now
    assert not identity.is_alive()
    assert group_alive(identity)  # ... but its grandchild still runs in its group
    assert kill_identity_group(identity, grace=5.0)
    wait_until(lambda: gone(grandchild))
    assert not group_alive(identity)


def test_reused_pid_is_never_signalled() -> None:
    # An identity whose pid is ours but whose start time is not: a stranger now owns
    # the pid. Nothing may be sent (if it were, SIGTERM would end this test run).
    me = ProcessIdentity.current()
    stale = ProcessIdentity(me.pid, me.start_time - 1)
    assert not signal_identity_group(stale, signal.SIGTERM)
    assert not kill_identity_group(stale, grace=0.1)
    assert not group_alive(stale)


def test_dead_identity_returns_false(spawned: list[subprocess.Popen[bytes]]) -> None:
    proc = subprocess.Popen([PY, "-c", "pass"], start_new_session=True)
    spawned.append(proc)
    identity = ProcessIdentity.of(proc.pid)
    proc.wait()
    assert not kill_identity_group(identity, grace=0.1)


def test_non_leader_is_signalled_alone(spawned: list[subprocess.Popen[bytes]]) -> None:
    # Same process group as the test runner: killpg would hit pytest itself.
    proc = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    spawned.append(proc)
    identity = ProcessIdentity.of(proc.pid)
    assert os.getpgid(proc.pid) != proc.pid
    assert kill_identity_group(identity, grace=5.0)
    assert proc.wait(timeout=10) == -signal.SIGTERM


@pytest.mark.anyio
async def test_async_kill(spawned: list[subprocess.Popen[bytes]], pid_file: Path) -> None:
    proc, grandchild = _family(spawned, pid_file, "stubborn")
    identity = ProcessIdentity.of(proc.pid)
    assert await akill_identity_group(identity, grace=0.3)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    wait_until(lambda: gone(grandchild))
    assert not await akill_identity_group(identity, grace=0.1)
