"""Run kinds, run statuses and the status machine.

::

    queued ──► claimed ──► running ──► succeeded | failed | needs_human | cancelled | timed_out
      │  ▲        │
      │  └────────┘ claimed → queued: a claim released before start (daemon draining)
      └───────────┴──► failed | needs_human | cancelled | timed_out  (ended before running)

A run that dies before it runs must still be endable, hence the early exits; ``succeeded``
is only reachable from ``running`` because only a run that ran can have succeeded.
Terminal statuses are final: a retry is a new run (with ``attempt + 1``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ALLOWED_TRANSITIONS", "RunKind", "RunStatus", "TriggerKind", "can_transition"]


class RunKind(StrEnum):
    """What started a run."""

    ISSUE = "issue"
    """An issue labelled ready."""
    ISSUE_MENTION = "issue_mention"
    """A comment on an issue that mentions the bot."""
    PR_MENTION = "pr_mention"
    """A comment on a pull request that mentions the bot."""
    REVIEW_COMMENT = "review_comment"
    """A pull request review comment that mentions the bot."""


class TriggerKind(StrEnum):
    """The id space a trigger id belongs to (ids are unique only within their kind)."""

    ISSUE = "issue"
    """An issue becoming ready; the caller picks the id (e.g. ``owner/repo#12@<event id>``)."""
    ISSUE_COMMENT = "issue_comment"
    """An issue or pull request conversation comment id."""
    REVIEW_COMMENT = "review_comment"
    """A pull request review comment id."""
    WEBHOOK_DELIVERY = "webhook_delivery"
    """A webhook ``X-GitHub-Delivery`` GUID."""


class RunStatus(StrEnum):
    """Where a run is in its life; see ALLOWED_TRANSITIONS."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NEEDS_HUMAN = "needs_human"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_active(self) -> bool:
        """Queued, claimed or running: at most one such run exists per (repo, target)."""
        return self in _ACTIVE

    @property
    def is_terminal(self) -> bool:
        """Ended; no transition leaves a terminal status."""
        return not self.is_active


_ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.CLAIMED, RunStatus.RUNNING})
_EARLY_EXITS = frozenset(
    {RunStatus.FAILED, RunStatus.NEEDS_HUMAN, RunStatus.CANCELLED, RunStatus.TIMED_OUT}
)

ALLOWED_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.CLAIMED} | _EARLY_EXITS),
    RunStatus.CLAIMED: frozenset({RunStatus.RUNNING, RunStatus.QUEUED} | _EARLY_EXITS),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED} | _EARLY_EXITS),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.NEEDS_HUMAN: frozenset(),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.TIMED_OUT: frozenset(),
}
"""For each status, the statuses a run may move to next."""


def can_transition(from_status: RunStatus, to_status: RunStatus) -> bool:
    """Whether the status machine allows ``from_status → to_status``."""
    return to_status in ALLOWED_TRANSITIONS[from_status]
