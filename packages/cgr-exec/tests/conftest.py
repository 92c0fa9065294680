from __future__ import annotations

import contextlib
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


def wait_single_threaded() -> None:
    """Wait until this test process has one thread again, as forking needs.

    anyio's pytest plugin runs trio tests in trio's guest mode, whose I/O thread stays in
    trio's thread cache for up to 10 s after an earlier async test (and a blocking
    portal's thread takes a moment to exit); wait those out.
    """
    wait_until(lambda: (s := read_stat(os.getpid())) is not None and s.num_threads == 1, 20)


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


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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
    try:
        wait_until(lambda: not our_children(), timeout=10.0)
    except AssertionError:
        leftovers = our_children()
        for pid in leftovers:  # keep the next tests clean, then fail this one
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        raise AssertionError(f"test left child processes behind: {leftovers}") from None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the in-process forking tests first, while the test process has one thread.

    (Later, trio's guest-mode I/O thread may linger for ~10 s after an async test; the
    fork tests would wait for it - see test_fork._single_threaded.)
    """
    items.sort(key=lambda item: item.path.name != "test_fork.py")
