"""``cgr doctor``: check the installation; one line per check with the fix."""

from __future__ import annotations

import argparse
import os
import sys

from cgr_cli.commands._options import add_command


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        commands,
        "doctor",
        help="check the configuration, database, workspace, agent, GitHub and systemd",
        description="Check the whole setup; each check prints pass or fail and the fix. "
        "Exits 1 when any check fails.",
    )
    parser.add_argument(
        "--fix",
        action="store_true",
        help="repair what cgr can: create missing labels and the workspace root, "
        "migrate an old database",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--min-free-gib",
        type=float,
        default=2.0,
        metavar="N",
        help="free space the workspace needs (default: 2)",
    )


def _colour(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ


def doctor(args: argparse.Namespace) -> int:
    from cgr_cli.ops._doctor import GIB, Check, DoctorOptions, format_check, run_doctor

    interactive = not args.json and not args.fix and sys.stdin.isatty() and sys.stdout.isatty()

    def confirm(question: str) -> bool:
        try:
            return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}
        except EOFError:
            return False

    options = DoctorOptions(
        config_path=args.config,
        fix=args.fix,
        min_free_bytes=int(args.min_free_gib * GIB),
        confirm=confirm if interactive else None,
    )
    colour = _colour(sys.stdout)

    def show(check: Check) -> None:
        # Printed as each check ends: the GitHub checks take a moment, and a person
        # watching sees progress rather than a pause.
        print(format_check(check, colour=colour), flush=True)

    report = run_doctor(options, on_check=None if args.json else show)
    if args.json:
        import json

        print(json.dumps(report.to_json(), indent=2))
    else:
        failed = sum(1 for c in report.checks if c.status == "fail")
        print(
            "all checks passed"
            if report.ok
            else f"{failed} check{'s' if failed != 1 else ''} failed; see the fix lines above"
        )
    return 0 if report.ok else 1
