"""Backoff for ready issues whose runs keep failing before their claim, and for runs put back
to the queue by a transient failure before their agent started."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cgr_cli.config._model import Config
    from cgr_store import Run, Store


@dataclass(frozen=True, slots=True)
class Backoff:
    """A ready issue left out of a pass: its last ``failures`` runs ended before the claim."""

    repo: str
    target: int
    failures: int
    last_ended_at: datetime
    retry_at: datetime

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "target": f"{self.repo}#{self.target}",
            "failures": self.failures,
            "retry_at": self.retry_at.isoformat(),
            "retry_in_seconds": round(max(0.0, (self.retry_at - now).total_seconds()), 3),
        }


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """``min(base * 2**(failures - 1), cap)`` seconds (no overflow for a long streak)."""
    delay = base
    for _ in range(1, failures):
        if delay >= cap:
            break
        delay *= 2
    return min(delay, cap)


def _preclaim_failure(store: Store, run: Run) -> bool | None:
    """True: the run ended failed/cancelled/timed_out and was never claimed (it counts).
    False: it says the issue can be worked on (claimed at some point, or succeeded, or
    another terminal outcome): the streak ends here. None: still active (ignored)."""
    from cgr_cli.schedule._runs import ever_claimed
    from cgr_store import RunStatus

    if not run.status.is_terminal:
        return None
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT):
        return False
    # A claim is a real outcome: the pipeline then owns the labels (needs-human on
    # failure) and the issue is not retried by discovery anyway. Only runs that never
    # reached the claim leave `ready` in place and loop.
    return not ever_claimed(store, run.id)


def preclaim_backoffs(
    config: Config,
    store: Store,
    targets: Collection[tuple[str, int]],
    *,
    now: datetime,
) -> dict[tuple[str, int], Backoff]:
    """The ready issues among ``targets`` that must wait, keyed by (repo, number).

    Each target's issue runs (kind ``issue``) are read newest first through the store's
    index on (repo, target), and reading stops as soon as the streak is known: a run that
    was claimed or succeeded ends it, and failures beyond the one that reaches the cap
    change nothing. So the events of at most a few runs per target are read, whatever the
    size of the store's history.
    """
    from cgr_store import RunKind

    base = config.polling.retry_backoff_seconds
    cap = config.polling.retry_backoff_max_seconds
    # failures after which the delay no longer grows
    enough = 1
    while backoff_delay(enough, base, cap) < cap:
        enough += 1
    found: dict[tuple[str, int], Backoff] = {}
    for repo, target in targets:
        failed: list[Run] = []
        for run in store.runs_for_target(repo, target):
            if run.kind is not RunKind.ISSUE:
                continue
            counted = _preclaim_failure(store, run)
            if counted is None:
                continue
            if not counted:
                break
            failed.append(run)
            if len(failed) >= enough:
                break
        if not failed or failed[0].ended_at is None:
            continue
        last = failed[0].ended_at
        retry_at = last + timedelta(seconds=backoff_delay(len(failed), base, cap))
        if now < retry_at:
            found[(repo, target)] = Backoff(repo, target, len(failed), last, retry_at)
    return found


def requeue_backoff(config: Config, store: Store, run: Run, *, now: datetime) -> Backoff | None:
    """A queued run that went back to the queue after a transient failure before its agent
    started (``run/_requeue.py``) waits like a pre-claim failure: ``n`` requeues wait
    ``min(base * 2**(n - 1), max)`` after the newest one. None: it may start now."""
    from cgr_cli.run._requeue import is_requeue

    requeues = [e.at for e in store.events(run.id) if is_requeue(e.detail)]
    if not requeues:
        return None
    n, last = len(requeues), requeues[-1]
    base = config.polling.retry_backoff_seconds
    cap = config.polling.retry_backoff_max_seconds
    retry_at = last + timedelta(seconds=backoff_delay(n, base, cap))
    return Backoff(run.repo, run.target, n, last, retry_at) if now < retry_at else None
