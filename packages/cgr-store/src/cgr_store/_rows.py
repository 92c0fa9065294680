"""Converting records to database rows and back, with validation on the way in."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

import msgspec

from ._errors import InvalidUpdate
from ._records import Base, OutboxEntry, OutboxItem, Run
from ._time import to_db

__all__ = [
    "OUTBOX_COLUMNS",
    "RUN_COLUMNS",
    "UPDATABLE_FIELDS",
    "changed_columns",
    "checked_outbox",
    "from_row",
    "to_row",
    "validated",
]

T = TypeVar("T", bound=Base)

RUN_COLUMNS: tuple[str, ...] = Run.__struct_fields__
OUTBOX_COLUMNS: tuple[str, ...] = OutboxItem.__struct_fields__

UPDATABLE_FIELDS: frozenset[str] = frozenset(RUN_COLUMNS) - {
    "id",
    "repo",
    "target",
    "kind",
    "status",
    "created_at",
    "trigger_id",
}
"""Run fields that update_run() and transition() may set; the rest are fixed at creation
(status changes only through transition())."""

_FIELD_IN_ERROR = re.compile(r"at `\$\.(\w+)")


def validated(record: T) -> T:
    """``record`` type-checked field by field (frozen Structs do not check on construction).

    Raises InvalidUpdate naming the field, so a caller's wrong value (``target="12"``, a naive
    datetime) fails here and not as a confusing database error later.
    """
    try:
        builtins = msgspec.to_builtins(record)
    except TypeError as exc:  # a value of a type msgspec cannot even encode
        for name in record.__struct_fields__:
            try:
                msgspec.to_builtins(getattr(record, name))
            except TypeError:
                raise InvalidUpdate(name, str(exc)) from None
        raise InvalidUpdate("?", str(exc)) from None  # pragma: no cover - found above
    try:
        checked = msgspec.convert(builtins, type=type(record))
    except msgspec.ValidationError as exc:
        match = _FIELD_IN_ERROR.search(str(exc))
        raise InvalidUpdate(match.group(1) if match else "?", str(exc)) from None
    values = msgspec.structs.astuple(checked)
    for name, value in zip(checked.__struct_fields__, values, strict=True):
        if type(value) is datetime and value.tzinfo is None:  # msgspec gives plain datetimes
            raise InvalidUpdate(name, "naive datetime; pass an aware one, e.g. utcnow()")
    return checked


def to_column(value: Any) -> Any:
    """One value as stored: fixed-width UTC text for a datetime, the value of an enum."""
    # Most values are None, str or int: one type() test lets them through (a hot path).
    if type(value) in _PLAIN:
        return value
    if isinstance(value, datetime):
        return to_db(value)
    if isinstance(value, Enum):
        return value.value
    return value


_PLAIN = frozenset({type(None), str, int, float, bytes})


def to_row(record: Base) -> dict[str, Any]:
    """Column values of a (validated) record."""
    values = msgspec.structs.astuple(record)
    return {name: to_column(v) for name, v in zip(record.__struct_fields__, values, strict=True)}


def changed_columns(before: Base, after: Base) -> dict[str, Any]:
    """The column values of ``after`` that differ from ``before`` (records of one type)."""
    pairs = zip(msgspec.structs.astuple(before), msgspec.structs.astuple(after), strict=True)
    return {
        name: to_column(new)
        for name, (old, new) in zip(after.__struct_fields__, pairs, strict=True)
        if old != new
    }


def from_row(row: Mapping[str, Any], record_type: type[T]) -> T:
    """A record from a row; msgspec parses the timestamps and enums and checks types."""
    return msgspec.convert(dict(row), type=record_type)


def checked_outbox(entry: OutboxEntry) -> OutboxEntry:
    """``entry`` validated, with a payload that is JSON text (InvalidUpdate otherwise).

    Checked on the way in because the payload is read back by another process, maybe much
    later, which must not be the first to find it unreadable.
    """
    entry = validated(entry)
    if not entry.key:
        raise InvalidUpdate("key", "must not be empty")
    try:
        msgspec.json.decode(entry.payload)
    except msgspec.DecodeError as exc:
        raise InvalidUpdate("payload", f"not JSON text ({exc})") from None
    return entry
