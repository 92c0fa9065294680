"""cgr-store: typed, crash-safe run records for cgr (msgspec records, SQLite storage).

The public surface is re-exported here; the modules behind it are private.
"""

from __future__ import annotations

from ._errors import (
    ActiveRunExists,
    CorruptDatabase,
    DatabaseBusy,
    DatabaseUnavailable,
    IllegalTransition,
    InvalidUpdate,
    NotADatabase,
    OutboxItemNotFound,
    RunExists,
    RunNotFound,
    SchemaTooNew,
    StoreError,
    TriggerAlreadyProcessed,
)
from ._migrations import LATEST_VERSION as SCHEMA_VERSION
from ._protocol import Store
from ._records import (
    AgentSession,
    Base,
    Cursor,
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

__all__ = [
    "ALLOWED_TRANSITIONS",
    "SCHEMA_VERSION",
    "ActiveRunExists",
    "AgentSession",
    "Base",
    "CorruptDatabase",
    "Cursor",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "HttpCacheEntry",
    "IllegalTransition",
    "InvalidUpdate",
    "NotADatabase",
    "OutboxEntry",
    "OutboxItem",
    "OutboxItemNotFound",
    "ProcessedTrigger",
    "Run",
    "RunEvent",
    "RunExists",
    "RunKind",
    "RunNotFound",
    "RunStatus",
    "SQLiteStore",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "TriggerAlreadyProcessed",
    "TriggerKind",
    "can_transition",
    "new_run_id",
    "utcnow",
]
