"""SQLiteStore: the Store protocol on one SQLite file (or in memory, for tests).

Design notes
- One connection per process, guarded by a lock so threads (e.g. anyio.to_thread workers)
  can share the store. Autocommit mode with explicit transactions: every multi-row change
  runs in ``BEGIN IMMEDIATE``, which takes the write lock up front. A deferred transaction
  that reads and then writes can fail with SQLITE_BUSY without waiting (the busy handler
  cannot help a reader that must upgrade); IMMEDIATE waits in the busy handler instead.
- WAL journal: readers never block the writer and the writer never blocks readers, and a
  process killed at any point leaves a consistent file (the WAL is replayed or ignored).
- Busy errors that still escape (e.g. while another process runs WAL recovery) are retried
  here with exponential backoff and jitter until ``busy_deadline``; callers never see
  "database is locked", only DatabaseBusy after the deadline.
- Fork safety: SQLite forbids using a connection in a child that was opened in the parent,
  and it is not enough for the child to open a new one: SQLite keeps per-process
  bookkeeping of the locks it holds on each file, shared by every connection to that file
  in the process. A child that inherits it believes it holds the parent's locks, which the
  kernel never gave it (fcntl locks are not inherited). Its writes then go unprotected, and
  the parent closing its last connection checkpoints and removes the WAL under the child:
  the child's committed writes are lost. So an ``os.register_at_fork`` hook closes every
  idle file-backed store's connection *before* any fork (the parent reopens lazily on its
  next operation), and the child inherits no SQLite state at all.
  Each operation also compares os.getpid() with the pid that opened the connection. A
  connection the hook could not close (another thread was inside a transaction: forking
  then is unsafe anyway) is *dropped without being closed* in the child (see _fork.py:
  closing it would drop the POSIX locks of the child's own connection to the file) and a
  fresh one is opened. A reopen skips validation and migration, which were already done.
"""

# (S608: SQL text here is assembled only from this package's own table and column names;
# every value is a bound parameter.)

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ._errors import (
    CorruptDatabase,
    DatabaseBusy,
    DatabaseUnavailable,
    NotADatabase,
    SchemaTooNew,
    StoreError,
)
from ._fork import PerProcessConnection
from ._migrations import APPLICATION_ID, LATEST_VERSION, MIGRATIONS
from ._protocol import Store
from ._sql import Conn, SQLStore

__all__ = ["SQLiteStore"]

T = TypeVar("T")

MEMORY = ":memory:"


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    message = str(exc)
    return "locked" in message or "busy" in message


class SQLiteStore(PerProcessConnection[sqlite3.Connection], SQLStore):
    """The Store protocol backed by SQLite; see the module docstring for the design.

    ``path`` is a file (created with its schema if missing; its directory must exist) or
    ``":memory:"`` (one private database per store, not usable after fork).
    ``busy_timeout``: seconds SQLite itself waits for a lock per attempt. ``busy_deadline``:
    seconds the store keeps retrying before DatabaseBusy. ``quick_check``: verify the whole
    file when opening it (about 0.3 s for 100,000 runs), so damage is reported up front.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        busy_deadline: float = 60.0,
        quick_check: bool = True,
    ) -> None:
        self._path = os.fspath(path)
        self._memory = self._path == MEMORY
        self._busy_timeout = busy_timeout
        self._busy_deadline = busy_deadline
        self._quick_check = quick_check
        self._lock = threading.RLock()
        self._closed = False
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = self._open(first=True)
        if not self._memory:  # an in-memory store does not survive a fork anyway
            self._track()

    @classmethod
    def in_memory(cls) -> SQLiteStore:
        """A private in-memory store (tests, demos)."""
        return cls(MEMORY)

    _integrity_errors = (sqlite3.IntegrityError,)

    @property
    def path(self) -> str:
        return self._path

    def _location(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    # -- opening ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if not self._memory:
            path = Path(self._path)
            if path.is_dir():
                raise DatabaseUnavailable(self._path, "it is a directory; give a file path")
            if not path.parent.is_dir():
                raise DatabaseUnavailable(
                    self._path, f"the directory {str(path.parent)!r} does not exist; create it"
                )
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,  # autocommit; we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # the store's lock serialises threads
            )
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(self._path, str(exc)) from None
        conn.row_factory = sqlite3.Row
        # Per-connection settings that write nothing to the file.
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open(self, *, first: bool) -> sqlite3.Connection:
        """Open (first=True: also validate, switch to WAL and migrate)."""
        conn = self._connect()
        try:
            if first:  # a reopen after fork skips these: the parent validated and migrated
                self._with_busy_retry(lambda: self._validate(conn))
                self._with_busy_retry(lambda: self._enable_wal(conn))
            # Per connection, so every one sets it, also those reopened after a fork (after
            # validation: it reads the file header, and a foreign file is refused first).
            self._with_busy_retry(lambda: self._set_synchronous(conn))
            if first:
                self._with_busy_retry(lambda: self._migrate(conn))
        except BaseException:
            conn.close()
            raise
        return conn

    def _validate(self, conn: sqlite3.Connection) -> None:
        """Refuse files that are not ours, damaged or too new, before writing anything."""
        try:
            # One read transaction, so the three answers describe the same moment: another
            # process may be creating the schema of this very file right now, and a version
            # read before its commit with a table count read after would look foreign.
            conn.execute("BEGIN")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                tables = conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                ).fetchone()[0]
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if _is_busy(exc):
                raise  # retried by the caller
            raise self._translate(exc) from None
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and (version or tables)):
            raise NotADatabase(
                self._path, f"an SQLite database of another program (application_id {app_id})"
            )
        if version > LATEST_VERSION:
            raise SchemaTooNew(self._path, version, LATEST_VERSION)
        # (A new in-memory database is empty: version 0, nothing to check, and a second
        # connection to ":memory:" would be another database.)
        if version and self._quick_check and not self._memory:
            self._check_whole_file()

    def check_file(self) -> None:
        """Read every page of the file (``PRAGMA quick_check``) and raise
        :class:`CorruptDatabase` if SQLite finds damage; nothing is changed. What opening
        does (unless ``quick_check=False``), for a long-lived process to repeat now and
        then: a damaged page is otherwise found only when a query happens to read it.

        Safe from another thread than the store's: the check uses a connection of its own,
        and the store's reads and writes go on meanwhile, as WAL lets them (it takes about
        0.3 s at 100,000 runs: see the README)."""
        if not self._memory:
            self._check_whole_file()

    def _check_whole_file(self) -> None:
        """A cheap whole-file check at open, so a damaged file is reported up front instead
        of failing some later write. Reopens after fork skip it.

        It runs on a connection of its own, closed at once: measured with the benchmark,
        every later write of the connection that ran ``quick_check`` was about a third
        slower for as long as it stayed open (the store at 0.65 x raw sqlite3 instead of
        0.87 x). ``PRAGMA shrink_memory`` after the check cured it too, which points at
        what the check leaves in the connection's page cache; a throwaway connection keeps
        the working one untouched whatever the exact reason."""
        check = self._connect()
        try:
            problems = [row[0] for row in check.execute("PRAGMA quick_check")]
        except sqlite3.Error as exc:
            if _is_busy(exc):
                raise
            raise self._translate(exc) from None
        finally:
            check.close()
        if problems != ["ok"]:
            raise CorruptDatabase(self._path, " ".join(" ".join(problems[:3]).split()))

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        if self._memory:
            return
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatabaseUnavailable(self._path, f"cannot switch to WAL (journal mode {mode})")

    def _set_synchronous(self, conn: sqlite3.Connection) -> None:
        if self._memory:
            return
        # FULL: in WAL mode every COMMIT fsyncs the WAL before it returns, so a committed run
        # survives a power cut, not just a killed process (the README says why that matters).
        conn.execute("PRAGMA synchronous = FULL")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version + 1, LATEST_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {LATEST_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return int(self._read(lambda c: c.execute("PRAGMA user_version").fetchone()[0]))

    def integrity_check(self) -> None:
        """Run SQLite's full integrity check; raises CorruptDatabase on any problem."""
        problems = self._read(lambda c: [r[0] for r in c.execute("PRAGMA integrity_check")])
        if problems != ["ok"]:
            raise CorruptDatabase(self._path, " ".join(" ".join(problems[:3]).split()))

    # -- connection and transactions (the lifetime: _fork.PerProcessConnection) ----------
    def _close_connection(self, conn: sqlite3.Connection) -> None:
        conn.close()

    def _idle(self, conn: sqlite3.Connection) -> bool:
        return not conn.in_transaction

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (call with the lock held)."""
        if self._closed:
            raise DatabaseUnavailable(self._path, "the store was closed")
        if self._conn is None:
            if self._memory:
                raise DatabaseUnavailable(
                    self._path, "an in-memory store cannot be used after os.fork(); use a file"
                )
            self._conn = self._open(first=False)
        return self._conn

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code == sqlite3.SQLITE_NOTADB or "file is not a database" in str(exc):
            return NotADatabase(self._path, str(exc))
        if code == sqlite3.SQLITE_CORRUPT or "malformed" in str(exc):
            return CorruptDatabase(self._path, str(exc))
        return DatabaseUnavailable(self._path, str(exc))

    def _with_busy_retry(self, action: Callable[[], T]) -> T:
        started = time.monotonic()
        delay = 0.002
        while True:
            try:
                return action()
            except sqlite3.Error as exc:
                waited = time.monotonic() - started
                if not _is_busy(exc):
                    raise self._translate(exc) from None
                if waited >= self._busy_deadline:
                    raise DatabaseBusy(self._path, waited) from None
            # Jitter keeps a crowd of processes from retrying in lockstep.
            time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - not for security
            delay = min(delay * 2, 0.25)

    def _transaction(self, body: Callable[[Conn], T], *, write: bool, durable: bool = True) -> T:
        """Run ``body`` in one transaction, retrying it whole on busy errors.

        ``durable=False``: this commit runs at ``synchronous = NORMAL``, which in WAL mode
        appends to the WAL without an fsync; the next FULL commit's fsync covers it."""
        lazy = not durable and not self._memory

        def attempt() -> T:
            if self._pid != os.getpid():
                self._drop_inherited()
            with self._lock:
                conn = self._connection()
                if lazy:
                    conn.execute("PRAGMA synchronous = NORMAL")
                try:
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    try:
                        result = body(conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                finally:
                    if lazy:
                        self._set_synchronous(conn)
                return result

        return self._with_busy_retry(attempt)

    # -- leadership ---------------------------------------------------------------------
    def acquire_leadership(
        self, name: str, host_id: str, ttl: timedelta, *, now: datetime | None = None
    ) -> bool:
        """Always True: an SQLite file serves one host, which therefore always leads.

        (Several processes on that host share the file; whether more than one of them
        polls is the caller's choice, as before there were fleets.)"""
        return True

    def release_leadership(self, name: str, host_id: str) -> None:
        return None


if TYPE_CHECKING:  # mypy proves here that SQLiteStore implements the Store protocol
    _implements_store: type[Store] = SQLiteStore
