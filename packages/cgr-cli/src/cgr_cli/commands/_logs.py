"""``cgr logs RUN_ID``: a run's log (or agent stderr, prompt, event history)."""

from __future__ import annotations

import argparse
import sys
import time

from cgr_cli.commands._common import load, print_json


def logs(args: argparse.Namespace) -> int:
    from cgr_cli._errors import NotFoundError
    from cgr_cli.ops._status_view import run_files
    from cgr_store import RunNotFound, SQLiteStore

    config, _ = load(args)
    with SQLiteStore(config.database) as store:
        try:
            run, events = store.run_with_events(args.run_id)
        except RunNotFound:
            raise NotFoundError(
                f"no run {args.run_id!r} in {config.database}; `cgr status` lists the runs"
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
