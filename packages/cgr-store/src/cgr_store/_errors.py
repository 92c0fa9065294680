"""The exceptions of cgr-store: one base class, subclasses that carry data.

Every message names the database file (or the run, trigger, field) involved and says what
to do, because the person reading it is usually an operator looking at a log line.
"""

from __future__ import annotations

import os
from datetime import datetime

__all__ = [
    "ActiveRunExists",
    "AuthenticationFailed",
    "CopyMismatch",
    "CopyTargetNotEmpty",
    "CorruptDatabase",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "FencingError",
    "HostLeaseHeld",
    "IllegalTransition",
    "InvalidUpdate",
    "LeaseLost",
    "NotADatabase",
    "OutboxItemNotFound",
    "RunExists",
    "RunNotFound",
    "RunOwnedElsewhere",
    "SchemaTooNew",
    "ServerUnreachable",
    "StoreError",
    "TriggerAlreadyProcessed",
]


class StoreError(Exception):
    """Base class of every error raised by cgr-store."""


class DatabaseUnavailable(StoreError):
    """The database file cannot be opened at all (missing directory, permissions, ...)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot open the cgr database {self.path!r}: {reason}")


class NotADatabase(StoreError):
    """The file exists but is not an SQLite database, or is some other program's database."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(
            f"{self.path!r} is not a cgr database ({reason}); it was left untouched. "
            "Point cgr at another path, or move the file away if it is not needed."
        )


class CorruptDatabase(StoreError):
    """SQLite reports the file as damaged (a malformed page, a failed integrity check)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(
            f"the cgr database {self.path!r} is corrupt ({reason}); it was left untouched. "
            "Restore it from a backup, or try `sqlite3 FILE .recover` into a new file."
        )


class SchemaTooNew(StoreError):
    """The file was written by a newer cgr-store whose schema this version does not know."""

    def __init__(self, path: str | os.PathLike[str], found: int, supported: int) -> None:
        self.path = os.fspath(path)
        self.found = found
        self.supported = supported
        super().__init__(
            f"the cgr database {self.path!r} has schema version {found}, but this cgr-store "
            f"knows versions up to {supported}; upgrade cgr-store (the file was left untouched)"
        )


class DatabaseBusy(StoreError):
    """Other processes held the write lock for longer than the retry deadline."""

    def __init__(self, path: str | os.PathLike[str], waited: float) -> None:
        self.path = os.fspath(path)
        self.waited = waited
        super().__init__(
            f"the cgr database {self.path!r} stayed locked by other processes for "
            f"{waited:.1f} s; find the process holding it (`fuser FILE`) or raise busy_timeout"
        )


class RunNotFound(StoreError):
    """No run has this id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {run_id!r}")


class RunChanged(StoreError):
    """A conditional update (``update_run(..., expect=...)``) found the run no longer as the
    caller last read it; nothing was written."""

    def __init__(self, run_id: str, field: str, expected: object, actual: object) -> None:
        self.run_id = run_id
        self.field = field
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"run {run_id!r} changed: its {field} is {actual!r}, not {expected!r}; "
            "nothing was written"
        )


class OutboxItemNotFound(StoreError):
    """No outbox item has this id."""

    def __init__(self, item_id: int) -> None:
        self.item_id = item_id
        super().__init__(f"no outbox item with id {item_id!r}")


class RunExists(StoreError):
    """A run with this id was already created (ids must be unique; use new_run_id())."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"a run with id {run_id!r} already exists; create it with new_run_id()")


class ActiveRunExists(StoreError):
    """The target already has a queued, claimed or running run; only one may be active."""

    def __init__(self, repo: str, target: int, existing_run_id: str) -> None:
        self.repo = repo
        self.target = target
        self.existing_run_id = existing_run_id
        super().__init__(
            f"{repo}#{target} already has an active run {existing_run_id!r}; "
            "wait for it to end or cancel it first"
        )


class TriggerAlreadyProcessed(StoreError):
    """The trigger (comment, webhook delivery, ...) was already turned into a run or skipped."""

    def __init__(self, kind: str, trigger_id: str, run_id: str | None) -> None:
        self.kind = kind
        self.trigger_id = trigger_id
        self.run_id = run_id
        made = f" by run {run_id!r}" if run_id else ""
        super().__init__(f"trigger {kind}:{trigger_id} was already processed{made}")


class IllegalTransition(StoreError):
    """The status machine does not allow this change; nothing was written."""

    def __init__(self, run_id: str, from_status: str, to_status: str) -> None:
        self.run_id = run_id
        self.from_status = from_status
        self.to_status = to_status
        super().__init__(
            f"run {run_id!r} cannot go from {from_status!r} to {to_status!r} "
            "(see cgr_store.ALLOWED_TRANSITIONS)"
        )


class InvalidUpdate(StoreError, ValueError):
    """An update names a field that cannot be set that way, or gives a value of a wrong type."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"cannot set run field {field!r}: {reason}")


class ServerUnreachable(DatabaseUnavailable):
    """No PostgreSQL server answered at the URL (down, wrong host/port/socket directory)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, f"no PostgreSQL server answered ({reason}); is it running there?")


class AuthenticationFailed(DatabaseUnavailable):
    """The PostgreSQL server refused the user or password of the URL."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            url, f"the server refused the login ({reason}); check the user and password"
        )


class FencingError(StoreError):
    """A write was refused because the lease it was made under is no longer valid."""


class LeaseLost(FencingError):
    """The host's lease epoch was superseded: another process acquired the same host id, or
    a live host took over this host's runs after its lease expired. Stop working on them."""

    def __init__(self, host_id: str, epoch: int, current_epoch: int | None) -> None:
        self.host_id = host_id
        self.epoch = epoch
        self.current_epoch = current_epoch
        now = "has no lease" if current_epoch is None else f"is at epoch {current_epoch}"
        super().__init__(
            f"host {host_id!r} wrote with lease epoch {epoch}, but it {now}: its runs were "
            "taken over (or another process uses the same host id); the write was refused"
        )


class RunOwnedElsewhere(FencingError):
    """The run belongs to another lease holder; this host must not change it."""

    def __init__(
        self, run_id: str, owner: str | None, owner_epoch: int | None, host_id: str, epoch: int
    ) -> None:
        self.run_id = run_id
        self.owner = owner
        self.owner_epoch = owner_epoch
        self.host_id = host_id
        self.epoch = epoch
        super().__init__(
            f"run {run_id!r} belongs to host {owner!r} (epoch {owner_epoch}), not to "
            f"{host_id!r} (epoch {epoch}); the write was refused"
        )


class HostLeaseHeld(StoreError):
    """The host id's lease is still live: another process holds it (or held it until a
    moment ago). Use another host id, or wait until ``expires_at``."""

    def __init__(self, host_id: str, expires_at: datetime) -> None:
        self.host_id = host_id
        self.expires_at = expires_at
        super().__init__(
            f"host id {host_id!r} is leased until {expires_at.isoformat()}: another process "
            "uses it; give each host its own host id, or wait for the lease to expire"
        )


class CopyTargetNotEmpty(StoreError):
    """copy_store() writes only into an empty store."""

    def __init__(self, location: str, table: str, rows: int) -> None:
        self.location = location
        self.table = table
        self.rows = rows
        super().__init__(
            f"the target store {location!r} already has {rows} rows in {table!r}; "
            "copy into a new, empty database"
        )


class CopyMismatch(StoreError):
    """After a copy the target's row counts differ from the source's."""

    def __init__(self, table: str, source: int, target: int) -> None:
        self.table = table
        self.source = source
        self.target = target
        super().__init__(
            f"copied {table!r}: the source has {source} rows but the target {target}; "
            "was the source written to meanwhile? Stop every cgr process and copy again"
        )
