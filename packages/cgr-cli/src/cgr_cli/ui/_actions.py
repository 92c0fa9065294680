"""The dashboard's two actions, through the same code as ``cgr cancel`` and ``cgr retry``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cgr_cli.config._model import Config

if TYPE_CHECKING:
    from cgr_store import Store


async def cancel(config: Config, store: Store, run_id: str) -> str:
    """End an active run as cancelled (its process, comment and labels); says what happened."""
    from cgr_cli.schedule._control import cancel_run
    from cgr_cli.schedule._github import open_github

    run = store.get_run(run_id)
    if not run.status.is_active:
        return f"run {run_id} already ended ({run.status})"
    async with open_github(config) as github:
        done = await cancel_run(config, store, github, run, why="cancelled from `cgr ui`")
    status = store.get_run(run_id).status
    return f"run {run_id}: {status}" if done else f"run {run_id} ended first ({status})"


def retry(store: Store, run_id: str) -> str:
    """Queue a new attempt on the same target; the next scheduling pass starts it."""
    from cgr_cli.schedule._control import retry_run

    new = retry_run(store, run_id)
    return f"queued {new.id} (attempt {new.attempt}) for {new.repo}#{new.target}"
