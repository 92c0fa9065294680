"""The ``cgr`` command line: argument parsing only; each command's body lives elsewhere.

Heavy imports happen inside command bodies so that ``cgr --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cgr_cli._errors import ExitCode, UsageError
from cgr_cli.commands._options import add_command

_built: list[argparse.ArgumentParser] = []


def command_parser() -> argparse.ArgumentParser:
    """The command line's parser, built once per process: building it imports every
    command's module and adds ~200 arguments (~20 ms), which a standby does before its run
    comes (commands/_standby.py). Parsing leaves no state in it."""
    if not _built:
        _built.append(_parser())
    return _built[0]


def _parser() -> argparse.ArgumentParser:
    from cgr_cli._version import __version__

    parser = argparse.ArgumentParser(
        prog="cgr",
        description="Turn GitHub issues and mentions into pull requests with Claude Code.",
    )
    parser.add_argument("--version", action="version", version=f"cgr {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, print the Python traceback too ($CGR_DEBUG=1 does the same)",
    )
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q", "--quiet", action="store_true", help="log warnings and errors only; no progress"
    )
    loudness.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="process logs on stderr: text (default; $CGR_LOG_FORMAT) or one JSON object "
        "per line with the run id",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    config = commands.add_parser(
        "config",
        help="inspect the configuration",
        description="Inspect the configuration file cgr uses (see `cgr config check`).",
    )
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    check = add_command(
        config_commands,
        "check",
        help="validate the configuration and print the effective settings",
        description="Validate the configuration and print the effective settings (secrets as "
        "***, with where the token comes from). Exits 1 when the file is invalid, missing, or "
        "names no repository.",
    )
    check.add_argument(
        "--repo",
        metavar="OWNER/NAME",
        help="the settings runs in this repository use: the host's, tightened by the "
        "repository's .github/cgr.toml (read from its default branch), with where each "
        "value comes from",
    )

    run = add_command(
        commands,
        "run",
        help="run one issue or pull request to its outcome",
        description="Claim one issue or pull request on GitHub, run the agent on it in a "
        "fresh workspace, push a branch, open or update the pull request and report back. "
        "On a terminal, progress lines show what the agent does.",
    )
    run.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the repository")
    run.add_argument(
        "--number", required=True, type=int, metavar="N", help="the issue or pull request"
    )
    run.add_argument("--comment-id", type=int, metavar="C", help="the triggering comment")
    run.add_argument(
        "--review-comment",
        action="store_true",
        help="--comment-id names a pull request review comment (a comment on a diff line)",
    )
    run.add_argument("--run-id", metavar="R", help="pick up this queued run instead of a new one")
    run.add_argument(
        "--lease-epoch",
        type=int,
        metavar="E",
        help="(set by a fleet host for --run-id) the host lease epoch the run was claimed "
        "under; its writes are refused once that epoch is superseded",
    )
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
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description="Print a completion script generated from cgr's own argument parser. "
        "bash: `cgr completion bash > ~/.local/share/bash-completion/completions/cgr`; "
        "zsh: `cgr completion zsh > ~/.zfunc/_cgr` (with ~/.zfunc on $fpath); "
        "fish: `cgr completion fish > ~/.config/fish/completions/cgr.fish`.",
    )
    completion.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell")
    from cgr_cli.commands import _store as store_command

    store_command.add_parser(commands)
    return parser


def _add_scheduling(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """tick, daemon, reap, status, logs, cancel, retry (see _scheduler and friends)."""
    add_command(
        commands,
        "tick",
        help="one scheduling pass: fork a child per job, exit",
        description="One scheduling pass (fork mode, for a systemd timer or cron): reap, "
        "discover ready issues and mentions, start a child per job that fits a free slot, "
        "exit. Exits 1 when no repository is configured or discovery failed for all of them.",
        json="print the pass as JSON",
    )
    daemon = add_command(
        commands,
        "daemon",
        help="schedule continuously (cgr run subprocesses)",
        description="Schedule continuously: every polling interval reap, discover and start "
        "one `cgr run` subprocess per job. Retries GitHub with backoff while it is "
        "unreachable; under systemd it reports readiness and pings the watchdog.",
    )
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
    add_command(
        commands,
        "reap",
        help="end runs whose process is gone or over time",
        description="End the runs of this host whose process is gone, over time or silent, "
        "report them on GitHub, and remove expired workspaces.",
        json="print what was reaped as JSON",
    )
    add_command(
        commands,
        "status",
        help="slots, active runs, recent outcomes",
        description="Show the configuration in use, free slots, the scheduler, active runs "
        "and recent outcomes, fitted to the terminal's width.",
        json="print the status as JSON",
    )
    logs = add_command(
        commands,
        "logs",
        help="a run's log",
        description="Show a run's log. --follow shows the agent's activity (tools, text, "
        "cost so far) as it happens and ends with the outcome and the pull request.",
    )
    logs.add_argument("run_id", metavar="RUN_ID", help="the run (see `cgr status`)")
    logs.add_argument("--follow", "-f", action="store_true", help="until the run ends")
    shown = logs.add_mutually_exclusive_group()
    shown.add_argument("--stderr", action="store_true", help="the agent's stderr")
    shown.add_argument(
        "--agent", action="store_true", help="the agent's transcript, as readable lines"
    )
    shown.add_argument("--prompt", action="store_true", help="the prompt given to the agent")
    shown.add_argument("--process", action="store_true", help="the run process's own output")
    shown.add_argument("--json", action="store_true", help="the run and its event history")
    cancel = add_command(
        commands,
        "cancel",
        help="end a run (process group, comment, labels)",
        description="End an active run: its process group, its status comment and labels "
        "on GitHub.",
    )
    cancel.add_argument("run_id", metavar="RUN_ID", help="the run to end")
    cancel.add_argument("--reason", help="shown in the status comment")
    retry = add_command(
        commands,
        "retry",
        help="a new run for the same target (attempt + 1)",
        description="Queue a new run for the target of RUN_ID (attempt + 1); the next tick or "
        "the daemon starts it, or --now runs it here.",
    )
    retry.add_argument("run_id", metavar="RUN_ID", help="an ended run whose target to retry")
    retry.add_argument("--now", action="store_true", help="run it here instead of queueing it")


# Commands whose body is ``cgr_cli.commands._<name>.<name>(args)``.
_BY_MODULE = frozenset(
    {"run", "tick", "daemon", "reap", "status", "logs", "cancel", "retry",
     "init", "doctor", "systemd", "ui", "store", "demo"}
)  # fmt: skip


def _run_command(args: argparse.Namespace) -> int:
    """``cgr_cli.commands._<name>.<name>(args)``, its module imported only now (see the
    module docstring: ``cgr --help`` stays instant)."""
    import importlib

    module = importlib.import_module(f"cgr_cli.commands._{args.command}")
    code: int = getattr(module, args.command)(args)
    return code


def _wants_debug(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("CGR_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cgr`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    The one error boundary: whatever a user can cause (a bad file, GitHub down, a lock held,
    Ctrl-C, a closed pipe) ends here as one line on stderr and an exit code from
    ``ExitCode``; a traceback only with ``--debug`` or ``CGR_DEBUG=1``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "cgr"
    try:
        parser = command_parser()
        args = parser.parse_args(argv)
        if args.command:
            command = f"cgr {args.command}"
        return _dispatch(parser, args)
    except KeyboardInterrupt:
        # 130 = 128 + SIGINT, what a shell shows for a program Ctrl-C ended.
        if _wants_debug(argv):
            _print_traceback()
        _say(f"{command}: interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `cgr doctor | head`: the reader left. Say nothing (stderr may be the same pipe),
        # and point stdout at /dev/null so the interpreter's final flush cannot fail again.
        _silence_stdout()
        return _SIGPIPE_EXIT
    except SystemExit:
        raise  # argparse's own exits (--help: 0, a usage error: 2)
    except Exception as exc:
        message, code = describe_error(exc)
        if _wants_debug(argv):
            _print_traceback()
        elif code == ExitCode.FAILURE and message.startswith("internal error"):
            message += " (run again with --debug for the traceback, and report it)"
        _say(f"{command}: {message}")
        return code


# A shell reports a process SIGPIPE ended as 128 + 13; cgr exits with the same.
_SIGPIPE_EXIT = 141


def _print_traceback() -> None:
    import traceback  # only on this path: it is not cheap, and `cgr --help` must be

    traceback.print_exc()


def _say(line: str) -> None:
    import contextlib

    with contextlib.suppress(OSError, ValueError):  # stderr closed too: nothing to tell
        print(line, file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    import contextlib

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def describe_error(exc: BaseException) -> tuple[str, ExitCode]:  # noqa: PLR0911 - a table
    """One line (what went wrong, and what to do) and the exit code for ``exc``."""
    from cgr_cli._errors import CgrError, ConfigError, ConfigNotFoundError

    if isinstance(exc, ConfigError) and not isinstance(exc, ConfigNotFoundError):
        return f"configuration error: {exc}", exc.exit_code
    if isinstance(exc, CgrError):
        return str(exc), exc.exit_code
    module = type(exc).__module__.split(".", 1)[0]
    if module == "cgr_store":
        from cgr_store import ActiveRunExists, DatabaseBusy, HostLeaseHeld, RunNotFound

        if isinstance(exc, RunNotFound):
            return f"{exc}; `cgr status` lists the runs", ExitCode.NOT_FOUND
        if isinstance(exc, DatabaseBusy | ActiveRunExists | HostLeaseHeld):
            return str(exc), ExitCode.BUSY
        return str(exc), ExitCode.FAILURE
    if module == "cgr_discovery":
        from cgr_discovery import AuthError, GitHubUnavailable, RateLimited

        if isinstance(exc, AuthError):
            return (
                f"GitHub refused the credentials: {exc}; check github.token or "
                "$CGR_GITHUB_TOKEN (`cgr config check` shows which is used)",
                ExitCode.FAILURE,
            )
        if isinstance(exc, GitHubUnavailable):
            return (
                f"GitHub could not be reached: {exc}; check the network and github.api_url, "
                "then try again",
                ExitCode.FAILURE,
            )
        if isinstance(exc, RateLimited):
            return f"{exc}; try again after the limit resets", ExitCode.BUSY
        return f"GitHub: {exc}", ExitCode.FAILURE
    if module == "cgr_exec":
        return str(exc), ExitCode.FAILURE
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}", ExitCode.FAILURE
    if isinstance(exc, RecursionError):
        return "input nested too deeply to process", ExitCode.FAILURE
    return f"internal error: {type(exc).__name__}: {exc}", ExitCode.FAILURE


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from cgr_cli.ops._hardening import make_undumpable

    # First thing: the agent runs as this user and could otherwise read the GitHub token
    # from /proc/<this pid>/environ (see _hardening). Forks inherit it, exec drops it.
    make_undumpable()
    import logging

    from cgr_cli.ops._logging import configure_logging, default_log_format

    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    configure_logging(args.log_format or default_log_format(), level=level)
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    if args.command == "config":
        if args.config_command != "check":
            parser.parse_args(["config", "--help"])
        from cgr_cli.commands._config import check

        return check(args)
    if args.command == "completion":
        from cgr_cli.commands._completion import completion

        return completion(parser, args)
    if args.command in _BY_MODULE:
        return _run_command(args)
    raise UsageError(f"unknown command {args.command!r}; see `cgr --help`")  # pragma: no cover
