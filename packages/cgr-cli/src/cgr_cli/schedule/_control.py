"""``cgr cancel`` / ``cgr retry`` and the GitHub commands ``@bot cancel`` / ``@bot retry``.

Cancelling a run that has a live process asks that process first (SIGTERM: the pipeline
ends the agent's group and reports), and only ends the group itself when the process does
not finish within the grace period. Retrying writes a new queued run (attempt + 1) for the
same target; the next scheduling pass starts it, or ``cgr retry --now`` runs it here.
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from cgr_cli._errors import CgrError, ExitCode
from cgr_cli.config._model import Config
from cgr_cli.schedule._github import GitHubSession
from cgr_cli.schedule._reaper import end_processes, end_run, summary_from_run
from cgr_cli.schedule._runs import run_identity

if TYPE_CHECKING:
    from cgr_exec import ProcessIdentity
    from cgr_store import Run, Store


class ControlError(CgrError):
    """``cgr cancel`` / ``cgr retry`` cannot act on run ``run_id`` (``reason`` says why)."""

    def __init__(self, run_id: str, reason: str, *, exit_code: ExitCode = ExitCode.FAILURE) -> None:
        self.run_id = run_id
        self.reason = reason
        self.exit_code = exit_code
        super().__init__(f"run {run_id}: {reason}")


async def cancel_run(
    config: Config, store: Store, github: GitHubSession, run: Run, *, why: str
) -> bool:
    """End an active run as cancelled, visibly. False if it was no longer active."""
    from cgr_store import IllegalTransition, RunStatus
    from cgr_store import RunNotFound as StoreRunNotFound

    if not run.status.is_active:
        return False
    grace = config.timeouts.watchdog_grace_seconds
    identity = run_identity(run)
    local = run.host == config.host_id
    if run.status is not RunStatus.QUEUED and identity is not None and local:
        # A queued row may still name its scheduler (the tick or daemon that wrote it):
        # only a claimed or running row names the run's own process. The request is in
        # its history first: a scheduler's run waiting for its agent slot takes a plain
        # SIGTERM as the host stopping (it goes back to the queue), this one as a cancel.
        from cgr_cli.run._requeue import CANCEL_ASKED

        store.record_event(run.id, f"{CANCEL_ASKED}: {why}")
        if await _ask_to_stop(identity, grace + 10.0):
            if await explain_cancel(config, store, github, run.id, why=why):
                return True
            if not store.get_run(run.id).status.is_active:
                return False  # it finished first
        await anyio.to_thread.run_sync(end_processes, config, run, grace)
    elif not local and run.status is not RunStatus.QUEUED:
        # Another host's process: mark it cancelled; its heartbeat notices and stops.
        try:
            store.transition(run.id, RunStatus.CANCELLED, detail=why, outcome="cancelled")
        except (IllegalTransition, StoreRunNotFound):
            return False
        return True
    return await finish_cancelled(config, store, github, run.id, why=why)


async def explain_cancel(
    config: Config, store: Store, github: GitHubSession, run_id: str, *, why: str
) -> bool:
    """If the run's own process ended it as cancelled (it reports "received SIGTERM"),
    rewrite its status comment to say why it was cancelled. True if it was cancelled."""
    from cgr_cli.run._outbox import STATUS_COMMENT, deliver_run, report_entries
    from cgr_cli.run._report import Outcome, Texts
    from cgr_cli.schedule._deliver import run_ops
    from cgr_store import RunStatus

    run = store.get_run(run_id)
    if run.status is not RunStatus.CANCELLED:
        return False
    summary = summary_from_run(run, status="cancelled", outcome=Outcome.CANCELLED, error=why)
    text = Texts(github.bot, run.id).final(summary)
    # The new wording goes through the outbox after the run's own report (sent in order),
    # so a report of the run still pending cannot overwrite it later.
    entries = report_entries(config.labels, run_id=run.id, repo=run.repo, number=run.target,
                             succeeded=False, text=text, key_suffix=":cancel")  # fmt: skip
    try:
        store.update_run(run.id, error=why)
        store.put_outbox(run.id, next(e for e in entries if e.kind == STATUS_COMMENT))
        await deliver_run(store, run_ops(github, store, run.id), run.id)
    except Exception:  # noqa: S110 - the run is cancelled already; a later pass sends it
        pass
    return True


async def finish_cancelled(
    config: Config, store: Store, github: GitHubSession, run_id: str, *, why: str
) -> bool:
    """End a still-active run as cancelled from outside (its process is gone or was ended)."""
    from cgr_cli.run._report import Outcome
    from cgr_store import RunStatus

    run = store.get_run(run_id)
    return await end_run(
        config, store, github, run, RunStatus.CANCELLED, outcome=Outcome.CANCELLED, error=why
    )


async def _ask_to_stop(identity: ProcessIdentity, wait: float) -> bool:
    """SIGTERM the run's process and wait for it to end; True if it ended in time."""
    from cgr_exec import signal_identity

    if not signal_identity(identity, signal.SIGTERM):
        return True
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not identity.is_alive():
            return True
        await anyio.sleep(0.05)
    return False


async def cancel_target(
    config: Config, store: Store, github: GitHubSession, repo: str, number: int, *, why: str
) -> list[str]:
    """Cancel the active run on ``repo#number`` (``@bot cancel``); the ids cancelled."""
    done: list[str] = []
    for run in store.active_runs():
        if (run.repo, run.target) == (repo, number) and await cancel_run(
            config, store, github, run, why=why
        ):
            done.append(run.id)
    return done


def retry_run(
    store: Store, run_id: str, *, owner: ProcessIdentity | None = None, host: str | None = None
) -> Run:
    """A new queued run for the target of ``run_id`` (attempt + 1).

    Without ``owner`` the row names no process and waits for the next scheduling pass;
    with it, the caller (``cgr retry --now``) runs it and nobody else picks it up.
    """
    from cgr_store import ActiveRunExists, Run, RunKind, RunNotFound, new_run_id

    try:
        previous = store.get_run(run_id)
    except RunNotFound:
        raise ControlError(
            run_id, "no such run in the store", exit_code=ExitCode.NOT_FOUND
        ) from None
    if previous.status.is_active:
        raise ControlError(run_id, f"is still {previous.status}; cancel it first")
    run = Run(
        id=new_run_id(),
        repo=previous.repo,
        target=previous.target,
        kind=previous.kind,
        trigger_id=previous.trigger_id if previous.kind is not RunKind.ISSUE else None,
        attempt=previous.attempt + 1,
        host=host if owner else None,
        pid=owner.pid if owner else None,
        process_start_time=float(owner.start_time) if owner else None,
    )
    try:
        return store.create_run(run)
    except ActiveRunExists as exc:
        raise ControlError(
            run_id, f"{previous.repo}#{previous.target} already has an active run "
            f"{exc.existing_run_id}", exit_code=ExitCode.BUSY,
        ) from None  # fmt: skip
