from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cgr_store import SQLiteStore, Store


@pytest.fixture(params=["sqlite-file", "sqlite-memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every backend the contract suite runs against (PostgreSQL joins here later)."""
    backend: Store
    if request.param == "sqlite-file":
        backend = SQLiteStore(tmp_path / "cgr.db")
    else:
        backend = SQLiteStore.in_memory()
    with backend:
        yield backend


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cgr.db"
