"""Discovery's jobs and trigger ids in the store's terms."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cgr_discovery import Job
    from cgr_store import ProcessedTrigger, RunKind, Store, TriggerKind

# The comment streams discovery keeps a cursor for (cgr_discovery._model.STREAMS).
STREAMS: tuple[Literal["issue_comments"], Literal["review_comments"]] = (
    "issue_comments",
    "review_comments",
)


def trigger_key(trigger_id: str) -> tuple[TriggerKind, str] | None:
    """Discovery's ``issue_comment:<id>`` as the store's (TriggerKind, id); None for ready
    issues, which are never marked processed (see module docstring of _tick)."""
    from cgr_store import TriggerKind

    kind, _, ident = trigger_id.partition(":")
    if kind == "issue_comment":
        return TriggerKind.ISSUE_COMMENT, ident
    if kind == "review_comment":
        return TriggerKind.REVIEW_COMMENT, ident
    return None


class ProcessedInStore(Collection[str]):
    """Discovery's ``processed`` collection, answered by the store one id at a time.

    ``discover`` only asks ``trigger_id in processed``; loading every processed id of the
    store's history into memory for that would grow without bound. Iteration is empty.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def __contains__(self, item: object) -> bool:
        key = trigger_key(str(item))
        return key is not None and self.store.is_trigger_processed(*key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def processed_trigger(job: Job, run_id: str | None = None) -> ProcessedTrigger | None:
    from cgr_store import ProcessedTrigger

    key = trigger_key(job.trigger_id)
    if key is None:
        return None
    return ProcessedTrigger(kind=key[0], id=key[1], repo=job.repo, run_id=run_id)


def run_kind_for(job: Job) -> RunKind:
    from cgr_discovery import JobKind
    from cgr_store import RunKind

    return {
        JobKind.READY_ISSUE: RunKind.ISSUE,
        JobKind.ISSUE_MENTION: RunKind.ISSUE_MENTION,
        JobKind.PR_MENTION: RunKind.PR_MENTION,
        JobKind.REVIEW_COMMENT: RunKind.REVIEW_COMMENT,
    }.get(job.kind, RunKind.PR_MENTION if job.is_pull_request else RunKind.ISSUE_MENTION)
