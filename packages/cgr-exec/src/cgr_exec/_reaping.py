"""Helpers for a reaper: which stored processes are gone, and ending one safely."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable, Iterator

import anyio

from ._identity import ProcessIdentity
from ._signals import group_alive, signal_identity_group

__all__ = ["akill_identity_group", "find_gone", "kill_identity_group"]

_POLL = 0.02
# After SIGKILL the kernel still needs a moment to tear the processes down; wait this long
# for them to disappear before reporting (SIGKILL cannot be caught, so this is short).
_AFTER_KILL = 2.0


def find_gone(identities: Iterable[ProcessIdentity]) -> list[ProcessIdentity]:
    """The identities whose process no longer runs (exited, zombie, or pid reused)."""
    return [identity for identity in identities if not identity.is_alive()]


def kill_identity_group(identity: ProcessIdentity, grace: float = 10.0) -> bool:
    """End the process group that ``identity`` leads: SIGTERM, ``grace`` seconds, SIGKILL.

    Blocking (polls /proc). Before every signal the identity is checked again, so a pid
    that the kernel gave to an unrelated process is never touched. Returns True if any
    process was signalled, False if nothing of this identity was left running (exited,
    a zombie with an empty group, or the pid now names another process).
    """
    if not _terminate(identity):
        return False
    for _ in _until_gone(identity, grace):
        time.sleep(_POLL)
    return True


def _terminate(identity: ProcessIdentity) -> bool:
    """SIGTERM the group if anything of this identity still runs; False if nothing did."""
    return group_alive(identity) and signal_identity_group(identity, signal.SIGTERM)


def _until_gone(identity: ProcessIdentity, grace: float) -> Iterator[None]:
    """Yield once per poll until the group is gone; SIGKILL it once ``grace`` has passed.

    The caller sleeps between polls (blocking or with anyio), so the escalation logic is
    shared by both. Polling /proc: the processes need not be our children, so there is no
    event to wait on.
    """
    deadline = time.monotonic() + grace
    killed = False
    while group_alive(identity):
        if not killed and time.monotonic() >= deadline:
            signal_identity_group(identity, signal.SIGKILL)
            killed = True
            deadline = time.monotonic() + _AFTER_KILL
        elif killed and time.monotonic() >= deadline:
            return
        yield


async def akill_identity_group(identity: ProcessIdentity, grace: float = 10.0) -> bool:
    """:func:`kill_identity_group` for async code: same checks, sleeps with anyio."""
    if not _terminate(identity):
        return False
    for _ in _until_gone(identity, grace):
        await anyio.sleep(_POLL)
    return True
