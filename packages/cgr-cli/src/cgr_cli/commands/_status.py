"""``cgr status``: configuration, slots, active runs and recent outcomes."""

from __future__ import annotations

import argparse
import sys

from cgr_cli.commands._common import load, print_json


def status(args: argparse.Namespace) -> int:
    from cgr_cli.ops._status_view import render_status, status_data
    from cgr_store import SQLiteStore, StoreError

    loaded = load(args)
    if loaded is None:
        return 1
    config, path = loaded
    if not config.database.exists():
        print(f"cgr status: no database at {config.database} yet (nothing has run)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        with SQLiteStore(config.database) as store:
            data = status_data(config, path, store)
    except StoreError as exc:
        print(f"cgr status: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json(data)
    else:
        sys.stdout.write(render_status(data))
    return 0
