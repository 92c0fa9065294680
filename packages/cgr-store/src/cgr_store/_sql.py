"""What SQLiteStore and PostgresStore share: the Store protocol written once, in SQL both
engines run.

A backend supplies connections and transactions (``_read``/``_write`` run a body in one
transaction and hand it a connection), and a few dialect hooks:

- ``_for_update``: appended to the SELECT of a row about to change. PostgreSQL's row lock
  makes two hosts changing one run take turns; SQLite needs none (``BEGIN IMMEDIATE``
  takes the database's one write lock up front).
- ``_for_share``: appended to the read of a host's lease row by a fenced write, so a
  take-over (which moves the epoch on) waits for the write in flight, or refuses it.
- ``_skip_locked``: the same for the claim of queued runs, skipping rows another host is
  claiming right now instead of waiting for it (``FOR UPDATE SKIP LOCKED``).
- ``_lock_key(conn, key)``: a transaction-scoped lock on a name, for check-then-insert
  (one active run per target, one run per trigger): a PostgreSQL advisory lock.
- ``_integrity_errors``: the driver's constraint-violation exceptions.

Statements are written with ``?`` placeholders; the PostgreSQL connection adapter turns
them into psycopg's ``%s``. Both engines store timestamps as the same fixed-width UTC text
(see _time.py), so comparisons and ordering are the same on both, and rows copy across
unchanged (copy_store).
"""

# ruff: noqa: S608
# (S608: SQL text here is assembled only from this package's own table and column names;
# every value is a bound parameter.)

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import msgspec

from ._errors import (
    ActiveRunExists,
    HostLeaseHeld,
    IllegalTransition,
    InvalidUpdate,
    LeaseLost,
    OutboxItemNotFound,
    RunChanged,
    RunExists,
    RunNotFound,
    RunOwnedElsewhere,
    StoreError,
    TriggerAlreadyProcessed,
)
from ._records import (
    AgentSession,
    Cursor,
    HostLease,
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

__all__ = ["COPIED_TABLES", "Conn", "SQLStore"]

T = TypeVar("T")

_ACTIVE_SQL = "('queued', 'claimed', 'running')"
_RUN_SELECT = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
_EVENT_SELECT = "SELECT run_id, at, from_status, to_status, detail FROM run_events"
_OUTBOX_SELECT = f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox"
_HOST_COLUMNS = HostLease.__struct_fields__
_HOST_SELECT = f"SELECT {', '.join(_HOST_COLUMNS)} FROM hosts"


class Conn(Protocol):
    """What the shared code needs of a connection. Rows support ``row[0]``, ``row["name"]``
    and ``dict(row)`` (sqlite3.Row does; the psycopg adapter makes rows that do)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


COPIED_TABLES: dict[str, tuple[str, str]] = {
    # table: (columns, order) — what copy_store moves, parents before children.
    "runs": (", ".join(RUN_COLUMNS), "created_at, id"),
    "run_events": ("run_id, at, from_status, to_status, detail", "seq"),
    "processed_triggers": ("kind, id, repo, run_id, processed_at", "kind, id"),
    "cursors": ("repo, stream, since, etag, updated_at", "repo, stream"),
    "agent_sessions": ("repo, target, session_id, run_id, updated_at", "repo, target"),
    "outbox": (
        "run_id, kind, key, payload, created_at, attempts, last_error, last_attempt_at,"
        " delivered_at",
        "id",
    ),
    "http_cache": ("key, etag, last_modified, body, updated_at", "key"),
}
"""Ids the store assigns (event ``seq``, outbox ``id``) are not copied: the target assigns
its own, in the same order."""


@functools.lru_cache(maxsize=256)
def _update_sql(columns: tuple[str, ...]) -> str:
    """The UPDATE of these run columns (cached: the same few sets recur for every run)."""
    return f"UPDATE runs SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ? AND status = ?"


class SQLStore:
    """The Store protocol over a DB-API-like connection; see the module docstring."""

    _for_update = ""
    _for_share = ""
    _skip_locked = ""
    _integrity_errors: tuple[type[Exception], ...] = ()

    # -- supplied by the backend --------------------------------------------------------
    def _transaction(self, body: Callable[[Conn], T], *, write: bool, durable: bool = True) -> T:
        """Run ``body`` in one transaction (``write``: one that may change rows;
        ``durable=False``: its commit does not wait for the disk, see ``record_event``)."""
        raise NotImplementedError

    def _read(self, body: Callable[[Conn], T]) -> T:
        return self._transaction(body, write=False)

    def _write(self, body: Callable[[Conn], T]) -> T:
        return self._transaction(body, write=True)

    def _lock_key(self, conn: Conn, key: str) -> None:
        """Hold a lock on ``key`` until the transaction ends (no-op where writers are
        already serialised)."""

    # -- runs ---------------------------------------------------------------------------
    def _load(self, conn: Conn, run_id: str, *, lock: bool = False) -> Run:
        """One run; ``lock``: hold its row until the transaction ends (FOR UPDATE on
        PostgreSQL, so two hosts changing one run take turns; SQLite's BEGIN IMMEDIATE
        already serialises every writer)."""
        sql = f"{_RUN_SELECT} WHERE id = ?{self._for_update if lock else ''}"
        row = conn.execute(sql, (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return from_row(row, Run)

    @staticmethod
    def _add_event(
        conn: Conn,
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

        def body(conn: Conn) -> Run:
            # Check-then-insert is safe only if no other writer can insert in between: on
            # SQLite BEGIN IMMEDIATE excludes every other writer; on PostgreSQL these
            # transaction-scoped locks exclude those creating for the same trigger or target.
            if trigger is not None:
                self._lock_key(conn, f"trigger:{trigger.kind.value}:{trigger.id}")
            self._lock_key(conn, f"target:{run.repo.lower()}#{run.target}")
            if trigger is not None:
                self._refuse_processed(conn, trigger.kind, trigger.id)
            self._refuse_active(conn, run.repo, run.target)
            try:
                conn.execute(
                    f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                    tuple(row.values()),
                )
            except self._integrity_errors:
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
    def _refuse_processed(conn: Conn, kind: TriggerKind, trigger_id: str) -> None:
        row = conn.execute(
            "SELECT run_id FROM processed_triggers WHERE kind = ? AND id = ?",
            (kind.value, trigger_id),
        ).fetchone()
        if row is not None:
            raise TriggerAlreadyProcessed(kind.value, trigger_id, row[0])

    @staticmethod
    def _refuse_active(conn: Conn, repo: str, target: int) -> None:
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
    def _save(conn: Conn, before: Run, after: Run) -> None:
        """Write the columns in which ``after`` differs from ``before`` (read in this
        transaction), checking the status did not change underneath."""
        changed = changed_columns(before, after)
        if not changed:
            return
        cursor = conn.execute(
            _update_sql(tuple(changed)), (*changed.values(), after.id, before.status.value)
        )
        if cursor.rowcount != 1:  # impossible: the row is locked (IMMEDIATE, FOR UPDATE)
            raise StoreError(f"run {after.id!r} changed underneath an update")

    def transition(
        self,
        run_id: str,
        to: RunStatus,
        *,
        detail: str = "",
        outbox: Iterable[OutboxEntry] = (),
        lease: HostLease | None = None,
        **fields: Any,
    ) -> Run:
        try:
            target_status = RunStatus(to)
        except ValueError:
            raise InvalidUpdate("status", f"{to!r} is not a RunStatus") from None
        self._check_fields(fields)
        entries = [checked_outbox(entry) for entry in outbox]

        def body(conn: Conn) -> Run:
            current = self._load(conn, run_id, lock=True)
            if lease is not None:
                self._check_fence(conn, current, lease)
            if not can_transition(current.status, target_status):
                raise IllegalTransition(run_id, current.status.value, target_status.value)
            now = utcnow()
            changes = dict(fields)
            if lease is not None:  # the run is this host's from now on (a claim binds it)
                changes.update(host=lease.host_id, lease_epoch=lease.epoch)
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

    def update_run(
        self,
        run_id: str,
        *,
        lease: HostLease | None = None,
        expect: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Run:
        self._check_fields(fields)
        for name in expect or {}:
            if name not in Run.__struct_fields__:
                raise InvalidUpdate(name, "expect names a field runs do not have")

        def body(conn: Conn) -> Run:
            current = self._load(conn, run_id, lock=True)
            if lease is not None:
                self._check_fence(conn, current, lease)
            for name, value in (expect or {}).items():
                if getattr(current, name) != value:
                    raise RunChanged(run_id, name, value, getattr(current, name))
            updated = validated(msgspec.structs.replace(current, **fields))
            self._save(conn, current, updated)
            return updated

        return self._write(body)

    def heartbeat(
        self, run_id: str, at: datetime | None = None, *, lease: HostLease | None = None
    ) -> RunStatus:
        stamp = to_db(at or utcnow())

        def body(conn: Conn) -> RunStatus:
            if lease is not None:
                self._check_fence(conn, self._load(conn, run_id, lock=True), lease)
            sql = f"SELECT status FROM runs WHERE id = ?{self._for_update}"
            row = conn.execute(sql, (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            status = RunStatus(row[0])
            if status.is_active:
                conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (stamp, run_id))
            return status

        return self._write(body)

    def record_event(self, run_id: str, detail: str, *, durable: bool = True) -> RunEvent:
        def body(conn: Conn) -> RunEvent:
            sql = f"SELECT status FROM runs WHERE id = ?{self._for_update}"
            row = conn.execute(sql, (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            status, now = RunStatus(row[0]), utcnow()
            self._add_event(
                conn, run_id, at=now, from_status=status, to_status=status, detail=detail
            )
            return RunEvent(
                run_id=run_id, at=now, from_status=status, to_status=status, detail=detail
            )

        return self._transaction(body, write=True, durable=durable)

    def get_run(self, run_id: str) -> Run:
        return self._read(lambda conn: self._load(conn, run_id))

    @staticmethod
    def _events(conn: Conn, run_id: str) -> list[RunEvent]:
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
            "TRUE", (limit, offset), "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
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
        # lower(repo) as written in the index runs_by_target, so the database uses it.
        tail = "ORDER BY created_at DESC, id DESC"
        params: tuple[Any, ...] = (repo, number)
        if limit is not None:
            tail, params = f"{tail} LIMIT ?", (*params, limit)
        return self._runs("lower(repo) = lower(?) AND target = ?", params, tail)

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
    def _insert_trigger(conn: Conn, trigger: ProcessedTrigger) -> None:
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

        def body(conn: Conn) -> bool:
            self._lock_key(conn, f"trigger:{trigger.kind.value}:{trigger.id}")
            try:
                self._refuse_processed(conn, trigger.kind, trigger.id)
            except TriggerAlreadyProcessed:
                return False
            try:
                self._insert_trigger(conn, trigger)
            except self._integrity_errors:
                raise RunNotFound(str(trigger.run_id)) from None
            return True

        return self._write(body)

    # -- HTTP cache -----------------------------------------------------------------------
    _HTTP_SELECT = "SELECT key, etag, last_modified, body, updated_at FROM http_cache"

    def http_cache_get(self, key: str) -> HttpCacheEntry | None:
        return self.http_cache_get_many([key]).get(key)

    def http_cache_get_many(self, keys: Iterable[str] | None = None) -> dict[str, HttpCacheEntry]:
        wanted = None if keys is None else list(dict.fromkeys(keys))

        def body(conn: Conn) -> dict[str, HttpCacheEntry]:
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
        return int(
            self._write(
                lambda conn: (
                    conn.executemany("DELETE FROM http_cache WHERE key = ?", doomed).rowcount
                )
            )
        )

    # -- outbox -------------------------------------------------------------------------
    @staticmethod
    def _insert_outbox(conn: Conn, run_id: str, entry: OutboxEntry, now: datetime) -> OutboxItem:
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

        def body(conn: Conn) -> OutboxItem:
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
        def body(conn: Conn) -> OutboxItem:
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

        def differing(conn: Conn) -> list[dict[str, Any]]:
            changed = []
            for ident, row in latest.items():
                stored = conn.execute(select, ident).fetchone()
                if stored is None or [stored[c] for c in compared] != [row[c] for c in compared]:
                    changed.append(row)
            return changed

        changed = self._read(differing)
        if not changed:
            return 0
        # In key order, so two writers of overlapping batches lock rows in the same order
        # (PostgreSQL would otherwise be free to deadlock them).
        changed.sort(key=lambda row: tuple(row[k] for k in key))
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

        def check(conn: Conn) -> None:
            if session.run_id is not None:
                self._load(conn, session.run_id)  # RunNotFound rather than a bare FK error

        self._upsert("agent_sessions", row, ("repo", "target"), check)

    def _upsert(
        self,
        table: str,
        row: dict[str, Any],
        key: tuple[str, ...],
        check: Callable[[Conn], None] | None = None,
    ) -> None:
        columns = ", ".join(row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in key)
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})"
            f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
        )

        def body(conn: Conn) -> None:
            if check is not None:
                check(conn)
            conn.execute(sql, tuple(row.values()))

        self._write(body)

    # -- hosts, leases and fencing ------------------------------------------------------
    @staticmethod
    def _host(conn: Conn, host_id: str, suffix: str = "") -> HostLease | None:
        row = conn.execute(f"{_HOST_SELECT} WHERE host_id = ?{suffix}", (host_id,)).fetchone()
        return None if row is None else from_row(row, HostLease)

    @staticmethod
    def _put_host(conn: Conn, host: HostLease) -> None:
        row = to_row(host)
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c != "host_id")
        conn.execute(
            f"INSERT INTO hosts ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
            f" ON CONFLICT (host_id) DO UPDATE SET {updates}",
            tuple(row.values()),
        )

    def acquire_host_lease(
        self,
        host_id: str,
        ttl: timedelta,
        *,
        slots: int | None = None,
        takeover: bool = False,
        now: datetime | None = None,
    ) -> HostLease:
        if not host_id:
            raise InvalidUpdate("host_id", "must not be empty")
        if ttl <= timedelta(0):
            raise InvalidUpdate("ttl", "must be positive")
        moment = now or utcnow()

        def body(conn: Conn) -> HostLease:
            self._lock_key(conn, f"host:{host_id}")
            held = self._host(conn, host_id, self._for_update)
            if held is not None and held.lease_expires_at > moment and not takeover:
                raise HostLeaseHeld(host_id, held.lease_expires_at)
            # A new epoch for every acquisition: whatever an earlier holder of this host id
            # still writes with its old epoch is refused from now on.
            lease = HostLease(
                host_id=host_id,
                epoch=1 if held is None else held.epoch + 1,
                acquired_at=moment,
                lease_expires_at=moment + ttl,
                heartbeat_at=moment,
                slots=slots,
                running=0,
            )
            self._put_host(conn, validated(lease))
            return lease

        return self._write(body)

    def renew_host_lease(
        self,
        host_id: str,
        epoch: int,
        ttl: timedelta,
        *,
        running: int | None = None,
        slots: int | None = None,
        now: datetime | None = None,
    ) -> HostLease:
        moment = now or utcnow()

        def body(conn: Conn) -> HostLease:
            held = self._host(conn, host_id, self._for_update)
            if held is None or held.epoch != epoch:
                raise LeaseLost(host_id, epoch, None if held is None else held.epoch)
            renewed = msgspec.structs.replace(
                held,
                lease_expires_at=moment + ttl,
                heartbeat_at=moment,
                running=held.running if running is None else running,
                slots=held.slots if slots is None else slots,
            )
            self._put_host(conn, validated(renewed))
            return renewed

        return self._write(body)

    def release_host_lease(self, host_id: str, epoch: int, *, now: datetime | None = None) -> None:
        stamp = to_db(now or utcnow())
        self._write(
            lambda conn: conn.execute(
                "UPDATE hosts SET lease_expires_at = ?, running = 0"
                " WHERE host_id = ? AND epoch = ?",
                (stamp, host_id, epoch),
            )
        )

    def hosts(self) -> list[HostLease]:
        return self._read(
            lambda conn: [
                from_row(r, HostLease) for r in conn.execute(f"{_HOST_SELECT} ORDER BY host_id")
            ]
        )

    def expired_hosts(self, *, now: datetime | None = None) -> list[HostLease]:
        stamp = to_db(now or utcnow())
        return self._read(
            lambda conn: [
                from_row(r, HostLease)
                for r in conn.execute(
                    f"{_HOST_SELECT} WHERE lease_expires_at <= ? ORDER BY host_id", (stamp,)
                )
            ]
        )

    def _check_fence(self, conn: Conn, run: Run, lease: HostLease) -> None:
        """Refuse a write of ``lease``'s holder if its lease was superseded, or if the run
        belongs to another holder (another host, or an earlier or later epoch of this one).
        A queued run is anyone's to claim: the status machine lets only one claim win."""
        # FOR SHARE: a take-over (which updates this row) waits until this write is done,
        # so a write is either before the take-over, or refused.
        current = self._host(conn, lease.host_id, self._for_share)
        if current is None or current.epoch != lease.epoch:
            raise LeaseLost(lease.host_id, lease.epoch, None if current is None else current.epoch)
        if run.status is RunStatus.QUEUED or run.lease_epoch is None:
            return
        if (run.host, run.lease_epoch) != (lease.host_id, lease.epoch):
            raise RunOwnedElsewhere(run.id, run.host, run.lease_epoch, lease.host_id, lease.epoch)

    def take_over_runs(
        self, dead_host_id: str, lease: HostLease, *, now: datetime | None = None
    ) -> list[Run]:
        moment = now or utcnow()

        def body(conn: Conn) -> list[Run]:
            taker = self._host(conn, lease.host_id)
            if taker is None or taker.epoch != lease.epoch:
                raise LeaseLost(lease.host_id, lease.epoch, None if taker is None else taker.epoch)
            dead = self._host(conn, dead_host_id, self._for_update)
            if dead is not None:
                if dead.lease_expires_at > moment and dead_host_id != lease.host_id:
                    raise HostLeaseHeld(dead_host_id, dead.lease_expires_at)
                if dead_host_id != lease.host_id:
                    # Fence the dead host: its epoch moves on, so anything it still writes
                    # (it may be only paused, not dead) is refused with LeaseLost.
                    conn.execute(
                        "UPDATE hosts SET epoch = epoch + 1, running = 0 WHERE host_id = ?",
                        (dead_host_id,),
                    )
            rows = conn.execute(
                f"{_RUN_SELECT} WHERE host = ? AND status IN {_ACTIVE_SQL}"
                f" ORDER BY created_at, id{self._for_update}",
                (dead_host_id,),
            ).fetchall()
            taken = []
            for row in rows:
                run = from_row(row, Run)
                if dead_host_id == lease.host_id and run.lease_epoch == lease.epoch:
                    continue  # this holder's own runs: nothing to take over
                mine = msgspec.structs.replace(run, host=lease.host_id, lease_epoch=lease.epoch)
                self._save(conn, run, mine)
                taken.append(mine)
            return taken

        return self._write(body)

    def claim_next(
        self, lease: HostLease, *, limit: int = 1, detail: str = "", **fields: Any
    ) -> list[Run]:
        if limit < 0:
            raise InvalidUpdate("limit", "must not be negative")
        self._check_fields(fields)

        def body(conn: Conn) -> list[Run]:
            holder = self._host(conn, lease.host_id, self._for_share)  # as in _check_fence
            if holder is None or holder.epoch != lease.epoch:
                raise LeaseLost(
                    lease.host_id, lease.epoch, None if holder is None else holder.epoch
                )
            rows = conn.execute(
                f"{_RUN_SELECT} WHERE status = 'queued' ORDER BY created_at, id"
                f" LIMIT ?{self._skip_locked}",
                (limit,),
            ).fetchall()
            now = utcnow()
            claimed = []
            for row in rows:
                run = from_row(row, Run)
                changes = {**fields, "host": lease.host_id, "lease_epoch": lease.epoch}
                mine = validated(msgspec.structs.replace(run, status=RunStatus.CLAIMED, **changes))
                self._save(conn, run, mine)
                self._add_event(
                    conn,
                    run.id,
                    at=now,
                    from_status=RunStatus.QUEUED,
                    to_status=RunStatus.CLAIMED,
                    detail=detail or f"claimed by {lease.host_id}",
                )
                claimed.append(mine)
            return claimed

        return self._write(body)

    # -- leadership (who polls GitHub for the fleet) ------------------------------------
    def acquire_leadership(
        self, name: str, host_id: str, ttl: timedelta, *, now: datetime | None = None
    ) -> bool:
        moment = now or utcnow()
        if ttl <= timedelta(0):
            raise InvalidUpdate("ttl", "must be positive")

        def body(conn: Conn) -> bool:
            self._lock_key(conn, f"leader:{name}")
            row = conn.execute(
                f"SELECT host_id, expires_at FROM leaders WHERE name = ?{self._for_update}",
                (name,),
            ).fetchone()
            if row is not None and row[0] != host_id and row[1] > to_db(moment):
                return False  # another host leads and its lease runs
            conn.execute(
                "INSERT INTO leaders (name, host_id, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET host_id = excluded.host_id,"
                " expires_at = excluded.expires_at",
                (name, host_id, to_db(moment + ttl)),
            )
            return True

        return self._write(body)

    def release_leadership(self, name: str, host_id: str) -> None:
        self._write(
            lambda conn: conn.execute(
                "DELETE FROM leaders WHERE name = ? AND host_id = ?", (name, host_id)
            )
        )

    # -- copying a whole store (copy_store) ---------------------------------------------
    def table_counts(self) -> dict[str, int]:
        def body(conn: Conn) -> dict[str, int]:
            return {
                table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in COPIED_TABLES
            }

        return self._read(body)

    def export_tables(self) -> dict[str, list[dict[str, Any]]]:
        def body(conn: Conn) -> dict[str, list[dict[str, Any]]]:
            tables = {}
            for table, (columns, order) in COPIED_TABLES.items():
                sql = f"SELECT {columns} FROM {table} ORDER BY {order}"
                tables[table] = [dict(r) for r in conn.execute(sql)]
            return tables

        return self._read(body)

    def import_tables(self, tables: dict[str, list[dict[str, Any]]]) -> None:
        from ._errors import CopyTargetNotEmpty

        def body(conn: Conn) -> None:
            for table in COPIED_TABLES:
                found = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                if found:
                    raise CopyTargetNotEmpty(self._location(), table, found)
            for table in COPIED_TABLES:  # parents before children, for the foreign keys
                rows = tables.get(table, [])
                columns = COPIED_TABLES[table][0].replace(" ", "").split(",")
                if not rows:
                    continue
                conn.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)})"
                    f" VALUES ({', '.join('?' * len(columns))})",
                    [tuple(row[c] for c in columns) for row in rows],
                )

        self._write(body)

    def _location(self) -> str:
        """The file or (password-free) URL, for error messages."""
        raise NotImplementedError
