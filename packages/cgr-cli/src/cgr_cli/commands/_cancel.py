"""``cgr cancel RUN_ID``: end a run (its process group, status comment, labels)."""

from __future__ import annotations

import argparse
import sys

from cgr_cli.commands._common import load


def cancel(args: argparse.Namespace) -> int:
    import anyio

    from cgr_cli._errors import NotFoundError
    from cgr_cli.schedule._control import cancel_run
    from cgr_cli.schedule._github import open_github

    config, _ = load(args)

    async def main() -> tuple[bool, str]:
        from cgr_cli.config._store import database_location, open_config_store
        from cgr_store import RunNotFound

        with open_config_store(config) as store:
            try:
                run = store.get_run(args.run_id)
            except RunNotFound:
                where = database_location(config)
                raise NotFoundError(
                    f"no run {args.run_id!r} in {where}; `cgr status` lists the runs"
                ) from None
            if not run.status.is_active:
                return False, f"run {run.id} already ended ({run.status})"
            async with open_github(config) as github:
                why = args.reason or "cancelled with `cgr cancel`"
                done = await cancel_run(config, store, github, run, why=why)
            return done, f"run {run.id}: {store.get_run(run.id).status}"

    done, message = anyio.run(main)
    print(message, file=sys.stdout if done else sys.stderr)
    return 0 if done else 1
