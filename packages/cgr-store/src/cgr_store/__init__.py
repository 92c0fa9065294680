"""cgr-store: typed, crash-safe run records for cgr (msgspec records; SQLite, PostgreSQL).

The public surface is re-exported here; the modules behind it are private.
"""

from __future__ import annotations

from ._copy import copy_store
from ._errors import (
    ActiveRunExists,
    AuthenticationFailed,
    CopyMismatch,
    CopyTargetNotEmpty,
    CorruptDatabase,
    DatabaseBusy,
    DatabaseUnavailable,
    FencingError,
    HostLeaseHeld,
    IllegalTransition,
    InvalidUpdate,
    LeaseLost,
    NotADatabase,
    OutboxItemNotFound,
    RunChanged,
    RunExists,
    RunNotFound,
    RunOwnedElsewhere,
    SchemaTooNew,
    ServerUnreachable,
    StoreError,
    TriggerAlreadyProcessed,
)
from ._migrations import LATEST_VERSION as SCHEMA_VERSION
from ._open import open_store
from ._postgres import PostgresStore
from ._protocol import Store
from ._records import (
    AgentSession,
    Base,
    Cursor,
    HostLease,
    HttpCacheEntry,
    OutboxEntry,
    OutboxItem,
    ProcessedTrigger,
    Run,
    RunEvent,
    new_run_id,
)
from ._sqlite import SQLiteStore
from ._status import ALLOWED_TRANSITIONS, RunKind, RunStatus, TriggerKind, can_transition
from ._time import utcnow
from ._urls import redact_url

__all__ = [
    "ALLOWED_TRANSITIONS",
    "SCHEMA_VERSION",
    "ActiveRunExists",
    "AgentSession",
    "AuthenticationFailed",
    "Base",
    "CopyMismatch",
    "CopyTargetNotEmpty",
    "CorruptDatabase",
    "Cursor",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "FencingError",
    "HostLease",
    "HostLeaseHeld",
    "HttpCacheEntry",
    "IllegalTransition",
    "InvalidUpdate",
    "LeaseLost",
    "NotADatabase",
    "OutboxEntry",
    "OutboxItem",
    "OutboxItemNotFound",
    "PostgresStore",
    "ProcessedTrigger",
    "Run",
    "RunChanged",
    "RunEvent",
    "RunExists",
    "RunKind",
    "RunNotFound",
    "RunOwnedElsewhere",
    "RunStatus",
    "SQLiteStore",
    "SchemaTooNew",
    "ServerUnreachable",
    "Store",
    "StoreError",
    "TriggerAlreadyProcessed",
    "TriggerKind",
    "can_transition",
    "copy_store",
    "new_run_id",
    "open_store",
    "redact_url",
    "utcnow",
]
