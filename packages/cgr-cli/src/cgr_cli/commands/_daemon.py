"""``cgr daemon``: schedule continuously, one ``cgr run`` subprocess per job."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cgr_cli.commands._common import load, require_repositories


def daemon(args: argparse.Namespace) -> int:
    from cgr_cli.schedule._daemon import run_daemon

    config, path = load(args)
    require_repositories(config, path)
    from cgr_cli.run._preflight import preflight

    preflight(config)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    # Children read the same file: an absolute path, whatever their cwd.
    return run_daemon(
        config,
        Path(path).resolve() if path else None,
        grace=args.grace,
        metrics_address=args.metrics,
    )
