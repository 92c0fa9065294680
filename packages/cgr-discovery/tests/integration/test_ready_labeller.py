"""A ready issue counts only when the account that applied the label (its latest
``labeled`` event) passes the trigger policy; the issue's author does not matter."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from discovery_support import BOT, REPO

from cgr_discovery import (
    DiscoveryConfig,
    GitHubClient,
    JobKind,
    LabellerMemo,
    TriggerPolicy,
    apply_policy,
    discover,
    parse_webhook,
)
from cgr_discovery.testing import GitHubSimulator

pytestmark = pytest.mark.anyio
CONFIG = DiscoveryConfig(
    login=BOT, replay_since=datetime(2000, 1, 1, tzinfo=UTC), mentions=False, review_comments=False
)


def people(sim: GitHubSimulator) -> None:
    sim.add_collaborator(REPO, "maint", role="maintain")
    sim.add_collaborator(REPO, "writer", role="write")
    sim.add_collaborator(REPO, "triager", role="triage")
    sim.add_user("mallory")
    sim.add_bot("labeller-app[bot]")


async def test_outsiders_issue_labelled_by_a_maintainer_runs(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    people(sim)
    number = sim.create_issue(REPO, "From an outsider", "please", author="mallory")
    sim.add_labels(REPO, number, "ready", actor="maint")
    result = await discover(gh, [REPO], CONFIG)
    (job,) = result.jobs
    assert (job.kind, job.number, job.author, job.labelled_by) == (
        JobKind.READY_ISSUE, number, "mallory", "maint"
    )  # fmt: skip
    assert result.rejected == ()


async def test_label_by_triage_only_account_is_rejected_whoever_wrote_the_issue(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    people(sim)
    number = sim.create_issue(REPO, "By a writer", author="writer")
    sim.add_labels(REPO, number, "ready", actor="triager")
    result = await discover(gh, [REPO], CONFIG)
    assert result.jobs == ()
    (rejected,) = result.rejected
    assert rejected.code == "no_write_access"
    assert rejected.reason == (
        f"@triager applied the 'ready' label on {REPO}#{number} but needs write access "
        f"to {REPO} to trigger runs"
    )


async def test_label_applied_at_creation_counts_as_the_authors(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    people(sim)
    # An outsider cannot label through the API; the simulator's helper can, and the
    # labeled event then names the author, who has no access.
    number = sim.create_issue(REPO, "Self-labelled", author="mallory", labels=["ready"])
    result = await discover(gh, [REPO], CONFIG)
    assert [(r.job.number, r.code) for r in result.rejected] == [(number, "no_write_access")]


async def test_latest_labeled_event_decides(sim: GitHubSimulator, gh: GitHubClient) -> None:
    people(sim)
    first = sim.create_issue(REPO, "Relabelled by a maintainer", author="mallory")
    sim.add_labels(REPO, first, "ready", actor="triager")
    sim.remove_label(REPO, first, "ready", actor="maint")
    sim.add_labels(REPO, first, "Ready", actor="maint")  # names compare case-insensitively
    second = sim.create_issue(REPO, "Relabelled by a triager", author="writer")
    sim.add_labels(REPO, second, "ready", actor="maint")
    sim.remove_label(REPO, second, "ready", actor="triager")
    sim.add_labels(REPO, second, "ready", actor="triager")
    result = await discover(gh, [REPO], CONFIG)
    assert [(j.number, j.labelled_by) for j in result.jobs] == [(first, "maint")]
    assert [(r.job.number, r.code) for r in result.rejected] == [(second, "no_write_access")]


async def test_bots_and_denied_labellers(sim: GitHubSimulator, gh: GitHubClient) -> None:
    people(sim)
    sim.add_collaborator(REPO, "labeller-app[bot]", role="write")
    by_bot = sim.create_issue(REPO, "Labelled by an app", author="writer")
    sim.add_labels(REPO, by_bot, "ready", actor="labeller-app[bot]")
    by_denied = sim.create_issue(REPO, "Labelled by a denied maintainer", author="writer")
    sim.add_labels(REPO, by_denied, "ready", actor="maint")
    config = DiscoveryConfig(
        login=BOT,
        replay_since=CONFIG.replay_since,
        mentions=False,
        review_comments=False,
        policy=TriggerPolicy(deny=frozenset({"maint"})),
    )
    result = await discover(gh, [REPO], config)
    assert result.jobs == ()
    assert [(r.job.number, r.code) for r in result.rejected] == [
        (by_bot, "labelled_by_bot"),
        (by_denied, "denied"),
    ]
    assert "bots never trigger runs" in result.rejected[0].reason


async def test_allow_list_admits_a_labeller_without_asking(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    people(sim)
    number = sim.create_issue(REPO, "t", author="writer")
    sim.add_labels(REPO, number, "ready", actor="triager")
    config = DiscoveryConfig(
        login=BOT,
        replay_since=CONFIG.replay_since,
        mentions=False,
        review_comments=False,
        policy=TriggerPolicy(allow=frozenset({"triager"})),
    )
    sim.clear_requests()
    result = await discover(gh, [REPO], config)
    assert [j.labelled_by for j in result.jobs] == ["triager"]
    assert not [r for r in sim.requests if r.path.endswith("/permission")]


async def test_webhook_labeled_delivery_is_rechecked_through_the_events_api(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    # The payload's sender says "maint", but the events API says who really labelled it:
    # a payload is only a hint.
    people(sim)
    number = sim.create_issue(REPO, "t", author="mallory")
    sim.add_labels(REPO, number, "ready", actor="triager")
    issue = await gh.getitem(
        "/repos/{owner}/{repo}/issues/{n}", {"owner": "acme", "repo": "widgets", "n": number}
    )
    body = json.dumps(
        {"action": "labeled", "issue": issue, "label": {"name": "ready"},
         "sender": {"login": "maint", "type": "User"}, "repository": {"full_name": REPO}}
    ).encode()  # fmt: skip
    signature = "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
    headers = {"x-github-event": "issues", "x-github-delivery": "d1",
               "x-hub-signature-256": signature, "content-type": "application/json"}  # fmt: skip
    event = parse_webhook(headers, body, "s", CONFIG)
    allowed, rejected = await apply_policy(gh, event.jobs, CONFIG)
    assert allowed == ()
    assert [(r.job.number, r.code) for r in rejected] == [(number, "no_write_access")]


def _events_asked(sim: GitHubSimulator) -> list[str]:
    return [r.path for r in sim.requests if r.path.endswith("/events")]


async def test_a_waiting_ready_issue_is_not_asked_who_labelled_it_on_every_poll(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    """A daemon keeps one LabellerMemo: a ready issue still waiting for a slot costs no
    events request on the next polls, while its labeller's write access is still asked."""
    people(sim)
    number = sim.create_issue(REPO, "Waiting", author="mallory")
    sim.add_labels(REPO, number, "ready", actor="maint")
    sim.advance_clock(5)  # the label is older than LabellerMemo.SETTLE_SECONDS
    memo = LabellerMemo()
    first = await discover(gh, [REPO], CONFIG, labellers=memo)
    assert [(j.number, j.labelled_by) for j in first.jobs] == [(number, "maint")]
    assert len(_events_asked(sim)) == 1
    assert len(memo) == 1
    sim.clear_requests()
    again = await discover(gh, [REPO], CONFIG, labellers=memo)
    assert [(j.number, j.labelled_by) for j in again.jobs] == [(number, "maint")]
    assert _events_asked(sim) == []
    assert [r.path.rsplit("/", 1)[-1] for r in sim.requests] == ["issues", "permission"]
    # Without the memo (a tick is one poll per process) the events are asked each time.
    sim.clear_requests()
    await discover(gh, [REPO], CONFIG)
    assert len(_events_asked(sim)) == 1


async def test_a_relabelled_issue_is_judged_by_its_new_labeller_despite_the_memo(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    people(sim)
    number = sim.create_issue(REPO, "Relabelled", author="mallory")
    sim.add_labels(REPO, number, "ready", actor="maint")
    sim.advance_clock(5)
    memo = LabellerMemo()
    assert [j.number for j in (await discover(gh, [REPO], CONFIG, labellers=memo)).jobs] == [number]
    # Taken off and put back by someone without write access: updated_at moves, so the
    # remembered labeller is not used.
    sim.advance_clock(1)
    sim.remove_label(REPO, number, "ready", actor="triager")
    sim.add_labels(REPO, number, "ready", actor="triager")
    sim.clear_requests()
    result = await discover(gh, [REPO], CONFIG, labellers=memo)
    assert result.jobs == ()
    assert [(r.job.number, r.code) for r in result.rejected] == [(number, "no_write_access")]
    assert len(_events_asked(sim)) == 1


async def test_a_label_younger_than_the_settle_time_is_not_remembered(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    """GitHub's timestamps have whole seconds: a relabelling within the same second keeps
    updated_at, so an answer read that soon after the last change is asked again."""
    people(sim)
    number = sim.create_issue(REPO, "Fresh", author="mallory")
    sim.add_labels(REPO, number, "ready", actor="maint")
    memo = LabellerMemo()
    await discover(gh, [REPO], CONFIG, labellers=memo)
    assert len(memo) == 0
    sim.clear_requests()
    await discover(gh, [REPO], CONFIG, labellers=memo)
    assert len(_events_asked(sim)) == 1


def test_the_memo_keeps_at_most_its_bound() -> None:
    memo = LabellerMemo(max_entries=2)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    later = datetime(2026, 1, 2, tzinfo=UTC)
    for n in (1, 2, 3):
        memo.put(REPO, n, "ready", at, {"login": f"u{n}"}, read_at=later)
    assert len(memo) == 2
    assert memo.get(REPO, 1, "ready", at) == (False, None)
    assert memo.get(REPO, 3, "Ready", at) == (True, {"login": "u3"})
    assert memo.get(REPO, 3, "ready", later) == (False, None)  # another updated_at
