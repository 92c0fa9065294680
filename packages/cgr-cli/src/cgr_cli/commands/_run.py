"""``cgr run``: one issue or pull request, from claim to a visible outcome."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from cgr_cli.config._load import load_config
    from cgr_cli.run._pipeline import RunRequest, run_sync

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
        )
    except Exception as exc:
        if not _could_not_start(exc):
            raise
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


def _could_not_start(exc: Exception) -> bool:
    """A cgr, GitHub or database error: the run could not start (exit code 2).

    cgr_discovery and cgr_store are looked up in ``sys.modules`` rather than imported: an
    exception can only be one of theirs if they were imported, and importing them here
    would put the GitHub client before the store on every run's start-up path.
    """
    from cgr_cli._errors import CgrError

    if isinstance(exc, CgrError):
        return True
    for module, name in (("cgr_discovery", "DiscoveryError"), ("cgr_store", "StoreError")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return True
    return False
