"""``cgr tick``: one scheduling pass in fork mode; children run on after it exits."""

from __future__ import annotations

import argparse
import sys

from cgr_cli.commands._common import load, print_json, require_repositories


def tick(args: argparse.Namespace) -> int:
    from cgr_cli.schedule._tick import tick as run_tick

    config, path = load(args)
    require_repositories(config, path)
    from cgr_cli.run._preflight import preflight

    preflight(config)
    result = run_tick(config)
    r = result.report
    # Exit 1 when no repository could be polled (GitHub down, a bad token, every name
    # wrong): a timer's failed state is how an operator finds out.
    code = 1 if r.all_repos_failed(config.repositories) else 0
    if args.json:
        print_json(result.as_dict())
        return code
    print(
        f"tick: {len(r.started)} started, {len(r.pending)} pending (no free slot), "
        f"{len(r.busy)} busy, {r.rejected} rejected, {len(r.cancelled)} cancelled; "
        f"{r.free_slots} free slot(s) before; {result.seconds:.2f}s"
    )
    for run_id, pid in result.children.items():
        print(f"  started {run_id} (pid {pid})")
    for kind, ids in result.reaped.items():
        print(f"  reaped ({kind}): {', '.join(ids)}")
    for backoff in r.backed_off:
        print(
            f"  backed off: {backoff.repo}#{backoff.target} failed {backoff.failures} time(s) "
            f"before its claim; tried again from {backoff.retry_at:%Y-%m-%d %H:%M:%S} UTC"
        )
    for skipped in r.skipped:
        print(f"  skipped: {skipped['repo']}#{skipped['number']}: {skipped['reason']}")
    for error in r.errors:
        print(f"  error: {error}", file=sys.stderr)
    if code:
        print(
            "cgr tick: discovery failed for every repository; see the errors above",
            file=sys.stderr,
        )
    return code
