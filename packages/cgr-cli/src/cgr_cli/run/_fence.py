"""Fencing of a run's own writes: a run of a fleet host works under that host's lease epoch.

A fleet host claims a run under its lease (``claim_next`` stamps the run with the host id
and the epoch) and starts ``cgr run --run-id … --lease-epoch N`` for it. The child carries
that epoch on every store write of the run (``lease=``); it never reads a newer epoch of
its host from the store, because a newer epoch is exactly what a host gets back after it
lost its runs: a daemon paused past its lease (SIGSTOP, a VM frozen, a laptop lid) whose
runs a live host took over rejoins under a new epoch, and a child of the old epoch must
not carry on as if nothing happened.

Once a fenced write is refused (``cgr_store.FencingError``: ``LeaseLost`` when the host's
epoch moved on, ``RunOwnedElsewhere`` when another host holds the run), another host has
decided what becomes of the run (ended it visibly, or queued it again for anyone). This
process then does no more effects: no push, no pull request, no label, no comment, no
report in the outbox; it stops the agent, keeps its logs and summary locally and exits.

External effects cannot be made atomic with a database check: :meth:`Fence.check` is made
right before each one (a fenced heartbeat), so the window left is the few milliseconds
between the check and the request, not the length of a pause. Progress edits of the status
comment re-check only when the last good check is older than a heartbeat interval (the
monotonic clock goes on while a process is stopped, so the first edit after a pause checks).

Without a lease (SQLite, one host; ``cgr run`` by hand) every check is free and passes:
nothing changes for a single host.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cgr_store import FencingError

if TYPE_CHECKING:
    from cgr_store import HostLease, Store


class ClaimedElsewhere(FencingError):
    """The run's claim was refused: the row no longer allowed it (it is ``status``), another
    process on this host claimed the run first. A scheduler hands a queued run to one
    process; two get it only through a stale record of which process runs it, and then
    the one that claimed first is the run's, and the other must not touch it - not its
    row (a terminal status written here would end the other's run), not GitHub, and not
    the run's directory, which the two share (no summary written over the other's, no
    cleanup under it)."""

    def __init__(self, run_id: str, status: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(
            f"run {run_id!r} is {status}: another process claimed it first; this one "
            "stopped without doing anything"
        )


class Fence:
    """The lease a run's writes carry, and whether it was found lost."""

    def __init__(self, store: Store, run_id: str, lease: HostLease | None) -> None:
        self.store = store
        self.run_id = run_id
        self.lease = lease
        self.lost: FencingError | None = None
        self._checked = time.monotonic()

    def check(self, max_age: float = 0.0) -> None:
        """Raise FencingError when the lease is lost: a fenced heartbeat now, unless the last
        good one is younger than ``max_age`` seconds. Free without a lease."""
        from cgr_store import FencingError

        if self.lost is not None:
            raise self.lost
        if self.lease is None or time.monotonic() - self._checked < max_age:
            return
        try:
            self.store.heartbeat(self.run_id, lease=self.lease)
        except FencingError as exc:
            self.lost = exc
            raise
        self._checked = time.monotonic()

    def note(self, exc: BaseException) -> bool:
        """Remember ``exc`` if it is a refused fenced write; True if it is."""
        from cgr_store import FencingError

        if isinstance(exc, FencingError):
            self.lost = self.lost or exc
            return True
        return False


def lease_for(store: Store, host_id: str, epoch: int | None) -> HostLease | None:
    """The lease ``host_id`` claimed a run under (``epoch``), to carry on its writes.

    The host's lease row gives its other fields; the epoch is the one given, never the
    row's (see the module docstring). Raises LeaseLost when the host has no lease at all.
    """
    import msgspec

    from cgr_store import LeaseLost

    if epoch is None:
        return None
    row = next((h for h in store.hosts() if h.host_id == host_id), None)
    if row is None:
        raise LeaseLost(host_id, epoch, None)
    return msgspec.structs.replace(row, epoch=epoch)
