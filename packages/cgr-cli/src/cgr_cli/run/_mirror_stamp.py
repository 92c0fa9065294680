"""When the mirror was last fetched, so that runs of one repository started together fetch
it once rather than one after another.

A run needs the mirror to hold what the remote held when the run began: a push made before
the comment that triggered the run must be in its checkout. Any fetch that *began* after
the run began gives it that, whoever ran it. Runs of one repository started side by side
queue on the mirror's lock (``Git.ensure_mirror``); the first one fetches, and a run that
began before that fetch began finds it recorded here and fetches nothing (without this,
three runs of a burst fetched three times in a row, each waiting for the last).

The stamp is ``<mirror>.fetched``: the boot id and ``CLOCK_MONOTONIC`` (nanoseconds) at the
start of the last fetch that succeeded. The monotonic clock is one for every process on the
host and never steps (a wall clock set back by NTP would make an old fetch look new); it
restarts at boot, hence the boot id. It is written under the mirror's lock; anything
unreadable (a stamp from an older cgr, a torn write) reads as "never fetched".
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fetched_since", "record_fetch", "stamp_path"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def stamp_path(mirror: Path) -> Path:
    return mirror.with_name(mirror.name + ".fetched")


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""  # no /proc: every stamp reads as another boot's, so every run fetches


def fetched_since(mirror: Path, since_ns: int) -> bool:
    """Whether a fetch of ``mirror`` that began at or after ``since_ns``
    (``time.monotonic_ns()`` of this boot) has succeeded."""
    try:
        boot, began = stamp_path(mirror).read_text().split()
        return bool(boot) and boot == _boot_id() and int(began) >= since_ns
    except (OSError, ValueError):
        return False


def record_fetch(mirror: Path, began_ns: int) -> None:
    """Note that a fetch (or the mirror's creation) that began at ``began_ns`` succeeded."""
    stamp = stamp_path(mirror)
    tmp = stamp.with_name(f"{stamp.name}.tmp-{os.getpid()}")
    tmp.write_text(f"{_boot_id()} {began_ns}\n")
    tmp.rename(stamp)
