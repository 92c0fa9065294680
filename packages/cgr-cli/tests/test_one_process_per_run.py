"""One run, one process: a run handed to a process that died before its claim goes back to
the queue (not to a silent end), and a run that a second process is given by mistake is
left to the process that claimed it. Found by the chaos test (test_chaos_once.py): a
daemon SIGKILLed just after handing a requeued run out left its issue labelled
in-progress for ever, and a stale record of which process ran a run made the reaper
requeue a live run, so two processes worked on one issue. Real processes, the simulator,
a real store."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from runworld import REPO, Env
from schedworld import Sched, dead_process


def _requeued_after_its_claim(env: Env, number: int) -> str:
    """A run as a transient GitHub failure leaves it: claimed (its labels and status
    comment on GitHub), then back to the queue with no process on its row."""
    from cgr_cli.run._requeue import requeue
    from cgr_cli.schedule._runs import hostname
    from cgr_store import Run, RunKind, RunStatus, new_run_id

    with env.store() as store:
        run = store.create_run(
            Run(id=new_run_id(), repo=REPO, target=number, kind=RunKind.ISSUE, host=hostname())
        )
        store.transition(run.id, RunStatus.CLAIMED, detail="claiming on GitHub")
        requeue(store, run.id, "GitHub failed during the claim (HTTP 503)")
    env.sim.add_labels(REPO, number, "in-progress")
    env.sim.remove_label(REPO, number, "ready")
    return run.id


def _handed_to_a_dead_process(env: Env, run_id: str, *, ago: float) -> None:
    """The row as a scheduler leaves it when it is killed right after handing the run out
    (its row names the scheduler, ``ago`` seconds ago), before the child names itself."""
    from cgr_store import utcnow

    pid, start = dead_process()
    with env.store() as store:
        store.update_run(
            run_id, pid=pid, process_start_time=start,
            heartbeat_at=utcnow() - timedelta(seconds=ago),
        )  # fmt: skip


def test_a_run_whose_scheduler_died_before_the_claim_goes_back_to_the_queue(
    env: Env, sched: Sched, subreaper: None
) -> None:
    """Claimed once, requeued, handed to a scheduler that was then SIGKILLed: the reaper
    leaves the row alone for a while (a child of that scheduler may be about to name
    itself), then gives it back to the queue - not ended silently with its claim standing
    (the old verdict: ``in-progress`` for ever, no comment) - and the next pass finishes
    the same run."""
    from cgr_store import RunStatus

    # The backoff after its requeue (a transient failure) is short here.
    sched.config(polling={"retry_backoff_seconds": 0.1, "retry_backoff_max_seconds": 0.1})
    (number,) = env.sim.seed_ready_issues(REPO, 1)
    run_id = _requeued_after_its_claim(env, number)
    _handed_to_a_dead_process(env, run_id, ago=1.0)

    reaped = json.loads(sched.cgr("reap", "--json").stdout)
    assert reaped["requeued"] == []
    assert reaped["gone"] == []
    (run,) = sched.runs()
    assert (run.status, run.pid is not None) == (RunStatus.QUEUED, True)

    _handed_to_a_dead_process(env, run_id, ago=60.0)
    reaped = json.loads(sched.cgr("reap", "--json").stdout)
    assert reaped["requeued"] == [run_id], reaped
    assert reaped["gone"] == []
    (run,) = sched.runs()
    assert (run.status, run.pid, run.error) == (RunStatus.QUEUED, None, None)
    with env.store() as store:
        assert store.pending_outbox(10) == []  # nothing said on GitHub: it is not over
        assert "back to the queue: its process" in store.events(run_id)[-1].detail
    assert set(env.sim.issue(REPO, number).labels) == {"in-progress"}

    assert sched.cgr("tick").returncode == 0
    sched.wait_until(sched.all_terminal, 60, "the run to finish")
    (run,) = sched.runs()
    assert (run.id, run.status) == (run_id, RunStatus.SUCCEEDED)
    sched.assert_consistent([number])


def test_cancelling_a_requeued_run_ends_its_claim_on_github(env: Env, sched: Sched) -> None:
    """A queued run that had been claimed (its claim stands on GitHub) is cancelled
    visibly: its in-progress label goes, its status comment says so. (Only a run never
    claimed is ended without a word: GitHub has nothing of it.)"""
    sched.config()
    (number,) = env.sim.seed_ready_issues(REPO, 1)
    run_id = _requeued_after_its_claim(env, number)
    result = sched.cgr("cancel", run_id, "--reason", "not needed")
    assert result.returncode == 0, result.stderr
    (run,) = sched.runs()
    assert run.status.value == "cancelled"
    assert set(env.sim.issue(REPO, number).labels) == {"needs-human"}
    (comment,) = [c.body for c in env.sim.comments(REPO, number) if run_id in c.body]
    assert "not needed" in comment


def _claimed_by(env: Env, number: int, identity: Any) -> str:
    from cgr_cli.schedule._runs import hostname
    from cgr_store import Run, RunKind, RunStatus, new_run_id

    with env.store() as store:
        run = store.create_run(
            Run(id=new_run_id(), repo=REPO, target=number, kind=RunKind.ISSUE, host=hostname(),
                pid=identity.pid, process_start_time=float(identity.start_time))
        )  # fmt: skip
        store.transition(run.id, RunStatus.CLAIMED, detail="claiming on GitHub")
    return run.id


def test_a_second_process_given_a_claimed_run_does_not_take_it(env: Env, sched: Sched) -> None:
    """``cgr run --run-id`` of a run another live process has claimed: refused at its
    pick-up, the row and GitHub untouched."""
    from cgr_exec import ProcessIdentity

    sched.config()
    (number,) = env.sim.seed_ready_issues(REPO, 1)
    run_id = _claimed_by(env, number, ProcessIdentity.current())
    with env.store() as store:
        before = (store.get_run(run_id), len(store.events(run_id)))
    result = sched.cgr("run", "--run-id", run_id, "--repo", REPO, "--number", str(number))
    assert result.returncode != 0
    assert "is claimed, not queued" in result.stderr
    with env.store() as store:
        assert (store.get_run(run_id), len(store.events(run_id))) == before
    assert env.sim.comments(REPO, number) == []
    assert set(env.sim.issue(REPO, number).labels) == {"ready"}


def test_a_process_whose_run_was_claimed_after_its_pick_up_stops_and_writes_nothing(
    env: Env, sched: Sched
) -> None:
    """Picked up while queued, claimed by another process before its own claim: it stops
    without a claim, without a word on GitHub and without recording an end - a terminal
    status written by it would end the other process's run."""
    from cgr_cli.config._load import load_config
    from cgr_cli.run._pipeline import run_sync
    from cgr_cli.run._workspace import Workspace
    from cgr_cli.schedule._runs import request_for
    from cgr_exec import ProcessIdentity
    from cgr_store import RunStatus

    sched.config()
    (number,) = env.sim.seed_ready_issues(REPO, 1)
    other = ProcessIdentity.of(os.getppid())
    run_id = _claimed_by(env, number, other)
    with env.store() as store:
        claimed = store.get_run(run_id)
        events = len(store.events(run_id))
    config, _ = load_config(env.config_path)
    # The run's directory, which the two processes share: the other's summary is there.
    ws = Workspace.for_run(config.workspace_root, run_id, REPO, number)
    ws.create()
    theirs = ws.artifacts / "summary.json"
    theirs.write_text('{"status": "running"}')
    # This process's view from its pick-up: the run still queued.
    snapshot = claimed.__class__(**{**_fields(claimed), "status": RunStatus.QUEUED})
    summary = run_sync(config, request_for(snapshot), picked_up=snapshot)
    assert summary.status == "lost"
    assert "another process claimed it first" in (summary.error or "")
    with env.store() as store:
        after = store.get_run(run_id)
        # Only its heartbeat, which it sent before it knew (harmless: the other beats too).
        assert _fields(after) | {"heartbeat_at": None} == _fields(claimed) | {"heartbeat_at": None}
        assert len(store.events(run_id)) == events
        assert store.pending_outbox(10) == []
    assert env.sim.comments(REPO, number) == []
    assert set(env.sim.issue(REPO, number).labels) == {"ready"}
    assert env.calls() == []
    # Its directory is left to the other: no summary over theirs, no cleanup under it
    # (the configuration's policy deletes a run's directory at its end).
    assert theirs.read_text() == '{"status": "running"}'
    assert ws.run_dir.is_dir()


def _fields(run: Any) -> dict[str, Any]:
    return {name: getattr(run, name) for name in run.__struct_fields__}


def test_a_schedulers_late_record_of_its_child_never_renames_a_run_taken_on(env: Env) -> None:
    """``record_child`` names the child only on a row still queued and naming the scheduler
    (or that child): not on one the child has claimed (its claim names it), nor on one it
    gave back to the queue (another process may run it next)."""
    from cgr_cli.run._requeue import requeue
    from cgr_cli.schedule._runs import hostname, record_child
    from cgr_exec import ProcessIdentity
    from cgr_store import Run, RunKind, RunStatus, new_run_id

    me = ProcessIdentity.current()
    child = ProcessIdentity.of(os.getppid())
    claimer = ProcessIdentity.of(1)
    env.sim.seed_ready_issues(REPO, 3)
    with env.store() as store:

        def row(number: int) -> str:
            return store.create_run(
                Run(id=new_run_id(), repo=REPO, target=number, kind=RunKind.ISSUE,
                    host=hostname(), pid=me.pid, process_start_time=float(me.start_time))
            ).id  # fmt: skip

        named, claimed, given_back = row(1), row(2), row(3)
        store.transition(claimed, RunStatus.CLAIMED, pid=claimer.pid,
                         process_start_time=float(claimer.start_time))  # fmt: skip
        store.transition(given_back, RunStatus.CLAIMED)
        requeue(store, given_back, "GitHub failed during the claim (HTTP 503)")
        for run_id in (named, claimed, given_back):
            record_child(store, run_id, child)
        assert store.get_run(named).pid == child.pid
        assert store.get_run(claimed).pid == claimer.pid
        assert store.get_run(given_back).pid is None
