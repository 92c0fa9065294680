"""The exceptions cgr-exec raises: one base class, subclasses carry the data a caller needs."""

from __future__ import annotations

import os
from collections.abc import Sequence


class ExecError(Exception):
    """Base class of every error raised by cgr-exec."""


class ForkUnsafeError(ExecError):
    """Forking now would copy state that is unsafe to copy (other threads, a running loop)."""

    def __init__(self, reason: str, *, threads: int, async_library: str | None) -> None:
        self.reason = reason
        self.threads = threads
        self.async_library = async_library
        super().__init__(reason)


class CapacityError(ExecError):
    """The executor already runs as many children as its limit allows."""

    def __init__(self, limit: int, running: int) -> None:
        self.limit = limit
        self.running = running
        super().__init__(
            f"concurrency limit reached: {running} of {limit} children running; "
            "wait for a slot (wait_slot() or start(..., wait=True)) or raise the limit"
        )


class SpawnError(ExecError):
    """A command could not be started (not found, not executable, bad working directory)."""

    def __init__(self, argv: Sequence[str], cause: OSError, *, cwd: str | None = None) -> None:
        self.command = argv[0] if argv else ""
        self.argv = tuple(argv)
        self.cwd = cwd
        self.errno = cause.errno
        missing = getattr(cause, "filename", None)
        if cwd is not None and missing is not None and os.fspath(missing) == cwd:
            what = f"working directory {cwd!r} is not usable ({cause.strerror})"
        elif isinstance(cause, FileNotFoundError):
            what = "command not found (check the name and PATH)"
        elif isinstance(cause, PermissionError):
            what = "command is not executable (check its permissions)"
        else:
            what = cause.strerror or str(cause)
        super().__init__(f"cannot start {self.command!r}: {what}")


class StdinFileError(ExecError):
    """The file named as a command's stdin cannot be opened."""

    def __init__(self, path: str, cause: OSError) -> None:
        self.path = path
        self.errno = cause.errno
        super().__init__(f"cannot read stdin file {path!r}: {cause.strerror}")


class LogFileError(ExecError):
    """A log or output file cannot be opened for writing (missing directory, permissions)."""

    def __init__(self, path: str, cause: OSError) -> None:
        self.path = path
        self.errno = cause.errno
        super().__init__(f"cannot open log file {path!r} for writing: {cause.strerror}")


def open_log(path: str | os.PathLike[str], *, append: bool = True) -> int:
    """Open (create 0600) a log file for writing; :class:`LogFileError` if impossible."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        raise LogFileError(os.fspath(path), exc) from exc


class DuplicateKeyError(ExecError):
    """A child with this key is already running in the executor."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"a child with key {key!r} is already running; keys must be unique")


class UnknownChildError(ExecError):
    """No running child has this key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no running child with key {key!r}")


class ExecutorClosedError(ExecError):
    """The executor was shut down (or not entered) and starts no more children."""


class NoSuchProcessError(ExecError):
    """The pid names no live process (it has exited, or never existed)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        super().__init__(f"no process with pid {pid} (it has exited or never existed)")


class WatchdogPatternError(ExecError):
    """A watchdog pattern is not a valid regular expression."""

    def __init__(self, pattern: str, message: str) -> None:
        self.pattern = pattern
        super().__init__(
            f"watchdog pattern {pattern!r} is not a valid regular expression: {message}"
        )


class ConfinementError(ExecError):
    """A confinement (Landlock, another user, a job cgroup) cannot be applied.

    Raised in the parent, before anything runs, when the spec asks for something this
    machine cannot do (``step`` None), and after the fork when a step failed in the child
    (``step`` names it, ``errno`` says why): the command was then *not* executed, never
    run unconfined.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        errno: int | None = None,
        path: str | None = None,
    ) -> None:
        self.step = step
        self.errno = errno
        self.path = path
        super().__init__(message)


class JobMarkerError(ExecError):
    """A job marker is not usable (it must be 1-100 of ``A-Z a-z 0-9 _ . -``)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        super().__init__(
            f"job marker {marker!r} is not valid: use 1 to 100 characters from "
            "A-Z a-z 0-9 _ . - (it names an environment value and a cgroup directory)"
        )
