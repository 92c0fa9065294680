"""cgr-exec: run and supervise processes safely (fork and subprocess-daemon strategies)."""

from __future__ import annotations

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
    "JobMarkerError",
    "JobSetup",
    "LineCallback",
    "LogFileError",
    "NoSuchProcessError",
    "NoteCallback",
    "PreparedConfinement",
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
    "become_subreaper",
    "cgroup_root",
    "check_fork_safe",
    "end_group",
    "find_gone",
    "group_alive",
    "group_members",
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
