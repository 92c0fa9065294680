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

Beside it, ``<mirror>.gc``: when the mirror's garbage was last collected (the file's
modification time: a day's precision is all ``Git._collect_garbage`` needs) and the size
of its packs then (the content, bytes).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

__all__ = ["collected", "fetched_since", "record_collection", "record_fetch", "stamp_path"]

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
    _replace(stamp_path(mirror), f"{_boot_id()} {began_ns}\n")


def _gc_stamp_path(mirror: Path) -> Path:
    return mirror.with_name(mirror.name + ".gc")


def collected(mirror: Path) -> tuple[float, int] | None:
    """How long ago the mirror's garbage was last collected (seconds) and the size of its
    packs then (0 when unreadable: a torn write); None without a stamp (a mirror from
    before it)."""
    stamp = _gc_stamp_path(mirror)
    try:
        age = time.time() - stamp.stat().st_mtime
        text = stamp.read_text()
    except OSError:
        return None
    try:
        return age, int(text.strip() or 0)
    except ValueError:
        return age, 0


def record_collection(mirror: Path, pack_bytes: int) -> None:
    """Note that the mirror's garbage was collected (or the mirror made) now, its packs
    then ``pack_bytes``. A stamp that cannot be written (a full disk) leaves the collection
    due: the mirror is collected again after its next fetch of every branch, instead of
    the run failing."""
    with contextlib.suppress(OSError):
        _replace(_gc_stamp_path(mirror), f"{pack_bytes}\n")


def _replace(stamp: Path, text: str) -> None:
    """Write ``stamp`` whole or not at all: a reader sees the old content or the new."""
    tmp = stamp.with_name(f"{stamp.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.rename(stamp)
