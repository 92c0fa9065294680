"""The ``cgr`` command line: argument parsing only; each command's body lives elsewhere.

Heavy imports happen inside command bodies so that ``cgr --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cgr_cli.commands._options import add_config_option


def _parser() -> argparse.ArgumentParser:
    from cgr_cli._version import __version__

    parser = argparse.ArgumentParser(
        prog="cgr",
        description="Turn GitHub issues and mentions into pull requests with Claude Code.",
    )
    parser.add_argument("--version", action="version", version=f"cgr {__version__}")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="process logs on stderr: text (default; $CGR_LOG_FORMAT) or one JSON object "
        "per line with the run id",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    check = config_commands.add_parser(
        "check", help="validate the configuration and print the effective settings"
    )
    add_config_option(check)
    check.add_argument(
        "--repo",
        metavar="OWNER/NAME",
        help="the settings runs in this repository use: the host's, tightened by the "
        "repository's .github/cgr.toml (read from its default branch), with where each "
        "value comes from",
    )

    run = commands.add_parser("run", help="run one issue or pull request to its outcome")
    add_config_option(run)
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
    _add_scheduling(commands)

    from cgr_cli.commands import _init as init_command

    init_command.add_parser(commands)
    from cgr_cli.commands import _doctor as doctor_command

    doctor_command.add_parser(commands)
    from cgr_cli.commands import _systemd as systemd_command

    systemd_command.add_parser(commands)
    from cgr_cli.commands import _ui as ui_command

    ui_command.add_parser(commands)
    from cgr_cli.commands import _demo as demo_command

    demo_command.add_parser(commands)
    return parser


def _add_scheduling(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """tick, daemon, reap, status, logs, cancel, retry (see _scheduler and friends)."""
    tick = commands.add_parser("tick", help="one scheduling pass: fork a child per job, exit")
    add_config_option(tick)
    tick.add_argument("--json", action="store_true", help="print the pass as JSON")
    daemon = commands.add_parser("daemon", help="schedule continuously (cgr run subprocesses)")
    add_config_option(daemon)
    daemon.add_argument(
        "--grace",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long running jobs may take to finish (default 300)",
    )
    daemon.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics and /healthz here (e.g. 127.0.0.1:9464)",
    )
    reap = commands.add_parser("reap", help="end runs whose process is gone or over time")
    add_config_option(reap)
    reap.add_argument("--json", action="store_true")
    status = commands.add_parser("status", help="slots, active runs, recent outcomes")
    add_config_option(status)
    status.add_argument("--json", action="store_true")
    logs = commands.add_parser("logs", help="a run's log")
    add_config_option(logs)
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("--follow", "-f", action="store_true", help="until the run ends")
    shown = logs.add_mutually_exclusive_group()
    shown.add_argument("--stderr", action="store_true", help="the agent's stderr")
    shown.add_argument("--prompt", action="store_true", help="the prompt given to the agent")
    shown.add_argument("--process", action="store_true", help="the run process's own output")
    shown.add_argument("--json", action="store_true", help="the run and its event history")
    cancel = commands.add_parser("cancel", help="end a run (process group, comment, labels)")
    add_config_option(cancel)
    cancel.add_argument("run_id", metavar="RUN_ID")
    cancel.add_argument("--reason", help="shown in the status comment")
    retry = commands.add_parser("retry", help="a new run for the same target (attempt + 1)")
    add_config_option(retry)
    retry.add_argument("run_id", metavar="RUN_ID")
    retry.add_argument("--now", action="store_true", help="run it here instead of queueing it")


_SCHEDULING = ("tick", "daemon", "reap", "status", "logs", "cancel", "retry")


def _scheduling(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"cgr_cli.commands._{args.command}")
    code: int = getattr(module, args.command)(args)
    return code


_OPERATIONS = ("init", "doctor", "systemd", "ui")


def _operations(args: argparse.Namespace) -> int:
    """init, doctor, systemd, ui: ``cgr_cli.commands._<name>.<name>(args)``."""
    import importlib

    module = importlib.import_module(f"cgr_cli.commands._{args.command}")
    code: int = getattr(module, args.command)(args)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cgr`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    from cgr_cli.ops._hardening import make_undumpable

    # First thing: the agent runs as this user and could otherwise read the GitHub token
    # from /proc/<this pid>/environ (see _hardening). Forks inherit it, exec drops it.
    make_undumpable()
    parser = _parser()
    args = parser.parse_args(argv)
    from cgr_cli.ops._logging import configure_logging, default_log_format

    configure_logging(args.log_format or default_log_format())
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    if args.command == "config":
        if args.config_command != "check":
            parser.parse_args(["config", "--help"])
        from cgr_cli.commands._config import check

        return check(args)
    if args.command in _OPERATIONS:
        return _operations(args)
    if args.command == "demo":
        from cgr_cli.commands._demo import demo

        return demo(args)
    if args.command == "run":
        from cgr_cli.commands._run import run

        return run(args)
    # Every command returns its own code; 2 is unreachable.
    return _scheduling(args) if args.command in _SCHEDULING else 2
