"""Many real processes on one file: races for the same targets, and SIGKILL mid-write."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from cgr_store import RunStatus, SQLiteStore, TriggerKind
from workers import kill_after, race

pytestmark = pytest.mark.slow

WORKERS = 8
TARGETS = 24

# Each worker opens the (possibly not yet existing) file itself, so the first opens and the
# schema migration race too; then all wait at a file barrier and race for the same targets
# in different orders. Targets below TARGETS // 2 come with a trigger (one per target).
RACE_WORKER = """
import json, random, sys, time
from pathlib import Path
from cgr_store import (ActiveRunExists, ProcessedTrigger, Run, RunKind, RunStatus,
                       SQLiteStore, TriggerAlreadyProcessed, TriggerKind, new_run_id)

path, worker, targets = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
won, lost = [], 0
with SQLiteStore(path) as store:
    (path.parent / f"ready-{worker}").touch()
    while not (path.parent / "go").exists():
        time.sleep(0.005)
    order = list(range(targets))
    random.Random(worker).shuffle(order)
    for target in order:
        run = Run(id=new_run_id(), repo="octo/race", target=target, kind=RunKind.ISSUE,
                  host=f"worker-{worker}")
        trigger = None
        if target < targets // 2:
            trigger = ProcessedTrigger(kind=TriggerKind.ISSUE_COMMENT, id=f"c{target}",
                                       repo="octo/race")
        try:
            store.create_run(run, trigger=trigger)
        except (ActiveRunExists, TriggerAlreadyProcessed):
            lost += 1
            continue
        store.transition(run.id, RunStatus.CLAIMED, detail=f"worker {worker}")
        won.append(target)
print(json.dumps({"won": won, "lost": lost}))
"""


def test_processes_racing_for_targets_make_one_active_run_each(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    argvs = [[sys.executable, "-c", RACE_WORKER, str(db), str(n), str(TARGETS)]
             for n in range(WORKERS)]  # fmt: skip
    results = race(argvs, tmp_path, ready_within=60)
    for code, _, err in results:
        assert code == 0, err
        assert err == ""  # in particular no "database is locked"
    reports = [json.loads(out) for _, out, _ in results]
    won = sorted(t for r in reports for t in r["won"])
    assert won == list(range(TARGETS))  # every target won exactly once
    assert sum(r["lost"] for r in reports) == TARGETS * (WORKERS - 1)

    with SQLiteStore(db) as store:
        active = store.active_runs()
        assert sorted(r.target for r in active) == list(range(TARGETS))
        assert all(r.status is RunStatus.CLAIMED for r in active)
        assert len(store.recent_runs(limit=1000)) == TARGETS
        for run in active:
            assert [e.to_status for e in store.events(run.id)] == [
                RunStatus.QUEUED,
                RunStatus.CLAIMED,
            ]
            if run.target < TARGETS // 2:
                trigger = store.get_trigger(TriggerKind.ISSUE_COMMENT, f"c{run.target}")
                assert trigger is not None
                assert trigger.run_id == run.id
        store.integrity_check()


# Writes as fast as it can: each run goes through its whole life, with updates in between.
CRASH_WORKER = """
import itertools, sys
from cgr_store import OutboxEntry, Run, RunKind, RunStatus, SQLiteStore, new_run_id

path, first = sys.argv[1], int(sys.argv[2])
with SQLiteStore(path) as store:
    for n in itertools.count(first):
        run = store.create_run(Run(id=new_run_id(), repo="octo/crash", target=n,
                                   kind=RunKind.ISSUE))
        store.transition(run.id, RunStatus.CLAIMED)
        store.update_run(run.id, pid=n, branch=f"cgr/{n}")
        store.transition(run.id, RunStatus.RUNNING)
        store.heartbeat(run.id)
        report = OutboxEntry(kind="status_comment", key="final", payload=f'{{"n": {n}}}')
        store.transition(run.id, RunStatus.SUCCEEDED, outcome="ok", cost_usd=0.01, turns=1,
                         outbox=[report])
        if n == first + 20:
            print("going", flush=True)
"""


def test_sigkill_mid_write_leaves_a_consistent_database(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    SQLiteStore(db).close()
    for round_ in range(4):
        argv = [sys.executable, "-c", CRASH_WORKER, str(db), str(round_ * 100_000)]
        # Land somewhere in the middle of the writes.
        kill_after(argv, "going\n", 0.05 + 0.07 * round_)

    with SQLiteStore(db) as store:
        store.integrity_check()
        runs = store.recent_runs(limit=100_000)
        assert len(runs) > 4 * 20
        for run in runs:
            events = store.events(run.id)
            # Every run has its creation event, and the history is a legal chain that ends
            # in the run's current status: no half-written transition anywhere.
            assert (events[0].from_status, events[0].to_status) == (None, RunStatus.QUEUED)
            for before, after in itertools.pairwise(events):
                assert after.from_status is before.to_status
            assert events[-1].to_status is run.status
            # The final report is there exactly when the run ended: never one without the
            # other, wherever the kill landed.
            reports = [(i.key, i.payload) for i in store.outbox_for_run(run.id)]
            if run.status is RunStatus.SUCCEEDED:
                assert (run.outcome, run.ended_at is not None) == ("ok", True)
                assert reports == [("final", f'{{"n": {run.target}}}')]
            else:
                assert reports == []
        # At most one run per round was cut short, and the file is still fully usable.
        assert len(store.active_runs()) <= 4
        for run in store.active_runs():
            store.transition(run.id, RunStatus.FAILED, detail="worker was killed")
        assert store.active_runs() == []
