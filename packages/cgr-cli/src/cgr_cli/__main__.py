"""``python -m cgr_cli`` and the ``cgr`` console script."""

from __future__ import annotations

import sys

from cgr_cli._main import main


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
