from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cgr_exec import NoSuchProcessError, ProcessIdentity, find_gone, read_stat
from conftest import PY, gone, wait_until


def test_current_matches_proc_self_stat() -> None:
    me = ProcessIdentity.current()
    assert me.pid == os.getpid()
    raw = Path("/proc/self/stat").read_text()
    assert me.start_time == int(raw.rsplit(")", 1)[1].split()[19])
    assert me.is_alive()


def test_comm_with_spaces_and_parens_is_parsed(spawned: list[subprocess.Popen[bytes]]) -> None:
    # The child renames itself so that comm contains ") " - a naive split would shift fields.
    code = "open('/proc/self/comm','w').write('x) (y z) S 1'); import time; time.sleep(30)"
    proc = subprocess.Popen([PY, "-c", code])
    spawned.append(proc)
    wait_until(lambda: "x) (y z)" in Path(f"/proc/{proc.pid}/comm").read_text())
    stat = read_stat(proc.pid)
    assert stat is not None
    assert stat.ppid == os.getpid()
    assert stat.state in ("S", "R")
    assert ProcessIdentity.of(proc.pid).is_alive()


def test_dead_and_reaped_process_is_not_alive(spawned: list[subprocess.Popen[bytes]]) -> None:
    proc = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    spawned.append(proc)
    identity = ProcessIdentity.of(proc.pid)
    assert identity.is_alive()
    proc.kill()
    proc.wait()
    assert not identity.is_alive()
    assert identity.stat() is None
    assert find_gone([identity, ProcessIdentity.current()]) == [identity]
    with pytest.raises(NoSuchProcessError) as err:
        ProcessIdentity.of(proc.pid)
    assert err.value.pid == proc.pid


def test_zombie_is_not_alive(spawned: list[subprocess.Popen[bytes]]) -> None:
    proc = subprocess.Popen([PY, "-c", "pass"])
    spawned.append(proc)
    identity = ProcessIdentity.of(proc.pid)
    # Not waited for yet: the exited child stays a zombie with the same pid and start time.
    wait_until(lambda: (s := read_stat(proc.pid)) is not None and s.state == "Z")
    assert identity.stat() is not None
    assert not identity.is_alive()
    proc.wait()


def test_reused_pid_reads_as_not_alive() -> None:
    # Simulated reuse: the pid names a live process (us) but with another start time.
    me = ProcessIdentity.current()
    stranger = ProcessIdentity(me.pid, me.start_time - 1)
    assert not stranger.is_alive()
    assert stranger.stat() is None
    assert find_gone([stranger]) == [stranger]


def test_identity_is_plain_data() -> None:
    identity = ProcessIdentity(123, 456)
    assert ProcessIdentity(identity.pid, identity.start_time) == identity
    assert dataclasses.astuple(identity) == (123, 456)
    assert hash(identity) == hash(ProcessIdentity(123, 456))
    assert str(identity) == "pid 123 (started at tick 456)"
    with pytest.raises(AttributeError):
        identity.pid = 1  # type: ignore[misc]


def test_never_existing_pid() -> None:
    # pid_max bounds the pids the kernel hands out; one above it can never exist.
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert read_stat(pid_max + 1) is None
    assert not ProcessIdentity(pid_max + 1, 1).is_alive()


def test_started_later_process_has_later_start_time(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    first = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    spawned.append(first)
    time.sleep(0.05)  # at least a few clock ticks (10 ms each at 100 Hz)
    second = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    spawned.append(second)
    a, b = ProcessIdentity.of(first.pid), ProcessIdentity.of(second.pid)
    assert a.start_time < b.start_time
    for proc in (first, second):
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert gone(first.pid)
