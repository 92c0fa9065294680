"""``cgr demo``: the whole loop on a simulated GitHub with a scripted agent, offline."""

from __future__ import annotations

import argparse
import sys


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help="show cgr at work on a simulated GitHub (no network, no tokens)",
        description="Start a simulated GitHub with a sample repository, a ready issue and "
        "a mention, run `cgr tick` (fork mode) with a scripted agent, and show the pull "
        "request, the comments, the labels and the runs. Needs only git.",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the state (config, database, workspaces, logs) for cgr status/logs",
    )
    parser.add_argument(
        "--dir", metavar="PATH", help="put the state here (a new or empty directory)"
    )
    parser.add_argument(
        "--step-delay",
        type=float,
        default=0.4,
        metavar="SECONDS",
        help="pause per agent turn so the progress can be followed (default 0.4)",
    )


def demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cgr_cli.demo._world import DemoError, run_demo

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        result = run_demo(
            keep=args.keep or args.dir is not None,
            directory=Path(args.dir) if args.dir else None,
            step_delay=args.step_delay,
            say=say,
        )
    except DemoError as exc:
        print(f"cgr demo: {exc}", file=sys.stderr)
        return 2
    return result.exit_code
