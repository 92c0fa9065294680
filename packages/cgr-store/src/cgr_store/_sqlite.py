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
  then is unsafe anyway) is *dropped without being closed* in the child (see _abandon:
  closing it would drop the POSIX locks of the child's own connection to the file) and a
  fresh one is opened. A reopen skips validation and migration, which were already done.
"""

# ruff: noqa: S608
# (S608: SQL text here is assembled only from this package's own table and column names;
# every value is a bound parameter.)

from __future__ import annotations

import functools
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import msgspec

from ._errors import (
    ActiveRunExists,
    CorruptDatabase,
    DatabaseBusy,
    DatabaseUnavailable,
    IllegalTransition,
    InvalidUpdate,
    NotADatabase,
    OutboxItemNotFound,
    RunExists,
    RunNotFound,
    SchemaTooNew,
    StoreError,
    TriggerAlreadyProcessed,
)
from ._migrations import APPLICATION_ID, LATEST_VERSION, MIGRATIONS
from ._protocol import Store
from ._records import (
    AgentSession,
    Cursor,
    HttpCacheEntry,
    OutboxEntry,
    OutboxItem,
    ProcessedTrigger,
    Run,
    RunEvent,
)
from ._rows import (
    OUTBOX_COLUMNS,
    RUN_COLUMNS,
    UPDATABLE_FIELDS,
    changed_columns,
    checked_outbox,
    from_row,
    to_row,
    validated,
)
from ._status import RunKind, RunStatus, TriggerKind, can_transition
from ._time import to_db, utcnow

__all__ = ["SQLiteStore"]

T = TypeVar("T")

MEMORY = ":memory:"

# Connections inherited across os.fork() are parked here, never closed and never used. The
# child must not run sqlite3_close() on the parent's connection: closing its file descriptor
# drops every POSIX lock the *child* holds on that file (fcntl locks are per process and
# inode), including those of the child's own new connection, and SQLite's in-memory lock
# bookkeeping that the child copied describes the parent's locks, not the child's.
_ABANDONED_AFTER_FORK: list[sqlite3.Connection] = []


def _abandon(conn: sqlite3.Connection) -> None:
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


# File-backed stores of this process, so the fork hook below can find them.
_OPEN_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def _release_connections_before_fork() -> None:
    for store in list(_OPEN_STORES):
        store._release_before_fork()


os.register_at_fork(before=_release_connections_before_fork)


_ACTIVE_SQL = "('queued', 'claimed', 'running')"
_RUN_SELECT = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
_EVENT_SELECT = "SELECT run_id, at, from_status, to_status, detail FROM run_events"
_OUTBOX_SELECT = f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox"


@functools.lru_cache(maxsize=256)
def _update_sql(columns: tuple[str, ...]) -> str:
    """The UPDATE of these run columns (cached: the same few sets recur for every run)."""
    return f"UPDATE runs SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ? AND status = ?"


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    message = str(exc)
    return "locked" in message or "busy" in message


class SQLiteStore:
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
        if not self._memory:
            _OPEN_STORES.add(self)

    @classmethod
    def in_memory(cls) -> SQLiteStore:
        """A private in-memory store (tests, demos)."""
        return cls(MEMORY)

    @property
    def path(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Close this process's connection. Idempotent."""
        if self._pid != os.getpid():
            self._drop_inherited()
        with self._lock:
            self._closed = True
            _OPEN_STORES.discard(self)
            if self._conn is not None:
                self._conn.close()
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
        if version and self._quick_check:
            # A cheap whole-file check at open, so a damaged file is reported up front
            # instead of failing some later write. Reopens after fork skip it.
            try:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            except sqlite3.Error as exc:
                if _is_busy(exc):
                    raise
                raise self._translate(exc) from None
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

    # -- connection and transactions ----------------------------------------------------
    def _release_before_fork(self) -> None:
        """Close this process's connection just before os.fork() (see module doc).

        The next operation reopens it. Skipped while a transaction is open or another
        thread holds the store: closing would roll back or race that work, and forking
        then is unsafe anyway (the child falls back to abandoning the connection).
        """
        if self._memory or self._pid != os.getpid():
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._conn is not None and not self._conn.in_transaction:
                self._conn.close()
                self._conn = None
        finally:
            self._lock.release()

    def _drop_inherited(self) -> None:
        """In a forked child: forget the parent's connection and lock (see module doc)."""
        if self._conn is not None:
            _abandon(self._conn)
            self._conn = None
        # The parent's lock may have been held by one of its threads at fork time; that
        # thread does not exist here, so the copied lock could never be released.
        self._lock = threading.RLock()
        self._pid = os.getpid()

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

    def _transaction(self, body: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``body`` in one transaction, retrying it whole on busy errors."""

        def attempt() -> T:
            if self._pid != os.getpid():
                self._drop_inherited()
            with self._lock:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = body(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result

        return self._with_busy_retry(attempt)

    def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        return self._transaction(body, write=True)

    def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        return self._transaction(body, write=False)

    # -- runs ---------------------------------------------------------------------------
    @staticmethod
    def _load(conn: sqlite3.Connection, run_id: str) -> Run:
        row = conn.execute(f"{_RUN_SELECT} WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return from_row(row, Run)

    @staticmethod
    def _add_event(
        conn: sqlite3.Connection,
        run_id: str,
        *,
        at: datetime,
        from_status: RunStatus | None,
        to_status: RunStatus,
        detail: str,
    ) -> None:
        conn.execute(
            "INSERT INTO run_events (run_id, at, from_status, to_status, detail)"
            " VALUES (?, ?, ?, ?, ?)",
            (run_id, to_db(at), from_status and from_status.value, to_status.value, detail),
        )

    def create_run(self, run: Run, *, trigger: ProcessedTrigger | None = None) -> Run:
        if run.status is not RunStatus.QUEUED:
            raise InvalidUpdate("status", f"a new run starts queued, not {run.status.value!r}")
        if trigger is not None:
            if run.trigger_id is None:
                run = msgspec.structs.replace(run, trigger_id=trigger.id)
            trigger = validated(msgspec.structs.replace(trigger, run_id=run.id))
        run = validated(run)
        row = to_row(run)

        def body(conn: sqlite3.Connection) -> Run:
            if trigger is not None:
                self._refuse_processed(conn, trigger.kind, trigger.id)
            self._refuse_active(conn, run.repo, run.target)
            try:
                conn.execute(
                    f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                    tuple(row.values()),
                )
            except sqlite3.IntegrityError:
                raise RunExists(run.id) from None
            self._add_event(
                conn,
                run.id,
                at=run.created_at,
                from_status=None,
                to_status=run.status,
                detail="created",
            )
            if trigger is not None:
                self._insert_trigger(conn, trigger)
            return run

        return self._write(body)

    @staticmethod
    def _refuse_processed(conn: sqlite3.Connection, kind: TriggerKind, trigger_id: str) -> None:
        row = conn.execute(
            "SELECT run_id FROM processed_triggers WHERE kind = ? AND id = ?",
            (kind.value, trigger_id),
        ).fetchone()
        if row is not None:
            raise TriggerAlreadyProcessed(kind.value, trigger_id, row[0])

    @staticmethod
    def _refuse_active(conn: sqlite3.Connection, repo: str, target: int) -> None:
        # The partial unique index enforces this too; asking first gives the error the id
        # of the run that is in the way.
        row = conn.execute(
            f"SELECT id FROM runs WHERE repo = ? AND target = ? AND status IN {_ACTIVE_SQL}",
            (repo, target),
        ).fetchone()
        if row is not None:
            raise ActiveRunExists(repo, target, row[0])

    @staticmethod
    def _check_fields(fields: dict[str, Any]) -> None:
        for name in fields:
            if name == "status":
                raise InvalidUpdate(name, "change the status with transition()")
            if name not in UPDATABLE_FIELDS:
                known = ", ".join(sorted(UPDATABLE_FIELDS))
                raise InvalidUpdate(name, f"not an updatable run field (those are: {known})")

    @staticmethod
    def _save(conn: sqlite3.Connection, before: Run, after: Run) -> None:
        """Write the columns in which ``after`` differs from ``before`` (read in this
        transaction), checking the status did not change underneath."""
        changed = changed_columns(before, after)
        if not changed:
            return
        cursor = conn.execute(
            _update_sql(tuple(changed)), (*changed.values(), after.id, before.status.value)
        )
        if cursor.rowcount != 1:  # impossible under BEGIN IMMEDIATE; checked all the same
            raise StoreError(f"run {after.id!r} changed underneath an update")

    def transition(
        self,
        run_id: str,
        to: RunStatus,
        *,
        detail: str = "",
        outbox: Iterable[OutboxEntry] = (),
        **fields: Any,
    ) -> Run:
        try:
            target_status = RunStatus(to)
        except ValueError:
            raise InvalidUpdate("status", f"{to!r} is not a RunStatus") from None
        self._check_fields(fields)
        entries = [checked_outbox(entry) for entry in outbox]

        def body(conn: sqlite3.Connection) -> Run:
            current = self._load(conn, run_id)
            if not can_transition(current.status, target_status):
                raise IllegalTransition(run_id, current.status.value, target_status.value)
            now = utcnow()
            changes = dict(fields)
            if target_status is RunStatus.RUNNING and current.started_at is None:
                changes.setdefault("started_at", now)
            if target_status.is_terminal:
                changes.setdefault("ended_at", now)
            updated = validated(msgspec.structs.replace(current, status=target_status, **changes))
            self._save(conn, current, updated)
            self._add_event(
                conn,
                run_id,
                at=now,
                from_status=current.status,
                to_status=target_status,
                detail=detail,
            )
            for entry in entries:
                self._insert_outbox(conn, run_id, entry, now)
            return updated

        return self._write(body)

    def update_run(self, run_id: str, **fields: Any) -> Run:
        self._check_fields(fields)

        def body(conn: sqlite3.Connection) -> Run:
            current = self._load(conn, run_id)
            updated = validated(msgspec.structs.replace(current, **fields))
            self._save(conn, current, updated)
            return updated

        return self._write(body)

    def heartbeat(self, run_id: str, at: datetime | None = None) -> RunStatus:
        stamp = to_db(at or utcnow())

        def body(conn: sqlite3.Connection) -> RunStatus:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            status = RunStatus(row[0])
            if status.is_active:
                conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (stamp, run_id))
            return status

        return self._write(body)

    def get_run(self, run_id: str) -> Run:
        return self._read(lambda conn: self._load(conn, run_id))

    @staticmethod
    def _events(conn: sqlite3.Connection, run_id: str) -> list[RunEvent]:
        rows = conn.execute(f"{_EVENT_SELECT} WHERE run_id = ? ORDER BY seq", (run_id,))
        return [from_row(row, RunEvent) for row in rows]

    def events(self, run_id: str) -> list[RunEvent]:
        return self.run_with_events(run_id)[1]

    def run_with_events(self, run_id: str) -> tuple[Run, list[RunEvent]]:
        return self._read(lambda conn: (self._load(conn, run_id), self._events(conn, run_id)))

    # -- queries ------------------------------------------------------------------------
    def _runs(self, where: str, params: Iterable[Any] = (), tail: str = "") -> list[Run]:
        sql = f"{_RUN_SELECT} WHERE {where} {tail or 'ORDER BY created_at, id'}"
        return self._read(lambda conn: [from_row(r, Run) for r in conn.execute(sql, (*params,))])

    def active_runs(self, host: str | None = None) -> list[Run]:
        if host is None:
            return self._runs(f"status IN {_ACTIVE_SQL}")
        return self._runs(f"status IN {_ACTIVE_SQL} AND host = ?", (host,))

    def runs_by_status(self, *statuses: RunStatus) -> list[Run]:
        if not statuses:
            return []
        values = [RunStatus(s).value for s in statuses]
        return self._runs(f"status IN ({', '.join('?' * len(values))})", values)

    def recent_runs(self, limit: int = 20, offset: int = 0) -> list[Run]:
        if limit < 0 or offset < 0:
            raise InvalidUpdate("limit" if limit < 0 else "offset", "must not be negative")
        return self._runs(
            "1", (limit, offset), "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        )

    def stale_runs(
        self, older_than: timedelta, host: str | None = None, *, now: datetime | None = None
    ) -> list[Run]:
        cutoff = to_db((now or utcnow()) - older_than)
        where = f"status IN {_ACTIVE_SQL} AND COALESCE(heartbeat_at, started_at, created_at) < ?"
        if host is None:
            return self._runs(where, (cutoff,))
        return self._runs(f"{where} AND host = ?", (cutoff, host))

    def runs_for_target(self, repo: str, number: int, *, limit: int | None = None) -> list[Run]:
        if limit is not None and limit < 0:
            raise InvalidUpdate("limit", "must not be negative")
        # lower(repo) as written in the index runs_by_target, so SQLite uses it.
        return self._runs(
            "lower(repo) = lower(?) AND target = ?",
            (repo, number, -1 if limit is None else limit),
            "ORDER BY created_at DESC, id DESC LIMIT ?",
        )

    def run_for_branch(
        self, repo: str, branch: str, *, kinds: Iterable[RunKind] | None = None
    ) -> Run | None:
        where = "lower(repo) = lower(?) AND branch = ?"
        params: list[Any] = [repo, branch]
        if kinds is not None:
            values = [RunKind(k).value for k in kinds]
            if not values:
                return None
            where += f" AND kind IN ({', '.join('?' * len(values))})"
            params.extend(values)
        found = self._runs(where, params, "ORDER BY created_at DESC, id DESC LIMIT 1")
        return found[0] if found else None

    def counts(self) -> dict[RunStatus, int]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT status, count(*) FROM runs GROUP BY status"
            ).fetchall()
        )
        counts = dict.fromkeys(RunStatus, 0)
        counts.update({RunStatus(status): n for status, n in rows})
        return counts

    # -- triggers -----------------------------------------------------------------------
    @staticmethod
    def _insert_trigger(conn: sqlite3.Connection, trigger: ProcessedTrigger) -> None:
        row = to_row(trigger)
        conn.execute(
            f"INSERT INTO processed_triggers ({', '.join(row)})"
            f" VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )

    def is_trigger_processed(self, kind: TriggerKind, trigger_id: str) -> bool:
        return self.get_trigger(kind, trigger_id) is not None

    def get_trigger(self, kind: TriggerKind, trigger_id: str) -> ProcessedTrigger | None:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT kind, id, repo, run_id, processed_at FROM processed_triggers"
                " WHERE kind = ? AND id = ?",
                (TriggerKind(kind).value, trigger_id),
            ).fetchone()
        )
        return None if row is None else from_row(row, ProcessedTrigger)

    def mark_trigger_processed(self, trigger: ProcessedTrigger) -> bool:
        trigger = validated(trigger)

        def body(conn: sqlite3.Connection) -> bool:
            try:
                self._refuse_processed(conn, trigger.kind, trigger.id)
            except TriggerAlreadyProcessed:
                return False
            try:
                self._insert_trigger(conn, trigger)
            except sqlite3.IntegrityError:
                raise RunNotFound(str(trigger.run_id)) from None
            return True

        return self._write(body)

    # -- HTTP cache -----------------------------------------------------------------------
    _HTTP_SELECT = "SELECT key, etag, last_modified, body, updated_at FROM http_cache"

    def http_cache_get(self, key: str) -> HttpCacheEntry | None:
        return self.http_cache_get_many([key]).get(key)

    def http_cache_get_many(self, keys: Iterable[str] | None = None) -> dict[str, HttpCacheEntry]:
        wanted = None if keys is None else list(dict.fromkeys(keys))

        def body(conn: sqlite3.Connection) -> dict[str, HttpCacheEntry]:
            if wanted is None:
                rows = list(conn.execute(self._HTTP_SELECT))
            else:
                found = (
                    conn.execute(f"{self._HTTP_SELECT} WHERE key = ?", (k,)).fetchone()
                    for k in wanted
                )
                rows = [r for r in found if r is not None]
            return {r["key"]: from_row(r, HttpCacheEntry) for r in rows}

        return self._read(body)

    def http_cache_put_many(self, entries: Iterable[HttpCacheEntry]) -> int:
        rows = [to_row(validated(e)) for e in entries]
        return self._put_changed("http_cache", ("key",), ("etag", "last_modified", "body"), rows)

    def http_cache_delete(self, keys: Iterable[str]) -> int:
        doomed = [(k,) for k in dict.fromkeys(keys)]
        if not doomed:
            return 0
        return self._write(
            lambda conn: conn.executemany("DELETE FROM http_cache WHERE key = ?", doomed).rowcount
        )

    # -- outbox -------------------------------------------------------------------------
    @staticmethod
    def _insert_outbox(
        conn: sqlite3.Connection, run_id: str, entry: OutboxEntry, now: datetime
    ) -> OutboxItem:
        # DO NOTHING on (run_id, key): the first entry of a key stays, so recording the same
        # report again (a retried transition, a second pass) never makes a second one.
        conn.execute(
            "INSERT INTO outbox (run_id, kind, key, payload, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, key) DO NOTHING",
            (run_id, entry.kind, entry.key, entry.payload, to_db(now)),
        )
        row = conn.execute(
            f"{_OUTBOX_SELECT} WHERE run_id = ? AND key = ?", (run_id, entry.key)
        ).fetchone()
        return from_row(row, OutboxItem)

    def put_outbox(self, run_id: str, entry: OutboxEntry) -> OutboxItem:
        entry = checked_outbox(entry)

        def body(conn: sqlite3.Connection) -> OutboxItem:
            self._load(conn, run_id)  # RunNotFound rather than a bare foreign-key error
            return self._insert_outbox(conn, run_id, entry, utcnow())

        return self._write(body)

    def _outbox(self, where: str, params: Iterable[Any], tail: str = "") -> list[OutboxItem]:
        sql = f"{_OUTBOX_SELECT} WHERE {where} ORDER BY id {tail}"
        return self._read(
            lambda conn: [from_row(r, OutboxItem) for r in conn.execute(sql, (*params,))]
        )

    def pending_outbox(self, limit: int = 100, *, run_id: str | None = None) -> list[OutboxItem]:
        if limit < 0:
            raise InvalidUpdate("limit", "must not be negative")
        if run_id is None:
            return self._outbox("delivered_at IS NULL", (limit,), "LIMIT ?")
        return self._outbox("delivered_at IS NULL AND run_id = ?", (run_id, limit), "LIMIT ?")

    def outbox_for_run(self, run_id: str) -> list[OutboxItem]:
        return self._outbox("run_id = ?", (run_id,))

    def _update_outbox(self, item_id: int, assignments: str, params: tuple[Any, ...]) -> OutboxItem:
        def body(conn: sqlite3.Connection) -> OutboxItem:
            conn.execute(f"UPDATE outbox SET {assignments} WHERE id = ?", (*params, item_id))
            row = conn.execute(f"{_OUTBOX_SELECT} WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise OutboxItemNotFound(item_id)
            return from_row(row, OutboxItem)

        return self._write(body)

    def mark_outbox_delivered(self, item_id: int, *, at: datetime | None = None) -> OutboxItem:
        stamp = to_db(at or utcnow())
        return self._update_outbox(item_id, "delivered_at = COALESCE(delivered_at, ?)", (stamp,))

    def record_outbox_failure(
        self, item_id: int, error: str, *, at: datetime | None = None
    ) -> OutboxItem:
        stamp = to_db(at or utcnow())
        return self._update_outbox(
            item_id,
            "attempts = attempts + 1, last_error = ?, last_attempt_at = ?",
            (str(error), stamp),
        )

    # -- cursors and agent sessions -----------------------------------------------------
    def get_cursor(self, repo: str, stream: str) -> Cursor | None:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT repo, stream, since, etag, updated_at FROM cursors"
                " WHERE repo = ? AND stream = ?",
                (repo, stream),
            ).fetchone()
        )
        return None if row is None else from_row(row, Cursor)

    def set_cursor(self, cursor: Cursor) -> None:
        self._upsert("cursors", to_row(validated(cursor)), ("repo", "stream"))

    def get_cursors(self, repo: str | None = None) -> list[Cursor]:
        sql = "SELECT repo, stream, since, etag, updated_at FROM cursors"
        params: tuple[str, ...] = ()
        if repo is not None:
            sql, params = f"{sql} WHERE repo = ?", (repo,)
        return self._read(
            lambda conn: [
                from_row(r, Cursor) for r in conn.execute(f"{sql} ORDER BY repo, stream", params)
            ]
        )

    def set_cursors(self, cursors: Iterable[Cursor]) -> int:
        rows = [to_row(validated(c)) for c in cursors]
        return self._put_changed("cursors", ("repo", "stream"), ("since", "etag"), rows)

    def _put_changed(
        self,
        table: str,
        key: tuple[str, ...],
        compared: tuple[str, ...],
        rows: list[dict[str, Any]],
    ) -> int:
        """Upsert the ``rows`` whose ``compared`` columns differ from the stored row.

        The comparison is a read transaction, which takes no write lock: an idle poll, where
        nothing changed, writes nothing and fsyncs nothing. The changed rows go in one write
        transaction (one fsync however many). Two processes writing the same key at once
        both write; the last one stays, as with set_cursor.
        """
        latest = {tuple(row[k] for k in key): row for row in rows}  # the last of a key wins
        if not latest:
            return 0
        where = " AND ".join(f"{k} = ?" for k in key)
        select = f"SELECT {', '.join(compared)} FROM {table} WHERE {where}"

        def differing(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            changed = []
            for ident, row in latest.items():
                stored = conn.execute(select, ident).fetchone()
                if stored is None or tuple(stored) != tuple(row[c] for c in compared):
                    changed.append(row)
            return changed

        changed = self._read(differing)
        if not changed:
            return 0
        columns = list(changed[0])
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
        )
        self._write(
            lambda conn: conn.executemany(sql, [tuple(r[c] for c in columns) for r in changed])
        )
        return len(changed)

    def get_agent_session(self, repo: str, target: int) -> AgentSession | None:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT repo, target, session_id, run_id, updated_at FROM agent_sessions"
                " WHERE repo = ? AND target = ?",
                (repo, target),
            ).fetchone()
        )
        return None if row is None else from_row(row, AgentSession)

    def set_agent_session(self, session: AgentSession) -> None:
        row = to_row(validated(session))

        def check(conn: sqlite3.Connection) -> None:
            if session.run_id is not None:
                self._load(conn, session.run_id)  # RunNotFound rather than a bare FK error

        self._upsert("agent_sessions", row, ("repo", "target"), check)

    def _upsert(
        self,
        table: str,
        row: dict[str, Any],
        key: tuple[str, ...],
        check: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        columns = ", ".join(row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in key)
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})"
            f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
        )

        def body(conn: sqlite3.Connection) -> None:
            if check is not None:
                check(conn)
            conn.execute(sql, tuple(row.values()))

        self._write(body)


if TYPE_CHECKING:  # mypy proves here that SQLiteStore implements the Store protocol
    _implements_store: type[Store] = SQLiteStore
