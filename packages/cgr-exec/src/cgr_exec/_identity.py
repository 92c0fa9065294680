"""Process identity that survives pid reuse: a pid plus the kernel's start time.

A bare pid is not an identity. After a process exits and is reaped, the kernel hands its
number to the next process that asks (pids cycle through ``/proc/sys/kernel/pid_max``),
so "is pid 4242 alive?" may answer for a stranger. The pair (pid, start time) is unique
for the lifetime of the machine's boot: two processes cannot have the same pid at the same
clock tick. Field 22 of ``/proc/<pid>/stat`` is that start time, in clock ticks since boot.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from ._errors import NoSuchProcessError

__all__ = ["ProcStat", "ProcessIdentity", "group_members", "read_stat"]


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The few fields of ``/proc/<pid>/stat`` that cgr-exec needs."""

    pid: int
    state: str
    """One letter: R running, S sleeping, D disk wait, Z zombie, T stopped, X dead, ..."""
    ppid: int
    pgid: int
    sid: int
    start_time: int
    """Clock ticks after boot at which the process started (field 22)."""
    num_threads: int = 1
    """Kernel threads in the process (field 20), including ones Python does not know of."""


def read_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat`` parsed, or None when no such process exists."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    # Field 2 (comm) is the executable name in parentheses and may itself contain spaces
    # and ')' (a process can name itself "a) b"), so split after the *last* ')'.
    # The remaining fields start with field 3 (state); field 22 is therefore index 19.
    close = raw.rfind(b")")
    fields = raw[close + 2 :].split()
    return ProcStat(
        pid=pid,
        state=fields[0].decode("ascii"),
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        start_time=int(fields[19]),
        num_threads=int(fields[17]),
    )


def _all_pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def group_members(pgid: int) -> list[ProcStat]:
    """Live (not zombie) processes whose process group is ``pgid``, from a /proc scan."""
    members = []
    for pid in _all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.pgid == pgid and stat.state not in ("Z", "X"):
            members.append(stat)
    return members


@dataclass(frozen=True, slots=True, order=True)
class ProcessIdentity:
    """A process named by pid and start time, safe to store and check much later.

    Plain data (two ints), so a store can persist it as two columns and rebuild it with
    ``ProcessIdentity(pid, start_time)``.
    """

    pid: int
    start_time: int
    """Kernel start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        """The identity of the process that has ``pid`` now.

        Raises :class:`NoSuchProcessError` when there is none.
        """
        stat = read_stat(pid)
        if stat is None:
            raise NoSuchProcessError(pid)
        return cls(pid, stat.start_time)

    @classmethod
    def current(cls) -> ProcessIdentity:
        """The identity of the calling process."""
        return cls.of(os.getpid())

    def stat(self) -> ProcStat | None:
        """This process's /proc stat, or None if it is gone or the pid now names another."""
        stat = read_stat(self.pid)
        if stat is None or stat.start_time != self.start_time:
            return None
        return stat

    def is_alive(self) -> bool:
        """True while this very process runs.

        False when it has exited (a zombie has exited: it only waits for its parent to
        collect the status), and False when the pid was reused by another process.
        """
        stat = self.stat()
        return stat is not None and stat.state not in ("Z", "X")

    def __str__(self) -> str:
        return f"pid {self.pid} (started at tick {self.start_time})"
