"""A counting semaphore shared by the processes of one machine, that a crash cannot leak.

A slot is an exclusive ``flock(2)`` on one of the files ``0.lock`` ... ``N-1.lock`` of a
directory. The kernel drops a flock when the last file descriptor of its open file
description is closed - also when the process holding it dies, however it dies (SIGKILL,
a crash, the OOM killer) - so no slot outlives its holder and nothing needs cleaning up.

A freed slot is handed over at once through a FIFO named ``wake`` in the same directory:
a releaser writes one byte to it after unlocking, and a waiter waits for the FIFO to
become readable (or for its poll interval, which covers a holder that died without
writing), then tries every slot again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

import anyio
import anyio.lowlevel

__all__ = ["HeldSlot", "SlotGate"]

_WAKE = "wake"
# O_CLOEXEC on every fd: a lock fd inherited across exec would keep the slot held by the
# exec'd program (the agent, or anything it leaves running) after its holder let go.
# O_NOFOLLOW: a symlink planted as a slot file must not make us create, lock or touch a
# file elsewhere.
_SLOT_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
# O_RDWR on a FIFO (Linux): the open never blocks waiting for the other end, reads never
# see end-of-file (we are a writer ourselves), and writes never fail for want of a reader.
_WAKE_FLAGS = os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_DRAIN = 4096


class HeldSlot:
    """One slot of a :class:`SlotGate`, held by this process until :meth:`release`.

    The slot is the open file description of its lock file. A process that forks while it
    holds a slot shares it with the child (``fork`` copies the fd, both copies name the
    same description): the slot then stays held until *both* have closed their copies, or
    until either calls :meth:`release` (unlocking frees it for both). So do not fork while
    holding a slot unless the child is meant to hold it too. Programs started with
    ``exec`` (``subprocess``, even with ``close_fds=False``) never hold it: the fd is
    close-on-exec.
    """

    __slots__ = ("_fd", "_gate", "_index", "_waited")

    def __init__(self, gate: SlotGate, index: int, fd: int, waited: float) -> None:
        self._gate = gate
        self._index = index
        self._fd: int | None = fd
        self._waited = waited

    @property
    def index(self) -> int:
        """Which slot (the lock file ``<index>.lock``)."""
        return self._index

    @property
    def waited(self) -> float:
        """Seconds :meth:`SlotGate.acquire` waited for it (0.0 from ``try_acquire``)."""
        return self._waited

    def release(self) -> None:
        """Give the slot back and wake the waiters; a second call does nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Unlock explicitly rather than only closing: a forked child sharing the
            # description would otherwise keep the slot held after our close.
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        # After unlocking, so that a waiter woken by this byte finds the slot free.
        self._gate._wake()

    def __enter__(self) -> HeldSlot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # A slot dropped without release() would stay held until this process exits;
        # free it, and say so as an unclosed file does.
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(Exception):
                self.release()
            warnings.warn(
                f"slot {self._index} of {self._gate.directory} was never released",
                ResourceWarning,
                stacklevel=1,
            )

    def __repr__(self) -> str:
        state = "released" if self._fd is None else "held"
        return f"<HeldSlot {self._index} of {str(self._gate.directory)!r} {state}>"


class SlotGate:
    """At most ``slots`` holders at once among all the processes of this machine.

    ``directory`` is shared by every process using the gate (created 0700 on first use,
    with the ``wake`` FIFO and the lock files, 0600). Guarantees:

    * **Crash-safe**: a slot is a ``flock`` the kernel drops when its holder dies, however
      it dies; ``held()`` never counts a dead process.
    * **Immediate hand-over**: :meth:`HeldSlot.release` writes a byte to the FIFO that
      waiters in :meth:`acquire` wait on; ``poll_interval`` bounds the wait for a slot
      freed without that byte (its holder was killed).
    * **No fairness**: whichever process tries first after a release gets the slot; a
      waiter may be overtaken by later ones (or by ``try_acquire``), any number of times.

    Slots are tried in index order, so the low slots are the busy ones. Lock files at or
    above ``slots`` (left by a gate with a higher limit) are ignored: lowering the limit
    takes effect as their holders release them. Every process must use the same ``slots``
    for the limit to hold.
    """

    def __init__(self, directory: str | os.PathLike[str], slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, not {slots!r}")
        self._directory = Path(directory)
        self._slots = slots

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def directory(self) -> Path:
        return self._directory

    def try_acquire(self) -> HeldSlot | None:
        """The first free slot, held by this process; None if every slot is taken."""
        self._prepare()
        found = self._take_free()
        return None if found is None else HeldSlot(self, found[0], found[1], 0.0)

    async def acquire(self, *, poll_interval: float = 0.5) -> HeldSlot:
        """Wait for a free slot and hold it.

        Cancellable: a cancelled call holds no slot and leaves no fd open (a lock is only
        ever taken in a step with no ``await`` between it and the return).
        """
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, not {poll_interval!r}")
        await anyio.lowlevel.checkpoint()
        started = time.monotonic()
        self._prepare()
        found = self._take_free()
        if found is not None:
            return HeldSlot(self, found[0], found[1], time.monotonic() - started)
        # Open the FIFO *before* trying again: from then on, every release writes into a
        # pipe we have open (the byte is kept), so a slot freed between our try and our
        # wait wakes us at once instead of after poll_interval.
        wake = self._open_wake()
        try:
            while True:
                woken = _drain(wake)
                found = self._take_free()
                if found is not None:
                    # Several releases may have been drained by this waiter alone, which
                    # takes one slot: hand the others on, or waiters that had not yet
                    # looked at the pipe would sleep out their poll with slots free.
                    if woken > 1:
                        _write_wake(wake, min(woken - 1, self._slots - 1))
                    return HeldSlot(self, found[0], found[1], time.monotonic() - started)
                with anyio.move_on_after(poll_interval):
                    await anyio.wait_readable(wake)
        finally:
            os.close(wake)

    def slot(
        self, *, poll_interval: float = 0.5
    ) -> contextlib.AbstractAsyncContextManager[HeldSlot]:
        """``async with gate.slot() as held:`` - :meth:`acquire`, then release on the way out
        (also on an exception or a cancellation)."""
        return self._slot(poll_interval)

    @contextlib.asynccontextmanager
    async def _slot(self, poll_interval: float) -> AsyncIterator[HeldSlot]:
        held = await self.acquire(poll_interval=poll_interval)
        try:
            yield held
        finally:
            held.release()

    def held(self) -> int:
        """How many slots some process (this one included) holds now; for status displays.

        Each slot is probed by locking and at once unlocking it, so a ``try_acquire`` racing
        with the probe may see that slot taken; a byte to the FIFO afterwards makes sure a
        waiter that did is not left sleeping out its poll.
        """
        self._prepare()
        count = 0
        probed = False
        for index in range(self._slots):
            fd = self._open_slot(index)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                count += 1
            else:
                probed = True
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        if probed:
            self._wake()
        return count

    def problem(self) -> str | None:
        """What would make this gate refuse to work (the ``ValueError`` its use raises),
        read from the file system without creating, opening or locking anything; None when
        nothing would, a directory not made yet included. For a check before any use (a
        ``doctor`` command run by an operator)."""
        try:
            if not stat.S_ISDIR(os.lstat(self._directory).st_mode):
                return _not_a_directory(self._directory)
            wake = self._directory / _WAKE
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISFIFO(os.lstat(wake).st_mode):
                    return _not_a_fifo(wake)
            for index in range(self._slots):
                path = self._directory / f"{index}.lock"
                with contextlib.suppress(FileNotFoundError):
                    if problem := _slot_file_problem(path, os.lstat(path).st_mode):
                        return problem
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{self._directory} cannot be read ({exc.strerror})"
        return None

    def __repr__(self) -> str:
        return f"SlotGate({str(self._directory)!r}, slots={self._slots})"

    # -- internals ------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Create the directory and the FIFO if missing; refuse a ``wake`` that is no FIFO.

        Every process may do this at the same moment: each step tolerates the other's.
        """
        try:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:  # exists, and is not a directory
            raise ValueError(_not_a_directory(self._directory)) from None
        path = self._directory / _WAKE
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            mode = os.lstat(path).st_mode
            if not stat.S_ISFIFO(mode):
                raise ValueError(_not_a_fifo(path)) from None

    def _open_slot(self, index: int) -> int:
        path = self._directory / f"{index}.lock"
        try:
            fd = os.open(path, _SLOT_FLAGS, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValueError(_slot_file_problem(path, stat.S_IFLNK)) from None
            raise
        if problem := _slot_file_problem(path, os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError(problem)
        return fd

    def _take_free(self) -> tuple[int, int] | None:
        """(index, fd) of the first slot this call locked, or None when all are taken."""
        for index in range(self._slots):
            fd = self._open_slot(index)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            return index, fd
        return None

    def _open_wake(self) -> int:
        path = self._directory / _WAKE
        try:
            fd = os.open(path, _WAKE_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR):
                raise ValueError(_not_a_fifo(path)) from None
            raise
        # Checked on the open fd: whatever lstat saw, this is what we read and write.
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError(_not_a_fifo(path))
        return fd

    def _wake(self) -> None:
        """Tell the waiters a slot may be free. Best effort: the slot is already free, and
        a waiter that misses the byte still finds it at its next poll."""
        try:
            fd = self._open_wake()
        except (OSError, ValueError):
            return
        try:
            _write_wake(fd, 1)
        finally:
            os.close(fd)


def _drain(fd: int) -> int:
    """Read every byte waiting in the non-blocking FIFO; how many there were."""
    total = 0
    while True:
        try:
            data = os.read(fd, _DRAIN)
        except BlockingIOError:
            return total
        total += len(data)
        if len(data) < _DRAIN:
            return total


def _write_wake(fd: int, count: int) -> None:
    # A full pipe (EAGAIN) already holds more wake-ups than anyone needs.
    with contextlib.suppress(BlockingIOError):
        os.write(fd, b"\0" * count)


# The refusals, worded once for the gate's use and for problem().
def _not_a_directory(path: Path) -> str:
    return f"slot directory {path} is not a directory"


def _not_a_fifo(path: Path) -> str:
    return f"{path} is not a FIFO; remove it (it is the wake-up channel of the slot gate)"


def _slot_file_problem(path: Path, mode: int) -> str | None:
    """Why the slot file ``path`` of file type ``mode`` cannot be used, or None."""
    if stat.S_ISLNK(mode):
        return f"slot file {path} is a symbolic link; remove it"
    if not stat.S_ISREG(mode):
        return f"slot file {path} is not a regular file; remove it"
    return None
