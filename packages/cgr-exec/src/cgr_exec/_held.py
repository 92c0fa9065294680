"""A child made ready ahead of time, that runs its program only when told.

Joining a job's cgroup between fork and exec (``_spawn``) makes the kernel wait for an
RCU grace period whenever no other cgroup migration happened just before: 6-10 ms on an
idle host, 15-30 ms on a busy one, on the way to every start. :func:`hold` pays that
(and the fork, the user switch, the Landlock domain) while the caller still waits for
something else - a free slot, the rest of its set-up - and :func:`supervise` given the
held child (``held=``) only releases it: the program starts within a millisecond.

The held child is ``/bin/sh`` already confined, in its job cgroup, as its user, with no
file descriptor of ours beyond its three pipes (exec closed them), waiting on one line of
its standard input: ``IFS= read -r _ || exit 125; exec "$@"``. The release writes that
line and then the program's own standard input through the same pipe (``read`` takes
bytes one at a time from a pipe, never more than its line); closing the pipe instead
ends the shell without running anything (:meth:`HeldStart.cancel`, or this process's
death). ``exec "$@"`` keeps the process: its pid, start time, group and cgroup are the
program's. The shell adds ``PWD`` to the environment it passes on; when the caller's
environment has none, the script removes it again.

``/bin/sh`` is dash on Debian and Ubuntu, bash on Fedora and RHEL. Bash also passes
``SHLVL`` and ``_`` on (set again by its ``exec`` even once unset), which the program must
not get: there the shell execs ``/usr/bin/env -u _ -u SHLVL`` with the program, one exec
more and no fork, the same pid. A caller's environment that has either variable itself, or
a program whose name holds ``=`` (``env`` would read it as an assignment), is not held
under bash; nor is anything under another ``/bin/sh``: :func:`supervise` then starts the
program itself, as without :func:`hold`.

A program the shell might fail to execute is not held: one not found, not executable by
the child's user, or outside every Landlock path. :func:`supervise` then starts it as it
starts any other, and reports the failure as it always does (:class:`SpawnError`,
:class:`ConfinementError`) rather than as a shell's exit status 126 or 127.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ._confine import Confinement, _has_capabilities, _resolve_user
from ._errors import ExecError
from ._spawn import spawn_piped

__all__ = ["HeldStart", "hold"]

_SH = "/bin/sh"
_ENV = "/usr/bin/env"
_WAIT = 'IFS= read -r _ || exit 125; exec "$@"'
_WAIT_DROPPING_DIR_VAR = 'IFS= read -r _ || exit 125; unset PWD; exec "$@"'
# Bash: its own `_` and SHLVL are put back by `exec` itself; env(1) drops them.
_BASH_EXEC = f'exec {_ENV} -u _ -u SHLVL "$@"'
_BASH_WAIT = f"IFS= read -r _ || exit 125; {_BASH_EXEC}"
_BASH_WAIT_DROPPING_DIR_VAR = f"IFS= read -r _ || exit 125; unset PWD; {_BASH_EXEC}"
_RELEASE = b"\n"


@dataclass(slots=True, eq=False)
class HeldStart:
    """What :func:`hold` made: pass it to :func:`supervise` (``held=``) with the same
    ``argv``, or :meth:`cancel` it. ``popen`` is None when the program was not held (see
    the module docstring); :func:`supervise` then starts it itself."""

    argv: tuple[str, ...]
    cwd: str | None
    env: dict[str, str] | None
    confinement: Confinement | None
    job: str | None
    job_cgroup: bool | None
    popen: subprocess.Popen[bytes] | None = None
    used: bool = field(default=False, init=False)

    @property
    def held(self) -> bool:
        """Whether a child is waiting (False once it was released or cancelled)."""
        return self.popen is not None and not self.used

    def take(self) -> subprocess.Popen[bytes] | None:
        """The waiting child, for :func:`supervise` to release; None when there is none."""
        if self.used:
            raise RuntimeError("this HeldStart was already released or cancelled")
        self.used = True
        return self.popen

    def cancel(self) -> None:
        """End the waiting child without running the program (idempotent). Closing its
        pipe ends its ``read``; a child that does not end at once is killed."""
        if self.used:
            return
        self.used = True
        popen = self.popen
        if popen is None:
            return
        for pipe in (popen.stdin, popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()
        try:
            popen.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            # Stopped, or its user changed under it: its group is its own (setsid).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, 9)
            popen.wait()


def hold(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    confinement: Confinement | None = None,
    job: str | None = None,
    job_cgroup: bool | None = None,
) -> HeldStart:
    """Start a child that will run ``argv`` (with ``cwd``, ``env``, ``confinement`` and
    ``job`` as :func:`supervise` takes them) once released by ``supervise(..., held=)``.

    Blocking (the fork and the cgroup join): call it from a worker thread in an event
    loop. Raises nothing: whatever would fail is left for :func:`supervise` to start and
    report; the result then holds no child."""
    held = HeldStart(
        argv=tuple(os.fspath(a) for a in argv),
        cwd=None if cwd is None else os.fspath(cwd),
        env=None if env is None else dict(env),
        confinement=confinement,
        job=job,
        job_cgroup=job_cgroup,
    )
    if not _can_hold(held):
        return held
    environ = os.environ if held.env is None else held.env
    if _shell() == "bash":
        script = _BASH_WAIT if "PWD" in environ else _BASH_WAIT_DROPPING_DIR_VAR
    else:
        script = _WAIT if "PWD" in environ else _WAIT_DROPPING_DIR_VAR
    try:
        held.popen = spawn_piped(
            (_SH, "-c", script, held.argv[0], *held.argv),
            b"",  # its stdin a pipe: the release, then the program's input
            cwd=held.cwd,
            env=held.env,
            confinement=confinement,
            job=job,
            job_cgroup=job_cgroup,
        )
    except (ExecError, OSError):
        held.popen = None  # supervise starts it and reports why it cannot
    return held


def _can_hold(held: HeldStart) -> bool:
    """Whether the shell will surely execute the program: found on the child's ``PATH``
    (or at its path), executable by the child's user, both it and the shell beneath a
    Landlock path when Landlock is asked for. In doubt, False."""
    program = _program(held)
    if program is None or not os.path.isfile(program) or not shell_holds():
        return False
    executed = [program, _SH]
    if _shell() == "bash":
        environ = os.environ if held.env is None else held.env
        name = held.argv[0]
        if "_" in environ or "SHLVL" in environ or "=" in name or name.startswith("-"):
            return False  # env(1) would drop the caller's own, or read the name otherwise
        executed.append(_ENV)
    spec = held.confinement
    if spec is None:
        return True
    try:
        uid, gid = _resolve_user(spec)
    except ExecError:
        return False
    if uid is None and spec.drop_capabilities and _has_capabilities():
        # Root without its capabilities is held to the file modes like anyone.
        uid, gid = os.geteuid(), os.getegid()
    if uid is not None and not all(_executable_by(p, uid, gid) for p in executed):
        return False
    allowed = [os.path.realpath(p).rstrip("/") for p in (*spec.read_only, *spec.read_write)]
    return not spec.landlock or all(
        any(real == a or real.startswith(a + "/") for a in allowed)
        for real in map(os.path.realpath, executed)
    )


def _shell() -> str | None:
    """Which shell ``/bin/sh`` is: "dash", "bash", or None for any other."""
    name = os.path.basename(os.path.realpath(_SH))
    return name if name in ("dash", "bash") else None


def shell_holds() -> bool:
    """Whether this machine's ``/bin/sh`` is one :func:`hold` uses: dash, or bash where
    ``/usr/bin/env`` is there to drop what bash adds to the program's environment."""
    kind = _shell()
    return kind == "dash" or (kind == "bash" and os.path.isfile(_ENV))


def _program(held: HeldStart) -> str | None:
    """The file ``argv[0]`` names, found as exec would find it (None: not found)."""
    name = held.argv[0] if held.argv else ""
    if not name:
        return None
    if "/" in name:
        return os.path.join(held.cwd or os.getcwd(), name)
    environ = os.environ if held.env is None else held.env
    return shutil.which(name, path=environ.get("PATH", os.defpath))


def _executable_by(path: str, uid: int, gid: int | None) -> bool:
    """Whether ``uid`` (primary group ``gid``, no other group) may execute ``path``: the
    file's execute bit and every directory's search bit on the way to it."""
    parts = os.path.realpath(path).split("/")[1:]
    for depth in range(len(parts) + 1):
        try:
            st = os.stat("/" + "/".join(parts[:depth]))
        except OSError:
            return False
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif gid is not None and st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True
