"""``cgr retry RUN_ID``: a new run for the same target (attempt + 1)."""

from __future__ import annotations

import argparse

from cgr_cli.commands._common import load


def retry(args: argparse.Namespace) -> int:
    from cgr_cli.config._store import open_config_store
    from cgr_cli.run._pipeline import run_sync
    from cgr_cli.schedule._control import retry_run
    from cgr_cli.schedule._runs import request_for
    from cgr_exec import ProcessIdentity

    config, _ = load(args)
    with open_config_store(config) as store:
        owner = ProcessIdentity.current() if args.now else None
        run = retry_run(store, args.run_id, owner=owner, host=config.host_id)
    if not args.now:
        print(f"{run.id} queued for {run.repo}#{run.target} (attempt {run.attempt}); "
              "the next `cgr tick` or the daemon starts it")  # fmt: skip
        return 0
    summary = run_sync(config, request_for(run), own_process=True)
    print(summary.one_line())
    return summary.exit_code
