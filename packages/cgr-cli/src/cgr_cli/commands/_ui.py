"""``cgr ui``: the terminal dashboard (needs the ``ui`` extra: Textual)."""

from __future__ import annotations

import argparse
import sys

from cgr_cli.commands._options import add_command


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        commands,
        "ui",
        help="a terminal dashboard: live runs, a run's events, agent log and prompt, "
        "cancel and retry",
        description="A terminal dashboard of the runs in the database: live status, a "
        "run's events, its agent log (followed live) and prompt; cancel and retry with a "
        "confirmation. ? shows the keys; q or Esc goes back or quits. Needs the `ui` extra.",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the tables reload (default: 2)",
    )


def ui(args: argparse.Namespace) -> int:
    from cgr_cli.config._load import load_config

    try:
        import textual  # noqa: F401 - only to say clearly when it is missing
    except ImportError:
        print(
            "cgr ui needs Textual (the `ui` extra): `pipx inject cgr-cli 'textual>=8.2'` "
            "under pipx, or `pip install 'cgr-cli[ui]'` in a virtualenv",
            file=sys.stderr,
        )
        return 1
    from cgr_cli._errors import NotFoundError
    from cgr_cli.config._store import open_config_store, store_exists
    from cgr_cli.ui._app import run_app
    from cgr_cli.ui._data import RunSource

    config, _ = load_config(args.config)
    if not store_exists(config):
        raise NotFoundError(
            f"no runs yet: the database {config.database} does not exist "
            "(cgr creates it with the first run)"
        )
    with open_config_store(config) as store:
        run_app(RunSource(store, config.workspace_root), config,
                refresh_seconds=args.refresh if args.refresh > 0 else None)  # fmt: skip
    return 0
