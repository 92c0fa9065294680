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
    app = parser.add_argument_group("GitHub App (instead of a token)")
    app.add_argument("--app-id", type=int, metavar="N", help="run as this GitHub App")
    app.add_argument("--private-key-file", metavar="PEM", help="the App's private key (.pem)")
    app.add_argument(
        "--installation-id",
        type=int,
        metavar="N",
        help="keep to this installation (default: every installation of the App)",
    )


def init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cgr_cli.config._init import (
        AppSetup,
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
    app = None
    if args.app_id is not None or args.private_key_file or args.installation_id is not None:
        if args.app_id is None or not args.private_key_file:
            print("cgr init: a GitHub App needs both --app-id and --private-key-file",
                  file=sys.stderr)  # fmt: skip
            return 1
        key = str(Path(args.private_key_file).expanduser().absolute())
        app = AppSetup(args.app_id, key, args.installation_id)
    try:
        repos = parse_repositories(args.repositories)
        if not repos and app is None and sys.stdin.isatty():
            repos = ask_repositories(input, print)
        result = write_starting_config(repos, paths, force=args.force, system=args.system, app=app)
    except InitError as exc:
        print(f"cgr init: {exc}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print("\ncgr init: cancelled; nothing was written", file=sys.stderr)
        return 1
    print(next_steps(result), end="")
    return 0
