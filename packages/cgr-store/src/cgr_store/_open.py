"""Choosing a backend from one ``database`` setting."""

from __future__ import annotations

import os
from typing import Any

from ._protocol import Store
from ._urls import is_postgres_url

__all__ = ["open_store"]


def open_store(database: str | os.PathLike[str], **options: Any) -> Store:
    """The store ``database`` names: PostgresStore for a ``postgresql://`` or
    ``postgres://`` URI (any libpq URI, e.g. ``postgresql://cgr@/cgr?host=/run/postgresql``
    for a unix socket), SQLiteStore for anything else, taken as a file path.
    ``options`` go to the backend's constructor."""
    if is_postgres_url(database):
        from ._postgres import PostgresStore

        return PostgresStore(str(database), **options)
    from ._sqlite import SQLiteStore

    return SQLiteStore(database, **options)
