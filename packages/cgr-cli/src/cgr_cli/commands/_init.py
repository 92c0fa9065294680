"""``cgr init``: a commented starting configuration, then the next steps."""

from __future__ import annotations

import argparse
import sys

from cgr_cli.commands._options import add_config_option


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "init",
        help="write a commented starting configuration",
        description="Write a commented starting configuration (asks for the repositories "
        "when none are given and stdin is a terminal), then print the next steps.",
    )
    parser.add_argument(
        "repositories", nargs="*", metavar="OWNER/NAME", help="the repositories to watch"
    )
    parser.add_argument(
        "--system",
        action="store_true",
        help="a system-wide setup: /etc/cgr/config.toml and /var/lib/cgr "
        "(default: ~/.config/cgr and ~/.local/share/cgr)",
    )
    add_config_option(parser, help="write the file here instead")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cgr_cli.config._init import (
        InitError,
        InitPaths,
        ask_repositories,
        next_steps,
        parse_repositories,
        write_starting_config,
    )

    paths = InitPaths.for_system() if args.system else InitPaths.for_user()
    if args.config:
        paths = InitPaths(
            config=Path(args.config).absolute(),
            workspace_root=paths.workspace_root,
            database=paths.database,
        )
    try:
        repos = parse_repositories(args.repositories)
        if not repos and sys.stdin.isatty():
            repos = ask_repositories(input, print)
        result = write_starting_config(repos, paths, force=args.force, system=args.system)
    except InitError as exc:
        print(f"cgr init: {exc}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print("\ncgr init: cancelled; nothing was written", file=sys.stderr)
        return 1
    print(next_steps(result), end="")
    return 0
