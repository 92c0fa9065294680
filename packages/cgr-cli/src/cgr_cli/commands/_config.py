"""``cgr config check``: validate a configuration file and print the effective settings."""

from __future__ import annotations

import argparse
import sys


def check(args: argparse.Namespace) -> int:
    from cgr_cli._errors import ConfigError
    from cgr_cli.config._load import load_config, render_config

    try:
        config, path = load_config(args.config)
    except ConfigError as exc:
        print(f"cgr: configuration error: {exc}", file=sys.stderr)
        return 1
    source = str(path) if path else "no file found; built-in defaults"
    print(f"# effective configuration (from {source}); secrets are shown as ***")
    print(render_config(config), end="")
    return 0
