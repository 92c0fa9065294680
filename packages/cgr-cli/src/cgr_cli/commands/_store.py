"""``cgr store migrate --to postgresql://…``: move a single host's SQLite store to
PostgreSQL (for a fleet), every record kept and the counts verified.

The copy is cgr-store's ``copy_store``: runs, events, processed triggers, cursors, agent
sessions, the outbox and the HTTP cache, read in one transaction and written in one, into
an empty database. A daemon still scheduling on the source would write runs the copy
misses, so it is refused while one holds the store; stop the tick timer too. Afterwards
point ``paths.database`` (or ``$CGR_DATABASE_URL``) at the URI.
"""

from __future__ import annotations

import argparse
import sys

from cgr_cli.commands._options import add_command


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "store",
        help="move the store to another database",
        description="Manage the store itself: `cgr store migrate --to postgresql://…` copies "
        "a single host's SQLite store into PostgreSQL for a fleet of hosts.",
    )
    actions = parser.add_subparsers(dest="store_command", metavar="ACTION")
    migrate = add_command(
        actions,
        "migrate",
        help="copy a SQLite store into an empty PostgreSQL database and verify the counts",
        description="Copy runs, events, processed triggers, cursors, agent sessions, the "
        "outbox and the HTTP cache of a SQLite store into an empty PostgreSQL database in one "
        "transaction, and verify the counts. Stop the daemon and the tick timer first.",
    )
    migrate.add_argument(
        "--to", required=True, metavar="URI", help="the target, a postgresql:// URI (empty)"
    )
    migrate.add_argument(
        "--from", dest="source", metavar="PATH",
        help="the SQLite file to copy (default: the configuration's paths.database)",
    )  # fmt: skip
    migrate.add_argument("--json", action="store_true", help="print the counts as JSON")


def store(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one refusal per mistake
    from pathlib import Path

    from cgr_cli._errors import ConfigError
    from cgr_cli.commands._common import print_json
    from cgr_cli.config._load import load_config
    from cgr_cli.schedule._locks import daemon_owner
    from cgr_store import (
        SQLiteStore,
        StoreError,
        copy_store,
        open_store,
        redact_url,
    )

    if args.store_command != "migrate":
        print("cgr store: say what to do: cgr store migrate --to postgresql://…",
              file=sys.stderr)  # fmt: skip
        return 2
    if not args.to.startswith(("postgresql://", "postgres://")):
        print(f"cgr store migrate: --to must be a postgresql:// URI, not {args.to!r}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        config, _ = load_config(args.config)
    except ConfigError as exc:
        print(f"cgr store migrate: configuration error: {exc}", file=sys.stderr)
        return 2
    source = Path(args.source).expanduser() if args.source else config.database
    if args.source is None and config.database_url is not None:
        print("cgr store migrate: the configured store is PostgreSQL already; "
              "name the SQLite file with --from", file=sys.stderr)  # fmt: skip
        return 2
    if not source.is_file():
        print(f"cgr store migrate: no SQLite store at {source}", file=sys.stderr)
        return 2
    owner = daemon_owner(config) if args.source is None else None
    if owner is not None:
        print(f"cgr store migrate: cgr daemon (pid {owner.pid}) is using {source}; "
              "stop it (and the tick timer) first", file=sys.stderr)  # fmt: skip
        return 2
    target_name = redact_url(args.to)
    try:
        with SQLiteStore(source) as src, open_store(args.to) as dst:
            counts = copy_store(src, dst)
    except StoreError as exc:
        print(f"cgr store migrate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json({"from": str(source), "to": target_name, "counts": counts})
    else:
        print(f"copied {source} to {target_name}; counts verified:")
        for table, n in counts.items():
            print(f"  {table:<18} {n}")
        print(f'now set paths.database = "{target_name}" (with its password) on every host')
    return 0
