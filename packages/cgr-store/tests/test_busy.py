"""Lock contention: busy errors are retried inside the store, and threads share one store."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cgr_store import DatabaseBusy, Run, RunKind, RunStatus, SQLiteStore, new_run_id

# Holds SQLite's write lock from another process, like a slow writer would: for argv[2]
# seconds, or (argv[2] == "stdin") until its stdin is closed.
HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
if sys.argv[2] == "stdin":
    sys.stdin.read()
else:
    time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
conn.close()
"""


def make_run(target: int) -> Run:
    return Run(id=new_run_id(), repo="octo/repo", target=target, kind=RunKind.ISSUE)


def hold_lock(db: Path, hold: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db), hold],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_busy_errors_are_retried_until_the_lock_is_free(db_path: Path) -> None:
    # busy_timeout=0 turns off SQLite's own waiting, so every wait here is the store's retry.
    with SQLiteStore(db_path, busy_timeout=0) as store:
        holder = hold_lock(db_path, "1.0")
        try:
            started = time.monotonic()
            run = store.create_run(make_run(1))
            waited = time.monotonic() - started
        finally:
            holder.communicate(timeout=30)
        assert waited > 0.2  # (unless this process stalled for most of a second)
        assert store.get_run(run.id) == run


def test_a_lock_held_past_the_deadline_gives_database_busy(db_path: Path) -> None:
    with SQLiteStore(db_path, busy_timeout=0, busy_deadline=0.2) as store:
        holder = hold_lock(db_path, "stdin")  # held until we are done
        try:
            with pytest.raises(DatabaseBusy) as info:
                store.create_run(make_run(1))
        finally:
            holder.communicate(timeout=30)
        assert info.value.path == str(db_path)
        assert info.value.waited >= 0.2
        assert "locked" in str(info.value)
        assert store.active_runs() == []  # nothing half-written; the store still works
        store.create_run(make_run(1))


@pytest.mark.parametrize("backend", ["file", "memory"])
def test_threads_can_share_one_store(db_path: Path, backend: str) -> None:
    store = SQLiteStore(db_path) if backend == "file" else SQLiteStore.in_memory()
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for target in range(offset, offset + 25):
                run = store.create_run(make_run(target))
                store.transition(run.id, RunStatus.CLAIMED)
                store.transition(run.id, RunStatus.RUNNING)
                store.transition(run.id, RunStatus.SUCCEEDED)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n * 100,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with store:
        assert errors == []
        assert store.counts()[RunStatus.SUCCEEDED] == 100
