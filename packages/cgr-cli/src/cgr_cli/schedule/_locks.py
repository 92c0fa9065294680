"""The locks that keep one scheduler at a time on a store.

Ticks serialise their passes on ``<db>.schedule.lock``; a daemon holds ``<db>.daemon.lock``
exclusively for its whole life, and a tick holds it shared during its pass, so a tick
refuses to run while a daemon owns the store and a daemon waits for a tick in progress.

On PostgreSQL (a fleet) there is no database file to put them next to: they live in the
host's workspace root instead (``<workspace_root>/cgr.daemon.lock``), so they still keep
one scheduler per host, and the fleet's hosts coordinate through their host leases and
the poll leadership in the store (_fleet).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cgr_cli._errors import BusyError

if TYPE_CHECKING:
    from cgr_cli.config._model import Config


class DaemonRunningError(BusyError):
    """A daemon owns this store: ``pid`` (and its start time) holds ``lock_path``."""

    def __init__(self, lock_path: Path, pid: int | None, detail: str = "") -> None:
        self.lock_path = lock_path
        self.pid = pid
        who = f"cgr daemon (pid {pid})" if pid else "a cgr daemon"
        super().__init__(
            f"{who} owns the store ({lock_path} is locked){detail}; "
            "stop it first, or let it do the scheduling"
        )


class SchedulerBusyError(BusyError):
    """The daemon lock could not be taken within ``waited`` seconds (ticks kept it)."""

    def __init__(self, lock_path: Path, waited: float) -> None:
        self.lock_path = lock_path
        self.waited = waited
        super().__init__(
            f"{lock_path} stayed locked by running `cgr tick` passes for {waited:g}s; "
            "disable the tick timer before starting the daemon"
        )


def _log() -> logging.Logger:
    return logging.getLogger("cgr.locks")


def _lock_base(config: Config) -> str:
    if config.database_url is not None:
        return str(config.workspace_root / "cgr")
    return str(config.database)


def daemon_lock_path(config: Config) -> Path:
    return Path(f"{_lock_base(config)}.daemon.lock")


def schedule_lock_path(config: Config) -> Path:
    return Path(f"{_lock_base(config)}.schedule.lock")


def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_CLOEXEC: `cgr run` children started by the daemon must not inherit the lock (an
    # flock is held while any descriptor of the open file exists). Fork children close
    # theirs in an after-fork hook (see _tick).
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """What the daemon writes into its lock file."""

    pid: int
    start_time: int
    started_at: float
    heartbeat_at: float

    @property
    def alive(self) -> bool:
        from cgr_exec import ProcessIdentity

        return ProcessIdentity(self.pid, self.start_time).is_alive()


def _read_info(fd: int) -> DaemonInfo | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return DaemonInfo(
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            started_at=float(data["started_at"]),
            heartbeat_at=float(data["heartbeat_at"]),
        )
    except (ValueError, TypeError, KeyError):
        return None


def daemon_owner(config: Config) -> DaemonInfo | None:
    """The daemon that holds the store's lock now, or None."""
    path = daemon_lock_path(config)
    if not path.exists():
        return None
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fd)
            return info if info is not None and info.alive else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def tick_locks(config: Config, *, wait: float = 60.0) -> Iterator[list[int]]:
    """Hold the daemon lock shared and the schedule lock exclusively for one tick pass.

    Yields the descriptors so a forked child can close its copies (a child must not keep
    the daemon from starting for as long as its run lasts).
    """
    path = daemon_lock_path(config)
    fds = [_open_lock(path)]
    try:
        try:
            fcntl.flock(fds[0], fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fds[0])
            raise DaemonRunningError(path, info.pid if info else None) from None
        fds.append(_open_lock(schedule_lock_path(config)))
        _flock_wait(fds[1], fcntl.LOCK_EX, wait, schedule_lock_path(config))
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _flock_wait(fd: int, op: int, wait: float, path: Path) -> None:
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said:
                # Said once, so a person at a terminal (or the journal) knows why nothing
                # happens for up to `wait` seconds.
                _log().info(
                    "waiting for %s: another `cgr tick` pass holds it (up to %gs)", path, wait
                )
                said = True
            if time.monotonic() > deadline:
                raise SchedulerBusyError(path, wait) from None
            time.sleep(0.05)
        else:
            return


class DaemonLock:
    """The daemon's exclusive lock on ``<db>.daemon.lock``, holding its pid and start time."""

    def __init__(self, config: Config, *, wait: float = 30.0) -> None:
        from cgr_exec import ProcessIdentity

        self.path = daemon_lock_path(config)
        self.fd = _open_lock(self.path)
        deadline = time.monotonic() + wait
        said = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                info = _read_info(self.fd)
                if info is not None and info.alive:
                    os.close(self.fd)
                    raise DaemonRunningError(self.path, info.pid) from None
                if not said:
                    _log().info(
                        "waiting for %s: a `cgr tick` pass holds it (up to %gs)", self.path, wait
                    )
                    said = True
                # Held shared by tick passes (each lasts seconds): wait for them.
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise SchedulerBusyError(self.path, wait) from None
                time.sleep(0.05)
        me = ProcessIdentity.current()
        self.info = DaemonInfo(me.pid, me.start_time, time.time(), time.time())
        self._write()

    def _write(self) -> None:
        data = json.dumps(
            {
                "pid": self.info.pid,
                "start_time": self.info.start_time,
                "started_at": self.info.started_at,
                "heartbeat_at": self.info.heartbeat_at,
            }
        ).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def heartbeat(self) -> None:
        self.info = DaemonInfo(
            self.info.pid, self.info.start_time, self.info.started_at, time.time()
        )
        self._write()

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = -1
