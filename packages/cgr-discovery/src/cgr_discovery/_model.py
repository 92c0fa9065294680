"""The values discovery takes and gives: cursors in; jobs, rejections and cursors out.

Plain frozen dataclasses: cgr-discovery stores nothing, so the caller (the CLI) decides how
to persist these; every field is a str, int, bool, datetime or None for easy mapping.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ._policy import TriggerPolicy

StreamName = Literal["issue_comments", "review_comments"]
STREAMS: tuple[StreamName, ...] = ("issue_comments", "review_comments")


class JobKind(enum.StrEnum):
    """What a job asks for."""

    READY_ISSUE = "ready_issue"  # an open issue labelled ready
    ISSUE_MENTION = "issue_mention"  # a mention in an issue's conversation
    PR_MENTION = "pr_mention"  # a mention in a pull request's conversation
    REVIEW_COMMENT = "review_comment"  # a mention in a pull request review comment (a diff line)
    CANCEL = "cancel"  # "@bot cancel": stop the active run on this issue/PR
    RETRY = "retry"  # "@bot retry": run the last job on this issue/PR again

    @property
    def is_control(self) -> bool:
        return self in (JobKind.CANCEL, JobKind.RETRY)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamCursor:
    """Where the next poll of one comment stream of one repository starts.

    ``since`` is GitHub's ``since`` parameter (inclusive, server time); ``None`` means
    never polled. ``etag`` is the ETag of the last response for exactly this ``since``:
    sent as ``If-None-Match`` so an unchanged stream costs no rate-limit point, even across
    processes (``cgr tick`` keeps no memory between runs).
    """

    repo: str
    stream: StreamName
    since: datetime | None = None
    etag: str | None = None

    @property
    def key(self) -> tuple[str, StreamName]:
        return (self.repo, self.stream)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A candidate unit of work found on GitHub.

    ``trigger_id`` is unique per trigger (``issue_comment:<id>``, ``review_comment:<id>``,
    ``ready:<owner/repo>#<n>``); pass it back in ``processed`` so it is never turned into a
    job twice. ``trigger_time`` orders jobs (the comment's or issue's creation time);
    ``updated_at`` is what the stream cursor compares (GitHub's ``since`` filters on it).
    ``labelled_by`` is, for a screened ready issue, the account that applied the label.
    """

    kind: JobKind
    repo: str
    number: int
    trigger_id: str
    trigger_time: datetime
    updated_at: datetime
    author: str
    author_association: str
    is_pull_request: bool
    body: str
    url: str
    title: str = ""
    comment_id: int | None = None
    instruction: str = ""
    stream: StreamName | None = None
    priority: int = 0
    labelled_by: str | None = None


RejectionCode = Literal["denied", "no_write_access", "labelled_by_bot", "labeller_unknown"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """A trigger the trigger policy refused; ``reason`` is a sentence fit for a reply.

    ``code``: ``denied`` (deny list), ``no_write_access``, ``labelled_by_bot`` (a ready
    label applied by a bot account), ``labeller_unknown`` (no ``labeled`` event for the
    ready label in the issue's events).
    """

    job: Job
    reason: str
    code: RejectionCode


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamPoll:
    """One stream's poll: the cursor it started from and the one it proposes.

    ``proposed`` is the cursor if every job from this stream is accepted;
    :func:`advance_cursors` holds it back at the first job that was not.
    """

    before: StreamCursor
    proposed: StreamCursor


@dataclass(frozen=True, slots=True, kw_only=True)
class RepoError:
    """A repository whose poll failed; its cursors are not advanced."""

    repo: str
    error: str
    exception_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Skipped:
    """An open issue labelled ready that is left alone, and why (``reason``: "assigned to
    @alice", "blocked (label 'blocked')"), so a scheduler can say so instead of nothing."""

    repo: str
    number: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PollResult:
    """Everything one poll found, jobs in the order they should run."""

    jobs: tuple[Job, ...]
    rejected: tuple[Rejected, ...]
    streams: tuple[StreamPoll, ...]
    errors: tuple[RepoError, ...] = ()
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryConfig:
    """What to look for and how to order it.

    ``login`` is the bot account people mention (``name[bot]`` for a GitHub App works).
    Ordering: control commands first, then mentions before ready issues when
    ``mentions_first``, then by trigger time, oldest first unless ``newest_first``;
    ``repo_priority`` (higher first) outranks both. ``replay_since`` sets where a stream
    with no cursor starts; by default it starts at the server's "now", so old mentions are
    not replayed on the first poll. ``max_concurrent_repos`` repositories are polled at
    once, each with its (up to three) list requests in flight together: give the client
    ``max_connections`` of at least three times as many (the defaults, 16 and 64, do).
    """

    login: str
    ready_label: str = "ready"
    in_progress_label: str = "in-progress"
    blocked_labels: frozenset[str] = frozenset({"blocked"})
    ready_issues: bool = True
    mentions: bool = True
    review_comments: bool = True
    mentions_first: bool = True
    newest_first: bool = False
    repo_priority: Mapping[str, int] = field(default_factory=dict)
    replay_since: datetime | None = None
    max_concurrent_repos: int = 32
    per_page: int = 100
    policy: TriggerPolicy = field(default_factory=TriggerPolicy)

    def __post_init__(self) -> None:
        if not self.login.strip():
            raise ValueError("DiscoveryConfig.login (the bot account) must not be empty")
        if self.max_concurrent_repos < 1:
            raise ValueError("DiscoveryConfig.max_concurrent_repos must be at least 1")
        if not 1 <= self.per_page <= 100:
            raise ValueError("DiscoveryConfig.per_page must be between 1 and 100")
        if self.replay_since is not None and self.replay_since.tzinfo is None:
            raise ValueError("DiscoveryConfig.replay_since must be timezone-aware (UTC)")
