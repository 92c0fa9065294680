"""Options more than one command takes, declared once (argparse only: ``cgr --help`` stays
cheap)."""

from __future__ import annotations

import argparse

CONFIG_HELP = (
    "configuration file (TOML or YAML); default: $CGR_CONFIG, ~/.config/cgr/config.toml, "
    "/etc/cgr/config.toml"
)


def add_config_option(parser: argparse.ArgumentParser, *, help: str = CONFIG_HELP) -> None:
    """``--config PATH``, the same name, metavar and default search for every command."""
    parser.add_argument("--config", metavar="PATH", help=help)
