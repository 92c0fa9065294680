"""cgr-exec: run and supervise processes safely (fork and subprocess-daemon strategies)."""

from __future__ import annotations

from ._errors import (
    CapacityError,
    DuplicateKeyError,
    ExecError,
    ExecutorClosedError,
    ForkUnsafeError,
    NoSuchProcessError,
    SpawnError,
    UnknownChildError,
    WatchdogPatternError,
)
from ._identity import ProcessIdentity, ProcStat, group_members, read_stat
from ._reaping import akill_identity_group, find_gone, kill_identity_group
from ._signals import group_alive, signal_identity, signal_identity_group
from ._status import ChildExit, ExitStatus

__all__ = [
    "CapacityError",
    "ChildExit",
    "DuplicateKeyError",
    "ExecError",
    "ExecutorClosedError",
    "ExitStatus",
    "ForkUnsafeError",
    "NoSuchProcessError",
    "ProcStat",
    "ProcessIdentity",
    "SpawnError",
    "UnknownChildError",
    "WatchdogPatternError",
    "akill_identity_group",
    "find_gone",
    "group_alive",
    "group_members",
    "kill_identity_group",
    "read_stat",
    "signal_identity",
    "signal_identity_group",
]
