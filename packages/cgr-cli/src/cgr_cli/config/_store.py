"""The store a configuration names: SQLite at a file path, PostgreSQL at a URI.

Every command opens its store here, so each one works on both backends; the choice is
``$CGR_DATABASE_URL`` (a ``postgresql://`` URI) or else ``paths.database`` (a URI or a
path). A missing psycopg (``cgr-cli[postgres]`` not installed) is cgr-store's
``DatabaseUnavailable`` naming the extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cgr_cli.config._model import Config
    from cgr_store import Store


def is_fleet(config: Config) -> bool:
    """True when the store is PostgreSQL: hosts share it and coordinate through leases."""
    return config.database_url is not None


def database_location(config: Config) -> str:
    """What to name in messages: the URI without its password, or the file path."""
    from cgr_store import redact_url

    url = config.database_url
    return redact_url(url) if url is not None else str(config.database)


def store_exists(config: Config) -> bool:
    """False only for a SQLite file not created yet (a server's database always 'exists':
    connecting tells)."""
    return is_fleet(config) or config.database.exists()


def open_config_store(config: Config, **sqlite_options: Any) -> Store:
    """The configured store, opened (a SQLite file's directory is created first).

    ``sqlite_options`` (e.g. ``busy_deadline``) apply to SQLite only.
    """
    from cgr_store import open_store

    url = config.database_url
    if url is not None:
        return open_store(url)
    config.database.parent.mkdir(parents=True, exist_ok=True)
    return open_store(config.database, **sqlite_options)
