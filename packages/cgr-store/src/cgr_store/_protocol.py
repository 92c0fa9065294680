"""The Store protocol: what cgr needs from any backend (SQLite now, PostgreSQL later).

The methods are synchronous on purpose: fork children and the daemon's bookkeeping call them
directly. Async code calls them through a worker thread, e.g.
``await anyio.to_thread.run_sync(store.get_run, run_id)``; SQLiteStore is thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

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
from ._status import RunKind, RunStatus, TriggerKind

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """Run records with a checked status machine. All errors are cgr_store.StoreError."""

    # -- runs ---------------------------------------------------------------------------
    def create_run(self, run: Run, *, trigger: ProcessedTrigger | None = None) -> Run:
        """Insert a queued run and its creation event; with ``trigger``, mark it processed in
        the same transaction. Raises ActiveRunExists, TriggerAlreadyProcessed, RunExists."""
        ...

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
        """Move a run to ``to`` (checked against ALLOWED_TRANSITIONS), set ``fields`` and
        append a RunEvent, all in one transaction. Sets ``started_at`` on running and
        ``ended_at`` on a terminal status unless given. Raises IllegalTransition.

        ``outbox``: entries recorded for the run in the same transaction (as put_outbox), so
        a crash never leaves a run ended without the report it must send.

        ``lease``: a fenced write (see HostLease): refused with LeaseLost if the lease was
        superseded, RunOwnedElsewhere if another holder owns the run; the run is then
        stamped with the lease's host and epoch (a claim binds it to the host)."""
        ...

    def update_run(
        self,
        run_id: str,
        *,
        lease: HostLease | None = None,
        expect: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Run:
        """Set non-status fields (pid, branch, pr_number, cost_usd, ...). Raises InvalidUpdate;
        with ``lease``, fenced as transition(). ``expect``: fields (``status`` too) the run
        must still have, checked in the same transaction as the write - else RunChanged
        and nothing is written (a compare-and-set: who runs a run is decided this way)."""
        ...

    def heartbeat(
        self, run_id: str, at: datetime | None = None, *, lease: HostLease | None = None
    ) -> RunStatus:
        """Record that an active run is alive; returns its status (a runner that sees a
        terminal one, e.g. cancelled, should stop)."""
        ...

    def record_event(self, run_id: str, detail: str, *, durable: bool = True) -> RunEvent:
        """Append an event that changes nothing (``from_status == to_status`` = the run's
        status now): something that happened to the run without moving it, e.g. one
        attempt of a GitHub write. Raises RunNotFound.

        ``durable=False``: committed without waiting for the disk (SQLite: this one
        commit at ``synchronous = NORMAL``; PostgreSQL: ``synchronous_commit = off``). A
        killed process loses nothing; a power cut may lose such events, never one that was
        followed by a durable commit, which makes them durable too. For history lines that
        decide nothing."""
        ...

    def get_run(self, run_id: str) -> Run:
        """One run. Raises RunNotFound."""
        ...

    def events(self, run_id: str) -> list[RunEvent]:
        """The run's status history, oldest first. Raises RunNotFound."""
        ...

    def run_with_events(self, run_id: str) -> tuple[Run, list[RunEvent]]:
        """A run and its history, read consistently. Raises RunNotFound."""
        ...

    # -- queries ------------------------------------------------------------------------
    def active_runs(self, host: str | None = None) -> list[Run]:
        """Queued, claimed and running runs (of one host if given), oldest first."""
        ...

    def runs_by_status(self, *statuses: RunStatus) -> list[Run]:
        """Runs in any of ``statuses``, oldest first."""
        ...

    def recent_runs(self, limit: int = 20, offset: int = 0) -> list[Run]:
        """Runs newest first, one page."""
        ...

    def stale_runs(
        self, older_than: timedelta, host: str | None = None, *, now: datetime | None = None
    ) -> list[Run]:
        """Active runs whose last sign of life (heartbeat, else start, else creation) is
        older than ``older_than``."""
        ...

    def runs_for_target(self, repo: str, number: int, *, limit: int | None = None) -> list[Run]:
        """Every run on one issue or pull request, newest first (at most ``limit``).
        ``repo`` is compared case-insensitively, as GitHub does. Indexed."""
        ...

    def run_for_branch(
        self, repo: str, branch: str, *, kinds: Iterable[RunKind] | None = None
    ) -> Run | None:
        """The newest run of ``repo`` that worked on ``branch`` (of one of ``kinds`` if
        given), or None. ``repo`` is compared case-insensitively. Indexed."""
        ...

    def counts(self) -> dict[RunStatus, int]:
        """Number of runs per status; every status is present."""
        ...

    # -- triggers, cursors, agent sessions ----------------------------------------------
    def is_trigger_processed(self, kind: TriggerKind, trigger_id: str) -> bool: ...

    def get_trigger(self, kind: TriggerKind, trigger_id: str) -> ProcessedTrigger | None: ...

    def mark_trigger_processed(self, trigger: ProcessedTrigger) -> bool:
        """Record a trigger handled without a run; False if it was already processed."""
        ...

    def get_cursor(self, repo: str, stream: str) -> Cursor | None: ...

    def set_cursor(self, cursor: Cursor) -> None: ...

    def get_cursors(self, repo: str | None = None) -> list[Cursor]:
        """Every cursor (of one repository if given), by repo and stream: one read."""
        ...

    def set_cursors(self, cursors: Iterable[Cursor]) -> int:
        """Write the cursors whose ``since`` or ``etag`` differ from the stored ones, all in
        one transaction; returns how many were written (0: nothing written at all)."""
        ...

    def get_agent_session(self, repo: str, target: int) -> AgentSession | None: ...

    def set_agent_session(self, session: AgentSession) -> None: ...

    # -- HTTP cache of discovery ---------------------------------------------------------
    def http_cache_get(self, key: str) -> HttpCacheEntry | None: ...

    def http_cache_get_many(self, keys: Iterable[str] | None = None) -> dict[str, HttpCacheEntry]:
        """The entries of ``keys`` that exist (every entry if None), in one read."""
        ...

    def http_cache_put_many(self, entries: Iterable[HttpCacheEntry]) -> int:
        """Write the entries whose etag, last_modified or body changed, in one transaction;
        returns how many were written (0: nothing written at all)."""
        ...

    def http_cache_delete(self, keys: Iterable[str]) -> int:
        """Forget entries; returns how many existed."""
        ...

    # -- outbox of GitHub writes ---------------------------------------------------------
    def put_outbox(self, run_id: str, entry: OutboxEntry) -> OutboxItem:
        """Record a write to send for a run; idempotent on (run_id, entry.key): the first
        entry of a key is kept and returned again. Raises RunNotFound, InvalidUpdate (a
        payload that is not JSON)."""
        ...

    def pending_outbox(self, limit: int = 100, *, run_id: str | None = None) -> list[OutboxItem]:
        """Items not delivered yet (of one run if given), oldest first."""
        ...

    def outbox_for_run(self, run_id: str) -> list[OutboxItem]:
        """Every item of a run, delivered or not, oldest first."""
        ...

    def mark_outbox_delivered(self, item_id: int, *, at: datetime | None = None) -> OutboxItem:
        """Mark an item sent; a second call keeps the first time. Raises OutboxItemNotFound."""
        ...

    def record_outbox_failure(
        self, item_id: int, error: str, *, at: datetime | None = None
    ) -> OutboxItem:
        """Count a failed attempt (``attempts + 1``, ``last_error``, ``last_attempt_at``); the
        item stays pending. Raises OutboxItemNotFound."""
        ...

    # -- hosts, leases, the queue and leadership (a fleet on one PostgreSQL) ---------------
    def acquire_host_lease(
        self,
        host_id: str,
        ttl: timedelta,
        *,
        slots: int | None = None,
        takeover: bool = False,
        now: datetime | None = None,
    ) -> HostLease:
        """Start holding ``host_id``'s lease until now + ttl, with a new epoch. Raises
        HostLeaseHeld while another holder's lease is live, unless ``takeover`` (a restart
        of this very host that cannot wait for its old lease to expire)."""
        ...

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
        """Extend the lease to now + ttl (the host's heartbeat). Raises LeaseLost if the
        epoch was superseded: the host must stop touching its runs."""
        ...

    def release_host_lease(self, host_id: str, epoch: int, *, now: datetime | None = None) -> None:
        """End the lease now (a clean shutdown), if ``epoch`` still holds it."""
        ...

    def hosts(self) -> list[HostLease]:
        """Every host that ever held a lease, by host id."""
        ...

    def expired_hosts(self, *, now: datetime | None = None) -> list[HostLease]:
        """Hosts whose lease ran out (their runs are for take_over_runs)."""
        ...

    def take_over_runs(
        self, dead_host_id: str, lease: HostLease, *, now: datetime | None = None
    ) -> list[Run]:
        """Make the active runs of a host whose lease expired ``lease``'s, and fence the
        dead host (its epoch moves on). The caller then ends or requeues them with fenced
        transitions. Raises HostLeaseHeld if that lease is still live, LeaseLost if
        ``lease`` itself was superseded."""
        ...

    def claim_next(
        self, lease: HostLease, *, limit: int = 1, detail: str = "", **fields: Any
    ) -> list[Run]:
        """Claim up to ``limit`` of the oldest queued runs for ``lease``'s host (status
        claimed, stamped with host and epoch, ``fields`` set). Concurrent claimers never
        get the same run; on PostgreSQL they skip the rows others are claiming."""
        ...

    def acquire_leadership(
        self, name: str, host_id: str, ttl: timedelta, *, now: datetime | None = None
    ) -> bool:
        """Lead ``name`` (e.g. ``poll``) until now + ttl: True if no other host leads it with
        a live lease. Call it again each interval to stay leader. SQLite: always True."""
        ...

    def release_leadership(self, name: str, host_id: str) -> None: ...

    # -- copying a whole store (copy_store) ---------------------------------------------
    def table_counts(self) -> dict[str, int]:
        """Rows per table that copy_store copies."""
        ...

    def export_tables(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every copied table, as stored, in one consistent read."""
        ...

    def import_tables(self, tables: dict[str, list[dict[str, Any]]]) -> None:
        """Insert rows exported from another store, every table in one transaction.
        Refuses (CopyTargetNotEmpty) if any copied table already has rows."""
        ...

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
