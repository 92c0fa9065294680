"""Time handling: aware UTC datetimes in Python, one fixed-width text format in the database.

The database stores ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always 27 characters, always UTC), so
SQL's plain string comparison orders timestamps correctly, also across day, month and year
boundaries, and the file stays readable with the ``sqlite3`` shell.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["from_db", "to_db", "utcnow"]

_DB_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (microsecond precision)."""
    return datetime.now(UTC)


def to_db(value: datetime) -> str:
    """Format an aware datetime for storage; naive datetimes are refused (their zone is a guess)."""
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime, e.g. utcnow()")
        value = value.astimezone(UTC)
    # isoformat() with a fixed timespec is strftime(_DB_FORMAT) without the "Z", at a
    # fraction of the cost (this runs for every timestamp of every row written).
    text = value.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z"
    if len(text) != 27:  # years before 1000 would break the fixed width and so the ordering
        raise ValueError(f"datetime {value!r} is outside the storable range")
    return text


def from_db(text: str) -> datetime:
    """Parse a stored timestamp back to an aware UTC datetime."""
    return datetime.strptime(text, _DB_FORMAT).replace(tzinfo=UTC)
