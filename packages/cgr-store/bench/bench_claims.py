"""Claim throughput: 8 processes claiming queued runs at once, SQLite beside PostgreSQL.

Each worker holds its own host lease and calls ``claim_next(lease)`` (one run per claim,
one write transaction each) until the queue is empty. Claims per second = runs / the
time from the start signal until the last worker is done. Both engines make each claim
durable before it returns (SQLite synchronous=FULL; PostgreSQL with fsync on). The server
is a TemporaryPostgres (the machine's binaries or the pgserver wheel). Prints figures only.

    python packages/cgr-store/bench/bench_claims.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cgr_store import Run, RunKind, RunStatus, new_run_id, open_store
from cgr_store.testing import TemporaryPostgres

WORKERS = 8
RUNS = 1600

WORKER = """
import json, sys, time
from datetime import timedelta
from pathlib import Path
from cgr_store import open_store

database, worker, barrier = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
with open_store(database) as store:
    lease = store.acquire_host_lease(f"bench-{worker}", timedelta(minutes=10))
    (barrier / f"ready-{worker}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.001)
    claimed = 0
    while store.claim_next(lease):
        claimed += 1
    print(json.dumps({"claimed": claimed, "done": time.time()}))
"""


def measure(database: str, barrier: Path) -> tuple[float, list[int]]:
    with open_store(database) as store:
        for n in range(RUNS):
            store.create_run(
                Run(id=new_run_id(), repo="bench/claims", target=n, kind=RunKind.ISSUE)
            )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, database, str(w), str(barrier)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    while len(list(barrier.glob("ready-*"))) < WORKERS:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a worker died before the start")
        time.sleep(0.01)
    started = time.time()
    (barrier / "go").touch()
    reports = [json.loads(p.communicate()[0]) for p in procs]
    elapsed = max(r["done"] for r in reports) - started
    counts = [r["claimed"] for r in reports]
    with open_store(database) as store:
        assert sum(counts) == RUNS, counts  # every run claimed once, none twice
        assert store.counts()[RunStatus.CLAIMED] == RUNS
    return RUNS / elapsed, counts


def main() -> None:
    print(f"{WORKERS} processes claiming {RUNS} queued runs, one claim per transaction:")
    with tempfile.TemporaryDirectory(prefix="cgr-claims-") as tmp:
        lite = Path(tmp) / "lite"
        lite.mkdir()
        rate, counts = measure(str(lite / "cgr.db"), lite)
        print(f"  SQLite (one file):      {rate:7.1f} claims/s  (per process: {counts})")
        with TemporaryPostgres(durable=True) as server:
            pg = Path(tmp) / "pg"
            pg.mkdir()
            rate, counts = measure(server.create_database("bench"), pg)
            print(f"  PostgreSQL ({server.kind}): {rate:7.1f} claims/s  (per process: {counts})")


if __name__ == "__main__":
    main()
