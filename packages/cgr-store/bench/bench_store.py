"""Throughput of SQLiteStore: runs created and finished per second, 1 and 4 processes, and
the store beside raw sqlite3 doing the same statements with the same pragmas.

Each run is the full life a runner writes: create (with its trigger), claimed, running,
succeeded (with outcome and figures): four write transactions, each fsync'd
(synchronous=FULL). Prints figures only; nothing is asserted. Takes about 35 seconds.

    python packages/cgr-store/bench/bench_store.py
"""

# ruff: noqa: S608
# (S608: SQL assembled from the Run record's own field names; every value is bound.)

from __future__ import annotations

import json
import os
import sqlite3
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
ROUNDS = 8  # store and raw alternate in short rounds, so a burst of load elsewhere hits both


def raw_churn(path: Path, worker: int, seconds: float) -> int:
    """What churn() does, as the SQL statements SQLiteStore sends, on a bare connection
    with the store's pragmas (WAL, synchronous=FULL, foreign keys): the floor the store's
    Python layer (records, validation, checks, retries) is measured against."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    columns = Run.__struct_fields__
    select = f"SELECT {', '.join(columns)} FROM runs WHERE id = ?"
    insert = f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    event = (
        "INSERT INTO run_events (run_id, at, from_status, to_status, detail) VALUES (?, ?, ?, ?, ?)"
    )

    def now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())

    def move(run_id: str, to: str, **fields: object) -> None:
        conn.execute("BEGIN IMMEDIATE")
        row = dict(zip(columns, conn.execute(select, (run_id,)).fetchone(), strict=True))
        before = row["status"]
        changed = {"status": to, **fields}
        assignments = ", ".join(f"{c} = ?" for c in changed)
        conn.execute(
            f"UPDATE runs SET {assignments} WHERE id = ? AND status = ?",
            (*changed.values(), run_id, before),
        )
        conn.execute(event, (run_id, now(), before, to, ""))
        conn.execute("COMMIT")

    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        target = worker * 1_000_000 + done
        run_id = new_run_id()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "SELECT run_id FROM processed_triggers WHERE kind = ? AND id = ?",
            ("issue_comment", str(target)),
        ).fetchone()
        conn.execute(
            "SELECT id FROM runs WHERE repo = ? AND target = ?"
            " AND status IN ('queued', 'claimed', 'running')",
            ("bench/repo", target),
        ).fetchone()
        row = dict.fromkeys(columns)
        row.update(
            id=run_id, repo="bench/repo", target=target, kind="issue", status="queued",
            trigger_id=str(target), attempt=1, created_at=now(),
        )  # fmt: skip
        conn.execute(insert, tuple(row[c] for c in columns))
        conn.execute(event, (run_id, now(), None, "queued", "created"))
        conn.execute(
            "INSERT INTO processed_triggers (kind, id, repo, run_id, processed_at)"
            " VALUES (?, ?, ?, ?, ?)",
            ("issue_comment", str(target), "bench/repo", run_id, now()),
        )
        conn.execute("COMMIT")
        move(run_id, "claimed", host="bench")
        move(run_id, "running", pid=os.getpid(), started_at=now())
        move(run_id, "succeeded", outcome="pr_opened", cost_usd=0.1, turns=3, ended_at=now())
        done += 1
    conn.close()
    return done


def store_against_raw(path: Path) -> dict[str, float]:
    """Runs per second of the store and of raw sqlite3, alternating ROUNDS times."""
    totals = {"store": 0, "raw": 0}
    spent = {"store": 0.0, "raw": 0.0}
    for round_ in range(ROUNDS):
        for name, work, worker in (("store", churn, 10), ("raw", raw_churn, 20)):
            started = time.perf_counter()
            totals[name] += work(path, worker + round_, SECONDS / ROUNDS)
            spent[name] += time.perf_counter() - started
    return {name: totals[name] / spent[name] for name in totals}


def in_forked_child(path: Path) -> dict[str, float]:
    """store_against_raw() in a child made by os.fork(), as cgr's runners are.

    Forked from this single-threaded process with no store open in it, so the child
    starts with no SQLite state at all (see the fork notes in _sqlite.py)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report through the pipe, leave without cleanup
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(store_against_raw(path)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result: dict[str, float] = json.loads(pipe.read())
    os.waitpid(pid, 0)
    return result


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


def event_rates(path: Path, seconds: float = 2.0) -> dict[bool, float]:
    """History events (``record_event``) per second, durable (fsync'd) and not, in
    alternating rounds."""
    done = {True: 0, False: 0}
    spent = {True: 0.0, False: 0.0}
    with SQLiteStore(path) as store:
        run = store.create_run(Run(id=new_run_id(), repo="o/r", target=1, kind=RunKind.ISSUE))
        for _ in range(ROUNDS):
            for durable in (True, False):
                end = time.perf_counter() + seconds / ROUNDS
                started = time.perf_counter()
                while time.perf_counter() < end:
                    store.record_event(
                        run.id, "github comment o/r#1 attempt 1: ok", durable=durable
                    )
                    done[durable] += 1
                spent[durable] += time.perf_counter() - started
    return {durable: done[durable] / spent[durable] for durable in done}


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

        for where, measure in (
            ("main process", store_against_raw),
            ("forked child", in_forked_child),
        ):
            dbr = Path(tmp) / f"raw-{where.replace(' ', '-')}.db"
            SQLiteStore(dbr).close()
            rates = measure(dbr)
            print(
                f"{where}: store {rates['store']:6.1f} runs/s, raw sqlite3 {rates['raw']:6.1f}"
                f" runs/s: {rates['store'] / rates['raw']:.2f} x raw (goal >= 0.75)"
            )
        events = event_rates(Path(tmp) / "events.db")
        print(
            f"history events: durable {events[True]:7.1f}/s ({1000 / events[True]:.2f} ms each), "
            f"durable=False {events[False]:7.1f}/s ({1000 / events[False]:.2f} ms each)"
        )


if __name__ == "__main__":
    main()
