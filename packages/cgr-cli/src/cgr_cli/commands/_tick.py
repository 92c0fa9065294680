"""``cgr tick``: one scheduling pass in fork mode; children run on after it exits."""

from __future__ import annotations

import argparse
import sys

from cgr_cli.commands._common import load, print_json


def tick(args: argparse.Namespace) -> int:
    from cgr_cli.schedule._tick import tick as run_tick

    config, _ = load(args)
    result = run_tick(config)
    if args.json:
        print_json(result.as_dict())
        return 0
    r = result.report
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
    for error in r.errors:
        print(f"  error: {error}", file=sys.stderr)
    return 0
