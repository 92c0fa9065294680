"""``cgr status``: configuration, slots, active runs and recent outcomes."""

from __future__ import annotations

import argparse
import sys

from cgr_cli.commands._common import load, print_json


def status(args: argparse.Namespace) -> int:
    from cgr_cli._errors import NotFoundError
    from cgr_cli.config._store import open_config_store, store_exists
    from cgr_cli.ops._status_view import render_status, status_data

    config, path = load(args)
    if not store_exists(config):
        raise NotFoundError(
            f"no database at {config.database} yet (nothing has run); start with `cgr tick`"
        )
    with open_config_store(config) as store:
        data = status_data(config, path, store)
    if args.json:
        print_json(data)
    else:
        import shutil

        # Fitted to a terminal; a pipe gets whole lines (grep, less -S decide for themselves).
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        sys.stdout.write(render_status(data, width))
    return 0
