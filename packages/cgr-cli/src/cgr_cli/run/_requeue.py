"""A run whose claim GitHub failed transiently goes back to the queue instead of failing.

The same holds for the mirror fetch that runs beside the claim: git's HTTP failing on
every retry before the agent started is an outage, not a verdict on the run.

Before the agent starts nothing of value has been spent, and a run that failed there would
say "failed" in public for what was only GitHub having a bad minute (its writes are
retried for ``RetryPolicy.write_budget`` seconds first; this is for an outage that outlasts
that). So the run goes back to ``queued`` (``claimed → queued`` is the status machine's
"claim released before start") with no process named on its row: the next scheduling pass
picks it up again (``schedule/_plan.py``), after the pre-claim backoff of
``schedule/_backoff.py`` counted in requeues. Whatever the claim had written stays (the
``in-progress`` label, the "Working on it" comment, found again by its marker): they are
true of a run that is queued, and the next attempt writes them again idempotently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cgr_store import HostLease, Store

REQUEUED = "requeued"
"""The start of the detail of every requeue event in a run's history (counted by backoff)."""
RELEASED = "released"
"""The start of the detail of a run handed back by its stopping scheduler before its agent
started (not a failure: not counted by backoff)."""
CANCEL_ASKED = "cancel asked"
"""The start of the detail ``cgr cancel`` (and ``@bot cancel``) records before it signals
the run's process: a SIGTERM that follows it means "cancel", not "the host is stopping"."""


def cancel_asked(store: Store, run_id: str) -> bool:
    """Whether a cancel of ``run_id`` was asked (``CANCEL_ASKED`` in its history)."""
    return any(e.detail.startswith(CANCEL_ASKED) for e in store.events(run_id))


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth trying again later (GitHub's API or git front end down, or
    rate-limited), or None."""
    from cgr_cli._errors import GitError
    from cgr_cli.run._git_retry import is_transient
    from cgr_discovery import GitHubUnavailable, RateLimited

    if isinstance(exc, GitError) and is_transient(exc):
        return f"GitHub's git front end failed before the agent started ({exc})"

    if isinstance(exc, GitHubUnavailable):
        code = f"HTTP {exc.status_code}" if exc.status_code is not None else "no answer"
        return f"GitHub failed during the claim ({code}: {exc})"
    if isinstance(exc, RateLimited):
        kind = "secondary" if exc.secondary else "primary"
        return f"GitHub's {kind} rate limit during the claim (resets {exc.reset_at:%H:%M:%S} UTC)"
    return None


def requeue(
    store: Store,
    run_id: str,
    reason: str,
    *,
    lease: HostLease | None = None,
    prefix: str = REQUEUED,
) -> None:
    """Put the run back to ``queued`` with no process on its row, recording why;
    ``lease``: a fleet run's writes are fenced (run/_fence.py). ``prefix``: ``RELEASED``
    for a run its stopping scheduler handed back (no backoff follows)."""
    from cgr_store import RunStatus

    detail = f"{prefix}: {reason}"
    clear: dict[str, Any] = {"pid": None, "process_start_time": None, "heartbeat_at": None}
    if store.get_run(run_id).status is RunStatus.QUEUED:
        # Failed before the claim's first write (reading the thread): nothing to release.
        store.update_run(run_id, lease=lease, **clear)
        store.record_event(run_id, detail)
    else:
        store.transition(run_id, RunStatus.QUEUED, detail=detail, lease=lease, **clear)


def is_requeue(detail: str) -> bool:
    """Whether a history event (``RunEvent.detail``) is a requeue."""
    return detail.startswith(REQUEUED + ":")
