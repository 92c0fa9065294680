"""What the fork and the subprocess-daemon strategies have in common."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._identity import ProcessIdentity
from ._status import ChildExit

__all__ = ["Executor"]


@runtime_checkable
class Executor(Protocol):
    """A strategy that starts children and collects how they ended.

    Starting differs by nature (a Python callable in a fork, an argv in a subprocess; one
    synchronous, one async), as do terminate/shutdown (sync vs async): those are on the
    concrete classes. What a scheduler needs from either is here.
    """

    @property
    def limit(self) -> int | None:
        """Most children running at once (None: unlimited)."""
        ...

    def free_slots(self) -> int | None:
        """How many more children may start now (None: unlimited)."""
        ...

    def identities(self) -> dict[str, ProcessIdentity]:
        """Children started and not yet collected, by key: what a store records."""
        ...

    def reap(self) -> list[ChildExit]:
        """Children that ended since the last call, with their exit status. Never blocks."""
        ...
