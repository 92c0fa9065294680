"""``cgr daemon``: schedule continuously, one ``cgr run`` subprocess per job."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cgr_cli.commands._common import load


def daemon(args: argparse.Namespace) -> int:
    from cgr_cli._errors import CgrError
    from cgr_cli.schedule._daemon import run_daemon

    loaded = load(args)
    if loaded is None:
        return 1
    config, path = loaded
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        # Children read the same file: an absolute path, whatever their cwd.
        return run_daemon(
            config,
            Path(path).resolve() if path else None,
            grace=args.grace,
            metrics_address=args.metrics,
        )
    except CgrError as exc:
        print(f"cgr daemon: {exc}", file=sys.stderr)
        return 2
