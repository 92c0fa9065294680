"""`cgr daemon` as a real process: subprocess children, the lock, draining on SIGTERM."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from pathlib import Path

import pytest

from runworld import REPO, Env
from schedworld import Sched, processes


@pytest.mark.slow
def test_daemon_runs_every_issue_within_the_limit_and_owns_the_store(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    sched.config(polling={"max_concurrency": 2, "runs_ahead": 0})
    issues = env.sim.seed_ready_issues(REPO, 4)
    daemon = sched.start("daemon", "--grace", "5", log=tmp_path / "daemon.log")
    try:
        sched.wait_until(lambda: len(sched.runs()) > 0, 30, "the daemon's first run")
        # Each run is a copy forked by one fork server (cgr-exec), the daemon's child: the
        # runs pay no interpreter start-up or imports of their own.
        forked: set[tuple[int, int]] = set()

        def a_run_process_seen() -> bool:
            procs = {p.pid: p for p in processes()}
            for run in sched.runs():
                # A claimed run's pid names the daemon until its child is recorded.
                if run.pid != daemon.pid and run.pid in procs and procs[run.pid].ppid in procs:
                    parent = procs[procs[run.pid].ppid]
                    forked.add((parent.pid, parent.ppid))
            return bool(forked)

        sched.wait_until(a_run_process_seen, 30, "a run's process")
        ((server, server_parent),) = forked
        assert server != daemon.pid
        assert server_parent == daemon.pid
        # A tick refuses while the daemon owns the store, and says so; so does a 2nd daemon.
        refused = sched.cgr("tick")
        assert refused.returncode == 4  # busy
        assert f"cgr daemon (pid {daemon.pid}) owns the store" in refused.stderr
        second = sched.cgr("daemon")
        assert second.returncode == 4
        assert "owns the store" in second.stderr
        peak = sched.wait_tracking_peak(
            lambda: len(sched.runs()) == 4 and sched.all_terminal(), 90, "all four runs"
        )
        assert peak <= 2
        status = sched.cgr("status")
        assert status.returncode == 0
        assert f"daemon pid {daemon.pid}" in status.stdout
        assert "pr_opened" in status.stdout
    finally:
        code = sched.stop(daemon)
    assert code == 0, (tmp_path / "daemon.log").read_text()
    log = (tmp_path / "daemon.log").read_text()
    # Every run was handed to a `cgr run` the daemon had started ahead of it (its imports
    # done): commands/_standby.py, cgr_exec's standby.
    started = [line for line in log.splitlines() if "started run" in line]
    assert len(started) == 4
    assert all(line.endswith(", standby)") for line in started), started
    sched.wait_all_gone("children to be gone")
    sched.assert_consistent(issues)
    # The lock is free again: a tick may run.
    assert sched.cgr("tick").returncode == 0


@pytest.mark.slow
def test_a_child_ending_refills_its_slot_from_the_pending_repository_alone(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """Three ready issues in one repository, one slot, a second (idle) repository, a poll
    interval far longer than the runs: each child's end starts the next issue at once, and
    the passes it wakes read only the repository whose jobs were pending; the idle one is
    read by the interval's full passes alone."""
    other = "acme/gadgets"
    sched.config_with(
        other, polling={"max_concurrency": 1, "runs_ahead": 0, "interval_seconds": 60}
    )
    issues = env.sim.seed_ready_issues(REPO, 3)
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "5", log=log)
    try:
        sched.wait_until(
            lambda: len(sched.runs()) == 3 and sched.all_terminal(),
            45,  # well inside the 60 s interval: only children's ends can have woken it
            "the three runs, one after another",
            lambda: sched.explain(log),
        )
    finally:
        assert sched.stop(daemon) == 0, log.read_text()

    assert sched.issue_lists(other) == 1  # the first, full pass
    assert sched.issue_lists(REPO) >= 3  # the full pass and one per child's end
    sched.wait_all_gone("children to be gone")
    sched.assert_consistent(issues)


@pytest.mark.slow
def test_a_refill_reads_the_first_pending_repository_alone(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """Two ready issues in each of two repositories, one slot, a long poll interval. The
    pass a child's end wakes reads the first repository with pending jobs alone; the
    second is read once the first has none left (not by every refill while the first
    still has some)."""
    other = "acme/gadgets"
    sched.config_with(
        other, polling={"max_concurrency": 1, "runs_ahead": 0, "interval_seconds": 60}
    )
    issues = env.sim.seed_ready_issues(REPO, 2)
    others = env.sim.seed_ready_issues(other, 2)
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "5", log=log)
    try:
        sched.wait_until(
            lambda: sched.all_ended(4),
            45,  # well inside the 60 s interval: only children's ends can have woken it
            "the four runs, one after another",
            lambda: sched.explain(log),
        )
    finally:
        assert sched.stop(daemon) == 0, log.read_text()

    # Jobs are taken repository by repository, acme/gadgets first. The full pass read both;
    # the refill for the second job read acme/gadgets alone, those for the third and fourth
    # REPO alone. Reading every pending repository on each refill would have read REPO
    # once more (with acme/gadgets's second job).
    started = [line.split(" for ", 1)[1].split(" ")[0] for line in log.read_text().splitlines()
               if "started run" in line]  # fmt: skip
    assert started == [f"{other}#{others[0]}", f"{other}#{others[1]}",
                       *(f"{REPO}#{n}" for n in issues)]  # fmt: skip
    assert sched.issue_lists(other) == 2
    assert sched.issue_lists(REPO) == 3
    assert {r.outcome for r in sched.runs()} == {"pr_opened"}
    sched.wait_all_gone("children to be gone")


@pytest.mark.slow
def test_when_the_first_pending_repository_has_no_job_left_a_refill_reads_the_others(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """The job a refill expected in the first pending repository is gone (its label
    removed meanwhile): that refill reads the other pending repositories and takes their
    job, rather than leaving the slot empty until the interval's full pass."""
    other = "acme/gadgets"
    sched.config_with(
        other, polling={"max_concurrency": 1, "runs_ahead": 0, "interval_seconds": 60}
    )
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "3")  # time to change GitHub meanwhile
    others = env.sim.seed_ready_issues(other, 2)
    issues = env.sim.seed_ready_issues(REPO, 1)
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "5", log=log)
    try:
        sched.wait_until(lambda: len(sched.runs()) == 1, 30, "the first run",
                         lambda: sched.explain(log))  # fmt: skip
        env.sim.remove_label(other, others[1], "ready")
        sched.wait_until(
            lambda: sched.all_ended(2),
            45,  # inside the 60 s interval: the refill itself found REPO's job
            "two runs",
            lambda: sched.explain(log),
        )
    finally:
        assert sched.stop(daemon) == 0, log.read_text()
    assert sorted((r.repo, r.target) for r in sched.runs()) == [
        (other, others[0]),
        (REPO, issues[0]),
    ]
    assert {r.outcome for r in sched.runs()} == {"pr_opened"}
    sched.wait_all_gone("children to be gone")


@pytest.mark.slow
def test_daemon_ends_a_hung_child_of_its_own(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """A child that stops heartbeating (SIGSTOPped: alive, but running nothing) is ended by
    the daemon's own reap pass; the daemon does not stamp its children's rows itself."""
    sched.config(timeouts={"heartbeat_seconds": 0.3, "stale_heartbeat_seconds": 1.5,
                           "watchdog_grace_seconds": 0.3})  # fmt: skip
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "60")
    issues = env.sim.seed_ready_issues(REPO, 1)
    daemon = sched.start("daemon", "--grace", "1", log=tmp_path / "daemon.log")
    stopped: int | None = None
    try:
        sched.wait_until(
            lambda: any(r.status.value == "running" for r in sched.runs()), 30, "a running run"
        )
        (run,) = sched.runs()
        assert run.pid is not None
        stopped = run.pid
        os.kill(stopped, signal.SIGSTOP)  # the `cgr run` child: alive, no longer beating
        sched.wait_until(
            lambda: sched.runs()[0].status.value == "timed_out", 30, "the daemon's reap"
        )
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        code = sched.stop(daemon, signal.SIGTERM, timeout=40)
    assert code == 0
    (ended,) = sched.runs()
    assert "no heartbeat for " in (ended.error or "")
    (comment,) = [c.body for c in env.sim.comments(REPO, issues[0]) if ended.id in c.body]
    assert "no heartbeat for" in comment
    sched.wait_all_gone("children to be gone")
    sched.assert_consistent(issues)


@pytest.mark.slow
def test_sigterm_drains_then_cancels_visibly(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    sched.config()
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "60")  # would outlast the grace period
    issues = env.sim.seed_ready_issues(REPO, 1)
    daemon = sched.start("daemon", "--grace", "1", log=tmp_path / "daemon.log")
    try:
        sched.wait_until(
            lambda: any(r.status.value == "running" for r in sched.runs()), 30, "a running run"
        )
    finally:
        code = sched.stop(daemon, signal.SIGTERM, timeout=40)
    assert code == 0
    (run,) = sched.runs()
    assert run.status.value == "cancelled"
    assert "grace period" in (run.error or "")
    comments = [c.body for c in env.sim.comments(REPO, issues[0]) if run.id in c.body]
    assert len(comments) == 1
    assert "cancelled" in comments[0]
    assert "grace period" in comments[0]
    sched.wait_all_gone("children to be gone")
    sched.assert_consistent(issues)


def test_daemon_start_reconciles_runs_whose_process_is_gone(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    sched.config()
    (number,) = env.sim.seed_ready_issues(REPO, 1)
    env.sim.remove_label(REPO, number, "ready")  # claimed by the run that died
    run_id = sched.stored_running_run(number)
    daemon = sched.start("daemon", log=tmp_path / "daemon.log")
    try:
        sched.wait_until(sched.all_terminal, 30, "reconciliation")
    finally:
        assert sched.stop(daemon) == 0
    (run,) = sched.runs()
    assert (run.id, run.status.value) == (run_id, "failed")
    assert "reconciled" in (tmp_path / "daemon.log").read_text()
    sched.assert_consistent([number])


@pytest.mark.slow
def test_a_daemon_stops_when_its_database_file_is_found_damaged(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """Runs skip the whole-file check when they pick up their rows (a cost per run), so the
    daemon reads the file whole every `polling.database_check_seconds`: damage no query has
    met yet stops it (as SIGTERM does: its runs get their grace) with the store's message."""
    from cgr_store import ProcessedTrigger, TriggerKind

    sched.config(polling={"database_check_seconds": 0.3})
    with env.store() as store:  # old processed triggers: pages the daemon never reads
        for n in range(300):
            store.mark_trigger_processed(
                ProcessedTrigger(kind=TriggerKind.ISSUE, id=f"{n:04d}" + "x" * 200, repo=REPO)
            )
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "5", log=log)
    try:
        sched.wait_until(lambda: "started on" in log.read_text(), 30, "the daemon's start")
        time.sleep(1.5)  # several checks of the sound file
        assert daemon.poll() is None, log.read_text()
        page = 4096
        with env.database.open("r+b") as f:
            pages = f.seek(0, os.SEEK_END) // page
            assert pages > 10
            f.seek(pages // 2 * page)
            f.write(bytes(range(256)) * (page // 256))
        code = daemon.wait(30)
    finally:
        with contextlib.suppress(Exception):
            sched.stop(daemon)
    text = log.read_text()
    assert code != 0, text
    assert "is corrupt" in text
    assert "Restore it from a backup" in text
    assert "the database file is damaged: the daemon stops and starts no run on it" in text
    assert "Traceback" not in text


@pytest.mark.slow
def test_runs_ahead_get_ready_beside_the_agents_and_agents_never_exceed_the_limit(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """One agent at once, one run ahead: the daemon starts two runs; the second claims and
    checks out while the first's agent works, waits for the slot, and its agent starts
    once the first's has ended (never two agents at once)."""
    sched.config(polling={"max_concurrency": 1, "runs_ahead": 1, "interval_seconds": 60})
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "1.0")
    issues = env.sim.seed_ready_issues(REPO, 3)
    daemon = sched.start("daemon", "--grace", "5", log=tmp_path / "daemon.log")
    try:
        peak = sched.wait_tracking_peak(lambda: sched.all_ended(3), 90, "all three runs")
    finally:
        assert sched.stop(daemon) == 0, (tmp_path / "daemon.log").read_text()
    assert peak == 2  # the agent's run and the one ahead of it; never three
    runs = sched.runs()
    assert {r.outcome for r in runs} == {"pr_opened"}
    spans = sched.agent_spans()
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        assert start >= end, f"the agents of {first} and {second} overlapped"
    waited = [r for r in runs if "waiting for an agent slot" in
              (env.workspace / r.id / "logs" / "run.log").read_text()]  # fmt: skip
    assert waited, "no run was ready ahead of its slot"
    with env.store() as store:
        for run in waited:
            claimed = next(e.at for e in store.events(run.id) if e.to_status.value == "claimed")
            before = [s for s in spans if s[2] != run.id and s[1] > claimed]
            assert before, f"{run.id} was claimed after every other agent had ended"
    sched.wait_all_gone("children to be gone")
    sched.assert_consistent(issues)


@pytest.mark.slow
def test_a_stopping_daemon_hands_runs_waiting_for_a_slot_back_to_the_queue(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """One agent slot, one run ahead, agents of 3 s. SIGTERM while one agent works and the
    other run waits: the waiting run goes back to the queue at once (its agent never
    starts; nothing is reported: it is not over), the working one finishes within the
    grace, and the next daemon takes the handed-back run up at once (no backoff: a stop is
    not a failure) and opens its pull request."""
    sched.config(polling={"max_concurrency": 1, "runs_ahead": 1, "interval_seconds": 60})
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "3")
    issues = env.sim.seed_ready_issues(REPO, 2)
    log = tmp_path / "daemon.log"
    first = sched.start("daemon", "--grace", "30", log=log)
    try:

        def one_working_one_waiting() -> bool:
            statuses = sorted(r.status.value for r in sched.runs())
            logs = env.workspace.glob("r-*/logs/run.log")
            waiting = any("waiting for an agent slot" in p.read_text() for p in logs)
            return statuses == ["claimed", "running"] and waiting

        sched.wait_until(one_working_one_waiting, 60, "one agent at work, one run waiting")
        waiting_id = next(r.id for r in sched.runs() if r.status.value == "claimed")
        working_id = next(r.id for r in sched.runs() if r.status.value == "running")
        time.sleep(1.2)  # the daemon asks only children at least a second old
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0, log.read_text()
    finally:
        sched.stop(first)
    with env.store() as store:
        handed_back, events = store.run_with_events(waiting_id)
        assert store.get_run(working_id).status.value == "succeeded"
    assert handed_back.status.value == "queued"
    assert handed_back.pid is None
    assert any(e.detail.startswith("released: ") for e in events), [e.detail for e in events]
    assert "running" not in {e.to_status.value for e in events}  # its agent never began
    assert "handing it back to the queue" in log.read_text()
    # The next daemon takes it up and finishes it.
    second = sched.start("daemon", "--grace", "30", log=log)
    try:
        sched.wait_until(lambda: sched.all_ended(2), 60, "the handed-back run")
    finally:
        assert sched.stop(second) == 0, log.read_text()
    with env.store() as store:
        assert store.get_run(waiting_id).status.value == "succeeded"
    sched.wait_all_gone("children to be gone")
    sched.assert_consistent(issues)
