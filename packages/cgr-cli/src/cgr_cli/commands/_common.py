"""Helpers the scheduling commands share: loading the configuration, printing JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cgr_cli.config._model import Config


def load(args: argparse.Namespace) -> tuple[Config, Path | None]:
    """The configuration and its file; a ConfigError goes up to ``_main``'s boundary."""
    from cgr_cli.config._load import load_config

    return load_config(args.config)


def require_repositories(config: Config, path: Path | None) -> None:
    """Refuse to schedule with nothing to watch: a timer running such a tick would stay
    green forever while doing nothing."""
    from cgr_cli._errors import ConfigError

    if not config.repositories:
        where = str(path) if path else "no configuration file was found, and the defaults"
        raise ConfigError(
            f'{where}: no repositories to watch; add repositories = ["OWNER/NAME"] '
            "(or write a configuration with `cgr init OWNER/NAME`)",
            key="repositories",
        )


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
