"""``cgr run``: one issue or pull request, from claim to a visible outcome."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from cgr_cli._errors import CgrError
    from cgr_cli.config._load import load_config
    from cgr_cli.run._pipeline import RunRequest, run_sync
    from cgr_discovery import DiscoveryError
    from cgr_store import StoreError

    try:
        config, _ = load_config(args.config)
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
            own_process=True,
        )
    except (CgrError, DiscoveryError, StoreError) as exc:
        # Only errors before the run row exists reach here (bad config, GitHub or the
        # database unreachable, an active run on the target); later ones are reported on
        # GitHub and in the summary.
        print(f"cgr: the run could not start: {exc}", file=sys.stderr)
        return 2
    if args.json:
        import msgspec

        sys.stdout.write(msgspec.json.format(msgspec.json.encode(summary)).decode() + "\n")
    else:
        print(summary.one_line())
    return summary.exit_code
