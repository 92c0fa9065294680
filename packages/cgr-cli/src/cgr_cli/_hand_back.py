"""A stopping scheduler's request to hand a run back to the queue (SIGUSR1), noted from the
start of a scheduler-started process until its run listens for it itself
(run/_pipeline._watch_signals).

SIGUSR1's default action ends a process: a `cgr run` the daemon started must not die of
the request in the moments before its pipeline installs its receiver. A Python handler
(never SIG_IGN, which programs it executes would inherit) notes the request instead; exec
resets it, so git and the agent start with the default.
"""

from __future__ import annotations

import signal

asked = False
"""True once SIGUSR1 came before the run listened for it."""


def _note(signum: int, frame: object) -> None:
    global asked  # noqa: PLW0603 - the one flag a signal handler can leave
    asked = True


def listen_early() -> None:
    """Note SIGUSR1 from now on, until the run's own receiver takes over."""
    signal.signal(signal.SIGUSR1, _note)
