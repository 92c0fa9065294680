"""``cgr tick``: one scheduling pass in fork mode (run by a systemd timer or cron).

1. Refuse if a daemon owns the store; serialise with other ticks (``_scheduler`` locks).
2. In one event loop (``anyio.run``): reap, count free slots, discover, and write a queued
   run per job that fits (trigger marked processed atomically, cursors held back at the
   first job left pending).
3. After that loop has finished - no event loop running, and the worker threads it
   used are gone - fork one child per run through cgr-exec's fork strategy. Each child
   starts a new session, writes to its own log and runs the pipeline for its run id with
   its own store connection and HTTP client: nothing crosses the fork.
4. Print a short summary and exit; the children run on.
5. When the pass left jobs pending (more work than slots), a child whose run has ended
   takes the next job into the slot it holds (``_next_in_slot``: a pass of one slot under
   the same locks, so only when no daemon owns the store) and runs it in the same process,
   until a pass leaves nothing pending. Between timer ticks a slot is refilled
   the moment it frees up, not at the next tick; the timer starts new chains (and reaps).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from cgr_cli.config._model import Config
from cgr_cli.config._store import is_fleet
from cgr_cli.schedule._github import open_github
from cgr_cli.schedule._locks import tick_locks
from cgr_cli.schedule._plan import PassReport, plan_first_pending, plan_pass
from cgr_cli.schedule._runs import ever_claimed, free_slots, record_child, request_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from cgr_store import HostLease, Run, Store


@dataclass(slots=True)
class TickResult:
    report: PassReport
    reaped: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.report.as_dict(),
            "reaped": self.reaped,
            "children": self.children,
            "seconds": round(self.seconds, 3),
        }


def child_log_path(config: Config, run_id: str) -> Path:
    """``<workspace>/<run-id>/logs/process.log``: the child's own stdout and stderr."""
    path = config.workspace_root / run_id / "logs" / "process.log"
    for directory in (config.workspace_root, path.parent.parent, path.parent):
        directory.mkdir(mode=0o700, exist_ok=True)
    return path


def tick(config: Config) -> TickResult:
    """One pass; see the module docstring. Raises CgrError subclasses for a user to fix."""
    from cgr_cli.config._store import open_config_store
    from cgr_exec import ForkExecutor
    from cgr_store import StoreError

    start = time.monotonic()
    host = config.host_id
    with tick_locks(config) as lock_fds:
        result = TickResult(PassReport())
        with open_config_store(config) as store:
            planned = anyio.run(_discover_and_record, config, store, host, result)
        # Closed before forking: SQLite's per-process state (locks, the WAL index) must not
        # be copied into the children, who open their own connection.
        _wait_single_threaded()

        def close_inherited() -> None:
            # The child must not hold the scheduling locks for as long as its run lasts
            # (a daemon could never start). Closing our copies releases nothing the parent
            # holds: an flock lives until the last descriptor of its open file closes.
            for fd in lock_fds:
                os.close(fd)

        executor = ForkExecutor(after_fork=[close_inherited])
        for run in planned:
            identity = executor.start(
                _child_main(config, run, pending=result.report.pending_repos()),
                log_path=child_log_path(config, run.id),
                key=run.id,
            )
            result.children[run.id] = identity.pid
        # Until now each row named this process (alive: the reaper leaves the run alone);
        # from here on, the child that runs it. (The whole-file check was made by the first
        # open, a moment ago.)
        with open_config_store(config, quick_check=False) as store:
            for run in planned:
                try:
                    lease = _claim_lease(store, config, run)
                except StoreError:
                    continue  # lost already: not ours to write; the child finds out and stops
                record_child(store, run.id, executor.identities()[run.id], lease=lease)
    result.seconds = time.monotonic() - start
    return result


async def _discover_and_record(
    config: Config, store: Store, host: str, result: TickResult, most: int | None = None
) -> list[Run]:
    from cgr_cli.schedule._reaper import reap
    from cgr_exec import ProcessIdentity

    async with open_github(config, store) as github:
        if most is None:
            reaped = await reap(config, store, github, host=host)
            result.reaped = {k: v for k, v in reaped.as_dict().items() if v}
        slots = free_slots(config, store, host)
        if most is not None:
            # A chained pass (``_next_in_slot``) only fills its own slot: reaping (store
            # scans, workspace retention) is the timer's ticks' work, not every run's.
            slots = min(slots, most)
        if is_fleet(config):  # PostgreSQL: as a daemon's pass, for one pass (_fleet)
            from cgr_cli.schedule._fleet import Fleet, fleet_pass

            fleet = Fleet(config, store)
            fleet.resume()
            return await fleet_pass(
                fleet, store, github, running=-1, slots=slots, report=result.report
            )
        return await plan_pass(
            config,
            store,
            github,
            host=host,
            slots=slots,
            owner=ProcessIdentity.current(),
            report=result.report,
        )


def _claim_lease(store: Store, config: Config, run: Run) -> HostLease | None:
    """The fleet lease ``run`` was claimed under by this pass (None: one host)."""
    from cgr_cli.run._fence import lease_for

    return lease_for(store, config.host_id, run.lease_epoch)


def _wait_single_threaded(timeout: float = 5.0) -> None:
    """anyio's worker threads (blocking work in the reaper) end shortly after the loop
    has; forking while one lives is refused by cgr-exec (its locks would be copied
    held), so wait for them briefly."""
    from cgr_exec import read_stat

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = read_stat(os.getpid())
        kernel = getattr(stat, "num_threads", 1) if stat is not None else 1
        if threading.active_count() == 1 and kernel == 1:
            return
        time.sleep(0.01)


def _child_main(config: Config, run: Run, *, pending: list[str]) -> Callable[[], int]:
    """The forked child's body: ``run``, then (while the passes leave jobs pending) the
    next job in the same slot. Without a backlog no pass is made: an idle repository
    costs no extra polling. Each such pass reads only the repositories whose jobs the
    last pass left ``pending`` (as the daemon's passes woken by a child's end do); every
    other repository waits for the next timer tick's full pass."""
    request = request_for(run)

    def main() -> int:
        from cgr_cli.run._pipeline import run_sync
        from cgr_cli.run._report import Outcome

        summary = run_sync(config, request, own_process=True)
        print(summary.one_line(), flush=True)
        # Cancelled (SIGTERM: systemd stopping, `cgr cancel`): no new work in this process.
        repos = pending
        while repos and summary.outcome != Outcome.CANCELLED:
            nxt, repos = _next_in_slot(config, after=summary.run_id, repos=repos)
            if nxt is None:
                break
            _output_to(child_log_path(config, nxt.id))
            summary = run_sync(config, request_for(nxt))
            print(summary.one_line(), flush=True)
        return summary.exit_code

    return main


def _next_in_slot(config: Config, *, after: str, repos: list[str]) -> tuple[Run | None, list[str]]:
    """One scheduling pass over ``repos`` of at most one slot - the one this finished child
    holds - whose run names this process, and the repositories where that pass left jobs
    pending. No run when there is no job, a daemon owns the store, another pass keeps the
    schedule lock, or the run ``after`` ended before its claim (GitHub refusing it: the
    next tick looks again, with the backoff for such failures)."""
    import logging

    import msgspec

    from cgr_cli._errors import CgrError
    from cgr_cli.config._store import open_config_store

    try:
        # No whole-file check (it reads every page: 25 ms at 13 MB, at every job this child
        # takes): the tick that forked this child made it, and every tick makes it again.
        with tick_locks(config, wait=10.0), open_config_store(config, quick_check=False) as store:
            if not ever_claimed(store, after):
                return None, []
            # The one slot's next job is the first pending repository's (``repos`` is in
            # the order passes take jobs): its three lists are read, not every pending
            # repository's, and the others only when it has no job left.
            result = TickResult(PassReport())

            async def plan_over(polled: list[str], most: int) -> list[Run]:
                narrowed = msgspec.structs.replace(config, repositories=polled)
                return await _discover_and_record(narrowed, store, config.host_id, result, most)

            planned, unread = anyio.run(plan_first_pending, plan_over, repos, 1)
    except CgrError:
        return None, []
    except Exception:
        logging.getLogger("cgr.tick").exception("looking for the next job failed")
        return None, []
    return (planned[0] if planned else None), [*result.report.pending_repos(), *unread]


def _output_to(path: Path) -> None:
    """This process's stdout and stderr into ``path`` (the next run's process.log)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.dup2(fd, 1)  # the copies on 1 and 2 are inheritable, as the originals were
        os.dup2(fd, 2)
    finally:
        os.close(fd)
