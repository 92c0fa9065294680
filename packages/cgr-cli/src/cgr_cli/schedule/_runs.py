"""Run rows as the schedulers see them: whose process, which slot, how a child picks one up."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cgr_cli.config._model import Config
    from cgr_cli.run._pipeline import RunRequest
    from cgr_exec import ProcessIdentity
    from cgr_store import HostLease, Run, Store


def hostname() -> str:
    """The machine's name: the default of ``fleet.host_id``. cgr itself identifies this host
    by ``config.host_id`` everywhere (runs, reaping, reports), never by this."""
    return socket.gethostname()


# -- process identities -------------------------------------------------------------------


def run_identity(run: Run) -> ProcessIdentity | None:
    """The process a run row names, or None when none is recorded."""
    from cgr_exec import ProcessIdentity

    if run.pid is None or run.process_start_time is None:
        return None
    return ProcessIdentity(run.pid, int(run.process_start_time))


def process_alive(run: Run) -> bool:
    """True if the run's recorded process is alive (identity-checked: a reused pid is dead)."""
    identity = run_identity(run)
    return identity is not None and identity.is_alive()


def waiting_for_scheduler(run: Run) -> bool:
    """A queued run with no process recorded (left by ``cgr retry``) waits for a scheduler."""
    from cgr_store import RunStatus

    return run.status is RunStatus.QUEUED and run.pid is None


def ever_claimed(store: Store, run_id: str) -> bool:
    """Whether the run was claimed at some point (its history has a move to ``claimed``):
    its claim then stands on GitHub even if it is queued again now."""
    from cgr_store import RunStatus

    return any(e.to_status is RunStatus.CLAIMED for e in store.events(run_id))


def occupied(store: Store, host: str) -> list[Run]:
    """Active runs of ``host`` that hold a slot: their process is alive."""
    return [run for run in store.active_runs(host=host) if process_alive(run)]


def free_slots(config: Config, store: Store, host: str) -> int:
    """Runs this host may start now: its run slots (``polling.run_slots``: the agents and
    the runs ahead of them) minus its live runs. The agents themselves are limited by the
    run's agent gate (``run/_agent_gate.py``)."""
    return max(0, config.polling.run_slots - len(occupied(store, host)))


def request_for(run: Run) -> RunRequest:
    """How a child picks up a queued run (``cgr run --run-id`` takes the same fields)."""
    from cgr_cli.run._pipeline import RunRequest
    from cgr_store import RunKind

    comment_id: int | None = None
    if run.kind is not RunKind.ISSUE and run.trigger_id and run.trigger_id.isdigit():
        comment_id = int(run.trigger_id)
    return RunRequest(
        repo=run.repo,
        number=run.target,
        comment_id=comment_id,
        review_comment=run.kind is RunKind.REVIEW_COMMENT,
        run_id=run.id,
        # Claimed by a fleet host (claim_next stamps its epoch): the child's writes carry it.
        lease_epoch=run.lease_epoch,
    )


def cgr_argv() -> list[str]:
    """``python -m cgr_cli``: works without the console script on PATH."""
    import sys

    return [sys.executable, "-m", "cgr_cli"]


def run_argv(config_path: Path | None, run: Run) -> list[str]:
    """``python -m cgr_cli run --run-id …``."""
    return [*cgr_argv(), *run_args(config_path, run)]


def run_args(config_path: Path | None, run: Run) -> list[str]:
    """The arguments after ``python -m cgr_cli`` that run ``run``."""
    request = request_for(run)
    argv = ["run"]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    argv += ["--repo", run.repo, "--number", str(run.target), "--run-id", run.id, "--json"]
    if request.comment_id is not None:
        argv += ["--comment-id", str(request.comment_id)]
        if request.review_comment:
            argv.append("--review-comment")
    if request.lease_epoch is not None:
        # The epoch the claim was made under, fixed now: a child must never pick up a newer
        # epoch its host got back after losing its runs (run/_fence.py).
        argv += ["--lease-epoch", str(request.lease_epoch)]
    return argv


def last_run_on(store: Store, repo: str, target: int) -> Run | None:
    """The newest run on (repo, target) (an indexed lookup)."""
    newest = store.runs_for_target(repo, target, limit=1)
    return newest[0] if newest else None


def record_child(
    store: Store, run_id: str, identity: ProcessIdentity, *, lease: HostLease | None = None
) -> None:
    """The run's row now names the child that runs it (the child writes the same);
    ``lease``: the fleet host's, which claimed it (the write is fenced).

    On one host (no lease), only while the row is still queued and names this scheduler:
    the child may have claimed it by now (its claim names it), or
    given it back to the queue, where another scheduler may have handed it to another
    process - naming the first child there would make a live run look dead to the reaper.
    A fleet's run is claimed (claim_next) before its child starts, under the lease."""
    from cgr_store import RunStatus, StoreError

    # One compare-and-set (RunChanged, a StoreError, when the row moved on). A row the
    # child already names needs nothing: its pick-up wrote the same and beat.
    expect = {"status": RunStatus.QUEUED, "pid": os.getpid()} if lease is None else None
    with contextlib.suppress(StoreError):
        store.update_run(run_id, lease=lease, expect=expect, pid=identity.pid,
                         process_start_time=float(identity.start_time))  # fmt: skip
        # A fresh beat with the new owner: an old retried row is not mistaken for a hung run.
        store.heartbeat(run_id, lease=lease)
