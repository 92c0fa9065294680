"""A fleet of runner hosts on one PostgreSQL store: this host's lease, the poll
leadership, the one queue and the take-over of lost hosts.

Only used when the store is PostgreSQL (``config.database_url``); on SQLite there is one
host and the daemon keeps its single-host behaviour. Each pass of a fleet daemon:

1. ``beat``: renew this host's lease (running count and slots go with it, for
   ``cgr status``). A lease found superseded (``LeaseLost``: the host was paused past its
   lease and another host took its runs over) is re-acquired under a new epoch: the runs
   it had are someone else's now, and fenced writes keep it from touching them.
2. ``take_over_lost``: every live host's reaper lists the hosts whose lease ran out and
   takes their active runs (``take_over_runs`` fences the dead host in the same
   transaction). A run whose agent never started (queued or claimed) goes back to the
   queue for any host; a running one is ended ``failed`` through ``end_run``, so GitHub
   shows it (labels and the status comment) - nobody can resume another host's agent.
3. ``leads_polling``: one host at a time polls GitHub and writes queued runs for the whole
   fleet (``acquire_leadership("poll", …)`` with a TTL of one poll interval plus a margin,
   so a dead leader is replaced within about one interval). The others never poll: the
   fleet's idle GitHub requests are one host's.
4. ``claim``: every host (the leader too) takes queued runs with ``claim_next`` (``FOR
   UPDATE SKIP LOCKED``: a run is claimed once) up to its free slots, and starts a child
   for each; the claim binds the run to this host and its lease epoch, and the child's
   writes carry that epoch (``run/_fence.py``).

**Webhooks with a fleet** (``[webhook] listen`` on several daemons, e.g. behind one load
balancer, or GitHub pointed at any one of them): every host accepts deliveries. A delivery
id is recorded in the shared store before anything else (``mark_trigger_processed`` is one
insert under a unique key), so GitHub's redelivery, or one delivery sent to two hosts, is
handled once and answered "duplicate" by the other. The payload stays a hint: a host that
does not lead the polling re-reads the hinted repositories itself at once (``hints``: the
same ``plan_pass``, queueing for the fleet, never more than the fleet's free slots), and
the store's rules (one active run per target, processed triggers) keep two hosts that
read the same repository at the same instant from queueing it twice. The leader's poll
every ``polling.interval_seconds`` is the reconciliation (a fleet does not stretch it to
``webhook.reconcile_seconds``: the poll costs one host's requests, not the fleet's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from cgr_cli._errors import BusyError
from cgr_cli.config._model import Config

if TYPE_CHECKING:
    from cgr_cli.schedule._github import GitHubSession
    from cgr_cli.schedule._plan import PassReport
    from cgr_store import HostLease, Run, Store

log = logging.getLogger("cgr.fleet")

POLL_LEADERSHIP = "poll"


class HostIdTakenError(BusyError):
    """Another live process holds this host id's lease (two daemons with one ``host_id``)."""

    def __init__(self, host_id: str, expires_at: str) -> None:
        self.host_id = host_id
        super().__init__(
            f"another cgr daemon holds the lease of host {host_id!r} (until {expires_at}); "
            "give each host its own fleet.host_id, or stop the other daemon"
        )


class Fleet:
    """This host's membership of the fleet; see the module docstring."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.host_id = config.host_id
        self.ttl = timedelta(seconds=config.fleet.lease_seconds)
        # One interval plus a margin: the leader renews every interval, and a pass that
        # runs a little late must not hand the leadership over.
        self.poll_ttl = timedelta(seconds=config.polling.interval_seconds * 1.5)
        self._lease: HostLease | None = None
        self._leading = False

    @property
    def lease(self) -> HostLease:
        if self._lease is None:
            raise RuntimeError("Fleet.join() first")
        return self._lease

    def join(self, *, takeover: bool = False) -> HostLease:
        """Acquire this host's lease (a new epoch). ``HostIdTakenError`` if it is live
        elsewhere."""
        from cgr_store import HostLeaseHeld

        try:
            self._lease = self.store.acquire_host_lease(
                self.host_id, self.ttl, slots=self.config.polling.run_slots,
                takeover=takeover,
            )  # fmt: skip
        except HostLeaseHeld as exc:
            raise HostIdTakenError(self.host_id, exc.expires_at.isoformat()) from None
        log.info("host %s joined the fleet (epoch %d)", self.host_id, self._lease.epoch)
        return self._lease

    def resume(self) -> HostLease:
        """For ``cgr tick`` (a process per pass): carry on with this host's lease as the
        previous pass left it (renewed under its epoch), or acquire one. The host-local
        scheduler locks already keep a daemon and a tick of one host apart; the tick timer
        must fire more often than ``fleet.lease_seconds``, or the host's runs look lost."""
        from cgr_store import LeaseLost

        mine = next((h for h in self.store.hosts() if h.host_id == self.host_id), None)
        if mine is not None:
            try:
                self._lease = self.store.renew_host_lease(
                    self.host_id, mine.epoch, self.ttl, slots=self.config.polling.run_slots
                )
            except LeaseLost:
                pass  # taken over meanwhile: a new epoch
            else:
                return self._lease
        return self.join(takeover=True)

    def beat(self, running: int) -> HostLease:
        from cgr_store import LeaseLost

        try:
            self._lease = self.store.renew_host_lease(
                self.host_id, self.lease.epoch, self.ttl, running=running,
                slots=self.config.polling.run_slots,
            )  # fmt: skip
        except LeaseLost:
            # Our runs were taken over while we were away; start a new epoch.
            log.warning("host %s lost its lease; joining again", self.host_id)
            self._lease = self.store.acquire_host_lease(
                self.host_id, self.ttl, slots=self.config.polling.run_slots,
                takeover=True,
            )  # fmt: skip
        return self._lease

    def leads_polling(self) -> bool:
        leading = self.store.acquire_leadership(POLL_LEADERSHIP, self.host_id, self.poll_ttl)
        if leading != self._leading:
            self._leading = leading
            what = "now polls GitHub for the fleet" if leading else "no longer polls"
            log.info("host %s %s", self.host_id, what)
        return leading

    def fleet_free_slots(self) -> int:
        """Runs the leader may queue now: the fleet's limit minus its active runs.

        The limit is ``polling.fleet_max_concurrency``, else the sum of the live hosts'
        slots (so the queue never grows past what the fleet can take at once).
        """
        from cgr_store import utcnow

        limit = self.config.polling.fleet_max_concurrency
        if limit is None:
            now = utcnow()
            live = [h for h in self.store.hosts() if h.lease_expires_at > now]
            limit = sum(h.slots or 0 for h in live) or self.config.polling.run_slots
        return max(0, limit - len(self.store.active_runs()))

    def claim(self, slots: int) -> list[Run]:
        """Queued runs for this host (at most ``slots``), claimed under its lease."""
        if slots <= 0:
            return []
        return self.store.claim_next(
            self.lease, limit=slots, detail=f"claimed by host {self.host_id}",
            pid=None, process_start_time=None,
        )  # fmt: skip

    async def take_over_lost(self, github: GitHubSession) -> dict[str, list[str]]:
        """End or requeue the runs of every host whose lease ran out; returns
        ``{"requeued": [...], "ended": [...]}`` (run ids)."""
        from cgr_cli.run._report import Outcome
        from cgr_cli.schedule._reaper import end_run
        from cgr_store import FencingError, HostLeaseHeld, RunStatus, StoreError

        done: dict[str, list[str]] = {"requeued": [], "ended": []}
        for dead in self.store.expired_hosts():
            if dead.host_id == self.host_id or not self.store.active_runs(host=dead.host_id):
                # Nothing to take over (a host stopped cleanly): a read, not a write that
                # every live host would repeat every pass.
                continue
            try:
                runs = self.store.take_over_runs(dead.host_id, self.lease)
            except (HostLeaseHeld, FencingError):
                continue  # it came back, or another host was faster
            why = (
                f"host {dead.host_id} stopped renewing its lease "
                f"(more than {self.config.fleet.lease_seconds:g}s)"
            )
            for run in runs:
                try:
                    if run.status is RunStatus.RUNNING:
                        if await end_run(
                            self.config, self.store, github, run, RunStatus.FAILED,
                            outcome=Outcome.FAILED,
                            error=f"{why}; its agent was lost with it. Ask again to retry.",
                        ):  # fmt: skip
                            done["ended"].append(run.id)
                        continue
                    if run.status is RunStatus.CLAIMED:
                        self.store.transition(
                            run.id, RunStatus.QUEUED, lease=self.lease,
                            detail=f"requeued: {why} before its agent started",
                            pid=None, process_start_time=None,
                        )  # fmt: skip
                    # A queued run is anyone's already: it simply stays in the queue.
                    done["requeued"].append(run.id)
                except StoreError:
                    log.exception("taking over run %s of host %s", run.id, dead.host_id)
            if runs:
                log.info("took over %d run(s) of lost host %s", len(runs), dead.host_id)
        return done

    def leave(self) -> None:
        """A clean stop: the leadership and the lease are handed back at once."""
        from cgr_store import StoreError

        if self._lease is None:
            return
        try:
            self.store.release_leadership(POLL_LEADERSHIP, self.host_id)
            self.store.release_host_lease(self.host_id, self._lease.epoch)
        except StoreError:
            log.warning("could not release the lease of host %s", self.host_id, exc_info=True)
        self._lease = None


async def fleet_pass(
    fleet: Fleet,
    store: Store,
    github: GitHubSession,
    *,
    running: int,
    slots: int,
    report: PassReport,
    hints: Callable[[], list[str]] | None = None,
) -> list[Run]:
    """One fleet scheduling pass (see the module docstring); returns the runs this host
    claimed and must start now (``slots`` at most). ``running < 0``: the lease was just
    renewed (a tick's ``resume``). ``hints``: takes the repositories webhook deliveries to
    this host named since the last pass (``WebhookIntake.take_hints``)."""
    import msgspec

    from cgr_cli.schedule._plan import plan_pass

    if running >= 0:
        fleet.beat(running)
    taken = await fleet.take_over_lost(github)
    if any(taken.values()):
        log.info("lost hosts: %s", {k: v for k, v in taken.items() if v})
    hinted = hints() if hints is not None else []
    if fleet.leads_polling():
        # The full pass reads the hinted repositories too.
        await plan_pass(
            fleet.config, store, github, host=fleet.host_id, slots=fleet.fleet_free_slots(),
            owner=None, report=report,
        )  # fmt: skip
    elif hinted:
        log.info("host %s re-reads %s (webhook)", fleet.host_id, ", ".join(hinted))
        await plan_pass(
            msgspec.structs.replace(fleet.config, repositories=hinted), store, github,
            host=fleet.host_id, slots=fleet.fleet_free_slots(), owner=None, report=report,
        )  # fmt: skip
    claimed = fleet.claim(slots)
    report.started = [r.id for r in claimed]
    return claimed


def join_fleet(config: Config, store: Store) -> Fleet | None:
    """This host's fleet membership when the store is PostgreSQL, else None (one host)."""
    from cgr_cli.config._store import is_fleet

    if not is_fleet(config):
        return None
    fleet = Fleet(config, store)
    fleet.join()
    return fleet
