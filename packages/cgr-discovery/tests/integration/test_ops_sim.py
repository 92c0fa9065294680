"""RunGitHub: the calls a run makes, against the simulator over loopback HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from discovery_support import BOT, REPO

from cgr_discovery import (
    GitHubClient,
    GitHubRequestError,
    GitHubUnavailable,
    RunGitHub,
    splice_owned_section,
)
from cgr_discovery.testing import GitHubSimulator

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ops(gh: GitHubClient) -> RunGitHub:
    return RunGitHub(gh)


async def test_labels_with_spaces_and_unicode(sim: GitHubSimulator, ops: RunGitHub) -> None:
    number = sim.create_issue(REPO, "t", "b", labels=["ready"])
    await ops.add_labels(REPO, number, "in progress ✓", "cgr: working")
    assert sim.issue(REPO, number).labels == ["ready", "in progress ✓", "cgr: working"]
    assert await ops.remove_label(REPO, number, "in progress ✓") is True
    assert await ops.remove_label(REPO, number, "ready") is True
    assert sim.issue(REPO, number).labels == ["cgr: working"]
    # Removing a label that is not there is not an error.
    assert await ops.remove_label(REPO, number, "ready") is False
    assert await ops.remove_label(REPO, number, "never existed ☃") is False
    paths = [r.path for r in sim.requests if r.method == "DELETE"]
    assert f"/repos/{REPO}/issues/{number}/labels/in progress ✓" in paths


async def test_label_listing_and_creation(sim: GitHubSimulator, ops: RunGitHub) -> None:
    names = {label["name"] for label in await ops.list_labels(REPO)}
    assert {"ready", "in-progress", "blocked"} <= names
    created = await ops.create_label(REPO, "cgr:failed", color="#d73a4a", description="Run failed")
    assert (created["name"], created["color"]) == ("cgr:failed", "d73a4a")
    assert "cgr:failed" in {label["name"] for label in await ops.list_labels(REPO)}
    # Creating it again (a repeated step) returns the existing label, unchanged.
    again = await ops.create_label(REPO, "cgr:failed", color="000000")
    assert (again["name"], again["color"]) == ("cgr:failed", "d73a4a")


async def test_assign_and_unassign(sim: GitHubSimulator, ops: RunGitHub) -> None:
    number = sim.create_issue(REPO, "t", "b")
    await ops.assign(REPO, number, BOT)
    assert sim.issue(REPO, number).assignees == [BOT]
    await ops.unassign(REPO, number, BOT)
    assert sim.issue(REPO, number).assignees == []


async def test_one_status_comment_per_run_edited_in_place_with_throttle(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    number = sim.create_issue(REPO, "t", "b")
    sim.add_comment(REPO, number, "a person's comment", author=BOT)
    clock = Clock()
    ops = RunGitHub(gh, min_edit_interval=10.0, clock=clock)
    assert await ops.update_status(REPO, number, "run-1", "Queued") is True
    clock.now += 1
    assert await ops.update_status(REPO, number, "run-1", "Cloning") is False  # throttled
    clock.now += 1
    assert await ops.update_status(REPO, number, "run-1", "Running") is False  # throttled
    status = [c for c in sim.comments(REPO, number) if "cgr:run=run-1" in c.body]
    assert len(status) == 1
    assert status[0].body.endswith("Queued")
    assert await ops.flush_status("run-1") is True  # the held-back text goes out
    assert sim.comments(REPO, number)[-1].body.endswith("Running")
    clock.now += 1
    assert await ops.update_status(REPO, number, "run-1", "Done ✓", final=True) is True
    assert await ops.update_status(REPO, number, "run-1", "Done ✓", final=True) is False
    comments = sim.comments(REPO, number)
    assert len(comments) == 2
    assert comments[1].body == "<!-- cgr:run=run-1 -->\nDone ✓"
    patches = [r for r in sim.requests if r.method == "PATCH"]
    posts = [r for r in sim.requests if r.method == "POST"]
    assert (len(posts), len(patches)) == (1, 2)
    # Another process (a restarted run) finds the comment by its marker: still one.
    again = RunGitHub(gh, clock=clock)
    await again.update_status(REPO, number, "run-1", "Retried")
    await again.update_status(REPO, number, "run-2", "Second run")
    bodies = [c.body for c in sim.comments(REPO, number)]
    assert bodies[1:] == ["<!-- cgr:run=run-1 -->\nRetried", "<!-- cgr:run=run-2 -->\nSecond run"]


async def test_reactions(sim: GitHubSimulator, ops: RunGitHub) -> None:
    number, comment_id = sim.seed_collaborator_mention(REPO)
    _pr, review_id = sim.seed_bot_pull_request(REPO)
    await ops.react(REPO, "eyes", comment_id=comment_id)
    await ops.react(REPO, "eyes", comment_id=comment_id)  # repeating is harmless
    await ops.react(REPO, "rocket", review_comment_id=review_id)
    await ops.react(REPO, "+1", number=number)
    assert [(r.user, r.content) for r in sim.reactions(REPO, comment_id=comment_id)] == [
        (BOT, "eyes")
    ]
    assert [r.content for r in sim.reactions(REPO, review_comment_id=review_id)] == ["rocket"]
    assert [r.content for r in sim.reactions(REPO, number=number)] == ["+1"]
    with pytest.raises(ValueError, match="exactly one"):
        await ops.react(REPO, "eyes")


async def test_thread_of_issue_and_pull_request(sim: GitHubSimulator, ops: RunGitHub) -> None:
    number, comment_id = sim.seed_collaborator_mention(REPO)
    thread = await ops.get_thread(REPO, number)
    assert not thread.is_pull_request
    assert [c["id"] for c in thread.comments] == [comment_id]
    pr, review_id = sim.seed_bot_pull_request(REPO, branch="cgr/issue-9")
    sim.add_comment(REPO, pr, "conversation", author="carol")
    thread = await ops.get_thread(REPO, pr)
    assert thread.is_pull_request
    assert thread.pull is not None
    assert (thread.pull["head"]["ref"], thread.pull["base"]["ref"]) == ("cgr/issue-9", "main")
    assert [c["body"] for c in thread.comments] == ["conversation"]
    assert [c["id"] for c in thread.review_comments] == [review_id]


async def test_a_threads_reads_are_in_flight_in_pairs(
    sim: GitHubSimulator, gh: GitHubClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue and its comments are read together (one round trip of latency before a
    run's claim, not two); a pull request's pull and review comments then together too."""
    in_flight = {"now": 0, "max": 0, "sent": 0}
    send = gh.send

    async def counted(*args: Any, **kwargs: Any) -> Any:
        in_flight["now"] += 1
        in_flight["sent"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            return await send(*args, **kwargs)
        finally:
            in_flight["now"] -= 1

    monkeypatch.setattr(gh, "send", counted)
    sim.faults.latency(0.2)
    ops = RunGitHub(gh)
    number, comment_id = sim.seed_collaborator_mention(REPO)
    thread = await ops.get_thread(REPO, number)
    assert [c["id"] for c in thread.comments] == [comment_id]
    assert (in_flight["sent"], in_flight["max"]) == (2, 2)
    pr, review_id = sim.seed_bot_pull_request(REPO, branch="cgr/issue-9")
    in_flight.update(sent=0, max=0)
    thread = await ops.get_thread(REPO, pr)
    assert [c["id"] for c in thread.review_comments] == [review_id]
    assert (in_flight["sent"], in_flight["max"]) == (4, 2)


async def test_a_failed_read_of_a_thread_raises_github_s_error_itself(
    sim: GitHubSimulator, ops: RunGitHub
) -> None:
    """Not an exception group: callers tell an outage (the run goes back to the queue)
    from a refusal by the exception's type."""
    number = sim.create_issue(REPO, "t", "b")
    sim.faults.error(502, method="GET", path=rf"/issues/{number}/comments")
    with pytest.raises(GitHubUnavailable):
        await ops.get_thread(REPO, number)
    # The issue's read beside it ran to its end (no sibling cancelled half-way).
    assert [r.status for r in sim.requests if r.path == f"/repos/{REPO}/issues/{number}"] == [200]


async def test_a_status_comment_known_from_the_thread_is_not_looked_for_again(
    sim: GitHubSimulator, ops: RunGitHub
) -> None:
    """The thread's comments, just read, tell whether the run's status comment exists:
    the first update writes at once (created, or edited in place), no list read first."""
    number = sim.create_issue(REPO, "t", "b")
    thread = await ops.get_thread(REPO, number)
    ops.note_thread_comments(REPO, number, "run-1", thread.comments)
    sim.clear_requests()
    assert await ops.update_status(REPO, number, "run-1", "Working") is True
    assert [(r.method, r.path) for r in sim.requests] == [
        ("POST", f"/repos/{REPO}/issues/{number}/comments")
    ]
    # Another process of the same run (put back in the queue) finds it in the thread.
    again = RunGitHub(ops.gh)
    thread = await again.get_thread(REPO, number)
    again.note_thread_comments(REPO, number, "run-1", thread.comments)
    sim.clear_requests()
    assert await again.update_status(REPO, number, "run-1", "Working again") is True
    assert [r.method for r in sim.requests] == ["PATCH"]
    (comment,) = sim.comments(REPO, number)
    assert comment.body.endswith("Working again")
    # Without the thread, the first update looks (a GET) before it writes.
    third = RunGitHub(ops.gh)
    sim.clear_requests()
    await third.update_status(REPO, number, "run-1", "Looked up")
    assert [r.method for r in sim.requests] == ["GET", "PATCH"]


async def test_pull_request_lifecycle(sim: GitHubSimulator, ops: RunGitHub) -> None:
    assert await ops.default_branch(REPO) == "main"
    assert await ops.find_pull_request(REPO, "cgr/issue-1") is None
    sim.commit(REPO, "cgr/issue-1", {"fix.py": "print('fixed')\n"})
    created = await ops.create_pull_request(
        REPO, head="cgr/issue-1", base="main", title="Fix", body="Summary", draft=True
    )
    assert created["draft"] is True
    found = await ops.find_pull_request(REPO, "cgr/issue-1")
    assert found is not None
    assert found["number"] == created["number"]
    # A person edits the description; cgr rewrites only its own section.
    human = "Written by a person.\n\n" + splice_owned_section(None, "Run 1: 3 files")
    sim.edit_issue(REPO, created["number"], body=human + "\n\nFooter by the agent.")
    await ops.update_pull_request(REPO, created["number"], section="Run 2: 5 files", title="Fix!")
    pull = sim.issue(REPO, created["number"])
    assert pull.title == "Fix!"
    assert pull.body is not None
    assert pull.body.startswith("Written by a person.\n\n<!-- cgr:begin -->\nRun 2: 5 files\n")
    assert pull.body.endswith("<!-- cgr:end -->\n\nFooter by the agent.")
    assert "Run 1" not in pull.body
    sim.close_issue(REPO, created["number"])
    assert await ops.find_pull_request(REPO, "cgr/issue-1", state="open") is None
    assert await ops.find_pull_request(REPO, "cgr/issue-1", state="all") is not None


async def test_branch_heads_of_names_and_prefixes(sim: GitHubSimulator, ops: RunGitHub) -> None:
    """A name is that branch alone (GitHub lists ``main-2`` for ``heads/main`` too); a
    ``prefix*`` every branch that begins with it (``cgr/9-`` is not ``cgr/90-``); a branch
    that does not exist is left out. Slashes stay path separators in the request."""
    for branch in ("main-2", "cgr/9-a", "cgr/9-b", "cgr/90-c"):
        sim.commit(REPO, branch, {"x.txt": branch}, start_point="main")
    sim.clear_requests()
    heads = await ops.branch_heads(REPO, ["main", "cgr/9-*", "gone", "main"])
    branches = sim.branches(REPO)
    assert heads == {name: branches[name] for name in ("main", "cgr/9-a", "cgr/9-b")}
    assert sorted(r.path for r in sim.requests) == [
        f"/repos/{REPO}/git/matching-refs/heads/cgr/9-",
        f"/repos/{REPO}/git/matching-refs/heads/gone",
        f"/repos/{REPO}/git/matching-refs/heads/main",
    ]  # each name once
    # Characters a URL reads otherwise reach GitHub as part of the name.
    sim.commit(REPO, "we%41x#y", {"x.txt": "odd"}, start_point="main")
    odd = sim.branches(REPO)["we%41x#y"]
    assert await ops.branch_heads(REPO, ["we%41x#y"]) == {"we%41x#y": odd}
    assert await ops.branch_heads(REPO, ["we%4*"]) == {"we%41x#y": odd}
    for odd in ("a*b", "*", ""):
        with pytest.raises(ValueError, match="not a branch name or prefix"):
            await ops.branch_heads(REPO, [odd])
    with pytest.raises(GitHubRequestError) as raised:
        await ops.branch_heads("acme/missing", ["main"])
    assert raised.value.status_code == 404


async def test_collaborator_permission(sim: GitHubSimulator, ops: RunGitHub) -> None:
    sim.add_collaborator(REPO, "maint", role="maintain")
    sim.add_user("stranger")
    assert await ops.collaborator_permission(REPO, "maint") == "maintain"
    assert await ops.collaborator_permission(REPO, BOT) == "write"
    assert await ops.collaborator_permission(REPO, "stranger") in ("none", "read")


async def test_deleted_status_comment_is_recreated(sim: GitHubSimulator, gh: GitHubClient) -> None:
    number = sim.create_issue(REPO, "t", "b")
    ops = RunGitHub(gh, min_edit_interval=0.0)
    await ops.update_status(REPO, number, "run-7", "Running")
    (comment,) = sim.comments(REPO, number)
    await gh.delete(
        "/repos/{owner}/{repo}/issues/comments/{id}",
        {"owner": "acme", "repo": "widgets", "id": comment.id},
    )
    assert await ops.update_status(REPO, number, "run-7", "Done", final=True) is True
    (again,) = sim.comments(REPO, number)
    assert again.id != comment.id
    assert again.body == "<!-- cgr:run=run-7 -->\nDone"
