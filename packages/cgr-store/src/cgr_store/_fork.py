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
"""

from __future__ import annotations

from typing import Any

__all__ = ["abandon"]

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
