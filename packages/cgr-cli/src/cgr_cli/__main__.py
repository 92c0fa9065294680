"""``python -m cgr_cli`` and the ``cgr`` console script."""

from __future__ import annotations

import sys

from cgr_cli._main import main


def run() -> None:
    # cgr's event loops are asyncio's. httpcore (under httpx) imports trio whenever trio is
    # installed, in case its caller runs on trio: tens of milliseconds of every start spent
    # for nothing. Marking it absent makes that import fail at once (httpcore then uses
    # anyio). Here, in cgr's own process, not in main(): a program or a test that embeds
    # cgr may want trio.
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]
    sys.exit(main())


if __name__ == "__main__":
    run()
