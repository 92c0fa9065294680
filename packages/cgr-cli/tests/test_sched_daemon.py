"""`cgr daemon` as a real process: subprocess children, the lock, draining on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from runworld import REPO, Env
from schedworld import (
    all_terminal,
    assert_consistent,
    cgr,
    no_processes_left,
    runs,
    sched_config,
    start_cgr,
    stop,
    stored_running_run,
    wait_tracking_peak,
    wait_until,
)


@pytest.mark.slow
def test_daemon_runs_every_issue_within_the_limit_and_owns_the_store(
    env: Env, subreaper: None, tmp_path: Path
) -> None:
    sched_config(env, polling={"max_concurrency": 2})
    issues = env.sim.seed_ready_issues(REPO, 4)
    daemon = start_cgr(env, "daemon", "--grace", "5", log=tmp_path / "daemon.log")
    try:
        wait_until(lambda: len(runs(env)) > 0, 30, "the daemon's first run")
        # A tick refuses while the daemon owns the store, and says so; so does a 2nd daemon.
        refused = cgr(env, "tick")
        assert refused.returncode == 4  # busy
        assert f"cgr daemon (pid {daemon.pid}) owns the store" in refused.stderr
        second = cgr(env, "daemon")
        assert second.returncode == 4
        assert "owns the store" in second.stderr
        peak = wait_tracking_peak(
            env, lambda: len(runs(env)) == 4 and all_terminal(env), 90, "all four runs"
        )
        assert peak <= 2
        status = cgr(env, "status")
        assert status.returncode == 0
        assert f"daemon pid {daemon.pid}" in status.stdout
        assert "pr_opened" in status.stdout
    finally:
        code = stop(daemon)
    assert code == 0, (tmp_path / "daemon.log").read_text()
    log = (tmp_path / "daemon.log").read_text()
    # Every run was handed to a `cgr run` the daemon had started ahead of it (its imports
    # done): commands/_standby.py, cgr_exec's standby.
    started = [line for line in log.splitlines() if "started run" in line]
    assert len(started) == 4
    assert all(line.endswith(", standby)") for line in started), started
    wait_until(lambda: not list(no_processes_left(env)), 20, "children to be gone")
    assert_consistent(env, issues)
    # The lock is free again: a tick may run.
    assert cgr(env, "tick").returncode == 0


@pytest.mark.slow
def test_daemon_ends_a_hung_child_of_its_own(env: Env, subreaper: None, tmp_path: Path) -> None:
    """A child that stops heartbeating (SIGSTOPped: alive, but running nothing) is ended by
    the daemon's own reap pass; the daemon does not stamp its children's rows itself."""
    sched_config(env, timeouts={"heartbeat_seconds": 0.3, "stale_heartbeat_seconds": 1.5,
                                "watchdog_grace_seconds": 0.3})  # fmt: skip
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "60")
    issues = env.sim.seed_ready_issues(REPO, 1)
    daemon = start_cgr(env, "daemon", "--grace", "1", log=tmp_path / "daemon.log")
    stopped: int | None = None
    try:
        wait_until(lambda: any(r.status.value == "running" for r in runs(env)), 30, "a running run")
        (run,) = runs(env)
        assert run.pid is not None
        stopped = run.pid
        os.kill(stopped, signal.SIGSTOP)  # the `cgr run` child: alive, no longer beating
        wait_until(lambda: runs(env)[0].status.value == "timed_out", 30, "the daemon's reap")
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        code = stop(daemon, signal.SIGTERM, timeout=40)
    assert code == 0
    (ended,) = runs(env)
    assert "no heartbeat for " in (ended.error or "")
    (comment,) = [c.body for c in env.sim.comments(REPO, issues[0]) if ended.id in c.body]
    assert "no heartbeat for" in comment
    wait_until(lambda: not list(no_processes_left(env)), 20, "children to be gone")
    assert_consistent(env, issues)


@pytest.mark.slow
def test_sigterm_drains_then_cancels_visibly(env: Env, subreaper: None, tmp_path: Path) -> None:
    sched_config(env)
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "60")  # would outlast the grace period
    issues = env.sim.seed_ready_issues(REPO, 1)
    daemon = start_cgr(env, "daemon", "--grace", "1", log=tmp_path / "daemon.log")
    try:
        wait_until(lambda: any(r.status.value == "running" for r in runs(env)), 30, "a running run")
    finally:
        code = stop(daemon, signal.SIGTERM, timeout=40)
    assert code == 0
    (run,) = runs(env)
    assert run.status.value == "cancelled"
    assert "grace period" in (run.error or "")
    comments = [c.body for c in env.sim.comments(REPO, issues[0]) if run.id in c.body]
    assert len(comments) == 1
    assert "cancelled" in comments[0]
    assert "grace period" in comments[0]
    wait_until(lambda: not list(no_processes_left(env)), 20, "children to be gone")
    assert_consistent(env, issues)


def test_daemon_start_reconciles_runs_whose_process_is_gone(
    env: Env, subreaper: None, tmp_path: Path
) -> None:
    sched_config(env)
    (number,) = env.sim.seed_ready_issues(REPO, 1)
    env.sim.remove_label(REPO, number, "ready")  # claimed by the run that died
    run_id = stored_running_run(env, number)
    daemon = start_cgr(env, "daemon", log=tmp_path / "daemon.log")
    try:
        wait_until(lambda: all_terminal(env), 30, "reconciliation")
    finally:
        assert stop(daemon) == 0
    (run,) = runs(env)
    assert (run.id, run.status.value) == (run_id, "failed")
    assert "reconciled" in (tmp_path / "daemon.log").read_text()
    assert_consistent(env, [number])
