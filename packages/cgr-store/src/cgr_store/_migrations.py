"""The SQLite schema, as numbered forward migrations.

Policy:
- The version lives in ``PRAGMA user_version``; ``PRAGMA application_id`` marks the file as
  cgr's, so another program's database is never mistaken for an empty one.
- Migrations only go forward and are append-only: a released step is never edited, a change
  is a new step. Each step runs with the version bump in one ``BEGIN IMMEDIATE``
  transaction, so a crash leaves the file at the old or the new version, never in between.
- A new column gets a default (NULL) so old rows stay valid, matching the defaults of the
  new msgspec fields (see _records.py).
- A file with a version newer than LATEST_VERSION is refused (SchemaTooNew), never touched.

Timestamps are TEXT in one fixed-width UTC format (see _time.py) so that ``<`` on them is a
correct time comparison.
"""

from __future__ import annotations

import re

__all__ = ["APPLICATION_ID", "LATEST_VERSION", "MIGRATIONS", "postgres_statements"]

APPLICATION_ID = 0x63677273
"""``PRAGMA application_id`` of a cgr database ("cgrs")."""

_ACTIVE = "('queued', 'claimed', 'running')"

_V1: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id                 TEXT PRIMARY KEY,
        repo               TEXT NOT NULL,
        target             INTEGER NOT NULL,
        kind               TEXT NOT NULL,
        status             TEXT NOT NULL CHECK (status IN ('queued', 'claimed', 'running',
                               'succeeded', 'failed', 'needs_human', 'cancelled', 'timed_out')),
        trigger_id         TEXT,
        host               TEXT,
        pid                INTEGER,
        process_start_time REAL,
        branch             TEXT,
        base_branch        TEXT,
        pr_number          INTEGER,
        pr_url             TEXT,
        agent_session_id   TEXT,
        attempt            INTEGER NOT NULL DEFAULT 1,
        created_at         TEXT NOT NULL,
        started_at         TEXT,
        heartbeat_at       TEXT,
        ended_at           TEXT,
        outcome            TEXT,
        error              TEXT
    )
    """,
    # The heart of "never two runs on one target": at most one active run per (repo, target),
    # enforced by SQLite itself whatever the callers do.
    f"""
    CREATE UNIQUE INDEX runs_one_active_per_target ON runs (repo, target)
        WHERE status IN {_ACTIVE}
    """,
    "CREATE INDEX runs_by_status ON runs (status, created_at)",
    "CREATE INDEX runs_by_created ON runs (created_at, id)",
    """
    CREATE TABLE run_events (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        at          TEXT NOT NULL,
        from_status TEXT,
        to_status   TEXT NOT NULL,
        detail      TEXT NOT NULL DEFAULT ''
    )
    """,
    "CREATE INDEX run_events_by_run ON run_events (run_id, seq)",
    """
    CREATE TABLE processed_triggers (
        kind         TEXT NOT NULL,
        id           TEXT NOT NULL,
        repo         TEXT NOT NULL,
        run_id       TEXT REFERENCES runs (id) ON DELETE SET NULL,
        processed_at TEXT NOT NULL,
        PRIMARY KEY (kind, id)
    )
    """,
    """
    CREATE TABLE cursors (
        repo       TEXT NOT NULL,
        stream     TEXT NOT NULL,
        since      TEXT,
        etag       TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (repo, stream)
    )
    """,
)

# Version 2: the agent's figures per run (cost, tokens, turns) and the per-target agent
# session table, so a follow-up mention can resume the conversation of the previous run.
_V2: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN cost_usd REAL",
    "ALTER TABLE runs ADD COLUMN input_tokens INTEGER",
    "ALTER TABLE runs ADD COLUMN output_tokens INTEGER",
    "ALTER TABLE runs ADD COLUMN turns INTEGER",
    """
    CREATE TABLE agent_sessions (
        repo       TEXT NOT NULL,
        target     INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        run_id     TEXT REFERENCES runs (id) ON DELETE SET NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (repo, target)
    )
    """,
)

# Version 3: indexes for the questions cgr asks of one target or one branch (the runs of an
# issue for the pre-claim backoff; the issue behind a pull request's head branch), which
# were answered by scanning recent runs. ``lower(repo)`` because GitHub names are
# case-insensitive: ``Octo/Repo`` and ``octo/repo`` are one repository. ``created_at, id``
# last, so "newest first" reads the index backwards without a sort.
_V3: tuple[str, ...] = (
    "CREATE INDEX runs_by_target ON runs (lower(repo), target, created_at, id)",
    "CREATE INDEX runs_by_branch ON runs (lower(repo), branch, created_at, id)",
)

# Version 4: the outbox of GitHub writes (a run's final report), recorded before they are
# sent and marked delivered after, so a report GitHub did not take is sent by a later pass.
# UNIQUE (run_id, key): recording the same report twice keeps one. The partial index holds
# only what is pending, so finding it stays cheap however many were delivered.
_V4: tuple[str, ...] = (
    """
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        kind            TEXT NOT NULL,
        key             TEXT NOT NULL,
        payload         TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        last_attempt_at TEXT,
        delivered_at    TEXT,
        UNIQUE (run_id, key)
    )
    """,
    "CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL",
)

# Version 5: discovery's HTTP cache (ETag, Last-Modified and body per URL), so that the
# idle poll of a fresh process (every `cgr tick` is one) sends conditional requests, which
# GitHub answers with 304 at no rate-limit cost.
_V5: tuple[str, ...] = (
    """
    CREATE TABLE http_cache (
        key           TEXT PRIMARY KEY,
        etag          TEXT,
        last_modified TEXT,
        body          BLOB NOT NULL,
        updated_at    TEXT NOT NULL
    )
    """,
)

# Version 6: a fleet of runner hosts sharing one store (PostgreSQL). Each host holds a lease
# row; a run records the epoch of the lease it was claimed under (fencing); the leaders
# table says which host polls GitHub for the fleet. The partial index is the queue.
_V6: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN lease_epoch INTEGER",
    """
    CREATE TABLE hosts (
        host_id          TEXT PRIMARY KEY,
        epoch            INTEGER NOT NULL,
        acquired_at      TEXT NOT NULL,
        lease_expires_at TEXT NOT NULL,
        heartbeat_at     TEXT NOT NULL,
        slots            INTEGER,
        running          INTEGER
    )
    """,
    """
    CREATE TABLE leaders (
        name       TEXT PRIMARY KEY,
        host_id    TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX runs_queue ON runs (created_at, id) WHERE status = 'queued'",
    f"CREATE INDEX runs_active_by_host ON runs (host) WHERE status IN {_ACTIVE}",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6}
"""Statements that take a file from version ``n - 1`` to version ``n``."""

LATEST_VERSION = max(MIGRATIONS)


# The same steps for PostgreSQL, translated word by word rather than written twice, so the
# two schemas cannot drift apart. The translation is small because the schema keeps to what
# both engines share; it maps only the column types:
_POSTGRES_TYPES: tuple[tuple[str, str], ...] = (
    # An id the database assigns; BY DEFAULT, so copy_store could also give one explicitly.
    (
        r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (r"\bINTEGER\b", "BIGINT"),  # SQLite integers are 64-bit; PostgreSQL's INTEGER is not
    (r"\bREAL\b", "DOUBLE PRECISION"),  # SQLite REAL is 8 bytes; PostgreSQL's is 4
    (r"\bBLOB\b", "BYTEA"),
    # Byte order, as SQLite compares: the fixed-width timestamps then order as times
    # whatever the database's locale, and ids sort the same on both engines.
    (r"\bTEXT\b", 'TEXT COLLATE "C"'),
)


def postgres_statements(version: int) -> tuple[str, ...]:
    """MIGRATIONS[version] in PostgreSQL's dialect."""
    statements = []
    for statement in MIGRATIONS[version]:
        translated = statement
        for pattern, replacement in _POSTGRES_TYPES:
            translated = re.sub(pattern, replacement, translated)
        statements.append(translated)
    return tuple(statements)
