"""A run's outcome on GitHub, through the store's outbox: recorded first, then sent.

The last thing a run does on GitHub — its labels and its status comment's final text — is
what people see of an hour of agent time, so it must not be lost to a GitHub outage or a
killed process. The order is:

1. the report is computed and recorded as outbox entries **in the same transaction** as
   the run's terminal status (``store.transition(..., outbox=...)``): a process killed at
   any instant leaves either an active run (the reaper ends it, with a report) or an
   ended run with its report pending — never an ended run that will say nothing;
2. it is sent (:func:`deliver_run`), each item marked delivered once GitHub took it;
3. what could not be sent stays pending, and every later ``cgr tick``, daemon pass and
   ``cgr reap`` sends it (``schedule/_deliver.py``).

Sending twice is harmless: labels are added and removed by name, and the status comment is
found by its hidden marker and rewritten with an absolute PATCH.

Labels describe the latest run of their issue or pull request (:func:`label_change`): a
success takes ``needs-human`` and ``in-progress`` off and puts ``labels.done`` on; anything
else puts ``needs-human`` on and takes ``in-progress`` and ``labels.done`` off — never both.
So the labels of an older run whose report waited in the outbox are not sent once a newer
run on the same target exists: they would describe the wrong run.

Each GitHub write attempt of a run is an event in its history (:func:`attempt_recorder`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from cgr_cli.config._model import LabelsConfig
from cgr_cli.run._together import together

if TYPE_CHECKING:
    from cgr_discovery import AttemptHook, RunGitHub, WriteAttempt
    from cgr_store import OutboxEntry, OutboxItem, Store

LABELS = "labels"
STATUS_COMMENT = "status_comment"


@dataclass(frozen=True, slots=True)
class LabelChange:
    add: tuple[str, ...]
    remove: tuple[str, ...]


def label_change(labels: LabelsConfig, *, succeeded: bool) -> LabelChange:
    """The labels a run's outcome puts on and takes off its issue or pull request.

    The ready label comes off too: the claim takes it off with four other writes at once,
    and a run killed (or a write dropped) before that one landed would otherwise end with
    ``ready`` beside its verdict - two visible states, and a ready issue taken again.
    """
    done = (labels.done,) if labels.done else ()
    if succeeded:
        return LabelChange(add=done, remove=(labels.in_progress, labels.needs_human, labels.ready))
    return LabelChange(add=(labels.needs_human,), remove=(labels.in_progress, labels.ready, *done))


def report_entries(
    labels: LabelsConfig,
    *,
    run_id: str,
    repo: str,
    number: int,
    succeeded: bool,
    text: str,
    key_suffix: str = "",
) -> list[OutboxEntry]:
    """The outbox entries of a run's final report: its labels, then its status comment.

    ``key_suffix`` makes a second report of the same run (a rewording after the fact,
    e.g. why it was cancelled) a new entry instead of the first one again.
    """
    from cgr_store import OutboxEntry

    change = label_change(labels, succeeded=succeeded)
    where = {"repo": repo, "number": number}
    return [
        OutboxEntry(
            kind=LABELS,
            key=LABELS + key_suffix,
            payload=json.dumps({**where, "add": change.add, "remove": change.remove}),
        ),
        OutboxEntry(
            kind=STATUS_COMMENT,
            key=STATUS_COMMENT + key_suffix,
            payload=json.dumps({**where, "run_id": run_id, "text": text}),
        ),
    ]


def describe_attempt(attempt: WriteAttempt) -> str:
    """One line of a run's history for one GitHub write attempt."""
    line = f"github {attempt.step} {attempt.target} attempt {attempt.attempt}: {attempt.outcome}"
    details = []
    if attempt.status_code is not None:
        details.append(str(attempt.status_code))
    if attempt.error and attempt.outcome != "ok":
        details.append(attempt.error[:200])
    if attempt.wait is not None:
        details.append(f"next in {attempt.wait:.1f}s")
    return line + (f" ({'; '.join(details)})" if details else "")


def attempt_recorder(store: Store, run_id: str, log: logging.Logger | None = None) -> AttemptHook:
    """``RunGitHub(on_attempt=...)`` for one run: every attempt becomes an event of it.

    The hook is called synchronously inside the event loop (like the pipeline's own
    ``store.transition`` calls) and must not raise: a database that is busy for longer
    than its timeout loses the event, never the write it describes. The events are not
    durable on their own (``durable=False``: no fsync each, ~11 per run): they are history,
    and what a write decided is recorded by the run's next transition or outbox mark, a
    durable commit that makes them durable too.
    """
    logger = log or logging.getLogger("cgr.github")

    def record(attempt: WriteAttempt) -> None:
        line = describe_attempt(attempt)
        if attempt.outcome != "ok":
            logger.info("%s", line)
        try:
            store.record_event(run_id, line, durable=False)
        except Exception:
            logger.warning("could not record %r in the run's history", line, exc_info=True)

    return record


def is_attempt_event(detail: str) -> bool:
    """Whether a history event (``RunEvent.detail``) is a GitHub write attempt."""
    return detail.startswith("github ")


async def deliver_run(
    store: Store, github: RunGitHub, run_id: str, *, log: logging.Logger | None = None
) -> bool:
    """Send run ``run_id``'s pending outbox items, all at once; True when none is left.

    The items do not depend on each other (labels, the status comment), so they are in
    flight together: the report costs one or two round trips, not one per write (GitHub's
    writes take a few hundred milliseconds each). An item GitHub did not take is counted
    (``record_outbox_failure``) and stays pending; the others are still sent.
    """
    import anyio.to_thread

    logger = log or logging.getLogger("cgr.outbox")
    items = await anyio.to_thread.run_sync(lambda: store.pending_outbox(run_id=run_id))
    undelivered: list[OutboxItem] = []

    async def deliver(item: OutboxItem) -> None:
        try:
            await _send(store, github, item, logger)
        except Exception as exc:
            undelivered.append(item)
            logger.warning("report %s of run %s not delivered: %s", item.kind, run_id, exc)
            await anyio.to_thread.run_sync(store.record_outbox_failure, item.id, _short(exc))
            return
        await anyio.to_thread.run_sync(store.mark_outbox_delivered, item.id)

    await together(*(partial(deliver, item) for item in items))
    return not undelivered


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


async def _send(store: Store, github: RunGitHub, item: OutboxItem, log: logging.Logger) -> None:
    payload: dict[str, Any] = json.loads(item.payload)
    repo, number = str(payload["repo"]), int(payload["number"])
    if item.kind == LABELS:
        newest = store.runs_for_target(repo, number, limit=1)
        if newest and newest[0].id != item.run_id:
            # A newer run on this target owns the labels now (it set or will set them).
            store.record_event(
                item.run_id, f"labels not sent: run {newest[0].id} is newer on {repo}#{number}"
            )
            return
        # Off first, then on: between the two the issue shows no verdict rather than two.
        # The removals (mostly of labels that are not there) go out together.
        await together(*(partial(github.remove_label, repo, number, label)
                         for label in payload["remove"]))  # fmt: skip
        if payload["add"]:
            await github.add_labels(repo, number, *payload["add"])
    elif item.kind == STATUS_COMMENT:
        await github.update_status(
            repo, number, str(payload["run_id"]), str(payload["text"]), final=True
        )
    else:
        # Written by a newer cgr: left pending for it rather than marked as sent.
        raise ValueError(f"unknown outbox item kind {item.kind!r}")
    log.info("delivered %s of run %s to %s#%s", item.kind, item.run_id, repo, number)
