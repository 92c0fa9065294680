"""cgr-exec: run and supervise processes safely (fork and subprocess-daemon strategies)."""

from __future__ import annotations

from ._daemon import ChildHandle, SubprocessExecutor, end_group
from ._errors import (
    CapacityError,
    DuplicateKeyError,
    ExecError,
    ExecutorClosedError,
    ForkUnsafeError,
    LogFileError,
    NoSuchProcessError,
    SpawnError,
    StdinFileError,
    UnknownChildError,
    WatchdogPatternError,
)
from ._fork import AfterFork, ForkExecutor, check_fork_safe
from ._identity import ProcessIdentity, ProcStat, group_members, read_stat
from ._protocol import Executor
from ._reaping import akill_identity_group, find_gone, kill_identity_group
from ._signals import group_alive, signal_identity, signal_identity_group
from ._status import ChildExit, ExitStatus
from ._supervise import LineCallback, StopHandle, SupervisionResult, supervise

__all__ = [
    "AfterFork",
    "CapacityError",
    "ChildExit",
    "ChildHandle",
    "DuplicateKeyError",
    "ExecError",
    "Executor",
    "ExecutorClosedError",
    "ExitStatus",
    "ForkExecutor",
    "ForkUnsafeError",
    "LineCallback",
    "LogFileError",
    "NoSuchProcessError",
    "ProcStat",
    "ProcessIdentity",
    "SpawnError",
    "StdinFileError",
    "StopHandle",
    "SubprocessExecutor",
    "SupervisionResult",
    "UnknownChildError",
    "WatchdogPatternError",
    "akill_identity_group",
    "check_fork_safe",
    "end_group",
    "find_gone",
    "group_alive",
    "group_members",
    "kill_identity_group",
    "read_stat",
    "signal_identity",
    "signal_identity_group",
    "supervise",
]
