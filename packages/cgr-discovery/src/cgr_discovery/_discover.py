"""Discovery: ready issues and mentions of every repository, polled concurrently.

Cursors in, jobs and proposed cursors out; nothing is stored here. The caller accepts the
jobs it has room for and calls :func:`advance_cursors`, which never moves a cursor past a
trigger that was neither accepted nor rejected, so a full runner loses no work.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import anyio
import gidgethub

from ._client import GitHubClient
from ._errors import DiscoveryError
from ._jobs import (
    LabellerMemo,
    PermissionCache,
    comment_job,
    parse_time,
    ready_issue_job,
    ready_issue_skip_reason,
    screen,
)
from ._model import (
    STREAMS,
    DiscoveryConfig,
    Job,
    JobKind,
    PollResult,
    Rejected,
    RepoError,
    Skipped,
    StreamCursor,
    StreamName,
    StreamPoll,
)

log = logging.getLogger("cgr_discovery")

_STREAM_URLS: dict[StreamName, str] = {
    "issue_comments": "/repos/{owner}/{repo}/issues/comments{?since,sort,direction,per_page}",
    "review_comments": "/repos/{owner}/{repo}/pulls/comments{?since,sort,direction,per_page}",
}


def format_time(value: datetime) -> str:
    # Whole seconds, rounded down: ``since`` is inclusive, so earlier is always safe.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def split_repo(full_name: str) -> tuple[str, str]:
    owner, sep, name = full_name.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise ValueError(f"repository {full_name!r} must be written as owner/name")
    return owner, name


@dataclass
class _RepoPoll:
    """One repository's poll: its inputs, and what it collected (mutable while it runs)."""

    gh: GitHubClient
    config: DiscoveryConfig
    processed: Collection[str]
    permissions: PermissionCache  # one per repository poll, shared by its parts
    jobs: list[Job] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    streams: list[StreamPoll] = field(default_factory=list)
    errors: list[RepoError] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


async def discover(
    gh: GitHubClient,
    repos: Sequence[str],
    config: DiscoveryConfig,
    *,
    cursors: Iterable[StreamCursor] = (),
    processed: Collection[str] = frozenset(),
    labellers: LabellerMemo | None = None,
) -> PollResult:
    """Poll ``repos`` (``owner/name``) for work, at most ``max_concurrent_repos`` at once.

    ``cursors`` are the stream cursors from the last :func:`advance_cursors` (missing ones
    start fresh); ``processed`` holds trigger ids already turned into jobs or rejected,
    so a comment edited later (it comes back in the ``since`` list) is not run twice, and
    a rejected trigger is reported once (until its id is in ``processed`` it is reported
    on every poll that sees it). Ready issues (``ready:<repo>#<n>``) need not be listed:
    an issue being worked on carries the in-progress label and is skipped anyway.
    A repository that fails is reported in ``PollResult.errors`` and its cursors are left
    out (keep the old ones); the other repositories are unaffected. ``labellers``: who
    applied each ready label, kept from poll to poll by a caller that polls again (a
    daemon), so a ready issue still waiting for a slot does not cost a request per poll.
    """
    for full_name in repos:
        split_repo(full_name)
    by_key = {c.key: c for c in cursors}
    limiter = anyio.CapacityLimiter(config.max_concurrent_repos)
    results: dict[str, _RepoPoll] = {}

    async def poll(full_name: str) -> None:
        async with limiter:
            part = _RepoPoll(
                gh=gh,
                config=config,
                processed=processed,
                permissions=PermissionCache(gh, labellers),
            )
            await _poll_repo(part, full_name, by_key)
            results[full_name] = part

    async with anyio.create_task_group() as tg:
        for full_name in dict.fromkeys(repos):
            tg.start_soon(poll, full_name)

    # One write of the poll's changed ETags (a persistent cache's backend, e.g. the store).
    gh.flush_cache()
    jobs: list[Job] = []
    rejected: list[Rejected] = []
    streams: list[StreamPoll] = []
    errors: list[RepoError] = []
    skipped: list[Skipped] = []
    for full_name in dict.fromkeys(repos):
        part = results[full_name]
        jobs += part.jobs
        rejected += part.rejected
        streams += part.streams
        errors += part.errors
        skipped += part.skipped
    return PollResult(
        jobs=tuple(order_jobs(jobs, config)),
        rejected=tuple(rejected),
        streams=tuple(streams),
        errors=tuple(errors),
        skipped=tuple(skipped),
    )


def order_jobs(jobs: Iterable[Job], config: DiscoveryConfig) -> list[Job]:
    """Jobs in run order: repo priority (higher first), control commands, then mentions
    before ready issues when ``mentions_first``, then trigger time (oldest first unless
    ``newest_first``), ties broken by trigger id so the order is total.

    Control commands come first because they free or re-fill a slot and must not wait
    behind work that is waiting for one.
    """

    def key(job: Job) -> tuple[int, int, float, str]:
        if job.kind.is_control:
            group = 0
        elif job.kind is JobKind.READY_ISSUE:
            group = 2 if config.mentions_first else 1
        else:
            group = 1
        stamp = job.trigger_time.timestamp()
        return (-job.priority, group, -stamp if config.newest_first else stamp, job.trigger_id)

    return sorted(jobs, key=key)


def advance_cursors(result: PollResult, accepted: Collection[str]) -> tuple[StreamCursor, ...]:
    """The cursors to store after the caller took the jobs whose ids are in ``accepted``.

    Per stream: the poll's proposed cursor when every job from it was accepted; else
    ``since`` = the ``updated_at`` of the earliest job not accepted (and no ETag, so the
    next poll fetches it again rather than getting an empty 304). Rejected triggers are
    decided and do not hold a cursor back.
    """
    out: list[StreamCursor] = []
    for stream in result.streams:
        pending = [
            job.updated_at
            for job in result.jobs
            if job.stream == stream.before.stream
            and job.repo == stream.before.repo
            and job.trigger_id not in accepted
        ]
        if pending:
            out.append(replace(stream.proposed, since=min(pending), etag=None))
        else:
            out.append(stream.proposed)
    return tuple(out)


async def _poll_repo(
    part: _RepoPoll, full_name: str, cursors: dict[tuple[str, StreamName], StreamCursor]
) -> None:
    """One repository: its ready issues and comment streams, requested concurrently.

    Each list is one round trip when nothing changed, so doing them together makes a
    repository cost one round trip instead of three. Each task collects into its own
    part, merged in a fixed order so the result does not depend on which answer came
    first.
    """
    config = part.config
    enabled = {"issue_comments": config.mentions, "review_comments": config.review_comments}
    streams = [
        cursors.get((full_name, stream)) or StreamCursor(repo=full_name, stream=stream)
        for stream in STREAMS
        if enabled[stream]
    ]
    parts: list[_RepoPoll] = []

    def sub_part() -> _RepoPoll:
        sub = _RepoPoll(
            gh=part.gh, config=config, processed=part.processed, permissions=part.permissions
        )
        parts.append(sub)
        return sub

    async def ready(sub: _RepoPoll) -> None:
        try:
            await _screen_ready_issues(sub, await _ready_issues(sub, full_name))
        except _POLL_ERRORS as exc:
            sub.errors.append(_repo_error(full_name, "ready issues", exc))

    async def stream(sub: _RepoPoll, cursor: StreamCursor) -> None:
        try:
            await _poll_stream(sub, cursor)
        except _POLL_ERRORS as exc:
            sub.errors.append(_repo_error(full_name, cursor.stream.replace("_", " "), exc))

    ready_part = sub_part() if config.ready_issues else None
    if (
        ready_part is not None
        and part.gh.last_server_date is None
        and any(cursor.since is None for cursor in streams)
    ):
        # A stream's first cursor is taken from the server's clock, known only once an
        # answer's Date header arrived: ask for the ready issues first this once.
        await ready(ready_part)
        ready_part = None
    async with anyio.create_task_group() as tg:
        if ready_part is not None:
            tg.start_soon(ready, ready_part)
        for cursor in streams:
            tg.start_soon(stream, sub_part(), cursor)
    for sub in parts:
        part.jobs += sub.jobs
        part.rejected += sub.rejected
        part.streams += sub.streams
        part.errors += sub.errors
        part.skipped += sub.skipped


# One repository's trouble must not stop the others: besides cgr's own errors, gidgethub's
# (e.g. a redirect it cannot follow) and a malformed answer (missing or odd fields) are
# reported for that repository, whose cursors then stay where they were.
_POLL_ERRORS = (DiscoveryError, gidgethub.HTTPException, KeyError, TypeError, ValueError)


def _repo_error(full_name: str, what: str, exc: Exception) -> RepoError:
    unexpected = not isinstance(exc, DiscoveryError)
    log.warning("polling %s of %s failed: %s", what, full_name, exc, exc_info=unexpected)
    return RepoError(repo=full_name, error=f"{what}: {exc}", exception_type=type(exc).__name__)


async def _ready_issues(part: _RepoPoll, full_name: str) -> list[Job]:
    config = part.config
    owner, name = split_repo(full_name)
    jobs: list[Job] = []
    # The repository issue list, not the search API: search has its own, much smaller
    # rate limit and lags behind writes. gidgethub's ETag cache makes an unchanged list
    # a free 304 while this process lives. Assigned issues are listed too (no
    # `assignee=none`), so the ones left alone can be reported as skipped.
    async for issue in part.gh.getiter(
        "/repos/{owner}/{repo}/issues{?state,labels,sort,direction,per_page}",
        {
            "owner": owner,
            "repo": name,
            "state": "open",
            "labels": config.ready_label,
            "sort": "created",
            "direction": "desc" if config.newest_first else "asc",
            "per_page": config.per_page,
        },
    ):
        if not isinstance(issue, dict):
            continue
        reason = ready_issue_skip_reason(issue, config)
        if reason is not None:
            part.skipped.append(Skipped(repo=full_name, number=int(issue["number"]), reason=reason))
            continue
        job = ready_issue_job(issue, full_name, config)
        if job is not None and job.trigger_id not in part.processed:
            jobs.append(job)
    return jobs


async def _screen_ready_issues(part: _RepoPoll, jobs: list[Job]) -> None:
    """Keep the ready issues whose label was applied by someone allowed to trigger."""
    for job in jobs:
        verdict = await screen(job, part.config, part.permissions)
        if isinstance(verdict, Job):
            part.jobs.append(verdict)
        else:
            part.rejected.append(verdict)


async def _poll_stream(part: _RepoPoll, cursor: StreamCursor) -> None:
    gh, config = part.gh, part.config
    owner, name = split_repo(cursor.repo)
    first = cursor.since is None
    if cursor.since is not None:
        since = cursor.since
    elif config.replay_since is not None:
        since = config.replay_since
    else:
        since = gh.server_now()
    since = parse_time(format_time(since))  # the whole-second value actually sent
    url_vars: dict[str, Any] = {
        "owner": owner,
        "repo": name,
        "since": format_time(since),
        "sort": "updated",
        "direction": "asc",
        "per_page": config.per_page,
    }
    page = await gh.get_page(
        _STREAM_URLS[cursor.stream], url_vars, etag=None if first else cursor.etag
    )
    if page.not_modified:
        part.streams.append(StreamPoll(before=cursor, proposed=cursor))
        return
    pages = 1
    high_water: datetime | None = None
    etag = page.etag
    while True:
        for comment in page.data or ():
            if not isinstance(comment, dict):
                continue
            updated = parse_time(comment["updated_at"])
            high_water = updated if high_water is None else max(high_water, updated)
            await _consider_comment(part, cursor, comment)
        if page.next_url is None:
            break
        page = await gh.get_page(page.next_url)
        pages += 1
    if high_water is not None:
        proposed_since = max(high_water, since)
    elif first and page.date is not None and config.replay_since is None:
        # First poll, nothing new: start from the server's clock (never later than the
        # since we sent, so a local clock running fast cannot skip a comment).
        proposed_since = min(since, page.date.astimezone(UTC))
    else:
        proposed_since = since
    proposed = StreamCursor(
        repo=cursor.repo,
        stream=cursor.stream,
        since=proposed_since,
        etag=etag if proposed_since == since and pages == 1 else None,
    )
    part.streams.append(StreamPoll(before=cursor, proposed=proposed))


async def _consider_comment(part: _RepoPoll, cursor: StreamCursor, comment: dict[str, Any]) -> None:
    job = comment_job(comment, cursor.repo, cursor.stream, part.config)
    if job is None or job.trigger_id in part.processed:
        return
    verdict = await screen(job, part.config, part.permissions)
    if isinstance(verdict, Job):
        part.jobs.append(verdict)
    else:
        part.rejected.append(verdict)
