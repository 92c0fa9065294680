"""One contract, two strategies: fork (a Python callable) and subprocess (an argv).

Each driver turns "run this Python source as a child" into its strategy's own call, so
the same assertions hold for both. The subprocess executor lives in an event loop on a
blocking portal's thread; that thread exists only during subprocess-driver tests, so
fork-driver tests fork from a single-threaded process as they must.
"""

from __future__ import annotations

import functools
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Protocol

import pytest
from anyio.from_thread import start_blocking_portal

from cgr_exec import (
    CapacityError,
    ChildExit,
    DuplicateKeyError,
    Executor,
    ForkExecutor,
    ProcessIdentity,
    SubprocessExecutor,
)
from conftest import gone, our_children, our_zombies, wait_single_threaded, wait_until


class Driver(Protocol):
    executor: Executor

    def start(self, code: str, log_path: Path, key: str) -> ProcessIdentity: ...
    def wait_all(self, timeout: float) -> list[ChildExit]: ...
    def terminate(self, key: str, grace: float) -> ChildExit: ...
    def shutdown(self, grace: float) -> list[ChildExit]: ...


def _run_source(code: str) -> None:
    exec(compile(code, "<job>", "exec"), {"__name__": "__job__"})  # noqa: S102 - test jobs


class ForkDriver:
    def __init__(self, limit: int) -> None:
        # A thread left by an earlier test (trio's thread cache, a portal) would make the
        # executor refuse to fork, rightly.
        wait_single_threaded()
        self.forked = ForkExecutor(limit=limit)
        self.executor: Executor = self.forked  # statically checks ForkExecutor is one

    def start(self, code: str, log_path: Path, key: str) -> ProcessIdentity:
        return self.forked.start(functools.partial(_run_source, code), log_path=log_path, key=key)

    def wait_all(self, timeout: float) -> list[ChildExit]:
        return self.forked.wait(timeout)

    def terminate(self, key: str, grace: float) -> ChildExit:
        return self.forked.terminate(key, grace)

    def shutdown(self, grace: float) -> list[ChildExit]:
        return self.forked.shutdown(grace)


class SubprocessDriver:
    def __init__(self, limit: int, stack: ExitStack) -> None:
        self.portal = stack.enter_context(start_blocking_portal("asyncio"))
        self.daemon = stack.enter_context(
            self.portal.wrap_async_context_manager(SubprocessExecutor(limit, grace=5.0))
        )
        self.executor: Executor = self.daemon  # statically checks it is one

    def start(self, code: str, log_path: Path, key: str) -> ProcessIdentity:
        call = functools.partial(
            self.daemon.start, [sys.executable, "-c", code], log_path=log_path, key=key
        )
        return self.portal.call(call).identity

    def wait_all(self, timeout: float) -> list[ChildExit]:
        async def wait() -> list[ChildExit]:
            return [await handle.wait() for handle in self.daemon.running.values()]

        self.portal.call(wait)
        return self.daemon.reap()

    def terminate(self, key: str, grace: float) -> ChildExit:
        return self.portal.call(self.daemon.terminate, key, grace)

    def shutdown(self, grace: float) -> list[ChildExit]:
        return self.portal.call(self.daemon.shutdown, grace)


MakeDriver = Callable[..., Driver]


@pytest.fixture(params=["fork", "subprocess"])
def make_driver(request: pytest.FixtureRequest) -> Iterator[MakeDriver]:
    with ExitStack() as stack:
        drivers: list[Driver] = []

        def make(limit: int = 3) -> Driver:
            driver: Driver
            if request.param == "fork":
                driver = ForkDriver(limit)
            else:
                driver = SubprocessDriver(limit, stack)
            drivers.append(driver)
            return driver

        yield make
        for driver in drivers:
            driver.shutdown(0.5)


@pytest.fixture
def driver(make_driver: MakeDriver) -> Driver:
    return make_driver()


def _by_key(exits: list[ChildExit]) -> dict[str, ChildExit]:
    return {e.key: e for e in exits}


def test_both_strategies_satisfy_the_protocol(driver: Driver) -> None:
    assert isinstance(driver.executor, Executor)
    assert driver.executor.free_slots() == 3
    assert driver.executor.identities() == {}
    assert driver.executor.reap() == []


def test_exit_status_and_log(driver: Driver, tmp_path: Path) -> None:
    failing = "import sys; print('to stdout'); print('to stderr', file=sys.stderr); sys.exit(3)"
    driver.start(failing, tmp_path / "a.log", "a")
    driver.start("pass", tmp_path / "b.log", "b")
    exits = _by_key(driver.wait_all(timeout=20))
    assert exits["a"].status.code == 3
    assert exits["a"].status.returncode == 3
    assert exits["b"].status.success
    assert exits["a"].duration > 0
    assert exits["a"].log_path == tmp_path / "a.log"
    log = (tmp_path / "a.log").read_text()
    assert "to stdout" in log
    assert "to stderr" in log
    assert not exits["a"].identity.is_alive()
    assert driver.executor.identities() == {}
    assert driver.executor.reap() == []


def test_identity_while_running_and_after(driver: Driver, tmp_path: Path) -> None:
    identity = driver.start("import time; time.sleep(60)", tmp_path / "s.log", "sleeper")
    assert identity.is_alive()
    assert ProcessIdentity.of(identity.pid) == identity
    assert driver.executor.identities() == {"sleeper": identity}
    ended = driver.terminate("sleeper", grace=5.0)
    assert ended.status.signal == signal.SIGTERM
    assert ended.identity == identity
    assert not identity.is_alive()
    # The same pid with another start time is someone else: never alive as "ours".
    assert not ProcessIdentity(identity.pid, identity.start_time + 1).is_alive()


def test_child_is_session_leader_reading_devnull(driver: Driver, tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "print('leader', os.getsid(0) == os.getpid() == os.getpgid(0))\n"
        "print('stdin', repr(sys.stdin.read()))\n"
    )
    driver.start(code, tmp_path / "l.log", "l")
    (exit_,) = driver.wait_all(timeout=20)
    assert exit_.status.success
    log = (tmp_path / "l.log").read_text()
    assert "leader True" in log
    assert "stdin ''" in log


GRANDPARENT = """
import pathlib, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
pathlib.Path({pid_file!r}).write_text(str(grandchild.pid))
time.sleep(60)
"""


def test_terminate_reaches_grandchildren(driver: Driver, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    driver.start(GRANDPARENT.format(pid_file=str(pid_file)), tmp_path / "g.log", "g")
    wait_until(lambda: pid_file.exists() and pid_file.read_text())
    grandchild = int(pid_file.read_text())
    assert not gone(grandchild)
    driver.terminate("g", grace=5.0)
    wait_until(lambda: gone(grandchild), timeout=5)


STUBBORN = """
import pathlib, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path({ready!r}).write_text("ready")
time.sleep(60)
"""


def test_shutdown_is_graceful_then_forceful(driver: Driver, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    driver.start("import time; time.sleep(60)", tmp_path / "p.log", "polite")
    driver.start(STUBBORN.format(ready=str(ready)), tmp_path / "s.log", "stubborn")
    wait_until(ready.exists)
    started = time.monotonic()
    exits = _by_key(driver.shutdown(grace=0.5))
    elapsed = time.monotonic() - started
    assert exits["polite"].status.signal == signal.SIGTERM
    assert exits["stubborn"].status.signal == signal.SIGKILL
    assert 0.5 <= elapsed < 5
    assert our_zombies() == []
    assert driver.executor.identities() == {}


def test_no_zombies_after_many_children(driver: Driver, tmp_path: Path) -> None:
    for round_ in range(3):
        for i in range(3):
            driver.start("pass", tmp_path / f"{round_}-{i}.log", f"{round_}-{i}")
        assert len(driver.wait_all(timeout=20)) == 3
    assert our_zombies() == []
    assert our_children() == []


def test_capacity_and_duplicate_keys(make_driver: MakeDriver, tmp_path: Path) -> None:
    driver = make_driver(2)
    assert driver.executor.limit == 2
    driver.start("import time; time.sleep(60)", tmp_path / "1.log", "one")
    with pytest.raises(DuplicateKeyError) as dup:
        driver.start("pass", tmp_path / "x.log", "one")
    assert dup.value.key == "one"
    driver.start("import time; time.sleep(60)", tmp_path / "2.log", "two")
    assert driver.executor.free_slots() == 0
    with pytest.raises(CapacityError) as full:
        driver.start("pass", tmp_path / "3.log", "three")
    assert (full.value.limit, full.value.running) == (2, 2)
    driver.terminate("one", grace=5.0)
    assert driver.executor.free_slots() == 1
    driver.start("pass", tmp_path / "3.log", "three")
    assert {e.key for e in driver.shutdown(grace=2.0)} <= {"two", "three"}
