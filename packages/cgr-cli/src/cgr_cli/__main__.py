"""``python -m cgr_cli`` and the ``cgr`` console script."""

from __future__ import annotations

import os
import sys

from cgr_cli._main import main

# cgr_exec.STANDBY_ENV_VAR, written out: importing cgr_exec here would cost every start.
_STANDBY_ENV_VAR = "CGR_EXEC_STANDBY"


def run() -> None:
    # cgr's event loops are asyncio's. httpcore (under httpx) imports trio whenever trio is
    # installed, in case its caller runs on trio: tens of milliseconds of every start spent
    # for nothing. Marking it absent makes that import fail at once (httpcore then uses
    # anyio). Here, in cgr's own process, not in main(): a program or a test that embeds
    # cgr may want trio.
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]
    if os.environ.get(_STANDBY_ENV_VAR):
        # Started by the daemon ahead of its next run (commands/_standby.py).
        from cgr_cli.commands._standby import wait_for_run

        args = wait_for_run()
        sys.exit(0 if args is None else main(args))
    sys.exit(main())


if __name__ == "__main__":
    run()
