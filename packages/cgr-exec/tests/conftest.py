from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cgr_exec import read_stat

PY = sys.executable


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


def gone(pid: int) -> bool:
    """True when pid names no running process (absent, or a zombie of someone else)."""
    stat = read_stat(pid)
    return stat is None or stat.state in ("Z", "X")


def our_zombies() -> list[int]:
    """Children of this test process that have exited but were never reaped."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None and stat.ppid == me and stat.state == "Z":
                found.append(stat.pid)
    return found


def our_children() -> list[int]:
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None and stat.ppid == me:
                found.append(stat.pid)
    return found


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Popen objects appended here are killed and reaped after the test, whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()


@pytest.fixture
def pid_file(tmp_path: Path) -> Path:
    return tmp_path / "pids"


@pytest.fixture(autouse=True)
def _no_children_left() -> Iterator[None]:
    """Every test must end with no child process of ours still running or a zombie."""
    yield
    wait_until(lambda: not our_children(), timeout=10.0)
