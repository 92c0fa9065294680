"""The ``cgr`` command line: argument parsing only; each command's body lives elsewhere.

Heavy imports happen inside command bodies so that ``cgr --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (TOML or YAML); default: $CGR_CONFIG, "
        "~/.config/cgr/config.toml, /etc/cgr/config.toml",
    )


def _parser() -> argparse.ArgumentParser:
    from cgr_cli import __version__

    parser = argparse.ArgumentParser(
        prog="cgr",
        description="Turn GitHub issues and mentions into pull requests with Claude Code.",
    )
    parser.add_argument("--version", action="version", version=f"cgr {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    check = config_commands.add_parser(
        "check", help="validate the configuration and print the effective settings"
    )
    _add_config(check)

    run = commands.add_parser("run", help="run one issue or pull request to its outcome")
    _add_config(run)
    run.add_argument("--repo", required=True, metavar="OWNER/NAME")
    run.add_argument("--number", required=True, type=int, metavar="N")
    run.add_argument("--comment-id", type=int, metavar="C", help="the triggering comment")
    run.add_argument(
        "--review-comment",
        action="store_true",
        help="--comment-id names a pull request review comment (a comment on a diff line)",
    )
    run.add_argument("--run-id", metavar="R", help="pick up this queued run instead of a new one")
    run.add_argument(
        "--force",
        action="store_true",
        help="run even if the issue is not labelled ready or is blocked",
    )
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")

    from cgr_cli._commands import init as init_command

    init_command.add_parser(commands)
    from cgr_cli._commands import doctor as doctor_command

    doctor_command.add_parser(commands)
    from cgr_cli._commands import systemd as systemd_command

    systemd_command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cgr`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    if args.command == "config":
        if args.config_command != "check":
            parser.parse_args(["config", "--help"])
        from cgr_cli._commands.config import check

        return check(args)
    if args.command == "init":
        from cgr_cli._commands.init import init

        return init(args)
    if args.command == "doctor":
        from cgr_cli._commands.doctor import doctor

        return doctor(args)
    if args.command == "systemd":
        from cgr_cli._commands.systemd import systemd

        return systemd(args)
    if args.command == "run":
        from cgr_cli._commands.run import run

        return run(args)
    return 2  # pragma: no cover - every command returns its own code
