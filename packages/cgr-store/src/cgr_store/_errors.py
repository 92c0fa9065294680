"""The exceptions of cgr-store: one base class, subclasses that carry data.

Every message names the database file (or the run, trigger, field) involved and says what
to do, because the person reading it is usually an operator looking at a log line.
"""

from __future__ import annotations

import os

__all__ = [
    "ActiveRunExists",
    "CorruptDatabase",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "IllegalTransition",
    "InvalidUpdate",
    "NotADatabase",
    "OutboxItemNotFound",
    "RunExists",
    "RunNotFound",
    "SchemaTooNew",
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
