"""sd_notify(3) with the standard library: tell systemd the daemon is ready, alive, stopping.

Under ``Type=notify`` systemd sets ``$NOTIFY_SOCKET`` (a unix datagram socket: a path, or
``@name`` for the abstract namespace) and waits for ``READY=1``; with ``WatchdogSec=`` it
sets ``$WATCHDOG_USEC`` and restarts the service when no ``WATCHDOG=1`` arrives in time.
Outside systemd there is no socket and every call does nothing, so the daemon runs the
same from a terminal. No libsystemd binding: one ``sendto`` is the whole protocol.
"""

from __future__ import annotations

import contextlib
import os
import socket


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=…"``) to systemd; False when not under
    systemd or the socket is gone (the daemon must not fail because its supervisor did)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not fields:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace
    message = "\n".join(fields).encode()
    with contextlib.suppress(OSError):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
        return True
    return False


def watchdog_interval() -> float | None:
    """How often to ping: half of ``$WATCHDOG_USEC`` (sd_watchdog_enabled's advice), or
    None without a watchdog. ``$WATCHDOG_PID``, when set, must be this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


class Watchdog:
    """Pings systemd's watchdog from a thread while the daemon's loop keeps beating.

    A thread, not a task: it must ping while the loop is legitimately busy in a long pass,
    and it stops pinging (so systemd restarts the service) only when the loop has not
    beaten for ``stale_after`` seconds - a hung loop, not a slow one. The daemon never
    forks, so a thread is safe there.
    """

    def __init__(self, stale_after: float) -> None:
        import threading
        import time

        self._time = time.monotonic
        self._stale_after = stale_after
        self._last = self._time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        every = watchdog_interval()
        if every is not None:
            self._thread = threading.Thread(
                target=self._run, args=(every,), name="cgr-watchdog", daemon=True
            )
            self._thread.start()

    def beat(self) -> None:
        self._last = self._time()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            if self._time() - self._last < self._stale_after:
                notify("WATCHDOG=1")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
