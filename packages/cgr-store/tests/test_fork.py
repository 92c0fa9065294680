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
        from cgr_store import _sqlite

        second = store.create_run(make_run(2))
        store.transition(first.id, RunStatus.CLAIMED, pid=os.getpid())
        store.transition(second.id, RunStatus.CLAIMED, pid=os.getpid())
        if store._conn is None or store._conn is parent_connection:
            return 2
        # The parent's connection is parked, neither closed nor used.
        if [parent_connection] != _sqlite._ABANDONED_AFTER_FORK:
            return 3
        return 0

    assert run_in_child(child) == 0
    # The parent keeps its own connection, which still works and sees the child's writes.
    assert store._conn is parent_connection
    active = store.active_runs()
    assert [(r.target, r.status) for r in active] == [
        (1, RunStatus.CLAIMED),
        (2, RunStatus.CLAIMED),
    ]
    assert len({r.pid for r in active}) == 1
    assert active[0].pid != os.getpid()
    store.transition(first.id, RunStatus.RUNNING)
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
