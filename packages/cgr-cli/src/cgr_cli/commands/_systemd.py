"""``cgr systemd``: print or install the systemd units for this configuration."""

from __future__ import annotations

import argparse
import sys

from cgr_cli.commands._options import add_command


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        commands,
        "systemd",
        help="print (or install) systemd units for the tick/reaper timers and the daemon",
        description="Print the units, or write them with --install: cgr-tick.timer + "
        "cgr-tick.service and cgr-reaper.timer + cgr-reaper.service (fork mode), and "
        "cgr-daemon.service (daemon mode). Enable one mode, not both.",
        config_help="configuration file the units pass to cgr; default: the one cgr finds",
    )
    parser.add_argument(
        "--user",
        action="store_true",
        help="units for your own systemd instance (~/.config/systemd/user) "
        "instead of the system's (/etc/systemd/system)",
    )
    parser.add_argument("--install", action="store_true", help="write the unit files")
    parser.add_argument(
        "--dir", metavar="DIR", help="write the units here instead (implies --install)"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long the daemon lets runs finish on stop (default: 300)",
    )
    parser.add_argument(
        "--log-format",
        dest="unit_log_format",
        choices=["text", "json"],
        default="text",
        help="what the services log to the journal (default: text)",
    )


def systemd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cgr_cli._errors import CgrError
    from cgr_cli.config._load import load_config
    from cgr_cli.ops._systemd import (
        SYSTEM_UNIT_DIR,
        SYSUSERS_PATH,
        after_install,
        cgr_command,
        check_system_command,
        install_units,
        render_units,
        sysusers_snippet,
        user_unit_dir,
    )

    try:
        config, path = load_config(args.config)
        if path is None:
            print(
                "cgr systemd: no configuration file found; write one first (cgr init) "
                "or name it with --config",
                file=sys.stderr,
            )
            return 1
        if not args.user:
            check_system_command(cgr_command())
        units = render_units(
            config,
            Path(path).absolute(),
            user=args.user,
            grace=args.grace,
            log_format=args.unit_log_format,
        )
        if not (args.install or args.dir):
            for unit in units:
                print(f"# --- {unit.name} ---")
                print(unit.text)
            if not args.user:
                print(f"# --- {SYSUSERS_PATH} ---")
                print(sysusers_snippet())
            return 0
        directory = (
            Path(args.dir) if args.dir else (user_unit_dir() if args.user else SYSTEM_UNIT_DIR)
        )
        for written in install_units(units, directory):
            print(f"wrote {written}")
        if not args.user:
            sysusers = directory / "cgr.sysusers.conf" if args.dir else SYSUSERS_PATH
            sysusers.parent.mkdir(parents=True, exist_ok=True)
            sysusers.write_text(sysusers_snippet(), encoding="utf-8")
            print(f"wrote {sysusers}")
    except CgrError as exc:
        print(f"cgr systemd: {exc}", file=sys.stderr)
        return exc.exit_code
    print(after_install(directory, user=args.user), end="")
    return 0
