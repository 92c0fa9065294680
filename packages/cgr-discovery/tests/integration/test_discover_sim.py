"""discover() and advance_cursors() against the simulator over loopback HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from discovery_support import BOT, REPO

from cgr_discovery import (
    DiscoveryConfig,
    GitHubClient,
    JobKind,
    PollResult,
    Skipped,
    StreamCursor,
    TriggerPolicy,
    advance_cursors,
    discover,
)
from cgr_discovery.testing import GitHubSimulator

pytestmark = pytest.mark.anyio
CONFIG = DiscoveryConfig(login=BOT)


def in_the_past(sim: GitHubSimulator, seconds: float = 3600) -> None:
    """Make what the simulator does next carry timestamps ``seconds`` ago."""
    sim.advance_clock(-seconds)


async def prime(gh: GitHubClient, config: DiscoveryConfig = CONFIG) -> tuple[StreamCursor, ...]:
    """A first poll; returns the cursors to store (every job accepted)."""
    result = await discover(gh, [REPO], config)
    return advance_cursors(result, {j.trigger_id for j in result.jobs})


async def test_first_poll_finds_ready_issues_but_does_not_replay_old_mentions(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    in_the_past(sim)
    old_issue, _ = sim.seed_collaborator_mention(REPO)
    first, second = sim.seed_ready_issues(REPO, 2)
    sim.advance_clock(3600)
    result = await discover(gh, [REPO], CONFIG)
    assert [(j.kind, j.number) for j in result.jobs] == [
        (JobKind.READY_ISSUE, first),
        (JobKind.READY_ISSUE, second),
    ]
    assert result.errors == ()
    ready = result.jobs[0]
    assert ready.title == "Ready issue 1"
    assert ready.author == "alice"
    assert ready.trigger_id == f"ready:{REPO}#{first}"
    # Each stream's cursor starts near the server's "now", not at the old mention.
    now = datetime.now(UTC)
    assert {s.proposed.stream for s in result.streams} == {"issue_comments", "review_comments"}
    for stream in result.streams:
        assert stream.before.since is None
        assert stream.proposed.since is not None
        assert now - timedelta(seconds=30) < stream.proposed.since <= now + timedelta(seconds=1)
    assert old_issue not in [j.number for j in result.jobs]


async def test_replay_since_replays_old_mentions(sim: GitHubSimulator, gh: GitHubClient) -> None:
    in_the_past(sim)
    number, comment_id = sim.seed_collaborator_mention(REPO)
    sim.advance_clock(3600)
    config = DiscoveryConfig(login=BOT, replay_since=datetime.now(UTC) - timedelta(days=1))
    result = await discover(gh, [REPO], config)
    (job,) = result.jobs
    assert (job.kind, job.number, job.comment_id) == (JobKind.ISSUE_MENTION, number, comment_id)
    assert job.trigger_id == f"issue_comment:{comment_id}"
    assert job.instruction == "please take a look at this."


async def test_mentions_policy_and_filters(sim: GitHubSimulator, gh: GitHubClient) -> None:
    cursors = await prime(gh)
    collab_issue, collab_comment = sim.seed_collaborator_mention(REPO, "bob")
    outsider_issue, _ = sim.seed_outsider_mention(REPO, "mallory")
    sim.seed_bot_mention(REPO, "helper-app[bot]")
    sim.add_comment(REPO, collab_issue, f"@{BOT} a reply from myself", author=BOT)
    sim.add_comment(REPO, collab_issue, f"```\n@{BOT} in a code block\n```", author="bob")
    sim.add_comment(REPO, collab_issue, f"> @{BOT} quoted\nthanks", author="bob")
    sim.add_comment(REPO, collab_issue, f"mail {BOT}@example.com", author="bob")
    cancel_id = sim.add_comment(REPO, collab_issue, f"@{BOT} cancel", author="bob")
    retry_id = sim.add_comment(REPO, collab_issue, f"@{BOT.upper()}, retry please", author="bob")
    result = await discover(gh, [REPO], CONFIG, cursors=cursors)
    kinds = [(j.kind, j.comment_id) for j in result.jobs]
    # control commands first, then the mention
    assert kinds == [
        (JobKind.CANCEL, cancel_id),
        (JobKind.RETRY, retry_id),
        (JobKind.ISSUE_MENTION, collab_comment),
    ]
    (rejected,) = result.rejected
    assert rejected.code == "no_write_access"
    assert rejected.job.number == outsider_issue
    assert rejected.job.author == "mallory"
    assert "mallory" in rejected.reason
    assert "write access" in rejected.reason


async def test_permission_api_decides_when_association_does_not(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    # No association is trusted: every author's permission is asked, once per poll.
    config = DiscoveryConfig(login=BOT, policy=TriggerPolicy(trusted_associations=frozenset()))
    cursors = await prime(gh, config)
    sim.add_collaborator(REPO, "writer", role="maintain")
    sim.add_collaborator(REPO, "triager", role="triage")
    writer_issue, _ = sim.seed_mention(REPO, author="writer", kind="outsider")
    sim.seed_mention(REPO, author="writer", kind="outsider", number=writer_issue)
    sim.seed_mention(REPO, author="triager", kind="outsider")
    sim.clear_requests()
    result = await discover(gh, [REPO], config, cursors=cursors)
    assert [j.author for j in result.jobs] == ["writer", "writer"]
    assert [(r.job.author, r.code) for r in result.rejected] == [("triager", "no_write_access")]
    asked = sorted(r.path for r in sim.requests if r.path.endswith("/permission"))
    assert asked == [
        f"/repos/{REPO}/collaborators/triager/permission",
        f"/repos/{REPO}/collaborators/writer/permission",
    ]


async def test_allow_and_deny_lists(sim: GitHubSimulator, gh: GitHubClient) -> None:
    config = DiscoveryConfig(
        login=BOT,
        policy=TriggerPolicy(allow=frozenset({"Mallory"}), deny=frozenset({"bob"})),
    )
    cursors = await prime(gh, config)
    sim.seed_outsider_mention(REPO, "mallory")
    sim.seed_collaborator_mention(REPO, "bob")
    result = await discover(gh, [REPO], config, cursors=cursors)
    assert [j.author for j in result.jobs] == ["mallory"]
    assert [(r.job.author, r.code) for r in result.rejected] == [("bob", "denied")]


async def test_pr_conversation_and_review_comments(sim: GitHubSimulator, gh: GitHubClient) -> None:
    cursors = await prime(gh)
    pr, review_id = sim.seed_bot_pull_request(REPO)
    convo_id = sim.add_comment(REPO, pr, f"@{BOT} also update the docs", author="carol")
    result = await discover(gh, [REPO], CONFIG, cursors=cursors)
    jobs = {j.kind: j for j in result.jobs}
    assert set(jobs) == {JobKind.PR_MENTION, JobKind.REVIEW_COMMENT}
    assert (jobs[JobKind.PR_MENTION].number, jobs[JobKind.PR_MENTION].comment_id) == (pr, convo_id)
    review = jobs[JobKind.REVIEW_COMMENT]
    assert (review.number, review.comment_id, review.is_pull_request) == (pr, review_id, True)
    assert review.trigger_id == f"review_comment:{review_id}"
    assert review.stream == "review_comments"


async def test_ready_issue_exclusions(sim: GitHubSimulator, gh: GitHubClient) -> None:
    sim.add_collaborator(REPO, "alice")
    good = sim.create_issue(REPO, "good", author="alice", labels=["ready"])
    sim.create_issue(REPO, "busy", labels=["ready", "in-progress"])
    blocked = sim.create_issue(REPO, "blocked", labels=["ready", "blocked"])
    sim.add_collaborator(REPO, "dave")
    taken = sim.create_issue(REPO, "taken", labels=["ready"], assignees=["dave"])
    sim.create_issue(REPO, "not ready", labels=[])
    closed = sim.create_issue(REPO, "closed", labels=["ready"])
    sim.close_issue(REPO, closed)
    sim.commit(REPO, "feature", {"a.txt": "a"})
    pr = sim.create_pull_request(REPO, "feature", "a PR")
    sim.add_labels(REPO, pr, "ready")
    result = await discover(
        gh, [REPO], DiscoveryConfig(login=BOT, mentions=False, review_comments=False)
    )
    assert [j.number for j in result.jobs] == [good]
    assert result.streams == ()
    # Left alone, and said why (in progress, closed, a PR: not worth a word).
    assert result.skipped == (
        Skipped(repo=REPO, number=blocked, reason="blocked (label 'blocked')"),
        Skipped(repo=REPO, number=taken, reason="assigned to @dave"),
    )


async def test_ordering_mentions_first_then_oldest(sim: GitHubSimulator, gh: GitHubClient) -> None:
    cursors = await prime(gh)
    in_the_past(sim, 100)
    # Labelled by the repository's owner (the simulator's default labeller).
    old_ready = sim.create_issue(REPO, "old")
    sim.add_labels(REPO, old_ready, "ready")
    sim.advance_clock(50)
    mention_issue, _ = sim.seed_collaborator_mention(REPO)  # older than the cursor: not seen
    sim.advance_clock(45)
    new_ready = sim.create_issue(REPO, "new")
    sim.add_labels(REPO, new_ready, "ready")
    sim.advance_clock(5)
    _, fresh = sim.seed_collaborator_mention(REPO, "erin")
    result = await discover(gh, [REPO], CONFIG, cursors=cursors)
    assert [(j.kind, j.number) for j in result.jobs[1:]] == [
        (JobKind.READY_ISSUE, old_ready),
        (JobKind.READY_ISSUE, new_ready),
    ]
    assert (result.jobs[0].kind, result.jobs[0].comment_id) == (JobKind.ISSUE_MENTION, fresh)
    assert mention_issue not in [j.number for j in result.jobs]
    config = DiscoveryConfig(login=BOT, mentions_first=False, newest_first=True)
    newest = await discover(gh, [REPO], config, cursors=cursors)
    assert [(j.kind, j.comment_id or j.number) for j in newest.jobs] == [
        (JobKind.ISSUE_MENTION, fresh),
        (JobKind.READY_ISSUE, new_ready),
        (JobKind.READY_ISSUE, old_ready),
    ]
    oldest = await discover(
        gh, [REPO], DiscoveryConfig(login=BOT, mentions_first=False), cursors=cursors
    )
    assert [j.comment_id or j.number for j in oldest.jobs] == [old_ready, new_ready, fresh]


async def test_full_slots_lose_nothing_and_processed_ids_dedupe(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    cursors = await prime(gh)
    _, c1 = sim.seed_collaborator_mention(REPO, "bob")
    _, c2 = sim.seed_collaborator_mention(REPO, "bob")
    first = await discover(gh, [REPO], CONFIG, cursors=cursors)
    assert [j.comment_id for j in first.jobs] == [c1, c2]
    # No free slot: nothing accepted, the cursor stays at the first trigger.
    held = advance_cursors(first, accepted=set())
    again = await discover(gh, [REPO], CONFIG, cursors=held)
    assert [j.comment_id for j in again.jobs] == [c1, c2]
    # One slot: the first is taken; the second comes back next time.
    taken = {again.jobs[0].trigger_id}
    partly = advance_cursors(again, accepted=taken)
    third = await discover(gh, [REPO], CONFIG, cursors=partly, processed=taken)
    assert [j.comment_id for j in third.jobs] == [c2]
    processed = taken | {third.jobs[0].trigger_id}
    done = advance_cursors(third, accepted=processed)
    # A processed comment edited later comes back in the since list: deduped by id.
    sim.edit_comment(REPO, c1, f"@{BOT} please take a look at this (edited)")
    fourth = await discover(gh, [REPO], CONFIG, cursors=done, processed=processed)
    assert fourth.jobs == ()
    assert fourth.rejected == ()


async def test_idle_poll_is_all_304_and_spends_no_quota(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    sim.seed_ready_issues(REPO, 2)
    cursors = await prime(gh)
    settled = await discover(gh, [REPO], CONFIG, cursors=cursors)
    cursors = advance_cursors(settled, {j.trigger_id for j in settled.jobs})
    # The ready-issue list is answered from gidgethub's in-memory ETag cache, the streams
    # from the ETags kept in the cursors (see the fresh-client test below).
    sim.clear_requests()
    used = sim.rate_limit()["used"]
    idle = await discover(gh, [REPO], CONFIG, cursors=cursors)
    # Per waiting ready issue its events (who labelled it) and, once per poll, the
    # labeller's permission: all free 304s too.
    assert sorted(r.path.rsplit("/", 1)[-1] for r in sim.requests) == [
        "comments", "comments", "events", "events", "issues", "permission"
    ]  # fmt: skip
    assert {r.status for r in sim.requests} == {304}
    assert sim.rate_limit()["used"] == used
    assert len(idle.jobs) == 2  # the ready issues are still there to take
    assert advance_cursors(idle, set()) == cursors  # ready issues hold no stream cursor


async def test_stream_etag_survives_a_fresh_client(
    sim: GitHubSimulator, gh: GitHubClient, make_client: object
) -> None:
    cursors = await prime(gh)
    settled = await discover(gh, [REPO], CONFIG, cursors=cursors)
    cursors = advance_cursors(settled, set())
    assert all(c.etag for c in cursors)
    fresh = make_client()  # type: ignore[operator]
    sim.clear_requests()
    await discover(fresh, [REPO], DiscoveryConfig(login=BOT, ready_issues=False), cursors=cursors)
    assert [(r.status, r.counted) for r in sim.requests] == [(304, False), (304, False)]


async def test_many_repos_concurrently_with_isolated_failures(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    repos = [f"acme/repo{i}" for i in range(6)]
    for repo in repos:
        sim.create_repo(repo)
        sim.seed_ready_issues(repo, 1)
    sim.faults.latency(0.05)
    config = DiscoveryConfig(login=BOT, max_concurrent_repos=3, repo_priority={"acme/repo5": 1})
    result: PollResult = await discover(gh, [*repos, "acme/missing"], config)
    assert [j.repo for j in result.jobs] == ["acme/repo5", *repos[:5]]
    assert {e.repo for e in result.errors} == {"acme/missing"}
    assert all(e.exception_type == "GitHubRequestError" for e in result.errors)
    assert len(result.errors) == 3  # ready issues and both streams
    assert {s.before.repo for s in result.streams} == set(repos)


async def test_rate_limited_poll_reports_errors_and_keeps_cursors(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    cursors = await prime(gh)
    sim.exhaust_rate_limit(reset_in=3600)
    sim.clear_requests()
    result = await discover(gh, [REPO], CONFIG, cursors=cursors)
    assert result.jobs == ()
    assert result.streams == ()
    assert {e.exception_type for e in result.errors} == {"RateLimited"}
    # The first refusals (a repository's lists are asked together); then the client knows.
    assert len(sim.requests) <= 3


async def test_malformed_repo_name(gh: GitHubClient) -> None:
    with pytest.raises(ValueError, match="owner/name"):
        await discover(gh, ["no-slash"], CONFIG)


async def test_poll_rides_out_5xx_bursts_and_secondary_limits(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    cursors = await prime(gh)
    _, comment_id = sim.seed_collaborator_mention(REPO)
    _, review_id = sim.seed_bot_pull_request(REPO)
    sim.faults.error(502, path=r"/issues/comments$", count=2)
    sim.faults.secondary_rate_limit(retry_after=20, path=r"/pulls/comments$", count=1)
    sim.faults.drop_connection(path=r"/issues$", count=1)
    result = await discover(gh, [REPO], CONFIG, cursors=cursors)
    assert result.errors == ()
    assert {j.comment_id for j in result.jobs} == {comment_id, review_id}
    stats = gh.stats()
    assert stats.retries == 3  # two 502s and one dropped connection
    assert stats.rate_limited == 1
    faulted = [r.fault for r in sim.requests if r.fault]
    assert sorted(faulted) == ["drop", "error", "error", "error"]
