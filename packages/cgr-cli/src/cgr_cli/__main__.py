"""``python -m cgr_cli`` and the ``cgr`` console script."""

from __future__ import annotations

import os
import sys

from cgr_cli._main import command_parser, main

# Not ``from typing import TYPE_CHECKING``: importing typing costs every start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

# cgr_exec.STANDBY_ENV_VAR, written out: importing cgr_exec here would cost every start.
_STANDBY_ENV_VAR = "CGR_EXEC_STANDBY"


def run() -> None:
    if os.environ.get(_STANDBY_ENV_VAR) or "--run-id" in sys.argv:
        # A scheduler's process (a standby, or a run it started cold): a stopping daemon may
        # ask it to hand its run back (SIGUSR1) before the run listens itself.
        from cgr_cli._hand_back import listen_early

        listen_early()
    # cgr's event loops are asyncio's. httpcore (under httpx) imports trio whenever trio is
    # installed, in case its caller runs on trio: tens of milliseconds of every start spent
    # for nothing. Marking it absent makes that import fail at once (httpcore then uses
    # anyio). Here, in cgr's own process, not in main(): a program or a test that embeds
    # cgr may want trio.
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]
    if os.environ.get(_STANDBY_ENV_VAR):
        # Started by the daemon ahead of its next run (commands/_standby.py).
        from cgr_cli.commands._standby import wait_for_run

        # The parser is built before the wait too: a run handed over then builds nothing.
        args = wait_for_run(prepare=command_parser)
        if args is None:  # the daemon went away (or the fork server's work is over)
            _leave(0)
        try:
            code = main(args)
        except SystemExit as exc:  # argparse's own exits
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
        _leave(code)
    sys.exit(main())


def _leave(code: int) -> NoReturn:
    """End a standby's run (or a standby no run came to) without the interpreter's
    teardown.

    The process ends here anyway, and tearing down the ~700 modules a standby loaded
    (finalising each, collecting every object) took ~50 ms of CPU per run - more in a
    copy forked by the fork server, where touching each object copies its page. Nothing
    of cgr's waits for that teardown (no atexit handler, no temporary directory left to
    a finaliser): the run has ended, its store writes are committed, its processes reaped;
    the logs and standard streams are flushed here.
    """
    import contextlib
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
