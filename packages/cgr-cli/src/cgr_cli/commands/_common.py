"""Helpers the scheduling commands share: loading the configuration, printing JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cgr_cli.config._model import Config


def load(args: argparse.Namespace) -> tuple[Config, Path | None] | None:
    """The configuration, or None after printing the error (exit code 1 for the caller)."""
    from cgr_cli._errors import ConfigError
    from cgr_cli.config._load import load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"cgr: configuration error: {exc}", file=sys.stderr)
        return None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
