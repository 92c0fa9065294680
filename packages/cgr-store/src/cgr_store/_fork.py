"""Keeping a connection inherited across os.fork() from ever being closed in the child.

Both backends close idle connections *before* a fork (an ``os.register_at_fork`` hook), so
usually nothing crosses it. A connection that could not be closed then (another thread was
inside a transaction) is found by the child through a pid check and must be dropped
without being closed:

- SQLite: closing it would run close() on the file descriptor, which drops every POSIX lock
  the *child* holds on that file (fcntl locks are per process and inode), including those
  of the child's own new connection.
- PostgreSQL: closing it would send the server a Terminate message over the socket the
  child shares with the parent, ending the *parent's* session.

``PerProcessConnection`` is that lifetime, written once for both backends: the registry the
fork hook walks, ``close()``, the context manager, and dropping an inherited connection.
"""

from __future__ import annotations

import os
import threading
import weakref
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

__all__ = ["PerProcessConnection", "abandon"]

C = TypeVar("C")

_ABANDONED_AFTER_FORK: list[Any] = []


def abandon(conn: Any) -> None:
    """Keep ``conn`` alive for the rest of this process, so it is never closed here."""
    _ABANDONED_AFTER_FORK.append(conn)
    # The list alone does not survive interpreter shutdown, which clears module globals and
    # would then deallocate (and so close) the connection. One extra reference that is
    # never released keeps it out of reach of shutdown too; the OS reclaims it at exit.
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
    except (ImportError, AttributeError):  # pragma: no cover - Python built without ctypes
        pass


class PerProcessConnection(Generic[C]):
    """One connection per process (``_conn``, opened lazily by the backend), used under
    ``_lock``; closed before a fork while idle, dropped (never closed) by a forked child,
    closed by ``close()``.

    The backend's ``__init__`` sets ``_lock``, ``_closed``, ``_pid`` and ``_conn``, then
    calls ``_track()`` (unless the store cannot outlive a fork anyway); it supplies how to
    close a connection, whether one is idle, and what ``abandon`` must keep alive.
    """

    _conn: C | None
    _lock: threading.RLock
    _closed: bool
    _pid: int

    # -- supplied by the backend --------------------------------------------------------
    def _close_connection(self, conn: C) -> None:
        raise NotImplementedError

    def _idle(self, conn: C) -> bool:
        """No transaction is open on ``conn``."""
        raise NotImplementedError

    def _handle(self, conn: C) -> Any:
        """What to keep alive so ``conn`` is never closed in a forked child."""
        return conn

    # -- shared ---------------------------------------------------------------------------
    def _track(self) -> None:
        _OPEN_STORES.add(self)

    def close(self) -> None:
        """Close this process's connection. Idempotent."""
        if self._pid != os.getpid():
            self._drop_inherited()
        with self._lock:
            self._closed = True
            _OPEN_STORES.discard(self)
            if self._conn is not None:
                self._close_connection(self._conn)
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _release_before_fork(self) -> None:
        """Close this process's connection just before os.fork().

        The next operation reopens it. Skipped while a transaction is open or another
        thread holds the store: closing would roll back or race that work, and forking
        then is unsafe anyway (the child falls back to abandoning the connection).
        """
        if self._pid != os.getpid() or not self._lock.acquire(blocking=False):
            return
        try:
            if self._conn is not None and self._idle(self._conn):
                self._close_connection(self._conn)
                self._conn = None
        finally:
            self._lock.release()

    def _drop_inherited(self) -> None:
        """In a forked child: forget the parent's connection and lock, never closing it."""
        if self._conn is not None:
            abandon(self._handle(self._conn))
            self._conn = None
        # The parent's lock may have been held by one of its threads at fork time; that
        # thread does not exist here, so the copied lock could never be released.
        self._lock = threading.RLock()
        self._pid = os.getpid()


# The stores of this process that hold a connection a fork could copy, for the hook below.
_OPEN_STORES: weakref.WeakSet[PerProcessConnection[Any]] = weakref.WeakSet()


def _release_connections_before_fork() -> None:
    for store in list(_OPEN_STORES):
        store._release_before_fork()


os.register_at_fork(before=_release_connections_before_fork)
