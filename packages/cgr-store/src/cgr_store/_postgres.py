"""PostgresStore: the Store protocol on a PostgreSQL server, for a fleet of runner hosts.

Design notes
- psycopg 3 (the optional extra ``cgr-store[postgres]``), imported when a PostgresStore is
  made, so ``import cgr_store`` stays cheap and works without it.
- One connection per process behind a lock, as SQLiteStore, in autocommit mode with
  explicit transactions: writes in READ COMMITTED, where the rows about to change are
  locked (``SELECT ... FOR UPDATE``) and check-then-insert steps take a transaction-scoped
  advisory lock on the trigger or target; reads in ``REPEATABLE READ READ ONLY``, so a run
  and its events are read from one snapshot. A deadlock or serialization failure rolls the
  whole transaction back, and it is retried (the body has no effect outside it).
- Fork safety: idle connections are closed before any fork (an ``os.register_at_fork``
  hook, as for SQLite); a connection found in a child by the pid check is abandoned, never
  closed: closing it would end the parent's session on the shared socket (see _fork.py).
- Schema: the same numbered migrations as SQLite (translated by postgres_statements), with
  the version in a one-row table ``cgr_schema``; migrations take an advisory lock, so hosts
  starting together migrate once. PostgreSQL's transactional DDL makes each step all or
  nothing.
- Errors name the URL without its password (redact_url).
"""

# (S608: SQL text here is assembled only from this package's own table and column names;
# every value is a bound parameter.)

from __future__ import annotations

import functools
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import (
    AuthenticationFailed,
    DatabaseUnavailable,
    NotADatabase,
    SchemaTooNew,
    ServerUnreachable,
    StoreError,
)
from ._fork import PerProcessConnection
from ._migrations import LATEST_VERSION, postgres_statements
from ._protocol import Store
from ._sql import Conn, SQLStore
from ._urls import redact_url

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore"]

T = TypeVar("T")

APPLICATION = "cgr"
"""``cgr_schema.application``: marks the database as cgr's."""

_MIGRATION_LOCK = 0x63677273  # "cgrs": the advisory lock key of schema migrations
_RETRIES = 8  # deadlocks and serialization failures: retried this often, then raised


class _Row(tuple[Any, ...]):
    """A row that answers ``row[0]``, ``row["name"]`` and ``dict(row)``, as sqlite3.Row."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> Iterable[str]:
        return self._index.keys()


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
    description = cursor.description or ()
    index = {column.name: i for i, column in enumerate(description)}

    def make(values: Sequence[Any]) -> _Row:
        row = _Row(values)
        row._index = index
        return row

    return make


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """The shared SQL's ``?`` placeholders as psycopg's ``%s`` (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _ManyResult:
    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount


class _PgConn:
    """A psycopg connection speaking the shared code's dialect (see _sql.Conn)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        return self.raw.execute(_pg_sql(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        with self.raw.cursor() as cursor:
            cursor.executemany(_pg_sql(sql), [tuple(p) for p in parameters])
            return _ManyResult(cursor.rowcount)


def _import_psycopg(url: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise DatabaseUnavailable(
            url,
            "PostgreSQL support needs psycopg; install it with: pip install 'cgr-store[postgres]'",
        ) from None
    return psycopg


class PostgresStore(PerProcessConnection[_PgConn], SQLStore):
    """The Store protocol on PostgreSQL; see the module docstring for the design.

    ``url`` is a libpq URI, ``postgresql://user:password@host:port/dbname`` or for a unix
    socket ``postgresql://user@/dbname?host=/run/postgresql``; the database must exist.
    ``connect_timeout``: seconds to wait for the server when connecting.
    ``idle_transaction_timeout``: seconds the server lets a transaction of this store sit
    idle before it ends the session (``idle_in_transaction_session_timeout``). cgr's
    transactions run their statements back to back, so only a process frozen in the middle
    of one (SIGSTOP, a VM paused, a debugger) gets there - and until the server ends it, its
    row locks (a host's lease row, a run's row) would block every other host's take-over.
    """

    _for_update = " FOR UPDATE"
    _for_share = " FOR SHARE"
    _skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self, url: str, *, connect_timeout: float = 10.0, idle_transaction_timeout: float = 10.0
    ) -> None:
        self._url = url
        self._redacted = redact_url(url)
        self._psycopg = _import_psycopg(self._redacted)
        self._integrity_errors = (self._psycopg.IntegrityError,)
        self._connect_timeout = connect_timeout
        self._idle_transaction_ms = max(1, round(idle_transaction_timeout * 1000))
        self._lock = threading.RLock()
        self._closed = False
        self._pid = os.getpid()
        self._conn: _PgConn | None = self._open(first=True)
        self._track()

    @property
    def url(self) -> str:
        """The URL without its password."""
        return self._redacted

    def __repr__(self) -> str:
        return f"PostgresStore({self._redacted!r})"

    def _location(self) -> str:
        return self._redacted

    # -- opening ------------------------------------------------------------------------
    def _connect(self) -> _PgConn:
        psycopg = self._psycopg
        try:
            raw = psycopg.connect(
                self._url,
                autocommit=True,  # transactions are explicit BEGIN ... COMMIT below
                connect_timeout=max(1, round(self._connect_timeout)),
                row_factory=_row_factory,
                application_name="cgr",
            )
            # Per session, not in the URI: a user's own ?options= stay as they are.
            raw.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                (str(self._idle_transaction_ms),),
            )
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None
        return _PgConn(raw)

    def _connect_error(self, exc: Exception) -> StoreError:
        reason = " ".join(str(exc).split())
        sqlstate = getattr(exc, "sqlstate", None)
        lowered = reason.lower()
        if (
            sqlstate in ("28P01", "28000")
            or "authentication failed" in lowered
            or ("role" in lowered and "does not exist" in lowered)
        ):
            return AuthenticationFailed(self._redacted, reason)
        if sqlstate == "3D000" or ("database" in lowered and "does not exist" in lowered):
            return DatabaseUnavailable(
                self._redacted, f"{reason}; create it first (createdb, or CREATE DATABASE)"
            )
        if "password" in lowered and "no password supplied" in lowered:
            return AuthenticationFailed(self._redacted, reason)
        return ServerUnreachable(self._redacted, reason)

    def _open(self, *, first: bool) -> _PgConn:
        conn = self._connect()
        if first:  # a reopen (after fork, after a lost connection) skips the schema work
            try:
                self._retrying(lambda: self._migrate(conn))
            except BaseException:
                conn.raw.close()
                raise
        return conn

    def _migrate(self, conn: _PgConn) -> None:
        """Check the database is cgr's (or empty) and bring its schema up to date, in one
        transaction (PostgreSQL's DDL is transactional: all steps or none)."""
        conn.execute("BEGIN")
        try:
            self._migrate_in_transaction(conn)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    def _migrate_in_transaction(self, conn: _PgConn) -> None:
        # Hosts starting together: one migrates, the others wait here and then find
        # nothing left to do. Transaction-scoped, so a crash releases it.
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        version = self._version(conn)
        if version is None:
            others = conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() ORDER BY table_name LIMIT 3"
            ).fetchall()
            if others:
                names = ", ".join(str(r[0]) for r in others)
                raise NotADatabase(
                    self._redacted, f"a database of another program (tables {names}, no cgr_schema)"
                )
            conn.execute(
                "CREATE TABLE cgr_schema (id INTEGER PRIMARY KEY CHECK (id = 1),"
                " application TEXT NOT NULL, version INTEGER NOT NULL)"
            )
            conn.execute(
                "INSERT INTO cgr_schema (id, application, version) VALUES (1, ?, 0)", (APPLICATION,)
            )
            version = 0
        if version > LATEST_VERSION:
            raise SchemaTooNew(self._redacted, version, LATEST_VERSION)
        for step in range(version + 1, LATEST_VERSION + 1):
            for statement in postgres_statements(step):
                conn.execute(statement)
        if version != LATEST_VERSION:
            conn.execute("UPDATE cgr_schema SET version = ? WHERE id = 1", (LATEST_VERSION,))

    def _version(self, conn: _PgConn) -> int | None:
        exists = conn.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name = 'cgr_schema'"
        ).fetchone()[0]
        if not exists:
            return None
        row = conn.execute("SELECT application, version FROM cgr_schema WHERE id = 1").fetchone()
        if row is None or row[0] != APPLICATION:
            raise NotADatabase(self._redacted, "its cgr_schema table is not cgr's")
        return int(row[1])

    @property
    def schema_version(self) -> int:
        return int(self._read(lambda c: c.execute("SELECT version FROM cgr_schema").fetchone()[0]))

    def server_now(self) -> datetime:
        """The server's clock (for a clock-skew check: leases compare client clocks)."""
        value = self._read(lambda c: c.execute("SELECT now()").fetchone()[0])
        if not isinstance(value, datetime):  # pragma: no cover - psycopg's own conversion
            raise StoreError(f"the server's now() gave {value!r}, not a timestamp")
        return value

    # -- connection and transactions ----------------------------------------------------
    # (The lifetime: _fork.PerProcessConnection.)
    def _close_connection(self, conn: _PgConn) -> None:
        conn.raw.close()

    def _idle(self, conn: _PgConn) -> bool:
        return not self._in_transaction(conn)

    def _handle(self, conn: _PgConn) -> Any:
        return conn.raw

    def _in_transaction(self, conn: _PgConn) -> bool:
        status = conn.raw.info.transaction_status
        return bool(status != self._psycopg.pq.TransactionStatus.IDLE)

    def _connection(self) -> _PgConn:
        if self._closed:
            raise DatabaseUnavailable(self._redacted, "the store was closed")
        if self._conn is not None and self._conn.raw.closed:
            self._conn = None  # lost (server restart, network): reconnect below
        if self._conn is None:
            self._conn = self._open(first=False)
        return self._conn

    def _rollback(self, conn: _PgConn) -> None:
        if conn.raw.closed:
            return
        try:
            if self._in_transaction(conn):
                conn.execute("ROLLBACK")
        except self._psycopg.Error:
            conn.raw.close()  # a connection that cannot even roll back is not reused

    def _retrying(self, action: Callable[[], T]) -> T:
        """Run ``action``, again after a deadlock or serialization failure (each one rolled
        its transaction back whole), with jittered backoff."""
        errors = self._psycopg.errors
        transient = (errors.DeadlockDetected, errors.SerializationFailure)
        delay = 0.005
        for attempt in range(_RETRIES + 1):
            try:
                return action()
            except transient:
                if attempt == _RETRIES:
                    raise
            time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - not for security
            delay = min(delay * 2, 0.25)
        raise AssertionError("unreachable")  # pragma: no cover

    def _transaction(self, body: Callable[[Conn], T], *, write: bool, durable: bool = True) -> T:
        begin = "BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"

        def attempt() -> T:
            if self._pid != os.getpid():
                self._drop_inherited()
            with self._lock:
                conn = self._connection()
                try:
                    conn.execute(begin)
                    if not durable:
                        # This transaction's commit only: no wait for the WAL flush.
                        conn.execute("SET LOCAL synchronous_commit = off")
                    result = body(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
                return result

        try:
            return self._retrying(attempt)
        except StoreError:
            raise
        except self._psycopg.OperationalError as exc:
            # The connection broke (server gone, restarted): the next call reconnects.
            with self._lock:
                if self._conn is not None and self._conn.raw.closed:
                    self._conn = None
            raise ServerUnreachable(self._redacted, " ".join(str(exc).split())) from None
        except self._psycopg.Error as exc:
            raise DatabaseUnavailable(self._redacted, " ".join(str(exc).split())) from None

    def _lock_key(self, conn: Conn, key: str) -> None:
        # Transaction-scoped: released by COMMIT or ROLLBACK, also if the process dies.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))


if TYPE_CHECKING:  # mypy proves here that PostgresStore implements the Store protocol
    _implements_store: type[Store] = PostgresStore
