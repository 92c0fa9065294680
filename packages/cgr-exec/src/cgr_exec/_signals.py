"""Signalling a stored process or its group without ever hitting a stranger.

Kernel facts the code below relies on:

* A pid number stays allocated while *any* process uses it as its pid, its process group
  id or its session id (the kernel's ``struct pid`` is only freed when nothing refers to
  it). So while a group has members - even a zombie leader not yet reaped - its number
  cannot be handed to a new process, and ``killpg`` on it reaches that group only.
* Consequently, if the pid now names a process with a *different* start time, the original
  process is gone and its group is empty: there is nothing of ours left to signal.
* A group created by ``setsid()`` only ever contains processes forked inside that session
  after the leader started, so every member's start time is >= the leader's.

The one residual race is a leader that has been reaped while its group emptied a moment
ago: the number is then free and could be reused before our signal lands. We close it for
single processes with a pidfd (signal the exact process we checked), which is why
orphaned groups are signalled member by member rather than with ``killpg``.
"""

from __future__ import annotations

import os
import signal

from ._identity import ProcessIdentity, group_members, read_stat

__all__ = ["group_alive", "signal_identity", "signal_identity_group"]


def _is_expected(pid: int, start_time: int, pgid: int | None) -> bool:
    stat = read_stat(pid)
    if stat is None or stat.start_time != start_time:
        return False
    return pgid is None or stat.pgid == pgid


def _signal_checked(pid: int, start_time: int, sig: int, *, pgid: int | None = None) -> bool:
    """Signal ``pid`` only if it is still the process that started at ``start_time``."""
    try:
        if not hasattr(os, "pidfd_open"):  # pragma: no cover - Linux < 5.3 or non-Linux
            if _is_expected(pid, start_time, pgid):
                os.kill(pid, sig)
                return True
            return False
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        # The pidfd pins the process it was opened for; checking /proc *after* opening it
        # proves the pidfd refers to the process we mean, so the signal cannot go astray.
        if _is_expected(pid, start_time, pgid):
            signal.pidfd_send_signal(fd, sig)
            return True
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
    return False


def signal_identity(identity: ProcessIdentity, sig: int) -> bool:
    """Send ``sig`` to this exact process; False if it is gone or its pid was reused."""
    return _signal_checked(identity.pid, identity.start_time, sig)


def signal_identity_group(identity: ProcessIdentity, sig: int) -> bool:
    """Send ``sig`` to the process group that ``identity`` leads.

    * The pid still names this process (alive or a zombie) and it leads its group
      (pgid == pid): ``os.killpg`` - the number is pinned, so the group is ours.
    * The pid still names this process but it is not a group leader: only the process
      itself is signalled (its group belongs to someone else, e.g. our own parent).
    * The pid names another process (reused): nothing is signalled, returns False.
    * No process has the pid: the leader was reaped; members still in its group (orphans)
      are signalled one by one through pidfds.

    Returns True if at least one process was signalled.
    """
    stat = read_stat(identity.pid)
    if stat is not None:
        if stat.start_time != identity.start_time:
            return False
        if stat.pgid != identity.pid:
            return signal_identity(identity, sig)
        try:
            os.killpg(identity.pid, sig)
        except ProcessLookupError:
            return False
        return True
    sent = False
    for member in group_members(identity.pid):
        if member.start_time >= identity.start_time and _signal_checked(
            member.pid, member.start_time, sig, pgid=identity.pid
        ):
            sent = True
    return sent


def group_alive(identity: ProcessIdentity) -> bool:
    """True while the process or any live member of the group it led still runs."""
    stat = read_stat(identity.pid)
    if stat is not None and stat.start_time != identity.start_time:
        return False  # pid reused: the original group is necessarily empty (see module doc)
    if stat is not None and stat.state not in ("Z", "X"):
        return True
    if stat is not None and stat.pgid != identity.pid:
        return False
    return any(m.start_time >= identity.start_time for m in group_members(identity.pid))
