"""``cgr run``: one issue or pull request, from claim to a visible outcome."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from cgr_cli.config._load import load_config
    from cgr_cli.run._pipeline import RunRequest, run_sync

    # Errors raised here (bad config, GitHub or the database unreachable, an active run on
    # the target) come before the run row exists and go up to `_main`'s boundary; later
    # ones are reported on GitHub and in the summary.
    config, _ = load_config(args.config)
    if args.run_id is None:
        # A scheduler (tick, daemon) made these checks before it queued --run-id runs.
        from cgr_cli.run._preflight import preflight

        preflight(config)
    summary = run_sync(
        config,
        RunRequest(
            repo=args.repo,
            number=args.number,
            comment_id=args.comment_id,
            review_comment=args.review_comment,
            run_id=args.run_id,
            force=args.force,
        ),
    )
    if args.json:
        import msgspec

        sys.stdout.write(msgspec.json.format(msgspec.json.encode(summary)).decode() + "\n")
    else:
        print(summary.one_line())
    return summary.exit_code
