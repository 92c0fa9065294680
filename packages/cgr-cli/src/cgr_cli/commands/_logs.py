"""``cgr logs RUN_ID``: a run's log (or agent stderr, prompt, event history)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from cgr_cli.commands._common import load, print_json

if TYPE_CHECKING:
    from cgr_cli.config._model import Config
    from cgr_store import Store


def logs(args: argparse.Namespace) -> int:
    from cgr_cli._errors import NotFoundError
    from cgr_cli.config._store import database_location, open_config_store
    from cgr_cli.ops._status_view import run_files
    from cgr_store import RunNotFound

    config, _ = load(args)
    with open_config_store(config) as store:
        try:
            run, events = store.run_with_events(args.run_id)
        except RunNotFound:
            where = database_location(config)
            raise NotFoundError(
                f"no run {args.run_id!r} in {where}; `cgr status` lists the runs"
            ) from None
        if args.json:
            import msgspec

            print_json(
                {
                    "run": msgspec.to_builtins(run),
                    "events": [msgspec.to_builtins(e) for e in events],
                }
            )
            return 0
        if args.agent or (args.follow and not (args.stderr or args.prompt or args.process)):
            return _readable(config, run.id, store, follow=args.follow, agent_only=args.agent)
        files = run_files(config, run.id)
        which = (
            "stderr" if args.stderr else "prompt" if args.prompt
            else "process" if args.process else "run"
        )  # fmt: skip
        path = files[which]
        if which == "run" and not path.exists() and files["process"].exists():
            path = files["process"]  # the run never got as far as its own log
        if not path.exists() and not args.follow:
            raise NotFoundError(f"{path} does not exist (yet); --follow waits for it")
        offset = 0
        while True:
            if path.exists():
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
            if not args.follow or not store.get_run(run.id).status.is_active:
                if args.follow and path.exists() and path.stat().st_size > offset:
                    continue  # the last lines written as it ended
                return 0
            time.sleep(0.25)


def _readable(config: Config, run_id: str, store: Store, *, follow: bool, agent_only: bool) -> int:
    """The run's log with the agent's activity as readable lines (``--follow``: until it
    ends, then the outcome and the pull request); ``--agent``: the agent's transcript."""
    from cgr_cli._errors import NotFoundError
    from cgr_cli.commands._follow import RunFollower, outcome_line
    from cgr_cli.commands._follow import follow as follow_run

    def write(line: str) -> None:
        print(line, flush=True)

    if follow:
        follow_run(config, run_id, write, run_log=not agent_only)
        return 0
    run = store.get_run(run_id)
    lines = RunFollower(config, run_id, run_log=False).poll(run)
    if not lines:
        from cgr_cli.ops._status_view import run_files

        raise NotFoundError(f"{run_files(config, run_id)['agent']} does not exist (yet)")
    for line in lines:
        write(line)
    if not run.status.is_active:
        write(outcome_line(run))
    return 0
