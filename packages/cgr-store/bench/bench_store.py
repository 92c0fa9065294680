"""Throughput of SQLiteStore: runs created and finished per second, 1 and 4 processes.

Each run is the full life a runner writes: create (with its trigger), claimed, running,
succeeded (with outcome and figures): four write transactions, each fsync'd
(synchronous=FULL). Prints figures only; nothing is asserted. Takes about 15 seconds.

    python packages/cgr-store/bench/bench_store.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cgr_store import (
    ProcessedTrigger,
    Run,
    RunKind,
    RunStatus,
    SQLiteStore,
    TriggerKind,
    new_run_id,
)

SECONDS = 4.0


def churn(path: Path, worker: int, seconds: float) -> int:
    """Create and finish runs for ``seconds``; returns how many."""
    done = 0
    with SQLiteStore(path) as store:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            target = worker * 1_000_000 + done
            run = Run(id=new_run_id(), repo="bench/repo", target=target, kind=RunKind.ISSUE)
            trigger = ProcessedTrigger(
                kind=TriggerKind.ISSUE_COMMENT, id=str(target), repo="bench/repo"
            )
            store.create_run(run, trigger=trigger)
            store.transition(run.id, RunStatus.CLAIMED, host="bench")
            store.transition(run.id, RunStatus.RUNNING, pid=os.getpid())
            store.transition(
                run.id, RunStatus.SUCCEEDED, outcome="pr_opened", cost_usd=0.1, turns=3
            )
            done += 1
    return done


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(churn(Path(sys.argv[2]), int(sys.argv[3]), SECONDS))
        return
    with tempfile.TemporaryDirectory(prefix="cgr-store-bench-") as tmp:
        db = Path(tmp) / "bench.db"
        SQLiteStore(db).close()
        started = time.perf_counter()
        n = churn(db, 0, SECONDS)
        elapsed = time.perf_counter() - started
        print(f"1 process:   {n:6d} runs in {elapsed:.1f} s = {n / elapsed:7.1f} runs/s")

        db4 = Path(tmp) / "bench4.db"
        SQLiteStore(db4).close()
        started = time.perf_counter()
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", str(db4), str(w)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for w in range(1, 5)
        ]
        counts = [int(p.communicate()[0]) for p in workers]
        elapsed = time.perf_counter() - started  # includes interpreter start-up
        total = sum(counts)
        print(
            f"4 processes: {total:6d} runs in {elapsed:.1f} s = {total / elapsed:7.1f} runs/s"
            f" (per process: {', '.join(map(str, counts))})"
        )
        with SQLiteStore(db4) as store:
            assert store.counts()[RunStatus.SUCCEEDED] == total
            store.integrity_check()


if __name__ == "__main__":
    main()
