"""Every write a run makes is safe to repeat: retried on 5xx, dropped connections and
timeouts, lost answers looked up first, each attempt reported (against the simulator's
real HTTP, with faults that fire before and after the request is applied)."""

from __future__ import annotations

import json

import anyio
import pytest
from discovery_support import FAST, REPO, ClientFactory, Scripted

from cgr_discovery import (
    GitHubClient,
    GitHubUnavailable,
    RetryPolicy,
    RunGitHub,
    TokenAuth,
    WriteAttempt,
    find_post_key,
    find_status_run_id,
)
from cgr_discovery.testing import GitHubSimulator

pytestmark = pytest.mark.anyio
REPO_PATH = f"/repos/{REPO}"


class Attempts(list[WriteAttempt]):
    """The hook: keeps every attempt, as a caller would record them as run events."""

    def __call__(self, attempt: WriteAttempt) -> None:
        self.append(attempt)

    def outcomes(self, step: str | None = None) -> list[str]:
        return [a.outcome for a in self if step is None or a.step == step]


def ops_with(gh: GitHubClient, **kwargs: object) -> tuple[RunGitHub, Attempts]:
    attempts = Attempts()
    return RunGitHub(gh, on_attempt=attempts, **kwargs), attempts  # type: ignore[arg-type]


def posts(sim: GitHubSimulator, suffix: str) -> list[tuple[int | None, str | None]]:
    return [
        (r.status, r.fault) for r in sim.requests if r.method == "POST" and r.path.endswith(suffix)
    ]


async def test_comment_whose_answer_was_lost_is_found_not_posted_twice(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    number = sim.create_issue(REPO, "t", "b")
    sim.faults.drop_after_apply(method="POST", path=r"/comments$")
    ops, attempts = ops_with(gh)
    created = await ops.comment(REPO, number, "Working on it")
    (only,) = sim.comments(REPO, number)
    assert created["id"] == only.id
    assert created["body"].endswith("\nWorking on it")
    assert find_post_key(created["body"]) is not None  # the hidden marker that found it
    assert attempts.outcomes() == ["retry", "found"]
    assert attempts[0].status_code is None  # no answer at all
    assert attempts[0].wait is not None
    assert attempts[0].wait > 0
    assert posts(sim, "/comments") == [(None, "drop_after")]


async def test_comment_refused_with_5xx_is_posted_once_after_looking(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    number = sim.create_issue(REPO, "t", "b")
    sim.faults.error(502, method="POST", path=r"/comments$", count=2)
    ops, attempts = ops_with(gh)
    created = await ops.comment(REPO, number, "hello")
    assert [c.id for c in sim.comments(REPO, number)] == [created["id"]]
    assert attempts.outcomes() == ["retry", "retry", "ok"]
    assert [a.status_code for a in attempts] == [502, 502, None]
    # Each repeat came after a look at the thread (the 502 might have been written).
    # (The second look is a free 304: the thread did not change.)
    kinds = [(r.method, r.status) for r in sim.requests if r.path.endswith("/comments")]
    assert kinds == [("POST", 502), ("GET", 200), ("POST", 502), ("GET", 304), ("POST", 201)]


async def test_comment_with_key_is_idempotent_across_calls(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    number = sim.create_issue(REPO, "t", "b")
    ops, attempts = ops_with(gh)
    first = await ops.comment(REPO, number, "Report", key="run-7-final")
    again = await ops.comment(REPO, number, "Report", key="run-7-final")
    assert again["id"] == first["id"]
    assert len(sim.comments(REPO, number)) == 1
    assert attempts.outcomes() == ["ok", "found"]


async def test_status_comment_lost_then_edited_in_place(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    number = sim.create_issue(REPO, "t", "b")
    sim.faults.drop_after_apply(method="POST", path=r"/comments$")
    ops, attempts = ops_with(gh, min_edit_interval=0.0)
    assert await ops.update_status(REPO, number, "run-1", "Claimed")
    sim.faults.drop_after_apply(method="PATCH", path=r"/comments/\d+$")
    assert await ops.update_status(REPO, number, "run-1", "Done", final=True)
    (only,) = sim.comments(REPO, number)
    assert find_status_run_id(only.body) == "run-1"
    assert only.body.endswith("\nDone")
    assert [(a.step, a.outcome) for a in attempts] == [
        ("comment", "retry"),
        ("comment", "found"),
        ("edit_status", "retry"),  # an absolute PATCH: simply sent again
        ("edit_status", "ok"),
    ]


async def test_pull_request_whose_answer_was_lost_is_found(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    sim.commit(REPO, "cgr/issue-1", {"a.txt": "a\n"})
    sim.faults.drop_after_apply(method="POST", path=r"/pulls$")
    ops, attempts = ops_with(gh)
    pull = await ops.create_pull_request(
        REPO, head="cgr/issue-1", base="main", title="Fix", body="Closes #1"
    )
    (only,) = sim.pull_requests(REPO)
    assert pull["number"] == only.number
    assert pull["head"]["ref"] == "cgr/issue-1"
    assert attempts.outcomes() == ["retry", "found"]
    assert posts(sim, "/pulls") == [(None, "drop_after")]
    # A repeated call (a restarted run) finds the same PR without posting.
    again = await ops.create_pull_request(
        REPO, head="cgr/issue-1", base="main", title="Fix", body="Closes #1"
    )
    assert again["number"] == pull["number"]
    assert len(posts(sim, "/pulls")) == 1


async def test_pull_request_refused_with_5xx_then_opened_once(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    sim.commit(REPO, "cgr/issue-2", {"b.txt": "b\n"})
    sim.faults.error(502, method="POST", path=r"/pulls$", count=1)
    ops, attempts = ops_with(gh)
    pull = await ops.create_pull_request(
        REPO, head="cgr/issue-2", base="main", title="Fix", body=""
    )
    assert [p.number for p in sim.pull_requests(REPO)] == [pull["number"]]
    assert attempts.outcomes() == ["retry", "ok"]


async def test_pull_request_already_exists_422_returns_it(make_client: ClientFactory) -> None:
    # Another process opened the PR between our look and our POST: GitHub's 422 "already
    # exists" is turned into the existing PR. (A scripted server: the simulator's list
    # would already show the PR at the first look.)
    pr = {"number": 9, "head": {"ref": "cgr/x"}, "base": {"ref": "main"}}
    already = {
        "message": "Validation Failed",
        "errors": [
            {"resource": "PullRequest", "code": "custom",
             "message": "A pull request already exists for acme:cgr/x."}
        ],
    }  # fmt: skip
    server = Scripted(
        {
            "/repos/acme/widgets/pulls": [
                (200, {}, b"[]"),  # the first look: nothing yet
                (422, {}, json.dumps(already).encode()),  # the POST
                (200, {}, json.dumps([pr]).encode()),  # the look after the 422
            ]
        }
    )
    try:
        gh = make_client(base_url=server.url, auth=TokenAuth("t"))
        ops, attempts = ops_with(gh)
        pull = await ops.create_pull_request(REPO, head="cgr/x", base="main", title="t", body="")
    finally:
        server.close()
    assert pull == pr
    assert attempts.outcomes() == ["exists"]
    assert attempts[0].status_code == 422
    assert "already exists" in (attempts[0].error or "")
    assert server.hits == ["GET /repos/acme/widgets/pulls", "POST /repos/acme/widgets/pulls",
                           "GET /repos/acme/widgets/pulls"]  # fmt: skip


async def test_naturally_idempotent_writes_are_sent_again(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    number = sim.create_issue(REPO, "t", "b")
    for suffix in ("/labels", "/assignees", "/reactions"):
        sim.faults.drop_after_apply(method="POST", path=f"{suffix}$")
    ops, attempts = ops_with(gh)
    await ops.add_labels(REPO, number, "in-progress")
    await ops.assign(REPO, number, "cgr-bot")
    reaction = await ops.react(REPO, "eyes", number=number)
    issue = sim.issue(REPO, number)
    assert issue.labels == ["in-progress"]
    assert issue.assignees == ["cgr-bot"]
    (only,) = sim.reactions(REPO, number=number)
    assert reaction["id"] == only.id  # GitHub answers the existing reaction (200)
    assert reaction["content"] == "eyes"
    assert [(a.step, a.outcome) for a in attempts] == [
        ("add_labels", "retry"),
        ("add_labels", "ok"),
        ("assign", "retry"),
        ("assign", "ok"),
        ("react", "retry"),
        ("react", "ok"),
    ]
    assert posts(sim, "/reactions") == [(None, "drop_after"), (200, None)]


async def test_remove_label_whose_answer_was_lost_reports_removed(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    number = sim.create_issue(REPO, "t", "b", labels=["ready"])
    sim.faults.drop_after_apply(method="DELETE", path=r"/labels/ready$")
    ops, attempts = ops_with(gh)
    assert await ops.remove_label(REPO, number, "ready") is True
    assert sim.issue(REPO, number).labels == []
    assert attempts.outcomes() == ["retry", "ok"]
    assert await ops.remove_label(REPO, number, "ready") is False


async def test_create_label_that_exists_returns_it(sim: GitHubSimulator, gh: GitHubClient) -> None:
    ops, attempts = ops_with(gh)
    label = await ops.create_label(REPO, "ready", color="00ff00")
    assert label["name"] == "ready"
    assert attempts.outcomes() == ["exists"]
    sim.faults.drop_after_apply(method="POST", path=r"/labels$")
    made = await ops.create_label(REPO, "needs-human")
    assert made["name"] == "needs-human"
    assert attempts.outcomes()[1:] == ["retry", "found"]


async def test_timed_out_write_is_retried(sim: GitHubSimulator, make_client: ClientFactory) -> None:
    number = sim.create_issue(REPO, "t", "b")
    gh = make_client(timeout=0.3)
    sim.faults.latency(1.0, method="POST", path=r"/labels$", count=1)
    ops, attempts = ops_with(gh)
    await ops.add_labels(REPO, number, "in-progress")
    assert attempts.outcomes() == ["retry", "ok"]
    assert "Timeout" in (attempts[0].error or "")
    assert sim.issue(REPO, number).labels == ["in-progress"]


@pytest.mark.parametrize("status", [403, 429])
async def test_secondary_limit_on_a_write_is_waited_out_and_reported(
    sim: GitHubSimulator, make_client: ClientFactory, status: int
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await anyio.sleep(seconds)

    gh = make_client(sleep=sleep)
    number = sim.create_issue(REPO, "t", "b")
    sim.faults.error(status, method="POST", path=r"/comments$", count=1, retry_after=7)
    ops, attempts = ops_with(gh)
    created = await ops.comment(REPO, number, "after the limit")
    assert [c.id for c in sim.comments(REPO, number)] == [created["id"]]
    assert [(a.outcome, a.status_code, a.wait) for a in attempts] == [
        ("rate_limited", status, 7.0),
        ("ok", None, None),
    ]
    assert slept == [pytest.approx(7.0 * FAST.scale)]  # retry-after honoured (scaled)


async def test_write_gives_up_when_the_budget_is_spent(
    sim: GitHubSimulator, make_client: ClientFactory
) -> None:
    # No jitter, so the waits are exactly 1, 2, 4 s (scaled): a 5 s budget allows the
    # first two waits (3 s) but not the third (7 s), so three attempts are made.
    gh = make_client(retry=RetryPolicy(scale=0.001, jitter=0.0, attempts=4))
    number = sim.create_issue(REPO, "t", "b")
    sim.faults.error(503, method="POST", path=r"/labels$")
    ops, attempts = ops_with(gh, write_budget=5.0)
    with pytest.raises(GitHubUnavailable, match="503"):
        await ops.add_labels(REPO, number, "in-progress")
    assert attempts.outcomes() == ["retry", "retry", "gave_up"]
    assert [a.wait for a in attempts] == [1.0, 2.0, None]
    assert posts(sim, "/labels") == [(503, "error")] * 3


async def test_client_alone_still_never_repeats_a_post(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    # The plain client keeps its rule (a POST that may have arrived is not repeated): only
    # a write step, which knows how to look the write up, repeats it.
    number = sim.create_issue(REPO, "t", "b")
    path = f"{REPO_PATH}/issues/{number}/comments"
    sim.faults.error(502, method="POST", path=path, count=1)
    with pytest.raises(GitHubUnavailable):
        await gh.post(path, data={"body": "x"})
    assert posts(sim, "/comments") == [(502, "error")]


async def test_lost_answer_is_looked_up_before_giving_up(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    # No budget for a second attempt: the step still looks before it reports a failure.
    number = sim.create_issue(REPO, "t", "b")
    sim.faults.drop_after_apply(method="POST", path=r"/comments$")
    ops, attempts = ops_with(gh, write_budget=0.0)
    created = await ops.comment(REPO, number, "landed")
    assert [c.id for c in sim.comments(REPO, number)] == [created["id"]]
    assert attempts.outcomes() == ["found"]
    sim.faults.drop_connection(method="POST", path=r"/comments$")
    with pytest.raises(GitHubUnavailable):
        await ops.comment(REPO, number, "never landed")
    assert attempts.outcomes()[1:] == ["gave_up"]
    assert len(sim.comments(REPO, number)) == 1
