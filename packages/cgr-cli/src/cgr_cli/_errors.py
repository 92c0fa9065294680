"""The exceptions a user of ``cgr`` can cause; one base class, data on every subclass."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What ``cgr`` exits with (the table in the README). Scripts and systemd test these."""

    OK = 0
    FAILURE = 1  # something failed: a check, a run, GitHub, the database, the agent
    USAGE = 2  # the command line is wrong (argparse uses 2 too)
    NOT_FOUND = 3  # a named thing does not exist: a run id, a --config file
    BUSY = 4  # another cgr holds what is needed: the daemon lock, the scheduling lock
    INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2, as a shell reports it


class CgrError(Exception):
    """Base class of every error ``cgr_cli`` raises on purpose; ``exit_code`` is what
    ``cgr`` exits with when it reaches the top (see ``_main``)."""

    exit_code: ExitCode = ExitCode.FAILURE


class UsageError(CgrError):
    """An argument is wrong in a way argparse cannot tell (exit 2)."""

    exit_code = ExitCode.USAGE


class NotFoundError(CgrError):
    """Something named on the command line does not exist (exit 3)."""

    exit_code = ExitCode.NOT_FOUND


class BusyError(CgrError):
    """Another cgr process holds a lock this command needs (exit 4)."""

    exit_code = ExitCode.BUSY


class ConfigError(CgrError):
    """A configuration value is wrong: ``key`` is the dotted key path (``agent.max_turns``)."""

    def __init__(self, message: str, *, key: str = "", source: str = "") -> None:
        self.key = key
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message}")


class ConfigNotFoundError(ConfigError):
    """``--config PATH`` (or ``$CGR_CONFIG``) names a file that does not exist."""

    exit_code = ExitCode.NOT_FOUND

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"configuration file {path!r} does not exist; write one with `cgr init`, or fix "
            "--config / $CGR_CONFIG"
        )


class DatabaseFileError(CgrError):
    """The database file at ``path`` is not one cgr will open (e.g. 0 bytes)."""

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(message)


class GitError(CgrError):
    """A git command failed; ``args`` never holds a token (it only ever travels in env)."""

    def __init__(self, command: str, returncode: int | None, output: str) -> None:
        self.command = command
        self.returncode = returncode
        self.output = output
        code = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(f"git {command} {code}: {output.strip()[-500:]}")


class RebaseConflictError(GitError):
    """Rebasing the existing branch onto the base stopped on conflicts in ``files``."""

    def __init__(self, files: list[str]) -> None:
        self.files = files
        CgrError.__init__(self, f"rebase conflict in {', '.join(files) or 'unknown files'}")
        self.command = "rebase"
        self.returncode = 1
        self.output = ""


class RunNotFoundError(CgrError):
    """``--run-id`` names a run the store does not have, or one that is not queued."""

    exit_code = ExitCode.NOT_FOUND

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id}: {reason}")
