"""`cgr reap`, `cgr cancel`, `cgr retry`, `@bot cancel` / `@bot retry`, `status`, `logs`:
real processes, the simulator, a real store."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from runworld import REPO, Env
from schedworld import Sched


def running(sched: Sched, n: int = 1) -> bool:
    """``n`` runs are in the agent phase (their agent has recorded its call)."""
    calls = sched.env.agent_state / "calls"
    started = len(list(calls.glob("*.json"))) if calls.is_dir() else 0
    return started >= n or sum(r.status.value == "running" for r in sched.runs()) >= n


def test_reap_recognises_a_pull_request_the_dead_run_opened(env: Env, sched: Sched) -> None:
    sched.config()
    (done, early, none) = env.sim.seed_ready_issues(REPO, 3)
    # #early: its branch had a PR before the run started - not the run's work.
    env.sim.commit(REPO, "cgr/early", {"a.txt": "a\n"})
    env.sim.create_pull_request(REPO, "cgr/early", "older PR", author="alice")
    time.sleep(1.1)  # GitHub's timestamps have whole seconds
    done_id = sched.stored_running_run(done, branch="cgr/done")
    early_id = sched.stored_running_run(early, branch="cgr/early")
    none_id = sched.stored_running_run(none, branch="cgr/none")
    env.sim.commit(REPO, "cgr/done", {"b.txt": "b\n"})
    env.sim.create_pull_request(REPO, "cgr/done", "the run's PR", author=env.sim.bot_login)
    result = sched.cgr("reap", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["recovered"] == [done_id]
    assert sorted(report["gone"]) == sorted([early_id, none_id])
    with env.store() as store:
        recovered = store.get_run(done_id)
        assert recovered.status.value == "succeeded"
        assert recovered.pr_number is not None
        assert store.get_run(early_id).status.value == "failed"
        assert "ended without finishing" in (store.get_run(none_id).error or "")
    for number, run_id in ((done, done_id), (early, early_id), (none, none_id)):
        labels = set(env.sim.issue(REPO, number).labels)
        assert "in-progress" not in labels
        assert ("needs-human" in labels) == (number != done)
        (comment,) = [c.body for c in env.sim.comments(REPO, number) if run_id in c.body]
        assert ("Opened pull request" in comment) == (number == done)
    # A second reap finds nothing to do.
    again = json.loads(sched.cgr("reap", "--json").stdout)
    assert again == {"gone": [], "requeued": [], "recovered": [], "timed_out": [], "hung": [],
                     "removed": again["removed"], "delivered": [],
                     "undelivered": []}  # fmt: skip


def test_a_run_killed_after_its_pull_request_is_recovered_and_its_leftovers_ended(
    env: Env, sched: Sched, subreaper: None
) -> None:
    """A run SIGKILLed between opening its pull request and its own end: the reaper records
    it succeeded and still ends what it left running (here a process of its job, as a
    detached child of its agent would be), which the run's end would have ended."""
    from cgr_exec import JOB_ENV_VAR

    sched.config()
    (number,) = env.sim.seed_ready_issues(REPO, 1)
    time.sleep(1.1)  # GitHub's timestamps have whole seconds
    run_id = sched.stored_running_run(number, branch="cgr/done")
    env.sim.commit(REPO, "cgr/done", {"b.txt": "b\n"})
    env.sim.create_pull_request(REPO, "cgr/done", "the run's PR", author=env.sim.bot_login)
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, JOB_ENV_VAR: run_id}, start_new_session=True,
    )  # fmt: skip
    try:
        result = sched.cgr("reap", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["recovered"] == [run_id]
        assert leftover.wait(timeout=30) is not None  # ended by the reaper, not by us
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
    with env.store() as store:
        assert store.get_run(run_id).status.value == "succeeded"


def test_a_run_claimed_after_the_reapers_snapshot_is_still_reported(env: Env, sched: Sched) -> None:
    """The reaper lists active runs, then spends seconds on GitHub calls; a run listed
    while queued (nothing on GitHub yet: ended silently) but claimed since must get its
    report (found by the chaos test: an issue kept its in-progress label)."""
    import anyio
    import msgspec

    from cgr_cli.config._load import load_config
    from cgr_cli.schedule._github import open_github
    from cgr_cli.schedule._reaper import end_run
    from cgr_store import RunStatus

    sched.config()
    (number,) = env.sim.seed_ready_issues(REPO, 1)
    run_id = sched.stored_running_run(number)
    # Killed mid-claim: in-progress was added, the claim's removal of `ready` never landed.
    assert "ready" in env.sim.issue(REPO, number).labels
    config, _ = load_config(env.config_path)
    with env.store() as store:
        stale = msgspec.structs.replace(
            store.get_run(run_id), status=RunStatus.QUEUED, trigger_id=None
        )

        async def reap_stale() -> bool:
            async with open_github(config, store) as github:
                return await end_run(
                    config, store, github, stale, RunStatus.FAILED, outcome="failed",
                    error="the run's process ended without finishing the run",
                )  # fmt: skip

        assert anyio.run(reap_stale)
        assert store.get_run(run_id).status is RunStatus.FAILED
        assert store.pending_outbox(100) == []  # the report was written and sent
    # One visible state: the verdict, not `ready` beside it.
    assert set(env.sim.issue(REPO, number).labels) == {"needs-human"}


@pytest.mark.slow
def test_sigkilled_children_are_reaped_visibly_and_their_agents_ended(
    env: Env, sched: Sched, subreaper: None
) -> None:
    sched.config()
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "30")
    issues = env.sim.seed_ready_issues(REPO, 2)
    assert sched.cgr("tick").returncode == 0
    sched.wait_until(lambda: running(sched, 2)
                     or len(list(env.workspace.glob("targets/*/*/*/repo"))) >= 2,
                     30, "both runs at work")  # fmt: skip
    sched.wait_until(lambda: all(r.status.value == "running" for r in sched.runs()), 30, "running")
    for run in sched.runs():
        os.kill(run.pid, signal.SIGKILL)  # the fork child that runs the pipeline
    result = sched.cgr("reap", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["gone"]) == 2
    # The orphaned agents (their own sessions) were found by working directory and ended.
    sched.wait_all_gone("agents to be ended")
    sched.assert_consistent(issues)
    assert {r.status.value for r in sched.runs()} == {"failed"}


@pytest.mark.slow
def test_a_stuck_run_past_its_time_limit_is_killed_and_timed_out(
    env: Env, sched: Sched, subreaper: None
) -> None:
    sched.config(timeouts={"run_seconds": 2.0, "watchdog_grace_seconds": 0.3})
    issues = sched.start_slow_runs(1, agent_seconds=30)
    (run,) = sched.runs()
    os.kill(run.pid, signal.SIGSTOP)  # stuck: its own time limit can no longer fire
    time.sleep(3.0)
    report = json.loads(sched.cgr("reap", "--json").stdout)
    assert report["timed_out"] == [run.id]
    (run,) = sched.runs()
    assert run.status.value == "timed_out"
    sched.wait_all_gone("the group to be gone")
    sched.assert_consistent(issues)


@pytest.mark.slow
def test_a_live_run_without_heartbeats_is_killed_and_timed_out(
    env: Env, sched: Sched, subreaper: None
) -> None:
    """A stopped process is alive but runs nothing: no heartbeat. Past the stale limit the
    reaper kills its group and ends it visibly; while it beats it is left alone."""
    sched.config(timeouts={"heartbeat_seconds": 0.3, "stale_heartbeat_seconds": 1.5,
                           "watchdog_grace_seconds": 0.3})  # fmt: skip
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "30")
    issues = env.sim.seed_ready_issues(REPO, 1)
    assert sched.cgr("tick").returncode == 0
    sched.wait_until(lambda: all(r.status.value == "running" for r in sched.runs()), 30, "running")
    sched.wait_until(lambda: running(sched), 30, "the agent to start")
    (run,) = sched.runs()
    try:
        # Working (the agent runs, git ran) for longer than the stale limit: it beats.
        time.sleep(2.5)
        report = json.loads(sched.cgr("reap", "--json").stdout)
        assert report["hung"] == []
        assert report["timed_out"] == []
        (live,) = sched.runs()
        assert live.status.value == "running"
        assert live.heartbeat_at is not None
        os.kill(run.pid, signal.SIGSTOP)  # alive, but no longer heartbeating
        time.sleep(2.5)
        report = json.loads(sched.cgr("reap", "--json").stdout)
        assert report["hung"] == [run.id]
        assert report["timed_out"] == []
    finally:
        # Never leave a stopped process behind, whatever failed above.
        with contextlib.suppress(ProcessLookupError):
            os.kill(run.pid, signal.SIGCONT)
    (ended,) = sched.runs()
    assert ended.status.value == "timed_out"
    assert ended.outcome == "timed_out"
    assert "no heartbeat for " in (ended.error or "")
    assert "(limit 1.5s)" in (ended.error or "")
    (comment,) = [c.body for c in env.sim.comments(REPO, issues[0]) if run.id in c.body]
    assert "no heartbeat for" in comment
    labels = set(env.sim.issue(REPO, issues[0]).labels)
    assert "needs-human" in labels
    assert "in-progress" not in labels
    # The stopped pipeline and its agent (its own session, found by cwd) are gone.
    sched.wait_all_gone("the group to be gone")
    sched.assert_consistent(issues)


@pytest.mark.slow
def test_cancel_and_retry_from_the_command_line(env: Env, sched: Sched, subreaper: None) -> None:
    sched.config()
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "30")
    issues = env.sim.seed_ready_issues(REPO, 1)
    assert sched.cgr("tick").returncode == 0
    sched.wait_until(lambda: running(sched), 30, "the agent to start")
    (run,) = sched.runs()
    # status shows it, with its phase and age
    status = json.loads(sched.cgr("status", "--json").stdout)
    assert [a["id"] for a in status["active"]] == [run.id]
    assert status["slots"]["used"] == 1
    follower = subprocess.Popen(
        [sys.executable, "-m", "cgr_cli", "logs", run.id, "--follow",
         "--config", str(env.config_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    cancelled = sched.cgr("cancel", run.id, "--reason", "not needed after all")
    assert cancelled.returncode == 0, cancelled.stderr
    (run,) = sched.runs()
    assert run.status.value == "cancelled"
    followed, _ = follower.communicate(timeout=20)  # --follow ends with the run
    assert f"run {run.id}" in followed
    assert "received SIGTERM; cancelling the run" in followed
    (comment,) = [c.body for c in env.sim.comments(REPO, issues[0]) if run.id in c.body]
    assert "not needed after all" in comment
    assert "needs-human" in env.sim.issue(REPO, issues[0]).labels
    sched.wait_all_gone("the run's processes to end")
    assert sched.cgr("cancel", run.id).returncode == 1  # already ended: says so
    # retry: a new queued run (attempt 2) that the next tick starts
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "0.1")
    retried = sched.cgr("retry", run.id)
    assert retried.returncode == 0, retried.stderr
    assert "attempt 2" in retried.stdout
    assert sched.cgr("retry", run.id).returncode == 4  # busy: the target has an active run
    assert json.loads(sched.cgr("tick", "--json").stdout)["started"]
    sched.wait_until(sched.all_terminal, 60, "the retry to finish")
    second = max(sched.runs(), key=lambda r: r.created_at)
    assert (second.attempt, second.status.value) == (2, "succeeded")
    # logs: the run's log, its prompt, its history
    log = sched.cgr("logs", second.id)
    assert log.returncode == 0
    assert f"run {second.id}" in log.stdout
    assert "Please fix problem number 1" in sched.cgr("logs", second.id, "--prompt").stdout
    history = json.loads(sched.cgr("logs", second.id, "--json").stdout)
    moves = [e for e in history["events"] if e["from_status"] != e["to_status"]]
    assert [e["to_status"] for e in moves] == [
        "queued", "claimed", "running", "succeeded"
    ]  # fmt: skip
    # The other events are the run's GitHub write attempts.
    assert all(e["detail"].startswith("github ") for e in history["events"] if e not in moves)
    assert sched.cgr("logs", "r-nope").returncode == 3  # not found
    followed = sched.cgr("logs", second.id, "--follow", timeout=20)  # ended: returns
    assert followed.returncode == 0
    # --follow: the run's log, then the agent's activity, then the outcome.
    # (Blank lines of the log are left out of the readable view.)
    logged = [line for line in log.stdout.splitlines() if line.strip()]
    shown = [line for line in followed.stdout.splitlines() if line.strip()]
    assert shown[: len(logged)] == logged
    assert "  ■ result: success" in followed.stdout
    assert followed.stdout.rstrip().splitlines()[-1].startswith(f"run {second.id} succeeded")
    status = sched.cgr("status")
    assert "cancelled" in status.stdout
    assert "succeeded" in status.stdout


@pytest.mark.slow
def test_bot_cancel_and_bot_retry_comments(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    # One slot, taken by the run: the cancel command is handled all the same.
    sched.config(polling={"max_concurrency": 1, "runs_ahead": 0})
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "30")
    issues = env.sim.seed_ready_issues(REPO, 1)
    daemon = sched.start("daemon", "--grace", "5", log=tmp_path / "daemon.log")
    try:
        sched.wait_until(lambda: running(sched), 30, "the agent to start")
        env.sim.add_comment(REPO, issues[0], f"@{env.sim.bot_login} cancel", author="alice")
        sched.wait_until(
            lambda: "@alice asked to cancel" in (sched.runs()[0].error or ""), 30, "cancel"
        )
        (run,) = sched.runs()
        assert run.status.value == "cancelled"

        def status_comment() -> str:
            (body,) = [c.body for c in env.sim.comments(REPO, issues[0]) if run.id in c.body]
            return body

        # The store records the reason first, then the status comment is rewritten with it
        # (a GitHub call that may take a moment on a loaded machine).
        sched.wait_until(lambda: "@alice asked to cancel" in status_comment(), 30, "the comment")
        env.sim.add_comment(REPO, issues[0], f"@{env.sim.bot_login} retry", author="alice")
        sched.wait_until(lambda: len(sched.runs()) == 2, 30, "the retry run")
        retry = max(sched.runs(), key=lambda r: r.created_at)
        assert retry.attempt == 2
        assert retry.kind == run.kind
        assert sched.cgr("cancel", retry.id).returncode == 0
    finally:
        assert sched.stop(daemon) == 0, (tmp_path / "daemon.log").read_text()
    sched.wait_all_gone("processes to end")


def test_workspaces_are_removed_after_retention_never_for_active_runs(
    env: Env, sched: Sched
) -> None:
    from cgr_cli.config._load import load_config
    from cgr_cli.schedule._reaper import clean_workspaces
    from cgr_store import RunStatus, utcnow

    config, _ = load_config(sched.config(cleanup={"retention_days": 1.0}))
    old = sched.stored_running_run(env.sim.seed_ready_issues(REPO, 1)[0])
    with env.store() as store:
        store.transition(old.id if hasattr(old, "id") else old, RunStatus.FAILED)
    active = sched.stored_running_run(env.sim.seed_ready_issues(REPO, 1)[0])
    for run_id in (old, active):
        (env.workspace / run_id / "artifacts").mkdir(parents=True)
        (env.workspace / run_id / "artifacts" / "repo.tar.gz").write_bytes(b"archive")
    with env.store() as store:
        assert clean_workspaces(config, store, utcnow()) == []  # within retention
        later = utcnow() + timedelta(days=2)
        removed = clean_workspaces(config, store, later)
    assert removed == [str(env.workspace / old)]
    assert (env.workspace / active).is_dir()
