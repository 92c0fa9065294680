from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cgr_store import PostgresStore, SQLiteStore, Store
from cgr_store.testing import TemporaryPostgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryPostgres]:
    """One real PostgreSQL server for the whole run (started on first use, a few seconds);
    each test that needs one gets a fresh database in it (``pg_url``)."""
    with TemporaryPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def pg_template(postgres_server: TemporaryPostgres) -> str:
    """A database with cgr's schema, migrated once, that pg_store_url copies."""
    url = postgres_server.create_database("cgr_template")
    PostgresStore(url).close()  # migrates; a template must have no connection when copied
    return "cgr_template"


@pytest.fixture
def pg_url(postgres_server: TemporaryPostgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a new, empty database (no schema), dropped after the test."""
    name = f"t_{abs(hash(request.node.nodeid)) % 10**12}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
def pg_store_url(
    postgres_server: TemporaryPostgres, pg_template: str, request: pytest.FixtureRequest
) -> Iterator[str]:
    """The URL of a new database with cgr's schema (a copy of the template), dropped after."""
    name = f"s_{abs(hash(request.node.nodeid)) % 10**12}"
    url = postgres_server.create_database(name, template=pg_template)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every backend the contract suite runs against."""
    backend: Store
    if request.param == "sqlite-file":
        backend = SQLiteStore(tmp_path / "cgr.db")
    elif request.param == "sqlite-memory":
        backend = SQLiteStore.in_memory()
    else:
        backend = PostgresStore(request.getfixturevalue("pg_store_url"))
    with backend:
        yield backend


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cgr.db"
