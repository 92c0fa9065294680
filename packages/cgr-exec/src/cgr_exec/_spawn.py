"""Starting a child with a confinement and a job marker applied between fork and exec.

``subprocess.Popen`` does the fork and exec. In the child it switches user itself (in C:
``setgroups``, ``setregid``, ``setreuid``) and then calls ``preexec_fn``, where we join
the job's cgroup and enter the Landlock domain - both with everything prepared in the
parent (an open ``cgroup.procs``, a built ruleset fd, resolved C functions), so the
child only makes system calls.

``preexec_fn`` makes Popen fork instead of vfork, and Python code in a forked child can
deadlock if another thread held a lock it needs at the moment of the fork. The callback
below takes no lock Python knows of (no import, no I/O object, no logging); the
interpreter's own state is reset by Popen's after-fork handling.

If a step fails, the child writes ``step\\0errno`` to a private pipe and raises; Popen
then reports "Exception occurred in preexec_fn" without running the command, and we
raise :class:`ConfinementError` with the step. A child never runs unconfined.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from ._confine import Confinement, PreparedConfinement, prepare_confinement
from ._errors import ConfinementError, SpawnError, StdinFileError
from ._jobs import JobSetup, prepare_job

__all__ = ["spawn", "spawn_piped"]

_StdSpec = int | IO[Any] | None


def spawn(
    argv: tuple[str, ...],
    *,
    stdin: _StdSpec,
    stdout: _StdSpec,
    stderr: _StdSpec,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    confinement: Confinement | None = None,
    job: str | None = None,
    job_cgroup: bool | None = None,
) -> subprocess.Popen[bytes]:
    """Popen ``argv`` in a new session with ``confinement`` and job ``job`` applied.

    Raises :class:`SpawnError` (command not found, bad cwd), :class:`ConfinementError`
    (the spec cannot hold here, or a step failed in the child: nothing was run) and
    :class:`~cgr_exec.JobMarkerError`.
    """
    job_setup: JobSetup | None = None
    prepared: PreparedConfinement | None = None
    err_r = err_w = -1
    try:
        if job is not None:
            job_setup = prepare_job(job, cgroup=job_cgroup)
            env = {**(os.environ if env is None else env), **job_setup.env}
        if confinement is not None:
            prepared = prepare_confinement(confinement)
        cgroup_fd = job_setup.cgroup_procs_fd if job_setup is not None else None
        steps = [
            step
            for step in (
                prepared.cap_dropper if prepared is not None else None,
                prepared.restrictor if prepared is not None else None,
            )
            if step is not None
        ]
        preexec: Callable[[], None] | None = None
        if cgroup_fd is not None or steps:
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            preexec = _child_setup(cgroup_fd, steps, err_w)
        ids: dict[str, Any] = {}
        if prepared is not None and (prepared.uid is not None or prepared.gid is not None):
            # extra_groups=[]: without it the child keeps our supplementary groups
            # (root's group 0 among them) after setuid.
            ids = {"user": prepared.uid, "group": prepared.gid, "extra_groups": []}
        try:
            return subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - see the module docstring
                **ids,
            )
        except subprocess.SubprocessError as exc:
            if err_w != -1:
                os.close(err_w)  # so the read below ends after the child's message
                err_w = -1
            raise _child_failure(err_r, argv) from exc
        except OSError as exc:
            landlocked = prepared is not None and prepared.ruleset is not None
            raise _spawn_error(exc, argv, cwd, confined=landlocked) from exc
    finally:
        for fd in (err_r, err_w):
            if fd != -1:
                os.close(fd)
        if prepared is not None:
            prepared.close()
        if job_setup is not None:
            job_setup.close()


def _spawn_error(
    exc: OSError, argv: tuple[str, ...], cwd: str | os.PathLike[str] | None, *, confined: bool
) -> ConfinementError | SpawnError:
    where = None if cwd is None else os.fspath(cwd)
    if confined and isinstance(exc, PermissionError) and exc.filename != where:
        # execve itself was refused: under Landlock that means the program is not beneath
        # any read_only/read_write path (without a confinement, the same error means the
        # file's own permissions, and SpawnError says so).
        return ConfinementError(
            f"cannot execute {argv[0]!r} under the confinement: put the program (and the "
            "libraries and interpreter it loads) beneath a read_only or read_write path",
            step="execve",
            errno=exc.errno,
            path=argv[0],
        )
    return SpawnError(argv, exc, cwd=where)


def _child_setup(
    cgroup_fd: int | None, steps: Sequence[Callable[[], tuple[str, int] | None]], err_w: int
) -> Callable[[], None]:
    def setup() -> None:
        # Runs in the forked child, after Popen's setsid/setgid/setuid, before exec.
        # The cgroup first (the open fd needs no rights); capabilities before Landlock
        # (either order works; this one keeps a failure message about the last step).
        if cgroup_fd is not None:
            try:
                os.write(cgroup_fd, b"0")
            except OSError as exc:
                _fail(err_w, "join the job cgroup", exc.errno or 0)
        for step in steps:
            if (failure := step()) is not None:
                _fail(err_w, failure[0], failure[1])

    return setup


def _fail(err_w: int, step: str, code: int) -> None:
    os.write(err_w, step.encode() + b"\0" + str(code).encode())
    raise OSError(code, step)


def _child_failure(err_r: int, argv: tuple[str, ...]) -> ConfinementError:
    raw = os.read(err_r, 4096) if err_r != -1 else b""
    step_raw, _, code_raw = raw.partition(b"\0")
    step = step_raw.decode(errors="replace") or "child setup"
    code = int(code_raw) if code_raw.isdigit() else 0
    return ConfinementError(
        f"cannot start {argv[0]!r} confined: {step} failed in the child "
        f"({os.strerror(code) if code else 'unknown error'}); the command was not run",
        step=step,
        errno=code or None,
    )


def spawn_piped(
    argv: tuple[str, ...],
    stdin: bytes | str | os.PathLike[str] | None,
    **spec: Any,
) -> subprocess.Popen[bytes]:
    """``spawn`` with stdout and stderr piped and ``stdin`` as ``supervise`` takes it
    (bytes: a pipe, written later by the caller; a path: that file; None: /dev/null);
    ``spec`` as ``spawn`` takes it."""
    stdin_file: int | None = None
    if stdin is not None and not isinstance(stdin, bytes):
        try:
            stdin_file = os.open(stdin, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StdinFileError(os.fspath(stdin), exc) from exc
    try:
        return spawn(
            argv,
            stdin=(
                subprocess.PIPE
                if isinstance(stdin, bytes)
                else (stdin_file if stdin_file is not None else subprocess.DEVNULL)
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **spec,
        )
    finally:
        if stdin_file is not None:
            os.close(stdin_file)
