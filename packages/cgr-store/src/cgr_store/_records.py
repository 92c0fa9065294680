"""The records cgr keeps, as frozen msgspec Structs.

Schema evolution (msgspec's rules, which the database migrations mirror): a new field is
added at the end with a default, so records written by an older cgr still load; a field is
never renamed or given a new meaning.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import msgspec

from ._status import RunKind, RunStatus, TriggerKind
from ._time import utcnow

__all__ = [
    "AgentSession",
    "Base",
    "Cursor",
    "HostLease",
    "HttpCacheEntry",
    "OutboxEntry",
    "OutboxItem",
    "ProcessedTrigger",
    "Run",
    "RunEvent",
    "new_run_id",
]


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Common options of every cgr-store record.

    - ``frozen=True``: a record is a value read at one moment. Changing it means asking the
      store, which checks the change and writes it; a mutable copy would drift silently from
      the database. Frozen structs are also hashable.
    - ``forbid_unknown_fields=True``: decoding a row or a message with a field this version
      does not know is an error rather than a silent loss of data (a newer schema is refused
      by version before that, see SchemaTooNew).
    - ``kw_only=True``: records have many optional fields; keyword-only construction keeps
      call sites readable and lets fields with defaults be added anywhere later.

    Subclasses repeat two options: ``kw_only`` because msgspec applies it only to the fields
    of the class that sets it, and ``frozen`` for type checkers (msgspec inherits it, but
    the dataclass transform does not see that). ``forbid_unknown_fields`` is inherited.
    """


class Run(Base, frozen=True, kw_only=True):
    """One attempt at one target (an issue or pull request) of one repository."""

    id: str
    """Unique and sortable by creation time; see new_run_id()."""
    repo: str
    """``owner/name``."""
    target: int
    """Issue or pull request number."""
    kind: RunKind
    status: RunStatus = RunStatus.QUEUED
    trigger_id: str | None = None
    """The trigger (comment id, delivery id, ...) that caused the run, if any."""
    host: str | None = None
    """Host name of the machine that runs it (several hosts may share a PostgreSQL store)."""
    pid: int | None = None
    process_start_time: float | None = None
    """With ``pid``, identifies the process safely against pid reuse (as cgr-exec reports it)."""
    branch: str | None = None
    base_branch: str | None = None
    pr_number: int | None = None
    pr_url: str | None = None
    agent_session_id: str | None = None
    attempt: int = 1
    created_at: datetime = msgspec.field(default_factory=utcnow)
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None
    """A short machine-friendly result, e.g. ``pr_opened``, ``no_changes``, ``conflict``."""
    error: str | None = None
    # Added in schema version 2; hence the defaults.
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    turns: int | None = None
    # Added in schema version 6.
    lease_epoch: int | None = None
    """The epoch of ``host``'s lease under which the run was claimed (see HostLease); None
    for a run no lease-holding host claimed."""


class RunEvent(Base, frozen=True, kw_only=True):
    """One status change of a run; the history is append-only."""

    run_id: str
    at: datetime
    from_status: RunStatus | None
    """None for the creation event."""
    to_status: RunStatus
    detail: str = ""


class ProcessedTrigger(Base, frozen=True, kw_only=True):
    """A trigger that was handled (a run was made, or it was deliberately skipped)."""

    kind: TriggerKind
    id: str
    """Unique within ``kind``."""
    repo: str
    run_id: str | None = None
    processed_at: datetime = msgspec.field(default_factory=utcnow)


class Cursor(Base, frozen=True, kw_only=True):
    """Where discovery got to in one stream of one repository."""

    repo: str
    stream: str
    """E.g. ``issues``, ``issue_comments``, ``review_comments``."""
    since: datetime | None = None
    etag: str | None = None
    updated_at: datetime = msgspec.field(default_factory=utcnow)


class HttpCacheEntry(Base, frozen=True, kw_only=True):
    """One cached HTTP response, so a fresh process can send a conditional request.

    GitHub answers ``304 Not Modified`` to a request carrying the ETag of what it would
    send, and such an answer costs no rate-limit point; the body is what the caller replays
    then. The store does not interpret ``body``: the caller chooses its encoding.
    """

    key: str
    """Usually the URL (with its query)."""
    etag: str | None = None
    last_modified: str | None = None
    body: bytes = b""
    updated_at: datetime = msgspec.field(default_factory=utcnow)
    """When the entry last changed (writing an unchanged entry writes nothing)."""


class AgentSession(Base, frozen=True, kw_only=True):
    """The agent session of a target, so follow-up runs can resume the conversation."""

    repo: str
    target: int
    session_id: str
    run_id: str | None = None
    updated_at: datetime = msgspec.field(default_factory=utcnow)


class HostLease(Base, frozen=True, kw_only=True):
    """A runner host's lease: it works on runs only while it renews this in time.

    ``epoch`` grows by one each time the lease is acquired anew or taken over, and a host
    carries its epoch on its writes (fencing): once another host took over its runs, or a
    second process acquired the same host id, the writes of the old epoch are refused.
    """

    host_id: str
    epoch: int
    acquired_at: datetime
    lease_expires_at: datetime
    heartbeat_at: datetime
    """The last renewal."""
    slots: int | None = None
    """How many runs the host may run at once (its concurrency), as it last said."""
    running: int | None = None
    """How many it was running at its last renewal."""


class OutboxEntry(Base, frozen=True, kw_only=True):
    """A GitHub write to make for a run (its final status comment, its labels, ...).

    Recorded before it is sent, so a write that GitHub refused or never answered is still
    there to be sent again by a later pass; see Store.put_outbox.
    """

    kind: str
    """What the payload is, for the code that sends it, e.g. ``status_comment``, ``labels``."""
    key: str
    """Unique within the run: recording the same key again keeps the first entry."""
    payload: str
    """JSON text (checked when stored), e.g. ``msgspec.json.encode(obj).decode()``."""


class OutboxItem(Base, frozen=True, kw_only=True):
    """An OutboxEntry as stored, with its delivery state."""

    id: int
    """Assigned by the store, increasing: oldest first is id order."""
    run_id: str
    kind: str
    key: str
    payload: str
    created_at: datetime
    attempts: int = 0
    """Failed attempts so far (a delivered item keeps the count it had)."""
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    """None while pending."""


def new_run_id(now: datetime | None = None) -> str:
    """A new run id, ``r-YYYYmmdd-HHMMSS-mmm-xxxxxx``, e.g. ``r-20261128-121212-483-9f2c1a``.

    UTC creation time to the millisecond, so ids sort by creation time and say when a run
    started at a glance, then 24 random bits against collisions within one millisecond
    (from os.urandom, so forked children never repeat their parent's ids).
    """
    moment = (now or utcnow()).astimezone(UTC)
    stamp = moment.strftime("%Y%m%d-%H%M%S")
    return f"r-{stamp}-{moment.microsecond // 1000:03d}-{secrets.token_hex(3)}"
