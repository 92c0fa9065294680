"""``cgr reap``: end runs whose process is gone or over time; remove expired workspaces."""

from __future__ import annotations

import argparse

from cgr_cli.commands._common import load, print_json, require_repositories


def reap(args: argparse.Namespace) -> int:
    import anyio

    from cgr_cli.schedule._github import open_github
    from cgr_cli.schedule._reaper import ReapReport
    from cgr_cli.schedule._reaper import reap as do_reap

    config, path = load(args)
    require_repositories(config, path)

    async def main() -> ReapReport:
        from cgr_cli.config._store import open_config_store

        with open_config_store(config) as store:
            async with open_github(config) as github:
                return await do_reap(config, store, github, host=config.host_id)

    report = anyio.run(main)
    if args.json:
        print_json(report.as_dict())
    else:
        for kind, ids in report.as_dict().items():
            print(f"{kind}: {len(ids)}" + (f" ({', '.join(ids)})" if ids else ""))
    return 0
