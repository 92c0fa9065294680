"""Errors raised by the GitHub simulator's Python API (never by its HTTP side)."""

from __future__ import annotations


class SimulatorError(Exception):
    """Base class for every error the simulator's helpers raise."""


class UnknownRepositoryError(SimulatorError, LookupError):
    """A helper named a repository that was never created with ``create_repo``."""

    def __init__(self, full_name: str) -> None:
        super().__init__(
            f"repository {full_name!r} does not exist in the simulator; "
            "create it first with GitHubSimulator.create_repo()"
        )
        self.full_name = full_name


class UnknownUserError(SimulatorError, LookupError):
    """A helper named a login that was never added with ``add_user`` or ``add_bot``."""

    def __init__(self, login: str) -> None:
        super().__init__(
            f"user {login!r} does not exist in the simulator; add it first with "
            "GitHubSimulator.add_user() or add_bot()"
        )
        self.login = login


class UnknownItemError(SimulatorError, LookupError):
    """A helper named an issue, pull request or comment that does not exist."""

    def __init__(self, kind: str, full_name: str, key: int) -> None:
        super().__init__(f"{kind} {key} does not exist in {full_name!r}")
        self.kind = kind
        self.full_name = full_name
        self.key = key


class SimulatorGitError(SimulatorError):
    """A git command the simulator ran on its own bare repository failed."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"git {' '.join(args)} failed with exit code {returncode}: {stderr}")
        self.args_ = args
        self.returncode = returncode
        self.stderr = stderr


class SimulatorServerError(SimulatorError):
    """The simulator itself crashed while serving a request (a bug in the simulator).

    Raised by ``close()`` so that such a bug fails the test that triggered it instead of
    hiding behind the 500 response the client saw.
    """

    def __init__(self, errors: list[str]) -> None:
        super().__init__(
            f"{len(errors)} request(s) crashed inside the GitHub simulator:\n" + "\n".join(errors)
        )
        self.errors = errors
