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


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
