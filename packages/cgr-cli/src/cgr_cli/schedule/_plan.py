"""What ``cgr tick`` and ``cgr daemon`` share: slots, locks, and turning jobs into runs.

The rules that keep work from being lost or duplicated:

- **The row comes first.** A job becomes a ``queued`` run (``create_run``) before any
  process is started for it, and the trigger that caused it (a comment) is marked
  processed in the same transaction. The store's partial unique index refuses a second
  active run on one target, so two schedulers racing for the same issue make one run.
- **Cursors never pass a job that was not taken.** Jobs beyond the free slots are left
  out of ``accepted``; ``advance_cursors`` then holds the stream cursor at the earliest of
  them, so a later pass (tick or daemon) finds them again.
- **A run always names a live owner.** A new row carries the scheduler's own process
  identity until the child it starts replaces it; if the scheduler dies in between, the
  reaper sees the owner gone and ends the run visibly.
- **One scheduler at a time.** Ticks serialise their passes on ``<db>.schedule.lock``; a
  daemon holds ``<db>.daemon.lock`` exclusively for its whole life, and a tick holds it
  shared during its pass, so a tick refuses to run while a daemon owns the store and a
  daemon waits for a tick in progress.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from cgr_cli.config._model import Config, is_pattern
from cgr_cli.schedule._backoff import Backoff, preclaim_backoffs, requeue_backoff
from cgr_cli.schedule._github import discovery_config
from cgr_cli.schedule._runs import last_run_on, waiting_for_scheduler
from cgr_cli.schedule._triggers import STREAMS, ProcessedInStore, processed_trigger, run_kind_for

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from cgr_cli.schedule._github import GitHubSession
    from cgr_discovery import PollResult
    from cgr_exec import ProcessIdentity
    from cgr_store import Run, RunStatus, Store


@dataclass(slots=True)
class PassReport:
    """One scheduling pass: what it found and did (printed by tick, logged by the daemon)."""

    free_slots: int = 0
    discovered: int = 0
    started: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    rejected: int = 0
    cancelled: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    backed_off: list[Backoff] = field(default_factory=list)
    # Ready issues left alone: "owner/name#N: reason" (assigned, blocked; backed-off ones
    # are in backed_off). Repositories whose discovery failed: failed_repos.
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed_repos: list[str] = field(default_factory=list)

    def pending_repos(self) -> list[str]:
        """The repositories whose jobs this pass left pending (no free slot), in the order
        the pass would have taken their jobs."""
        return list(dict.fromkeys(where.rpartition("#")[0] for where in self.pending))

    def all_repos_failed(self, repositories: list[str]) -> bool:
        """True when there was something to poll and every repository failed."""
        return bool(repositories) and set(repositories) <= set(self.failed_repos)

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        return {
            "free_slots": self.free_slots,
            "discovered": self.discovered,
            "started": self.started,
            "pending": self.pending,
            "busy": self.busy,
            "rejected": self.rejected,
            "cancelled": self.cancelled,
            "errors": self.errors,
            "backed_off": [b.as_dict(now) for b in self.backed_off],
            "skipped": self.skipped
            + [
                {"repo": b.repo, "number": b.target, "reason": "backed off", **b.as_dict(now)}
                for b in self.backed_off
            ],
            "failed_repos": self.failed_repos,
        }


async def plan_first_pending(
    plan_over: Callable[[list[str], int], Awaitable[list[Run]]], repos: list[str], slots: int
) -> tuple[list[Run], list[str]]:
    """A pass for ``slots`` jobs over the repositories whose jobs an earlier pass left
    pending (``repos``, in the order passes take jobs): the first read alone, the others
    only when it has fewer jobs than ``slots`` (one gone meanwhile). ``plan_over(repos,
    slots)`` is the pass over some of them. Returns the runs and the repositories it did
    not read (still pending as far as the caller knows).

    Refills (a daemon woken by a child's end, a tick child taking its next job) use it:
    jobs are taken repository by repository, so re-reading every pending repository for
    each (three lists each) cost requests and CPU for nothing."""
    first, rest = repos[:1], repos[1:]
    planned = await plan_over(first, slots)
    if len(planned) >= slots or not rest:
        return planned, rest
    return [*planned, *await plan_over(rest, slots - len(planned))], []


async def plan_pass(  # noqa: PLR0912, PLR0915 - one decision per kind of job, in one place
    config: Config,
    store: Store,
    github: GitHubSession,
    *,
    host: str,
    slots: int,
    owner: ProcessIdentity | None,
    report: PassReport,
) -> list[Run]:
    """Discover and write the runs to start now (at most ``slots``), trigger marked processed
    in the same transaction, cursors advanced only past what was taken.

    Returns the queued runs; their rows name ``owner`` (the scheduler) until the caller
    records the child it starts for each. ``owner=None`` (the poll leader of a fleet,
    _fleet): the runs are written for the fleet's queue, naming no host or process, and
    every host claims them with ``claim_next``.
    """
    from cgr_cli.schedule._control import cancel_target
    from cgr_discovery import JobKind, StreamCursor, advance_cursors, discover
    from cgr_store import (
        ActiveRunExists,
        Cursor,
        Run,
        TriggerAlreadyProcessed,
        new_run_id,
        utcnow,
    )

    report.free_slots = slots
    if any(is_pattern(r) for r in config.repositories):  # a GitHub App's "acme/*"
        config = msgspec.structs.replace(config, repositories=await github.followed(config))
    planned: list[Run] = []
    # Runs `cgr retry` left queued without a process come first: they were asked for.
    # (A fleet's leader leaves them to claim_next.)
    for run in store.runs_by_status(_queued()) if owner is not None else []:
        if owner is None or len(planned) >= slots:
            break
        if waiting_for_scheduler(run):
            waiting = requeue_backoff(config, store, run, now=datetime.now(UTC))
            if waiting is not None:
                report.backed_off.append(waiting)  # requeued after a transient failure
                continue
            # Handed out now (heartbeat_at): the reaper gives a row whose named process
            # died back to the queue only some time after it was handed out.
            handed = store.update_run(
                run.id,
                host=host,
                pid=owner.pid,
                process_start_time=float(owner.start_time),
                heartbeat_at=utcnow(),
            )
            planned.append(handed)
    # Every stored cursor in one read (one query per repository and stream was 1,500 of
    # them a pass at 500 repositories), those of the repositories polled now kept.
    stored = {(c.repo, c.stream): c for c in store.get_cursors()}
    cursors = [
        StreamCursor(repo=c.repo, stream=stream, since=c.since, etag=c.etag)
        for repo in config.repositories
        for stream in STREAMS
        if (c := stored.get((repo, stream))) is not None
    ]
    listed_at = datetime.now(UTC)  # GitHub's answers below are at least this recent
    result: PollResult = await discover(
        github.gh,
        config.repositories,
        discovery_config(config, github.bot),
        cursors=cursors,
        processed=ProcessedInStore(store),
        labellers=github.labellers,
    )
    report.discovered = len(result.jobs)
    report.errors += [f"{e.repo}: {e.error}" for e in result.errors]
    report.failed_repos += sorted({e.repo for e in result.errors})
    report.skipped += [
        {"repo": s.repo, "number": s.number, "reason": s.reason} for s in result.skipped
    ]
    for rejected in result.rejected:
        trigger = processed_trigger(rejected.job)
        if trigger is not None:
            store.mark_trigger_processed(trigger)  # decided: never reported again
        report.rejected += 1
    accepted: set[str] = set()
    backoffs = preclaim_backoffs(
        config,
        store,
        {(j.repo, j.number) for j in result.jobs if j.kind is JobKind.READY_ISSUE},
        now=datetime.now(UTC),
    )
    for job in result.jobs:
        where = f"{job.repo}#{job.number}"
        backoff = backoffs.get((job.repo, job.number))
        if job.kind is JobKind.READY_ISSUE and backoff is not None:
            # Not accepted and nothing written: the issue keeps its label and a pass after
            # retry_at takes it. It holds no slot meanwhile.
            report.backed_off.append(backoff)
            continue
        if job.kind is JobKind.READY_ISSUE and _listing_stale(store, job.repo, job.number,
                                                              listed_at):  # fmt: skip
            # A run on it ended (or began) while this pass was listing: the listing may
            # predate its claim (`ready` taken off). Not accepted: the next pass, listing
            # afresh, decides.
            report.busy.append(where)
            continue
        if job.kind is JobKind.CANCEL:
            done = await cancel_target(
                config, store, github, job.repo, job.number, why=f"@{job.author} asked to cancel"
            )
            report.cancelled += done
            trigger = processed_trigger(job)
            if trigger is not None:
                store.mark_trigger_processed(trigger)
            accepted.add(job.trigger_id)
            continue
        if len(planned) >= slots:
            report.pending.append(where)
            continue  # not accepted: the cursor stays before it; a later pass takes it
        run = Run(
            id=new_run_id(),
            repo=job.repo,
            target=job.number,
            kind=run_kind_for(job),
            trigger_id=str(job.comment_id) if job.comment_id is not None else None,
            host=host if owner is not None else None,
            pid=owner.pid if owner is not None else None,
            process_start_time=float(owner.start_time) if owner is not None else None,
        )
        if job.kind is JobKind.RETRY:
            previous = last_run_on(store, job.repo, job.number)
            if previous is not None:
                run = _retry_of(run, previous)
        try:
            planned.append(store.create_run(run, trigger=processed_trigger(job, run.id)))
            accepted.add(job.trigger_id)
        except TriggerAlreadyProcessed:
            accepted.add(job.trigger_id)  # another scheduler took it: done, not pending
        except ActiveRunExists:
            # Being worked on. A ready issue is skipped (it stays labelled in-progress);
            # a comment waits, un-accepted, until the active run has ended.
            report.busy.append(where)
    # Only the cursors that moved are written, all in one transaction (an idle pass writes
    # nothing): one write per repository and stream was ten transactions a pass at 3 repos.
    store.set_cursors(
        Cursor(repo=c.repo, stream=c.stream, since=c.since, etag=c.etag)
        for c in advance_cursors(result, accepted)
    )
    report.started = [r.id for r in planned]
    return planned


def _listing_stale(store: Store, repo: str, number: int, listed_at: datetime) -> bool:
    """Whether the newest run on ``repo#number`` was created or ended after ``listed_at``."""
    newest = store.runs_for_target(repo, number, limit=1)
    if not newest:
        return False
    run = newest[0]
    return run.created_at >= listed_at or (run.ended_at is not None and run.ended_at >= listed_at)


def _queued() -> RunStatus:
    from cgr_store import RunStatus

    return RunStatus.QUEUED


def _retry_of(run: Run, previous: Run) -> Run:
    import msgspec

    from cgr_store import RunKind

    # The same kind and triggering comment as the run retried, so the prompt carries the
    # original instruction; the retry comment itself is recorded as processed.
    trigger = previous.trigger_id if previous.kind is not RunKind.ISSUE else None
    return msgspec.structs.replace(
        run, kind=previous.kind, trigger_id=trigger, attempt=previous.attempt + 1
    )
