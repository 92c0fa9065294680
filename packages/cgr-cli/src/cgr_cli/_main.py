"""The ``cgr`` command line: argument parsing only; each command's body lives elsewhere.

Heavy imports happen inside command bodies so that ``cgr --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    from cgr_cli import __version__

    parser = argparse.ArgumentParser(
        prog="cgr",
        description="Turn GitHub issues and mentions into pull requests with Claude Code.",
    )
    parser.add_argument("--version", action="version", version=f"cgr {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cgr`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    return 2  # pragma: no cover - every command returns its own code
