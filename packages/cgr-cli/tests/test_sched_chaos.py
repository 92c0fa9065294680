"""Chaos: killed processes, racing schedulers and a flaky GitHub, with real processes.

After everything settles (and a reap), every triggered issue is in exactly one visible
terminal state, no issue has two PRs or two active runs, no process or zombie is left,
and the store's history explains every run (schedworld.assert_consistent).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runworld import REPO, Env
from schedworld import Sched

pytestmark = pytest.mark.slow


def settled(sched: Sched, issues: list[int]) -> bool:
    """Every issue was taken (no longer `ready`) and every run has ended. In this order: a
    run's row is written before its claim takes `ready` off, so the runs read after the
    labels include every run that took one."""
    return all("ready" not in sched.env.sim.issue(REPO, n).labels for n in issues) and (
        sched.all_terminal()
    )


def test_daemon_sigkilled_mid_run_and_restarted(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    sched.config(polling={"max_concurrency": 2})
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "1.5")
    issues = env.sim.seed_ready_issues(REPO, 4)
    log = tmp_path / "daemon.log"
    first = sched.start("daemon", log=log)
    sched.wait_until(lambda: any(r.status.value == "running" for r in sched.runs()), 30, "a run")
    first.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    # Its children live on (own sessions) and finish their runs; a new daemon takes the
    # lock at once (the kernel released the dead one's flock), reconciles, and carries on.
    second = sched.start("daemon", "--grace", "10", log=log)
    try:
        peak = sched.wait_tracking_peak(
            lambda: settled(sched, issues), 120, "every issue to be done"
        )
    finally:
        assert sched.stop(second) == 0, log.read_text()
    assert peak <= 4  # two agents and two runs ahead (polling.runs_ahead's default)
    assert sched.agent_peak() <= 2
    sched.wait_all_gone("no process left")
    sched.assert_consistent(issues)
    # Nothing duplicated: one run per issue, each succeeded exactly once.
    assert sorted(r.target for r in sched.runs()) == sorted(issues)
    assert {r.status.value for r in sched.runs()} == {"succeeded"}


def test_two_ticks_and_a_daemon_started_at_once(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    sched.config(polling={"max_concurrency": 3})
    issues = env.sim.seed_ready_issues(REPO, 6)
    argv = [sys.executable, "-m", "cgr_cli"]
    config = ["--config", str(env.config_path)]
    log = tmp_path / "daemon.log"
    ticks = [
        subprocess.Popen([*argv, "tick", *config], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    daemon = sched.start("daemon", "--grace", "10", log=log)
    try:
        outcomes = [t.communicate(timeout=60) for t in ticks]
        for tick, (_, err) in zip(ticks, outcomes, strict=True):
            # A tick either did its pass or refused because the daemon owned the store.
            assert tick.returncode == 0 or b"owns the store" in err, err
        peak = sched.wait_tracking_peak(
            lambda: settled(sched, issues), 120, "every issue to be done"
        )
    finally:
        assert sched.stop(daemon) == 0, log.read_text()
    assert peak <= 6
    assert sched.agent_peak() <= 3
    sched.wait_all_gone("no process left")
    sched.assert_consistent(issues)
    assert sorted(r.target for r in sched.runs()) == sorted(issues)
    assert len(env.sim.pull_requests(REPO)) == 6


def test_sigkilled_fork_children_then_the_next_tick_reaps_and_reruns_nothing_twice(
    env: Env, sched: Sched, subreaper: None
) -> None:
    sched.config()
    issues = sched.start_slow_runs(3, agent_seconds=20)
    victims = sched.runs()[:2]
    for run in victims:
        os.kill(run.pid, signal.SIGKILL)
    # The next tick reaps first (the two dead runs end failed, visibly), then schedules:
    # the killed issues carry needs-human now and are not taken again.
    assert sched.cgr("tick").returncode == 0
    with env.store() as store:
        for run in victims:
            assert store.get_run(run.id).status.value == "failed"
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "0")
    survivor = sched.runs()[2]
    os.kill(survivor.pid, signal.SIGTERM)  # a run told to stop ends cancelled, visibly
    sched.wait_until(sched.all_terminal, 30, "the survivor to end")
    assert sched.cgr("reap").returncode == 0
    sched.wait_all_gone("no process left")
    sched.assert_consistent(issues)
    assert len(sched.runs()) == 3


def test_github_5xx_bursts_and_secondary_limits_during_runs(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    sched.config(polling={"max_concurrency": 3})
    issues = env.sim.seed_ready_issues(REPO, 4)
    faults = env.sim.faults
    # Bursts on what runs and schedulers do: issue reads, labels, comments, pulls, lists.
    faults.error(502, path=r"/issues/\d+$", count=3)
    faults.error(503, path=r"/labels", count=3)
    faults.error(500, path=r"/issues$", count=2)
    faults.secondary_rate_limit(retry_after=1, path=r"/pulls", count=2)
    faults.secondary_rate_limit(retry_after=1, path=r"/comments", count=2)
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "10", log=log)
    try:
        sched.wait_until(lambda: settled(sched, issues), 150, "every issue to be done")
    finally:
        assert sched.stop(daemon) == 0, log.read_text()
    faults.clear()
    assert sched.cgr("reap").returncode == 0
    sched.wait_all_gone("no process left")
    sched.assert_consistent(issues)
    faulted = [r for r in env.sim.requests if r.fault]
    assert len(faulted) >= 8  # the faults really happened


def agents(sched: Sched) -> list[int]:
    """This test's scripted agents (slow_agent.py) running now."""
    found = []
    for pid in sched.processes_in(sched.env.workspace):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"slow_agent.py" in cmd:
            found.append(pid)
    return found


def test_daemon_reaps_its_own_sigkilled_child(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    sched.config()
    # Long enough that both agents are still at work however far apart a loaded machine
    # starts them; neither is waited for (one is killed, the other cancelled).
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "300")
    issues = env.sim.seed_ready_issues(REPO, 2)
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "1", log=log)
    try:
        sched.wait_until(
            lambda: len(agents(sched)) == 2, 60, "two agents at work", lambda: sched.explain(log)
        )
        victim, other = sched.runs()
        os.kill(victim.pid, signal.SIGKILL)  # the `cgr run` child, mid-run
        sched.wait_until(
            lambda: next(r for r in sched.runs() if r.id == victim.id).status.value == "failed",
            30,
            "the daemon to reap its dead child",
        )
        assert sched.cgr("cancel", other.id).returncode == 0
    finally:
        assert sched.stop(daemon) == 0, log.read_text()
    assert "reaped" in log.read_text()
    sched.wait_all_gone("no process left")
    sched.assert_consistent(issues)
    assert sorted(r.status.value for r in sched.runs()) == ["cancelled", "failed"]
