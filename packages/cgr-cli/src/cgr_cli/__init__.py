"""cgr: a self-hosted runner that turns GitHub work into pull requests."""

from __future__ import annotations

from importlib.metadata import version as _version

__version__ = _version("cgr-cli")

__all__ = ["__version__", "main"]

from cgr_cli._main import main
