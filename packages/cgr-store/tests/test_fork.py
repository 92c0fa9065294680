"""Fork safety with a real os.fork().

These tests stay single-threaded: forking while other threads exist is unsafe (and warns on
Python 3.12+, which filterwarnings=error turns into a failure).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cgr_store import DatabaseUnavailable, Run, RunKind, RunStatus, SQLiteStore, new_run_id


def make_run(target: int) -> Run:
    return Run(id=new_run_id(), repo="octo/repo", target=target, kind=RunKind.ISSUE)


def run_in_child(body: Callable[[], int]) -> int:
    """Fork, run ``body`` in the child and return the child's exit code."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest, never run its cleanup
        code = 99
        try:
            code = body()
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_opens_its_own_connection(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    first = store.create_run(make_run(1))
    parent_connection = store._conn
    assert parent_connection is not None

    def child() -> int:
        from cgr_store import _fork

        # The fork hook closed the parent's connection before the fork: nothing of
        # SQLite's crosses it, so there is nothing to abandon either.
        if store._conn is not None:
            return 4
        second = store.create_run(make_run(2))
        store.transition(first.id, RunStatus.CLAIMED, pid=os.getpid())
        store.transition(second.id, RunStatus.CLAIMED, pid=os.getpid())
        if store._conn is None or store._conn is parent_connection:
            return 2
        if _fork._ABANDONED_AFTER_FORK:
            return 3
        return 0

    assert run_in_child(child) == 0
    # The parent reopens on its next operation and sees the child's writes.
    active = store.active_runs()
    assert store._conn is not None
    assert store._conn is not parent_connection
    assert [(r.target, r.status) for r in active] == [
        (1, RunStatus.CLAIMED),
        (2, RunStatus.CLAIMED),
    ]
    assert len({r.pid for r in active}) == 1
    assert active[0].pid != os.getpid()
    store.transition(first.id, RunStatus.RUNNING)
    store.close()


def test_the_parent_closing_its_store_never_loses_a_childs_writes(db_path: Path) -> None:
    """A fork child writing on its own store while the parent closes its store.

    Before the fork hook, the child inherited SQLite's lock bookkeeping for the file and
    wrote believing it held locks it did not; the parent's close then checkpointed and
    removed the WAL under it, and the child's committed transitions vanished.
    """
    parent = SQLiteStore(db_path)
    run = parent.create_run(make_run(1))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 99
        try:
            os.close(write_end)
            child = SQLiteStore(db_path)
            os.read(read_end, 1)  # wait until the parent has closed its store
            child.transition(run.id, RunStatus.CLAIMED)
            child.transition(run.id, RunStatus.RUNNING)
            child.close()
            code = 0
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(read_end)
    parent.close()
    os.write(write_end, b"x")
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with SQLiteStore(db_path) as fresh:
        assert fresh.get_run(run.id).status is RunStatus.RUNNING
        assert [e.to_status for e in fresh.events(run.id)] == [
            RunStatus.QUEUED,
            RunStatus.CLAIMED,
            RunStatus.RUNNING,
        ]


def test_a_store_inside_a_transaction_is_not_closed_by_a_fork(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    store.create_run(make_run(1))

    def body(conn: object) -> int:
        return run_in_child(lambda: 0)

    # Forking from inside a transaction leaves the connection (and the transaction) alone.
    assert store._transaction(body, write=True) == 0
    assert store.active_runs()[0].target == 1
    store.close()


def test_children_of_children_and_parallel_children(db_path: Path) -> None:
    with SQLiteStore(db_path) as store:
        store.create_run(make_run(0))

        def grandparent() -> int:
            store.create_run(make_run(1))
            return run_in_child(lambda: 0 if store.create_run(make_run(2)) else 1)

        # Several children at once, each writing through the store it inherited.
        pids = []
        for target in range(10, 14):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    store.create_run(make_run(target))
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        assert run_in_child(grandparent) == 0
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        assert codes == [0, 0, 0, 0]
        assert sorted(r.target for r in store.active_runs()) == [0, 1, 2, 10, 11, 12, 13]


def test_an_in_memory_store_refuses_to_cross_a_fork() -> None:
    with SQLiteStore.in_memory() as store:
        store.create_run(make_run(1))

        def child() -> int:
            try:
                store.counts()
            except DatabaseUnavailable as exc:
                return 0 if "fork" in str(exc) else 2
            return 1

        assert run_in_child(child) == 0
        assert len(store.active_runs()) == 1


def _synchronous(store: SQLiteStore) -> int:
    """The connection's PRAGMA synchronous (2 is FULL)."""
    return int(store._read(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]))


def test_every_connection_is_synchronous_full_also_after_fork(db_path: Path) -> None:
    # Per-connection, so a connection reopened after a fork must set it again: SQLite's
    # compiled-in default may be weaker (NORMAL in WAL mode on some builds), so the
    # statements each new connection runs are recorded, not just the resulting value.
    store = SQLiteStore(db_path)
    assert _synchronous(store) == 2

    def child() -> int:
        import sqlite3

        from cgr_store import _sqlite

        statements: list[str] = []
        real_connect = sqlite3.connect

        def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = real_connect(*args, **kwargs)
            conn.set_trace_callback(statements.append)
            return conn

        _sqlite.sqlite3.connect = traced_connect  # type: ignore[assignment]  # child only
        if _synchronous(store) != 2 or store._conn is None:
            return 5
        return 0 if "PRAGMA synchronous = FULL" in statements else 6

    assert run_in_child(child) == 0
    assert _synchronous(store) == 2  # the parent's reopened connection too
    store.close()
