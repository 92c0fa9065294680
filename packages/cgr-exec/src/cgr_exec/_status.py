"""How a child ended: plain frozen data shared by every strategy."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from ._identity import ProcessIdentity

__all__ = ["ChildExit", "ExitStatus"]


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended: ``code`` for a normal exit, ``signal`` if a signal killed it.

    Both are None only when the status could not be collected (another part of the
    program reaped the process first).
    """

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        """From the raw status word of ``os.waitpid``."""
        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status))
        return cls(code=os.waitstatus_to_exitcode(status))

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        """From a ``subprocess``-style return code (negative means killed by that signal)."""
        if returncode < 0:
            return cls(signal=-returncode)
        return cls(code=returncode)

    @property
    def returncode(self) -> int:
        """``subprocess`` convention: the exit code, or minus the signal number."""
        if self.signal is not None:
            return -self.signal
        return self.code if self.code is not None else 0

    @property
    def success(self) -> bool:
        return self.code == 0

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"

    def __str__(self) -> str:
        if self.signal is not None:
            return f"killed by {self.signal_name}"
        if self.code is None:
            return "exit status unknown"
        return f"exit code {self.code}"


@dataclass(frozen=True, slots=True)
class ChildExit:
    """A child that has ended and been reaped (its exit status collected)."""

    key: str
    identity: ProcessIdentity
    status: ExitStatus
    duration: float
    """Seconds from the start request until the exit was observed."""
    log_path: Path | None = None
