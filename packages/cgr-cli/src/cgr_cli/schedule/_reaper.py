"""Ending runs whose process is gone or over time, from outside that process.

Used by ``cgr reap``, by the daemon's loop and at daemon start (reconciliation), and by
``cgr cancel``. Every ending follows one order: the store's transition first (it is the
arbiter: if the run's own process finished it in the meantime, the transition is illegal
and the reaper backs off without touching GitHub), then GitHub (labels and the run's one
status comment), each GitHub step on its own so one failure does not skip the others.

Processes are only ever signalled through cgr-exec's identity checks (pid + start time),
so a pid the kernel gave to another process since is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from cgr_cli.config._model import Config
from cgr_cli.schedule._deliver import deliver_pending
from cgr_cli.schedule._deliver import log as delivery_log
from cgr_cli.schedule._github import GitHubSession
from cgr_cli.schedule._runs import ever_claimed, run_identity, waiting_for_scheduler

if TYPE_CHECKING:
    from cgr_cli.run._report import RunSummary
    from cgr_cli.run._workspace import Workspace
    from cgr_store import Run, RunStatus, Store

log = logging.getLogger("cgr.reap")


def summary_from_run(run: Run, *, status: str, outcome: str, error: str | None) -> RunSummary:
    """A RunSummary for texts written on a run's behalf (figures from its row)."""
    from cgr_cli.run._report import RunSummary
    from cgr_store import utcnow

    start = run.started_at or run.created_at
    return RunSummary(
        run_id=run.id,
        repo=run.repo,
        number=run.target,
        status=status,
        outcome=outcome,
        pr_number=run.pr_number,
        pr_url=run.pr_url,
        branch=run.branch,
        base_branch=run.base_branch,
        cost_usd=run.cost_usd,
        input_tokens=run.input_tokens,
        output_tokens=run.output_tokens,
        turns=run.turns,
        duration_s=max(0.0, (utcnow() - start).total_seconds()),
        error=error,
    )


async def end_run(
    config: Config,
    store: Store,
    github: GitHubSession,
    run: Run,
    status: RunStatus,
    *,
    outcome: str,
    error: str | None,
    pr: dict[str, Any] | None = None,
) -> bool:
    """Give an active run a terminal status and its visible state on GitHub.

    The report (labels, the status comment's final text) is recorded in the outbox with
    the terminal status, then sent; if GitHub is down it stays pending for a later pass
    (``_deliver``). Returns False (and writes nothing) if the run was no longer active.
    """
    from cgr_cli.run._outbox import deliver_run, report_entries
    from cgr_cli.run._report import Texts
    from cgr_cli.schedule._deliver import run_ops
    from cgr_store import IllegalTransition, RunNotFound, RunStatus

    # ``run`` may be a snapshot taken before the caller's awaits (a reap pass lists the
    # active runs, then spends seconds on GitHub calls and grace periods): whether a report
    # is due is decided on the run as it is now, or a run claimed since the snapshot would
    # be ended silently and keep its in-progress label.
    try:
        run = store.get_run(run.id)
    except RunNotFound:
        return False
    if run.status.is_terminal:
        return False
    fields: dict[str, Any] = {"outcome": outcome, "error": error}
    if pr is not None:
        fields["pr_number"] = int(pr["number"])
        fields["pr_url"] = str(pr.get("html_url") or pr.get("url") or "")
    # Nothing was written on GitHub yet and the issue still carries the ready label: the
    # next scheduling pass takes it again, so it is not lost (and nothing is reported). Not
    # so for a run claimed before and queued again since: its claim stands on GitHub.
    silent = (
        run.status is RunStatus.QUEUED
        and run.trigger_id is None
        and not ever_claimed(store, run.id)
    )
    summary = summary_from_run(run, status=status.value, outcome=outcome, error=error)
    if pr is not None:
        summary.pr_number, summary.pr_url = fields["pr_number"], fields["pr_url"]
    report = [] if silent else report_entries(
        config.labels, run_id=run.id, repo=run.repo, number=run.target,
        succeeded=status is RunStatus.SUCCEEDED, text=Texts(github.bot, run.id).final(summary),
    )  # fmt: skip
    try:
        store.transition(
            run.id, status, detail=outcome + (f": {error}" if error else ""), outbox=report,
            **fields,
        )  # fmt: skip
    except (IllegalTransition, RunNotFound):
        return False
    if report:
        # Best effort (GitHub may be down): the store has the truth and the report.
        with contextlib.suppress(Exception):
            await deliver_run(store, run_ops(github, store, run.id), run.id)
    return True


async def _end_dead(
    config: Config, store: Store, github: GitHubSession, run: Run, *, report: ReapReport
) -> None:
    """End (or requeue) ``run``, whose process is gone; ``report`` says which."""
    from cgr_cli.run._report import Outcome
    from cgr_store import RunStatus

    grace = config.timeouts.watchdog_grace_seconds
    pr = None
    with contextlib.suppress(Exception):  # GitHub down: decide without the PR
        pr = await pushed_pull_request(github, run)
    # What the dead process left running (git in its group, the agent in its own session,
    # its job's cgroup) is ended before the run is, whatever its verdict: nothing writes
    # after it, and the run's own end, which would have ended them, never came.
    await anyio.to_thread.run_sync(end_processes, config, run, grace)
    if pr is not None and run.status is RunStatus.RUNNING:
        # Killed after its pull request was opened: a success.
        if await end_run(
            config, store, github, run, RunStatus.SUCCEEDED,
            outcome=Outcome.PR_OPENED, error=None, pr=pr,
        ):  # fmt: skip
            report.recovered.append(run.id)
        return
    why = f"the run's process (pid {run.pid}) ended without finishing the run"
    if run.status is RunStatus.CLAIMED:
        # Its agent never started (the run was claiming, checking out, or waiting for an
        # agent slot - minutes, behind long agents): nothing is spent, so a reboot or a
        # killed process loses no work. Back to the queue, its claim on GitHub standing,
        # as a lost fleet host's claimed runs go.
        if _requeue_dead(store, run, f"{why} before its agent started"):
            report.requeued.append(run.id)
        return
    if await end_run(
        config, store, github, run, RunStatus.FAILED, outcome=Outcome.FAILED, error=why
    ):
        report.gone.append(run.id)


ORPHANED_AFTER_SECONDS = 15.0
"""How long a queued row must have named a dead process before the reaper gives it back to
the queue: a child its dead scheduler had already started names itself within moments
(its pick-up, or its claim), and must not find the run handed to a second process."""


def _orphan_back_to_waiting(store: Store, run: Run, now: datetime) -> bool:
    """A queued ``run`` whose row names a dead process - the scheduler that planned it (a
    daemon or tick killed before its child took the run up) or the child before its claim -
    waits for a scheduler again (no process on its row), as a run requeued by its own
    process does: its agent never started, so nothing is lost and nothing is reported. Not
    ended: a run that had been claimed before has its claim standing on GitHub (labels, the
    status comment), which a silent end would leave saying "in progress" for ever. True if
    it was given back (once the row has named no live process for ORPHANED_AFTER_SECONDS)."""
    from cgr_store import RunChanged, RunNotFound, RunStatus

    handed = run.heartbeat_at or run.created_at
    if (now - handed).total_seconds() < ORPHANED_AFTER_SECONDS:
        return False  # a later pass decides: a live child may be about to name itself
    try:
        # Only the row as judged (a compare-and-set): one taken up meanwhile is left be.
        same = {"status": RunStatus.QUEUED, "pid": run.pid,
                "process_start_time": run.process_start_time}  # fmt: skip
        store.update_run(run.id, expect=same, pid=None, process_start_time=None,
                         heartbeat_at=None)  # fmt: skip
        store.record_event(
            run.id, f"back to the queue: its process (pid {run.pid}) ended before the claim"
        )
    except (RunChanged, RunNotFound):
        return False
    log.info("run %s: its process (pid %s) is gone before the claim; queued again",
             run.id, run.pid)  # fmt: skip
    return True


def _requeue_dead(store: Store, run: Run, why: str) -> bool:
    """``run`` back to ``queued`` (``run/_requeue.requeue``); False when it was no longer
    claimed (its own process, or another reaper, got there first)."""
    from cgr_cli.run._requeue import requeue
    from cgr_store import IllegalTransition, RunNotFound, RunStatus

    try:
        if store.get_run(run.id).status is not RunStatus.CLAIMED:
            return False
        requeue(store, run.id, why)
    except (IllegalTransition, RunNotFound):
        return False
    return True


def _as_it_is_now(store: Store, listed: Run) -> Run | None:
    """``listed`` read again, None once it has ended or is gone: a reap pass's awaits
    (GitHub calls, grace periods) take seconds, in which a listed run may have been
    claimed or ended."""
    from cgr_store import RunNotFound

    try:
        run = store.get_run(listed.id)
    except RunNotFound:
        return None
    return None if run.status.is_terminal else run


@dataclass(slots=True)
class ReapReport:
    gone: list[str] = field(default_factory=list)
    # Dead before their agent started (claimed: checking out, or waiting for an agent
    # slot; or queued, handed to a process that died before its claim): back in the
    # queue, nothing lost.
    requeued: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    # Alive but silent past timeouts.stale_heartbeat_seconds: killed, ended timed_out.
    hung: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Runs whose pending report (outbox) was sent by this pass / is still waiting.
    delivered: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "gone": self.gone,
            "requeued": self.requeued,
            "recovered": self.recovered,
            "timed_out": self.timed_out,
            "hung": self.hung,
            "removed": self.removed,
            "delivered": self.delivered,
            "undelivered": self.undelivered,
        }


def last_sign_of_life(run: Run) -> datetime | None:
    """When a claimed or running run last showed it works: its newest heartbeat, or its
    start. None for a queued run: its row may name the scheduler that is about to fork
    its child (or the child before its first beat), which must not be judged by it."""
    from cgr_store import RunStatus

    if run.status is RunStatus.QUEUED:
        return None
    return max(t for t in (run.heartbeat_at, run.started_at, run.created_at) if t is not None)


async def pushed_pull_request(github: GitHubSession, run: Run) -> dict[str, Any] | None:
    """A PR on the run's branch created after the run started: the run got that far.

    A PR opened earlier (a mention on an existing PR works on its branch) does not count.
    """
    if not run.branch:
        return None
    pr = await github.ops.find_pull_request(run.repo, run.branch, state="all")
    if pr is None:
        return None
    created = datetime.fromisoformat(str(pr.get("created_at", "")).replace("Z", "+00:00"))
    start = run.started_at or run.created_at
    # GitHub's timestamps have whole seconds.
    return pr if created >= start.replace(microsecond=0) else None


async def reap(
    config: Config,
    store: Store,
    github: GitHubSession,
    *,
    host: str,
    now: datetime | None = None,
    skip: frozenset[str] = frozenset(),
) -> ReapReport:
    """End this host's runs whose process is gone (failed, or succeeded when their PR
    exists), that are past ``timeouts.run_seconds``, or whose process is alive but has not
    heartbeated for ``timeouts.stale_heartbeat_seconds`` (hung: e.g. stuck in a call or
    deadlocked; the run's own limits can no longer fire). The last two have their whole
    process group killed and end ``timed_out``. Then remove expired workspaces. ``skip``
    names runs the caller itself supervises."""
    from cgr_cli.run._report import Outcome
    from cgr_store import RunStatus, utcnow

    now = now or utcnow()
    report = ReapReport()
    grace = config.timeouts.watchdog_grace_seconds
    limit = timedelta(seconds=config.timeouts.run_seconds + 2 * grace)
    stale = timedelta(seconds=config.timeouts.stale_heartbeat_seconds)
    for listed in store.active_runs(host=host):
        run = _as_it_is_now(store, listed)
        if run is None or run.id in skip or waiting_for_scheduler(run):
            continue
        identity = run_identity(run)
        if identity is None or not identity.is_alive():
            if run.status is RunStatus.QUEUED:
                # Its scheduler (or its child, before the claim) died: nothing was spent.
                if _orphan_back_to_waiting(store, run, now):
                    report.requeued.append(run.id)
                continue
            await _end_dead(config, store, github, run, report=report)
            continue
        # A run's time limit counts from its start (`running`: it has its agent slot). A
        # `claimed` one may wait for a slot behind other runs' agents for as long as they
        # take, with its own limit stopped (run/_agent_gate.py); a hung one is found by
        # its silent heartbeat below.
        started = run.started_at or run.created_at
        if run.status is not RunStatus.CLAIMED and now - started > limit:
            # Blocking (polls /proc through the grace period): a worker thread.
            await anyio.to_thread.run_sync(end_processes, config, run, grace)
            why = f"the run passed its time limit of {config.timeouts.run_seconds:g}s"
            if await end_run(
                config, store, github, run, RunStatus.TIMED_OUT,
                outcome=Outcome.TIMED_OUT, error=why,
            ):  # fmt: skip
                report.timed_out.append(run.id)
            continue
        last = last_sign_of_life(run)
        if last is not None and now - last > stale:
            # The pipeline beats from its own task every timeouts.heartbeat_seconds, also
            # while git or the agent works in other threads/processes: silence this long
            # means the process no longer runs its event loop (stopped, deadlocked, stuck
            # in a blocking call). Killed through cgr-exec's identity check like above.
            silent = (now - last).total_seconds()
            await anyio.to_thread.run_sync(end_processes, config, run, grace)
            why = (
                f"no heartbeat for {silent:.0f}s (limit "
                f"{config.timeouts.stale_heartbeat_seconds:g}s): the run's process was "
                "alive but hung, and was ended"
            )
            if await end_run(
                config, store, github, run, RunStatus.TIMED_OUT,
                outcome=Outcome.TIMED_OUT, error=why,
            ):  # fmt: skip
                report.hung.append(run.id)
    report.removed = await anyio.to_thread.run_sync(clean_workspaces, config, store, now)
    # Reports that runs (or the endings above) could not send: GitHub was down then.
    try:
        sent = await deliver_pending(store, github, host=host)
    except Exception:  # a store or GitHub failure: the next pass tries again
        delivery_log.warning("delivering pending reports failed", exc_info=True)
    else:
        report.delivered, report.undelivered = sent.delivered, sent.pending
    return report


def end_processes(config: Config, run: Run, grace: float) -> None:
    """SIGTERM the run's process group, SIGKILL after ``grace``; then its strays."""
    from cgr_exec import kill_identity_group, kill_job_leftovers

    identity = run_identity(run)
    if identity is not None:
        kill_identity_group(identity, grace)
    # Everything the agent started carries the run's job marker (cgr-exec puts it in the
    # environment and, where a cgroup can be made, the process in the run's cgroup): a
    # setsid'd, double-forked watcher with cwd / is found this way after a SIGKILLed run.
    try:
        kill_job_leftovers(run.id, grace)
    except Exception:
        log.warning("ending the leftovers of run %s failed", run.id, exc_info=True)
    kill_strays(config, run, grace)
    try:
        close_to_account(config, run)
    except OSError:
        log.warning("closing run %s's directories to the agent's account failed", run.id,
                    exc_info=True)  # fmt: skip


def close_to_account(config: Config, run: Run) -> None:
    """Close the run's and its target's directories to the agent's account again (user
    modes only), as the run's own end does (run/_agent_account.take_back): a run killed
    before its end left them searchable by the account, which every user-mode run shares,
    so a later agent could have reached this run's checkout and temp dir. Its processes
    are gone when this runs; a checkout another run holds now is that run's and is left
    open."""
    from cgr_cli.run._agent_account import take_back, uses_account

    if not uses_account(config):
        return
    ws, checkout, ours = _run_checkout(config, run)
    places = [ws.run_dir / "tmp", checkout] if ours else [ws.run_dir / "tmp"]
    take_back(places, config.workspace_root)


def _run_checkout(config: Config, run: Run) -> tuple[Workspace, Path, bool]:
    """The run's workspace, the checkout it worked in (the one its ``repo`` link points to:
    a PR run may use its issue's), and whether that checkout is still the run's: False
    when another run holds its lock now (what works there is that run's)."""
    from cgr_cli.run._workspace import Workspace, lock_holder

    ws = Workspace.for_run(config.workspace_root, run.id, run.repo, run.target)
    checkout = Path(os.readlink(ws.repo_link) if ws.repo_link.is_symlink() else ws.checkout)
    return ws, checkout, lock_holder(checkout.with_name("repo.lock")) in (None, run.id)


def kill_strays(config: Config, run: Run, grace: float) -> None:
    """End processes still working in the run's checkout.

    The agent runs in its own session (cgr-exec's supervise), so it is not in the run's
    process group; if the run's process was SIGKILLed the agent was orphaned. Whatever has
    its working directory in the run's checkout belongs to this run: a run holds the
    checkout's lock while anything works there. The checkout is the one the run's ``repo``
    link points to (a PR run may use its issue's). If another run holds that lock now, the
    processes there are its own and are left alone.
    """
    from cgr_exec import ProcessIdentity, kill_identity_group

    _, checkout_path, ours = _run_checkout(config, run)
    if not ours:
        return
    checkout = str(checkout_path)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == checkout or cwd.startswith(checkout + "/"):
            with contextlib.suppress(Exception):
                kill_identity_group(ProcessIdentity.of(int(entry)), grace)


def clean_workspaces(config: Config, store: Store, now: datetime) -> list[str]:
    """Remove run directories (logs, artifacts, archives) and target checkouts whose run
    ended more than ``cleanup.retention_days`` ago. Never one of an active run."""
    from cgr_cli.run._workspace import lock_holder
    from cgr_store import RunNotFound

    root = config.workspace_root
    if not root.is_dir():
        return []
    keep = timedelta(days=config.cleanup.retention_days)
    cutoff = now - keep
    removed: list[str] = []
    active = store.active_runs()
    active_targets = {(r.repo, r.target) for r in active}
    for run_dir in sorted(root.glob("r-*")):
        try:
            run = store.get_run(run_dir.name)
        except RunNotFound:
            continue  # not ours to judge
        if run.status.is_active or run.ended_at is None or run.ended_at >= cutoff:
            continue
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(str(run_dir))
    targets = root / "targets"
    for checkout in sorted(targets.glob("*/*/*")) if targets.is_dir() else []:
        owner, name, number = checkout.relative_to(targets).parts
        if not number.isdigit() or (f"{owner}/{name}", int(number)) in active_targets:
            continue
        if lock_holder(checkout / "repo.lock") is not None:
            continue  # a run (perhaps a PR's, on its issue's checkout) works there now
        if _newest_mtime(checkout) < cutoff.timestamp():
            shutil.rmtree(checkout, ignore_errors=True)
            removed.append(str(checkout))
    return removed


def _newest_mtime(path: Path) -> float:
    try:
        newest = path.lstat().st_mtime
        for child in path.iterdir():
            newest = max(newest, child.lstat().st_mtime)
    except OSError:
        return 0.0
    return newest
