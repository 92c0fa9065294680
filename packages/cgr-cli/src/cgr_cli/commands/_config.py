"""``cgr config check``: validate a configuration file and print the effective settings."""

from __future__ import annotations

import argparse
import os
import sys


def check(args: argparse.Namespace) -> int:
    """Print the effective configuration; exit 1 when it cannot run anything: the file is
    invalid, there is no file, or it names no repository."""
    from cgr_cli.config._load import default_config_paths, load_config, render_config

    # A ConfigError goes up to `_main`'s boundary (one line, exit 1 or 3).
    config, path = load_config(args.config)
    source = str(path) if path else "no file found; built-in defaults"
    print(f"# effective configuration (from {source}); secrets are shown as ***")
    print(_token_source(render_config(config), from_file=bool(config.github.token)), end="")
    if path is None:
        searched = ", ".join(str(p) for p in default_config_paths())
        print(
            f"cgr config check: no configuration file (looked at $CGR_CONFIG, {searched}); "
            "write one with `cgr init OWNER/NAME`",
            file=sys.stderr,
        )
        return 1
    if not config.repositories:
        print(
            f"cgr config check: {path} names no repository, so cgr has nothing to watch; "
            'add repositories = ["OWNER/NAME"]',
            file=sys.stderr,
        )
        return 1
    return 0


def _token_source(rendered: str, *, from_file: bool) -> str:
    """Say where the GitHub token comes from, next to the masked value."""
    env = "CGR_GITHUB_TOKEN"
    lines = []
    for rendered_line in rendered.splitlines():
        line = rendered_line
        if line.startswith("token = ") and from_file:
            line += "  # from the configuration file"
            if os.environ.get(env):
                line += f" (${env} is set too, and ignored)"
        elif line == "# token is not set":
            line = (
                f'token = "***"  # from ${env}'
                if os.environ.get(env)
                else f"# token is not set: set github.token here or ${env}"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"
