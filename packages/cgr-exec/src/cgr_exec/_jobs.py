"""Every process of a job ends with it: a subreaper, and markers a later reaper can find.

A command can escape its process group (``setsid``), double-fork so that its parent is
gone, and ``chdir /``; killing the group then misses it. Two kernel mechanisms catch it:

* **Child subreaper** (``prctl(PR_SET_CHILD_SUBREAPER)``, Linux >= 3.4). Orphans are
  re-parented to the nearest ancestor marked as subreaper instead of to init. The job
  process marks itself, so everything its children ever start stays its descendant,
  found by walking ``/proc/*/stat`` parent links: :func:`kill_descendants`. This only
  works while the job process lives.
* **Markers for a crash** (the job process was SIGKILLed, its orphans went to init):
  - an environment value ``CGR_EXEC_JOB=<marker>`` given to the job's children and
    inherited by everything they start; a reaper finds it in ``/proc/<pid>/environ``.
    Limits: a program that execs with a cleared environment (``env -i``) drops it, and
    reading another user's ``environ`` needs root (or the same uid).
  - a cgroup v2 directory ``cgr-exec-job-<marker>`` the child joins before exec, when
    the process is root and a cgroup v2 hierarchy is mounted writable. Every descendant
    stays in it (leaving needs write access to a ``cgroup.procs`` of the hierarchy), and
    ``cgroup.kill`` (Linux >= 5.14) SIGKILLs all of them at once, forks in flight included.
  :func:`kill_job_leftovers` uses both.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from ._errors import ConfinementError, JobMarkerError
from ._identity import ProcessIdentity, ProcStat, read_stat
from ._signals import _signal_checked

__all__ = [
    "JOB_ENV_VAR",
    "JobSetup",
    "become_subreaper",
    "cgroup_root",
    "job_cgroup_path",
    "kill_descendants",
    "kill_job_leftovers",
    "prepare_job",
]

JOB_ENV_VAR = "CGR_EXEC_JOB"
"""The environment variable that carries a job's marker into its processes."""

_CGROUP_PREFIX = "cgr-exec-job-"
_MARKER = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_PR_SET_CHILD_SUBREAPER = 36
_POLL = 0.02
_AFTER_KILL = 2.0


def _check_marker(marker: str) -> str:
    if not _MARKER.fullmatch(marker) or marker in (".", ".."):
        raise JobMarkerError(marker)
    return marker


def become_subreaper() -> None:
    """Make the calling process a child subreaper: orphaned descendants become its children.

    Call it early in the job process (before starting anything); it lasts for the
    process's lifetime. Raises OSError if the kernel refuses.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(ctypes.c_int(_PR_SET_CHILD_SUBREAPER), ctypes.c_ulong(1), 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(code)}")


def _all_stats() -> Iterator[ProcStat]:
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := read_stat(int(name))) is not None:
            yield stat


def _descendants(root: int, exclude: Collection[int]) -> list[ProcStat]:
    """Processes below ``root`` in the parent tree (zombies included), minus ``exclude``
    and everything below an excluded process."""
    children: dict[int, list[ProcStat]] = {}
    for stat in _all_stats():
        children.setdefault(stat.ppid, []).append(stat)
    found: list[ProcStat] = []
    todo = [root]
    while todo:
        for stat in children.get(todo.pop(), ()):
            if stat.pid in exclude:
                continue
            found.append(stat)
            todo.append(stat.pid)
    return found


def _reap_zombie_children(me: int, exclude: Collection[int]) -> None:
    for stat in _all_stats():
        if stat.ppid == me and stat.state in ("Z", "X") and stat.pid not in exclude:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(stat.pid, os.WNOHANG)


def kill_descendants(grace: float = 5.0, *, exclude: Collection[int] = ()) -> list[ProcessIdentity]:
    """End every descendant of the calling process: SIGTERM, ``grace`` seconds, SIGKILL.

    With :func:`become_subreaper` in effect this includes orphans that ``setsid()`` or
    double-forked away. Processes are found by walking ``/proc`` parent links again after
    each round (so children forked meanwhile are caught) and signalled only after their
    start time is checked (pid reuse). The caller's own children that ended, and orphans
    re-parented to it, are reaped - call this when no other code still waits on a child
    (end of a job), or list the pids it must leave alone (and their subtrees) in
    ``exclude``. Returns the identities that were signalled.
    """
    me = os.getpid()
    exclude = set(exclude)
    signalled: dict[ProcessIdentity, None] = {}
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        live = [s for s in _descendants(me, exclude) if s.state not in ("Z", "X")]
        for stat in live:
            identity = ProcessIdentity(stat.pid, stat.start_time)
            if (sig == signal.SIGKILL or identity not in signalled) and _signal_checked(
                stat.pid, stat.start_time, sig
            ):
                signalled[identity] = None
        _reap_zombie_children(me, exclude)
        if not live:
            break
        if time.monotonic() >= deadline:
            if sig == signal.SIGKILL:
                break  # a process in uninterruptible sleep; nothing more we can do
            sig = signal.SIGKILL
            deadline = time.monotonic() + _AFTER_KILL
            continue
        time.sleep(_POLL)
    _reap_zombie_children(me, exclude)
    return list(signalled)


# -- cgroup v2 ----------------------------------------------------------------------------


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def cgroup_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or
    ``/sys/fs/cgroup/unified`` on hybrid systems), or None."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        if sep and tail.split()[0] == "cgroup2" and len(fields) >= 5:
            return Path(_unescape(fields[4]))
    return None


def _own_cgroup(root: Path) -> Path:
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return root / line[3:].strip().lstrip("/")
    except OSError:
        pass
    return root


def job_cgroup_path(marker: str) -> Path | None:
    """The job's cgroup directory if it exists (searched in the whole v2 hierarchy)."""
    root = cgroup_root()
    if root is None:
        return None
    name = _CGROUP_PREFIX + _check_marker(marker)
    # Usually created in the job process's own cgroup; a reaper may run elsewhere (a
    # different service or cron job), so fall back to a walk (cgroup trees are small).
    guess = _own_cgroup(root) / name
    if guess.is_dir():
        return guess
    for dirpath, dirnames, _files in os.walk(root):
        if name in dirnames:
            return Path(dirpath) / name
    return None


@dataclass(slots=True)
class JobSetup:
    """A job marker prepared in the parent: the child's extra environment and, where
    available, an open ``cgroup.procs`` of the job's cgroup for the child to join."""

    marker: str
    env: dict[str, str]
    cgroup: Path | None = None
    cgroup_procs_fd: int | None = None

    def close(self) -> None:
        if self.cgroup_procs_fd is not None:
            os.close(self.cgroup_procs_fd)
            self.cgroup_procs_fd = None


def prepare_job(marker: str, *, cgroup: bool | None = None) -> JobSetup:
    """Prepare a child of job ``marker``: env marker, plus a cgroup where possible.

    ``cgroup``: None uses one when this process is root and cgroup v2 is writable; True
    requires it (:class:`ConfinementError` otherwise); False uses the env marker only.
    """
    _check_marker(marker)
    setup = JobSetup(marker, {JOB_ENV_VAR: marker})
    if cgroup is False:
        return setup
    root = cgroup_root()
    reason = None
    if root is None:
        reason = "no cgroup v2 hierarchy is mounted"
    elif os.geteuid() != 0:
        reason = "creating a cgroup needs root"
    else:
        path = _own_cgroup(root) / (_CGROUP_PREFIX + marker)
        try:
            path.mkdir(mode=0o755, exist_ok=True)
            # Opened here, written by the child ("0" = the writer itself): moving the
            # child before exec means nothing it starts can be born outside the cgroup.
            setup.cgroup_procs_fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
            setup.cgroup = path
        except OSError as exc:
            reason = f"cannot create {path}: {exc.strerror}"
    if reason is not None and cgroup:
        raise ConfinementError(f"a job cgroup was required but {reason}", step="job cgroup")
    return setup


def _env_marked(marker: str, me: int) -> list[ProcStat]:
    needle = f"{JOB_ENV_VAR}={marker}".encode()
    found = []
    for stat in _all_stats():
        if stat.pid == me or stat.state in ("Z", "X"):
            continue
        try:
            with open(f"/proc/{stat.pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone, or not ours to read (another user, without root)
            continue
        if needle in environ.split(b"\0"):
            found.append(stat)
    return found


def _cgroup_members(path: Path | None) -> list[ProcStat]:
    if path is None:
        return []
    members = []
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            for line in procs.read_text().split():
                stat = read_stat(int(line))
                if stat is not None and stat.state not in ("Z", "X"):
                    members.append(stat)
    return members


def kill_job_leftovers(marker: str, grace: float = 5.0) -> list[ProcessIdentity]:
    """End every process still marked as belonging to job ``marker``, from any process.

    Finds processes through the job's cgroup (if one was created) and the
    ``CGR_EXEC_JOB`` environment marker; SIGTERMs them, waits ``grace`` seconds,
    SIGKILLs what is left (``cgroup.kill`` for the cgroup), then removes the cgroup.
    Each process is signalled only after its start time is checked. Returns the
    identities that were signalled. Never signals the calling process.
    """
    _check_marker(marker)
    me = os.getpid()
    cgroup = job_cgroup_path(marker)
    signalled: dict[ProcessIdentity, None] = {}
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        live = {s.pid: s for s in _cgroup_members(cgroup) + _env_marked(marker, me)}
        live.pop(me, None)
        if sig == signal.SIGKILL and cgroup is not None:
            with contextlib.suppress(OSError):
                (cgroup / "cgroup.kill").write_text("1")
        for stat in live.values():
            identity = ProcessIdentity(stat.pid, stat.start_time)
            if (sig == signal.SIGKILL or identity not in signalled) and _signal_checked(
                stat.pid, stat.start_time, sig
            ):
                signalled[identity] = None
        if not live:
            break
        if time.monotonic() >= deadline:
            if sig == signal.SIGKILL:
                break
            sig = signal.SIGKILL
            deadline = time.monotonic() + _AFTER_KILL
            continue
        time.sleep(_POLL)
    if cgroup is not None:
        _remove_cgroup(cgroup)
    return list(signalled)


def _remove_cgroup(path: Path) -> None:
    # A cgroup can be removed once it has no live processes (zombies do not count) and
    # no child cgroups; deepest first.
    deadline = time.monotonic() + _AFTER_KILL
    for dirpath in [*sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True), path]:
        while True:
            try:
                dirpath.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(_POLL)
