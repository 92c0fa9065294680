from __future__ import annotations

import _thread
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cgr_exec import (
    ForkExecutor,
    ForkUnsafeError,
    LogFileError,
    ProcessIdentity,
    check_fork_safe,
    read_stat,
)
from conftest import PY, our_children, wait_single_threaded, wait_until


@pytest.fixture(autouse=True)
def _single_threaded() -> None:
    """Forking tests need a single-threaded test process."""
    wait_single_threaded()


PARENT = """
import json, os, pathlib, sys, time
from cgr_exec import ForkExecutor

out = pathlib.Path(sys.argv[1])

def job():
    time.sleep(1.0)  # outlive the parent, which exits right away
    out.write_text(json.dumps({"pid": os.getpid(), "ppid": os.getppid()}))

identity = ForkExecutor().start(job, log_path=sys.argv[2])
print(json.dumps([identity.pid, identity.start_time, os.getpid()]), flush=True)
"""


def test_child_survives_parent_exit(tmp_path: Path) -> None:
    out = tmp_path / "done.json"
    parent = subprocess.run(
        [PY, "-c", PARENT, str(out), str(tmp_path / "child.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid, start_time, parent_pid = json.loads(parent.stdout)
    identity = ProcessIdentity(pid, start_time)
    assert identity.is_alive()  # the parent is gone, the child still works
    assert not out.exists()
    wait_until(out.exists, timeout=15)
    wait_until(lambda: not identity.is_alive(), timeout=5)
    written = json.loads(out.read_text())
    assert written["pid"] == pid
    assert written["ppid"] != parent_pid  # re-parented to init or a subreaper


def test_refuses_while_another_thread_runs(tmp_path: Path) -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="blocker")
    thread.start()
    try:
        with pytest.raises(ForkUnsafeError) as err:
            ForkExecutor().start(lambda: 0, log_path=tmp_path / "x.log")
        assert err.value.threads == 2
        assert "blocker" in str(err.value)
    finally:
        release.set()
        thread.join()
    assert not (tmp_path / "x.log").exists()
    # join() returns once the thread's Python side is done; the kernel may list its task
    # a moment longer (CI saw it): single-threaded again once it is gone.
    wait_single_threaded()
    check_fork_safe()


@pytest.mark.anyio
async def test_refuses_inside_a_running_event_loop(tmp_path: Path, anyio_backend: str) -> None:
    with pytest.raises(ForkUnsafeError) as err:
        ForkExecutor().start(lambda: 0, log_path=tmp_path / "x.log")
    assert err.value.async_library == anyio_backend
    assert "event loop" in str(err.value)


def _boom() -> None:
    raise ValueError("the job failed in a telling way")


def test_exception_is_logged_with_traceback(tmp_path: Path) -> None:
    executor = ForkExecutor()
    executor.start(_boom, log_path=tmp_path / "boom.log", key="boom")
    (ended,) = executor.wait(timeout=20)
    assert ended.status.code == 1
    log = (tmp_path / "boom.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert "ValueError: the job failed in a telling way" in log


def test_return_value_is_the_exit_code(tmp_path: Path) -> None:
    executor = ForkExecutor()
    executor.start(lambda: 7, log_path=tmp_path / "a.log", key="seven")
    executor.start(lambda: None, log_path=tmp_path / "b.log", key="none")
    exits = {e.key: e.status.code for e in executor.wait(timeout=20)}
    assert exits == {"seven": 7, "none": 0}


def test_after_fork_hooks_run_in_the_child_in_order(tmp_path: Path) -> None:
    trace = tmp_path / "trace"

    def note(what: str) -> None:
        with trace.open("a") as f:
            f.write(f"{what} {os.getpid()}\n")

    executor = ForkExecutor(after_fork=[lambda: note("executor-hook")])
    identity = executor.start(
        lambda: note("job"), log_path=tmp_path / "h.log", after_fork=[lambda: note("start-hook")]
    )
    executor.wait(timeout=20)
    lines = trace.read_text().splitlines()
    assert lines == [
        f"executor-hook {identity.pid}",
        f"start-hook {identity.pid}",
        f"job {identity.pid}",
    ]
    assert str(os.getpid()) not in trace.read_text()


def test_failing_hook_skips_the_job(tmp_path: Path) -> None:
    ran = tmp_path / "ran"

    def bad_hook() -> None:
        raise RuntimeError("cannot reopen the database")

    executor = ForkExecutor()
    executor.start(ran.touch, log_path=tmp_path / "f.log", after_fork=[bad_hook])
    (ended,) = executor.wait(timeout=20)
    assert ended.status.code == 1
    assert not ran.exists()
    assert "cannot reopen the database" in (tmp_path / "f.log").read_text()


def test_reap_does_not_block(tmp_path: Path) -> None:
    executor = ForkExecutor()
    # The child outlives any stall of a loaded machine, so reap() finds it still running;
    # blocking would take its whole 2 s.
    executor.start(lambda: time.sleep(2.0), log_path=tmp_path / "r.log", key="slow")
    started = time.monotonic()
    assert executor.reap() == []
    assert time.monotonic() - started < 1.0
    assert list(executor.identities()) == ["slow"]
    (ended,) = executor.wait(timeout=10)
    assert ended.key == "slow"
    assert executor.identities() == {}


def test_unusable_log_path_is_refused_before_forking(tmp_path: Path) -> None:
    executor = ForkExecutor()
    missing = tmp_path / "no-such-dir" / "job.log"
    with pytest.raises(LogFileError) as err:
        executor.start(lambda: 0, log_path=missing)
    assert err.value.path == str(missing)
    assert "no-such-dir" in str(err.value)
    assert executor.identities() == {}
    assert our_children() == []


def test_refuses_with_a_thread_threading_does_not_know(tmp_path: Path) -> None:
    # _thread threads are invisible to threading.active_count(); the kernel counts them.
    lock = _thread.allocate_lock()
    lock.acquire()
    finished = _thread.allocate_lock()
    finished.acquire()

    def hold() -> None:
        with lock:
            pass
        finished.release()

    _thread.start_new_thread(hold, ())
    try:
        assert threading.active_count() == 1
        with pytest.raises(ForkUnsafeError) as err:
            ForkExecutor().start(lambda: 0, log_path=tmp_path / "x.log")
        assert err.value.threads == 2
        assert "not started through the threading module" in str(err.value)
    finally:
        lock.release()
        finished.acquire()  # the thread has released it: it is about to end
    wait_until(lambda: (s := read_stat(os.getpid())) is not None and s.num_threads == 1)
