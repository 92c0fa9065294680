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


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    config_help: str = CONFIG_HELP,
    json: str | None = None,
) -> argparse.ArgumentParser:
    """The parser of a command that reads the configuration: ``--config`` first, then
    ``--json`` when ``json`` says what it prints."""
    parser = commands.add_parser(name, help=help, description=description)
    add_config_option(parser, help=config_help)
    if json is not None:
        parser.add_argument("--json", action="store_true", help=json)
    return parser
