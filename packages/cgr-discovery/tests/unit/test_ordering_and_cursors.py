from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cgr_discovery import (
    DiscoveryConfig,
    Job,
    JobKind,
    PollResult,
    Rejected,
    StreamCursor,
    StreamPoll,
    advance_cursors,
    order_jobs,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(
    kind: JobKind,
    minute: int,
    *,
    repo: str = "o/r",
    priority: int = 0,
    updated: int | None = None,
    stream: str | None = "issue_comments",
    tid: str | None = None,
) -> Job:
    return Job(
        kind=kind,
        repo=repo,
        number=minute,
        trigger_id=tid or f"{kind.value}:{repo}:{minute}",
        trigger_time=T0 + timedelta(minutes=minute),
        updated_at=T0 + timedelta(minutes=minute if updated is None else updated),
        author="alice",
        author_association="OWNER",
        is_pull_request=False,
        body="",
        url="",
        stream=None if kind is JobKind.READY_ISSUE else stream,  # type: ignore[arg-type]
        priority=priority,
    )


READY_OLD = job(JobKind.READY_ISSUE, 1)
READY_NEW = job(JobKind.READY_ISSUE, 5)
MENTION_OLD = job(JobKind.ISSUE_MENTION, 2)
MENTION_NEW = job(JobKind.PR_MENTION, 6)
CANCEL = job(JobKind.CANCEL, 9)


@pytest.mark.parametrize(
    ("mentions_first", "newest_first", "expected"),
    [
        (True, False, [CANCEL, MENTION_OLD, MENTION_NEW, READY_OLD, READY_NEW]),
        (True, True, [CANCEL, MENTION_NEW, MENTION_OLD, READY_NEW, READY_OLD]),
        (False, False, [CANCEL, READY_OLD, MENTION_OLD, READY_NEW, MENTION_NEW]),
        (False, True, [CANCEL, MENTION_NEW, READY_NEW, MENTION_OLD, READY_OLD]),
    ],
)
def test_order_honours_both_settings(
    mentions_first: bool, newest_first: bool, expected: list[Job]
) -> None:
    config = DiscoveryConfig(login="bot", mentions_first=mentions_first, newest_first=newest_first)
    shuffled = [READY_NEW, MENTION_NEW, CANCEL, READY_OLD, MENTION_OLD]
    assert order_jobs(shuffled, config) == expected


def test_repo_priority_outranks_kind_and_time() -> None:
    config = DiscoveryConfig(login="bot")
    urgent = job(JobKind.READY_ISSUE, 50, repo="o/urgent", priority=10)
    assert order_jobs([MENTION_OLD, urgent, CANCEL], config)[0] == urgent


def test_order_is_total_for_equal_times() -> None:
    config = DiscoveryConfig(login="bot")
    a = job(JobKind.ISSUE_MENTION, 3, tid="issue_comment:2")
    b = job(JobKind.ISSUE_MENTION, 3, tid="issue_comment:10")
    assert order_jobs([b, a], config) == order_jobs([a, b], config)


def stream_poll(
    repo: str, since_min: int | None, proposed_min: int, etag: str | None
) -> StreamPoll:
    before = StreamCursor(
        repo=repo,
        stream="issue_comments",
        since=None if since_min is None else T0 + timedelta(minutes=since_min),
        etag="old",
    )
    proposed = StreamCursor(
        repo=repo,
        stream="issue_comments",
        since=T0 + timedelta(minutes=proposed_min),
        etag=etag,
    )
    return StreamPoll(before=before, proposed=proposed)


def test_all_accepted_takes_proposed_cursor() -> None:
    jobs = (job(JobKind.ISSUE_MENTION, 3), job(JobKind.ISSUE_MENTION, 4))
    result = PollResult(jobs=jobs, rejected=(), streams=(stream_poll("o/r", 0, 4, None),))
    (cursor,) = advance_cursors(result, {j.trigger_id for j in jobs})
    assert cursor == result.streams[0].proposed


def test_cursor_stops_at_first_unaccepted_trigger() -> None:
    first = job(JobKind.ISSUE_MENTION, 3, updated=7)
    second = job(JobKind.ISSUE_MENTION, 4, updated=5)
    third = job(JobKind.ISSUE_MENTION, 6, updated=8)
    result = PollResult(
        jobs=(first, second, third), rejected=(), streams=(stream_poll("o/r", 0, 8, "e"),)
    )
    (cursor,) = advance_cursors(result, {first.trigger_id})
    # min updated_at of the unaccepted ones, and no ETag so the next poll is not a 304
    assert cursor.since == T0 + timedelta(minutes=5)
    assert cursor.etag is None


def test_nothing_accepted_when_slots_full_loses_nothing() -> None:
    jobs = (job(JobKind.ISSUE_MENTION, 3), job(JobKind.ISSUE_MENTION, 4))
    result = PollResult(jobs=jobs, rejected=(), streams=(stream_poll("o/r", 0, 4, None),))
    (cursor,) = advance_cursors(result, set())
    assert cursor.since == T0 + timedelta(minutes=3)


def test_rejected_and_ready_and_other_repos_do_not_hold_back() -> None:
    rejected = Rejected(job=job(JobKind.ISSUE_MENTION, 2), reason="no", code="no_write_access")
    ready = job(JobKind.READY_ISSUE, 1)
    other = job(JobKind.ISSUE_MENTION, 1, repo="o/other")
    review = job(JobKind.REVIEW_COMMENT, 1, stream="review_comments")
    result = PollResult(
        jobs=(ready, other, review),
        rejected=(rejected,),
        streams=(stream_poll("o/r", 0, 9, "etag-9"), stream_poll("o/other", 0, 9, None)),
    )
    mine, theirs = advance_cursors(result, set())
    assert mine == result.streams[0].proposed  # review job is another stream
    assert theirs.since == T0 + timedelta(minutes=1)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="login"):
        DiscoveryConfig(login=" ")
    with pytest.raises(ValueError, match="max_concurrent_repos"):
        DiscoveryConfig(login="bot", max_concurrent_repos=0)
    with pytest.raises(ValueError, match="timezone"):
        DiscoveryConfig(login="bot", replay_since=datetime(2020, 1, 1))
