"""Exactly-once, always-visible effects when GitHub and git fail transiently (issue 14).

One fault of each kind the issue lists, injected into the GitHub simulator (REST and git
smart HTTP, with real git and a real SQLite store): the run still ends as it should, with
one status comment, labels that describe it, at most one PR, and each GitHub write attempt
in the run's history.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from runworld import REPO, Env


def _runs(env: Env) -> list[Any]:
    with env.store() as store:
        return sorted(store.recent_runs(limit=100), key=lambda r: r.created_at)


def _events(env: Env, run_id: str) -> list[Any]:
    with env.store() as store:
        return store.events(run_id)


def _status_comments(env: Env, number: int) -> list[str]:
    return [c.body for c in env.sim.comments(REPO, number) if "<!-- cgr:run=" in c.body]


def _run_log(env: Env, run_id: str) -> str:
    return (env.workspace / run_id / "logs" / "run.log").read_text()


def _issue(env: Env, title: str = "Add a greeting file") -> int:
    return int(env.sim.create_issue(REPO, title, "Please add hello.txt.", author="alice",
                                    labels=["ready"]))  # fmt: skip


def _assert_succeeded_once(env: Env, number: int) -> Any:
    (run,) = _runs(env)
    assert run.status == "succeeded", (run.status, run.error)
    assert run.outcome == "pr_opened"
    assert len(env.sim.pull_requests(REPO)) == 1
    (comment,) = _status_comments(env, number)
    assert f"pull request #{run.pr_number}" in comment
    assert "No pull request was opened" not in comment
    assert set(env.sim.issue(REPO, number).labels) == {"cgr-done"}
    with env.store() as store:
        assert store.pending_outbox() == []
    return run


def test_one_502_on_git_push_is_retried(env: Env) -> None:
    number = _issue(env)
    env.sim.faults.error(502, method="POST", path=r"git-receive-pack$", count=1)
    assert env.run(number) == 0
    run = _assert_succeeded_once(env, number)
    assert "git push: transient failure (attempt 1 of 8" in _run_log(env, run.id)
    pushes = [r for r in env.sim.requests if r.path.endswith("git-receive-pack")
              and r.method == "POST"]  # fmt: skip
    assert [r.status for r in pushes] == [502, 200]


def test_a_push_is_tried_longer_than_a_fetch(env: Env) -> None:
    """Six 502s in a row outlast a fetch's five tries; the push of the agent's work still
    lands (attempt seven of eight)."""
    from cgr_cli.run._git import PUSH_ATTEMPTS

    number = _issue(env)
    env.sim.faults.error(502, method="POST", path=r"git-receive-pack$", count=6)
    assert env.run(number) == 0
    run = _assert_succeeded_once(env, number)
    log = _run_log(env, run.id)
    assert f"git push: transient failure (attempt 6 of {PUSH_ATTEMPTS}" in log
    assert f"attempt 7 of {PUSH_ATTEMPTS}" not in log
    pushes = [r for r in env.sim.requests if r.path.endswith("git-receive-pack")
              and r.method == "POST"]  # fmt: skip
    assert [r.status for r in pushes] == [502] * 6 + [200]


def test_push_applied_but_its_answer_lost_is_not_pushed_again(env: Env) -> None:
    number = _issue(env)
    env.sim.faults.drop_after_apply(method="POST", path=r"git-receive-pack$")
    assert env.run(number) == 0
    run = _assert_succeeded_once(env, number)
    log = _run_log(env, run.id)
    assert "git push: the earlier attempt landed; not repeating it" in log
    pushes = [r for r in env.sim.requests if r.path.endswith("git-receive-pack")
              and r.method == "POST"]  # fmt: skip
    # git itself (libcurl) may resend the request once; cgr never pushes it again.
    assert pushes[0].fault == "drop_after"
    assert len(pushes) <= 2


def test_a_resent_push_rejected_while_its_check_fails_is_tried_again(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push is applied, its answer lost; libcurl resends it and the resend is
    "rejected" (the ref moved: by this very push). The ls-remote that would tell fails
    too. Unknown is not a verdict: the push is tried again, looking first, and the run
    succeeds with the one push."""
    from cgr_cli._errors import GitError
    from cgr_cli.run._git import Git

    number = _issue(env)
    env.sim.faults.drop_after_apply(method="POST", path=r"git-receive-pack$")
    real_remote_sha = Git.remote_sha
    checks: list[str] = []

    def first_check_fails(self: Git, url: str, branch: str, **kw: Any) -> str | None:
        checks.append(branch)
        if len(checks) == 1:
            raise GitError("ls-remote", 128, "error: RPC failed; HTTP 502 curl 22")
        return real_remote_sha(self, url, branch, **kw)

    monkeypatch.setattr(Git, "remote_sha", first_check_fails)
    assert env.run(number) == 0
    run = _assert_succeeded_once(env, number)
    log = _run_log(env, run.id)
    assert "could not check whether the push landed (git ls-remote failed)" in log
    assert "git push: the earlier attempt landed; not repeating it" in log
    assert len(checks) == 2
    pushes = [r for r in env.sim.requests if r.path.endswith("git-receive-pack")
              and r.method == "POST"]  # fmt: skip
    assert pushes[0].fault == "drop_after"
    assert len(pushes) <= 2  # the original and libcurl's resend; cgr sent none again


def test_one_500_on_the_claims_comment_post(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    number = _issue(env)
    env.sim.faults.error(500, method="POST", path=rf"/issues/{number}/comments$", count=1)
    assert env.run(number) == 0
    run = _assert_succeeded_once(env, number)
    details = [e.detail for e in _events(env, run.id)]
    comment = [d for d in details if d.startswith(f"github comment {REPO}#{number}")]
    assert comment[0].startswith(f"github comment {REPO}#{number} attempt 1: retry (500")
    assert comment[1] == f"github comment {REPO}#{number} attempt 2: ok"
    # Every write of the run is in its history, e.g. the claim's labels and the PR.
    assert any(d.startswith("github add_labels") for d in details)
    assert any(d.startswith("github create_pull_request") for d in details)
    # `cgr logs --json` shows them with the status changes.
    from cgr_cli import main

    capsys.readouterr()
    assert main(["logs", run.id, "--json", "--config", str(env.config_path)]) == 0
    shown = [e["detail"] for e in json.loads(capsys.readouterr().out)["events"]]
    assert comment[0] in shown


def test_one_502_on_post_pulls(env: Env) -> None:
    number = _issue(env)
    env.sim.faults.error(502, method="POST", path=r"/pulls$", count=1)
    assert env.run(number) == 0
    _assert_succeeded_once(env, number)


def test_pr_created_but_its_answer_lost_is_reported_as_opened(env: Env) -> None:
    number = _issue(env)
    env.sim.faults.drop_after_apply(method="POST", path=r"/pulls$")
    assert env.run(number) == 0
    run = _assert_succeeded_once(env, number)
    assert "needs-human" not in env.sim.issue(REPO, number).labels
    pr_details = [e.detail for e in _events(env, run.id) if "create_pull_request" in e.detail]
    assert any(": found" in d for d in pr_details), pr_details


def test_a_pull_request_opened_after_the_push_is_taken_not_doubled(env: Env) -> None:
    """cgr's branch is new, so the run does not look for a pull request before opening
    one (a round trip saved). One opened from that branch meanwhile - by a person, or an
    earlier attempt of this run - is found through GitHub's 422 "already exists": the
    run reports it, and there is still one pull request."""
    number = _issue(env)
    branch_pushed = threading.Event()
    opened: list[int] = []

    def open_it_first() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            heads = env.sim.branches(REPO)
            branch = next((b for b in heads if b.startswith(f"cgr/{number}-")), None)
            if branch is not None:
                opened.append(env.sim.create_pull_request(REPO, branch, "A person's PR",
                                                          author="alice"))  # fmt: skip
                branch_pushed.set()
                return
            time.sleep(0.01)

    # The run's POST waits 2 s at the simulator: the person's pull request comes first.
    env.sim.faults.latency(2.0, method="POST", path=r"/pulls$")
    person = threading.Thread(target=open_it_first)
    person.start()
    assert env.run(number) == 0
    person.join(5)
    assert branch_pushed.is_set()
    run = _assert_succeeded_once(env, number)
    assert run.pr_number == opened[0]
    pulls = [(r.method, r.status) for r in env.sim.requests if r.path.endswith("/pulls")]
    assert pulls == [("POST", 422), ("GET", 200)]  # no look before the write


def test_labels_describe_the_latest_run(env: Env) -> None:
    number = _issue(env)
    env.scenario("error")
    assert env.run(number) == 1
    assert set(env.sim.issue(REPO, number).labels) == {"needs-human"}
    env.scenario("success")
    comment_id = env.sim.add_comment(REPO, number, f"@{env.sim.bot_login} try again",
                                     author="alice")  # fmt: skip
    assert env.run(number, "--comment-id", str(comment_id)) == 0
    # Success takes needs-human (and in-progress) off and puts done on; never both.
    assert set(env.sim.issue(REPO, number).labels) == {"cgr-done"}
    env.scenario("error")
    again = env.sim.add_comment(REPO, number, f"@{env.sim.bot_login} once more", author="alice")
    assert env.run(number, "--comment-id", str(again)) == 1
    assert set(env.sim.issue(REPO, number).labels) == {"needs-human"}


def test_follow_up_on_cgrs_pull_request_keeps_closes(env: Env) -> None:
    number = _issue(env)
    assert env.run(number) == 0
    (pr,) = env.sim.pull_requests(REPO)
    assert f"Closes #{number}" in (pr.body or "")
    env.scenario("followup")
    comment_id = env.sim.add_comment(REPO, pr.number, f"@{env.sim.bot_login} a bit more",
                                     author="alice")  # fmt: skip
    assert env.run(pr.number, "--comment-id", str(comment_id)) == 0
    (after,) = env.sim.pull_requests(REPO)
    assert after.body != pr.body  # cgr's section was rewritten by the follow-up
    assert f"Closes #{number}" in (after.body or "")


def test_github_down_during_the_claim_puts_the_run_back_to_queued(env: Env) -> None:
    env.write_config(github={"write_retry_seconds": 0.5})
    number = _issue(env)
    down = env.sim.faults.error(503, method="POST", path=rf"/issues/{number}/comments$")
    assert env.run(number) == 1
    (run,) = _runs(env)
    assert run.status == "queued"
    assert run.pid is None
    details = [e.detail for e in _events(env, run.id)]
    assert any(d.startswith("requeued: GitHub failed during the claim (HTTP 503") for d in details)
    # Nothing public says "failed": no needs-human, no failure text.
    assert "needs-human" not in env.sim.issue(REPO, number).labels
    assert not any("failed" in c.body for c in env.sim.comments(REPO, number))
    # The next pass backs off (pre-claim backoff counted in requeues) ...
    from cgr_cli.config._load import load_config
    from cgr_cli.schedule._backoff import requeue_backoff
    from cgr_store import utcnow

    config, _ = load_config(env.config_path)
    with env.store() as store:
        waiting = requeue_backoff(config, store, store.get_run(run.id), now=utcnow())
    assert waiting is not None
    assert waiting.failures == 1
    # ... and the same run, picked up again once GitHub is back, finishes.
    down.remove()
    assert env.run(number, "--run-id", run.id) == 0
    _assert_succeeded_once(env, number)


def test_git_down_before_the_agent_puts_the_claimed_run_back_to_queued(env: Env) -> None:
    """Every attempt of the mirror fetch fails (git's HTTP 503): nothing was spent, so the
    run is requeued, not failed in public; once git is back the same run finishes."""
    number = _issue(env)
    attempts = 5  # GitRetryPolicy's, each failing on its first request
    down = env.sim.faults.error(503, method="GET", path=r"/info/refs$", count=attempts)
    assert env.run(number) == 1
    (run,) = _runs(env)
    assert run.status == "queued"
    assert run.pid is None
    details = [e.detail for e in _events(env, run.id)]
    assert any(
        d.startswith("requeued: GitHub's git front end failed before the agent started")
        for d in details
    ), details
    assert "running" not in {e.to_status for e in _events(env, run.id)}
    log = _run_log(env, run.id)
    assert f"git clone: transient failure (attempt {attempts - 1} of {attempts}" in log
    assert not list((env.agent_state / "calls").glob("*")), "the agent must not have started"
    # Nothing public says "failed": the claim stands (a queued run is in progress).
    labels = set(env.sim.issue(REPO, number).labels)
    assert "needs-human" not in labels
    assert "in-progress" in labels
    assert not any("failed" in c.body for c in env.sim.comments(REPO, number))
    assert down.remaining == 0
    assert env.run(number, "--run-id", run.id) == 0
    _assert_succeeded_once(env, number)


def test_github_down_at_the_end_the_report_waits_in_the_outbox(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run keeps its terminal status; `cgr status` lists the undelivered report; the
    next reap (as every tick and daemon pass does) sends it."""
    from cgr_cli import main

    env.write_config(github={"write_retry_seconds": 0.5})
    number = _issue(env)
    faults: list[Any] = []

    def outage_once_the_agent_started() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((env.agent_state / "calls").glob("*")):
            time.sleep(0.01)
        faults.append(env.sim.faults.error(502, method="PATCH", path=r"/issues/comments/\d+$"))
        faults.append(env.sim.faults.error(502, path=rf"/issues/{number}/labels"))

    watcher = threading.Thread(target=outage_once_the_agent_started)
    watcher.start()
    try:
        assert env.run(number) == 0
    finally:
        watcher.join()
    (run,) = _runs(env)
    assert run.status == "succeeded"
    assert run.outcome == "pr_opened"
    (comment,) = _status_comments(env, number)
    assert "Working on it" in comment  # GitHub did not take the final text (yet)
    with env.store() as store:
        pending = store.pending_outbox()
    assert {i.kind for i in pending} == {"labels", "status_comment"}
    assert all(i.attempts == 1 for i in pending)
    assert all(i.last_error for i in pending)
    capsys.readouterr()
    assert main(["status", "--config", str(env.config_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["undelivered"]["count"] == 2
    assert [r["id"] for r in status["undelivered"]["runs"]] == [run.id]
    assert main(["status", "--config", str(env.config_path)]) == 0
    assert f"undelivered 2 report(s) of 1 run(s) waiting for GitHub: {run.id}" in (
        capsys.readouterr().out
    )

    for fault in faults:
        fault.remove()
    # The run ran in this test's process; the process of a real `cgr run` has exited by
    # now, and only then is its report a scheduler's to send (never two senders at once).
    from schedworld import dead_process

    pid, start = dead_process()
    with env.store() as store:
        store.update_run(run.id, pid=pid, process_start_time=start)
    assert main(["reap", "--config", str(env.config_path), "--json"]) == 0
    reaped = json.loads(capsys.readouterr().out)
    assert reaped["delivered"] == [run.id]
    _assert_succeeded_once(env, number)
    assert main(["status", "--config", str(env.config_path)]) == 0
    assert "undelivered none" in capsys.readouterr().out


def test_an_older_runs_late_labels_do_not_override_a_newer_run(env: Env) -> None:
    """A report that waited in the outbox still finalises its own run's comment, but its
    labels are not sent once a newer run on the same target exists."""
    import anyio

    from cgr_cli.config._load import load_config
    from cgr_cli.run._outbox import report_entries
    from cgr_cli.schedule._deliver import deliver_pending
    from cgr_cli.schedule._github import open_github
    from cgr_store import Run, RunKind, RunStatus, new_run_id

    number = _issue(env)
    config, _ = load_config(env.config_path)
    with env.store() as store:
        # An older run that failed while GitHub was down: its report is still pending.
        older = store.create_run(Run(id=new_run_id(), repo=REPO, target=number,
                                     kind=RunKind.ISSUE))  # fmt: skip
        store.transition(older.id, RunStatus.CLAIMED)
        store.transition(
            older.id, RunStatus.FAILED, detail="failed", outcome="failed",
            outbox=report_entries(config.labels, run_id=older.id, repo=REPO, number=number,
                                  succeeded=False, text="❌ The run failed: old."),
        )  # fmt: skip
    assert env.run(number) == 0  # the newer run succeeds: its labels are {cgr-done}
    newer = _runs(env)[-1]
    assert newer.id != older.id

    async def deliver() -> None:
        with env.store() as store:
            async with open_github(config) as github:
                await deliver_pending(store, github, host=config.host_id)

    anyio.run(deliver)
    assert set(env.sim.issue(REPO, number).labels) == {"cgr-done"}
    details = [e.detail for e in _events(env, older.id)]
    assert f"labels not sent: run {newer.id} is newer on {REPO}#{number}" in details
    assert any(f"cgr:run={older.id}" in b and "old." in b for b in _status_comments(env, number))
    with env.store() as store:
        assert store.pending_outbox() == []


@pytest.fixture(autouse=True)
def _no_sleeping_git_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """git's retry waits (1 s, 2 s, ...) are real sleeps; the tests keep them short."""
    from cgr_cli.run import _git_retry

    monkeypatch.setattr(_git_retry.GitRetryPolicy, "wait", lambda self, retry: 0.05)


def test_a_report_that_failed_again_waits_longer_between_passes() -> None:
    from datetime import timedelta

    from cgr_cli.schedule._deliver import MAX_WAIT, _due
    from cgr_store import OutboxItem, utcnow

    now = utcnow()

    def item(attempts: int, ago: float) -> OutboxItem:
        return OutboxItem(id=1, run_id="r", kind="labels", key="labels", payload="{}",
                          created_at=now, attempts=attempts,
                          last_attempt_at=now - timedelta(seconds=ago))  # fmt: skip

    assert _due(item(1, 0), now)  # the run's own failure: the next pass tries at once
    assert not _due(item(2, 1.5), now)
    assert _due(item(2, 2), now)
    assert not _due(item(4, 7), now)
    assert _due(item(4, 8), now)
    assert not _due(item(30, MAX_WAIT - 1), now)
    assert _due(item(30, MAX_WAIT), now)
