"""cgr-exec: run and supervise processes safely (fork and subprocess-daemon strategies).

Names are imported on first use (PEP 562 module ``__getattr__``): a program that needs
only ``ProcessIdentity`` or ``receive_job`` does not load asyncio, anyio or the executors.
"""

from __future__ import annotations

import importlib

# Not ``from typing import TYPE_CHECKING``: importing typing costs every importer several
# milliseconds, and type checkers treat a constant of this name the same way.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ._confine import (
        Confinement,
        ConfinementSupport,
        PreparedConfinement,
        landlock_supported,
        prepare_confinement,
        probe_confinement,
    )
    from ._daemon import ChildHandle, SubprocessExecutor, end_group
    from ._errors import (
        CapacityError,
        ConfinementError,
        DuplicateKeyError,
        ExecError,
        ExecutorClosedError,
        ForkUnsafeError,
        JobMarkerError,
        LogFileError,
        NoSuchProcessError,
        SpawnError,
        StdinFileError,
        UnknownChildError,
        WatchdogPatternError,
    )
    from ._fork import AfterFork, ForkExecutor, check_fork_safe
    from ._held import HeldStart, hold
    from ._identity import ProcessIdentity, ProcStat, group_members, read_stat
    from ._jobs import (
        JOB_ENV_VAR,
        JobSetup,
        become_subreaper,
        cgroup_root,
        job_cgroup_path,
        kill_descendants,
        kill_job_leftovers,
        prepare_job,
    )
    from ._protocol import Executor
    from ._reaping import akill_identity_group, find_gone, kill_identity_group
    from ._signals import group_alive, signal_identity, signal_identity_group
    from ._slot_gate import HeldSlot, SlotGate
    from ._standby import STANDBY_ENV_VAR, receive_job
    from ._status import ChildExit, ExitStatus
    from ._supervise import (
        DEFAULT_MAX_LINE_BYTES,
        LineCallback,
        NoteCallback,
        StopHandle,
        SupervisionResult,
        supervise,
    )

# name -> the private module that defines it.
_EXPORTS = {
    "AfterFork": "_fork",
    "CapacityError": "_errors",
    "ChildExit": "_status",
    "ChildHandle": "_daemon",
    "Confinement": "_confine",
    "ConfinementError": "_errors",
    "ConfinementSupport": "_confine",
    "DEFAULT_MAX_LINE_BYTES": "_supervise",
    "DuplicateKeyError": "_errors",
    "ExecError": "_errors",
    "Executor": "_protocol",
    "ExecutorClosedError": "_errors",
    "ExitStatus": "_status",
    "ForkExecutor": "_fork",
    "ForkUnsafeError": "_errors",
    "HeldSlot": "_slot_gate",
    "HeldStart": "_held",
    "JOB_ENV_VAR": "_jobs",
    "JobMarkerError": "_errors",
    "JobSetup": "_jobs",
    "LineCallback": "_supervise",
    "LogFileError": "_errors",
    "NoSuchProcessError": "_errors",
    "NoteCallback": "_supervise",
    "PreparedConfinement": "_confine",
    "ProcStat": "_identity",
    "ProcessIdentity": "_identity",
    "STANDBY_ENV_VAR": "_standby",
    "SlotGate": "_slot_gate",
    "SpawnError": "_errors",
    "StdinFileError": "_errors",
    "StopHandle": "_supervise",
    "SubprocessExecutor": "_daemon",
    "SupervisionResult": "_supervise",
    "UnknownChildError": "_errors",
    "WatchdogPatternError": "_errors",
    "akill_identity_group": "_reaping",
    "become_subreaper": "_jobs",
    "cgroup_root": "_jobs",
    "check_fork_safe": "_fork",
    "end_group": "_daemon",
    "find_gone": "_reaping",
    "group_alive": "_signals",
    "group_members": "_identity",
    "hold": "_held",
    "job_cgroup_path": "_jobs",
    "kill_descendants": "_jobs",
    "kill_identity_group": "_reaping",
    "kill_job_leftovers": "_jobs",
    "landlock_supported": "_confine",
    "prepare_confinement": "_confine",
    "prepare_job": "_jobs",
    "probe_confinement": "_confine",
    "read_stat": "_identity",
    "receive_job": "_standby",
    "signal_identity": "_signals",
    "signal_identity_group": "_signals",
    "supervise": "_supervise",
}


def __getattr__(name: str) -> object:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'cgr_exec' has no attribute {name!r}") from None
    value: object = getattr(importlib.import_module(f"cgr_exec.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "JOB_ENV_VAR",
    "STANDBY_ENV_VAR",
    "AfterFork",
    "CapacityError",
    "ChildExit",
    "ChildHandle",
    "Confinement",
    "ConfinementError",
    "ConfinementSupport",
    "DuplicateKeyError",
    "ExecError",
    "Executor",
    "ExecutorClosedError",
    "ExitStatus",
    "ForkExecutor",
    "ForkUnsafeError",
    "HeldSlot",
    "HeldStart",
    "JobMarkerError",
    "JobSetup",
    "LineCallback",
    "LogFileError",
    "NoSuchProcessError",
    "NoteCallback",
    "PreparedConfinement",
    "ProcStat",
    "ProcessIdentity",
    "SlotGate",
    "SpawnError",
    "StdinFileError",
    "StopHandle",
    "SubprocessExecutor",
    "SupervisionResult",
    "UnknownChildError",
    "WatchdogPatternError",
    "akill_identity_group",
    "become_subreaper",
    "cgroup_root",
    "check_fork_safe",
    "end_group",
    "find_gone",
    "group_alive",
    "group_members",
    "hold",
    "job_cgroup_path",
    "kill_descendants",
    "kill_identity_group",
    "kill_job_leftovers",
    "landlock_supported",
    "prepare_confinement",
    "prepare_job",
    "probe_confinement",
    "read_stat",
    "receive_job",
    "signal_identity",
    "signal_identity_group",
    "supervise",
]
