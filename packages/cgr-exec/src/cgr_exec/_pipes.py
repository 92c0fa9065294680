"""Waiting for a child and moving bytes through its pipes, on any anyio backend.

cgr-exec spawns with ``subprocess.Popen`` and waits through a pidfd instead of using
``anyio.open_process``: on asyncio (Python 3.11) the latter reaps children from a
watcher thread at a moment we do not control. Reading the child's identity, or
signalling its group, is only race-free while the child is *unreaped* (its pid is then
pinned), so we reap it ourselves, in the event loop's thread, after we are done with it.
It also keeps the parent free of helper threads.
"""

from __future__ import annotations

import os
import subprocess

import anyio
import anyio.lowlevel

__all__ = ["read_chunk", "wait_exit", "write_all"]

_CHUNK = 65536
_POLL = 0.05


async def wait_exit(popen: subprocess.Popen[bytes]) -> int:
    """Wait until ``popen`` exits, reap it and return its return code."""
    if popen.returncode is not None:
        return popen.returncode
    if not hasattr(os, "pidfd_open"):  # pragma: no cover - Linux < 5.3
        while popen.poll() is None:  # noqa: ASYNC110 - no pidfd: polling is all there is
            await anyio.sleep(_POLL)
        return popen.wait()
    # A pidfd becomes readable when the process exits (Linux >= 5.3). Opening it cannot
    # race with pid reuse: nobody but us reaps this child, so the pid is still ours.
    fd = os.pidfd_open(popen.pid)
    try:
        while popen.poll() is None:
            await anyio.wait_readable(fd)
    finally:
        os.close(fd)
    return popen.wait()  # already reaped: returns the stored code at once


async def read_chunk(fd: int) -> bytes:
    """Next bytes from a non-blocking pipe; b"" at end of file."""
    while True:
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            await anyio.wait_readable(fd)
            continue
        # A writer faster than we read (``yes``) keeps the pipe full, so ``os.read`` never
        # raises and the wait above (a checkpoint) never comes: without this one the
        # reading loop would hold the event loop for good, and the timeout, the stop
        # handle and every other task of the caller would never run again.
        await anyio.lowlevel.checkpoint()
        return data


async def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write everything to a non-blocking pipe, waiting whenever the pipe is full.

    Raises BrokenPipeError if the reader closed its end.
    """
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view[:_CHUNK])
        except BlockingIOError:
            await anyio.wait_writable(fd)
            continue
        view = view[written:]
