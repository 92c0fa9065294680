"""A real SQLite file: WAL, schema versions, migrations and files that are not what we expect."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from cgr_store import (
    SCHEMA_VERSION,
    AgentSession,
    CorruptDatabase,
    Cursor,
    DatabaseUnavailable,
    HttpCacheEntry,
    NotADatabase,
    OutboxEntry,
    Run,
    RunKind,
    RunStatus,
    SchemaTooNew,
    SQLiteStore,
    StoreError,
    TriggerKind,
    new_run_id,
)

# Schema version 1 exactly as released, kept here verbatim (not imported) so that an edit to
# the migration in the package cannot silently change what this test migrates from.
V1_DDL = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, repo TEXT NOT NULL, target INTEGER NOT NULL, kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'claimed', 'running',
        'succeeded', 'failed', 'needs_human', 'cancelled', 'timed_out')),
    trigger_id TEXT, host TEXT, pid INTEGER, process_start_time REAL, branch TEXT,
    base_branch TEXT, pr_number INTEGER, pr_url TEXT, agent_session_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL, started_at TEXT,
    heartbeat_at TEXT, ended_at TEXT, outcome TEXT, error TEXT
);
CREATE UNIQUE INDEX runs_one_active_per_target ON runs (repo, target)
    WHERE status IN ('queued', 'claimed', 'running');
CREATE INDEX runs_by_status ON runs (status, created_at);
CREATE INDEX runs_by_created ON runs (created_at, id);
CREATE TABLE run_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    at TEXT NOT NULL, from_status TEXT, to_status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX run_events_by_run ON run_events (run_id, seq);
CREATE TABLE processed_triggers (
    kind TEXT NOT NULL, id TEXT NOT NULL, repo TEXT NOT NULL,
    run_id TEXT REFERENCES runs (id) ON DELETE SET NULL, processed_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE cursors (
    repo TEXT NOT NULL, stream TEXT NOT NULL, since TEXT, etag TEXT, updated_at TEXT NOT NULL,
    PRIMARY KEY (repo, stream)
);
PRAGMA application_id = 1667723891;
PRAGMA user_version = 1;
"""

V1_DATA = """
INSERT INTO runs (id, repo, target, kind, status, host, pid, branch, pr_number, attempt,
                  created_at, started_at, ended_at, outcome)
VALUES ('r-20261127-235959-000-aaaaaa', 'octo/repo', 12, 'issue', 'succeeded', 'box', 321,
        'cgr/issue-12', 40, 1, '2026-11-27T23:59:59.000000Z', '2026-11-28T00:00:01.000000Z',
        '2026-11-28T00:10:00.500000Z', 'pr_opened'),
       ('r-20261128-000100-000-bbbbbb', 'octo/repo', 13, 'issue_mention', 'running', 'box',
        654, NULL, NULL, 2, '2026-11-28T00:01:00.000000Z', '2026-11-28T00:01:02.000000Z',
        NULL, NULL);
INSERT INTO run_events (run_id, at, from_status, to_status, detail) VALUES
    ('r-20261127-235959-000-aaaaaa', '2026-11-27T23:59:59.000000Z', NULL, 'queued', 'created'),
    ('r-20261127-235959-000-aaaaaa', '2026-11-28T00:00:00.000000Z', 'queued', 'claimed', ''),
    ('r-20261127-235959-000-aaaaaa', '2026-11-28T00:00:01.000000Z', 'claimed', 'running', ''),
    ('r-20261127-235959-000-aaaaaa', '2026-11-28T00:10:00.500000Z', 'running', 'succeeded',
     'PR #40'),
    ('r-20261128-000100-000-bbbbbb', '2026-11-28T00:01:00.000000Z', NULL, 'queued', 'created');
INSERT INTO processed_triggers VALUES
    ('issue_comment', '9001', 'octo/repo', 'r-20261128-000100-000-bbbbbb',
     '2026-11-28T00:01:00.000000Z');
INSERT INTO cursors VALUES
    ('octo/repo', 'issue_comments', '2026-11-28T00:00:00.000000Z', 'W/"abc"',
     '2026-11-28T00:01:00.000000Z');
"""


def make_v1_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(V1_DDL)
        conn.executescript(V1_DATA)
        conn.commit()
    finally:
        conn.close()


def test_new_file_uses_wal_and_the_latest_schema(db_path: Path) -> None:
    with SQLiteStore(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION == 6
        assert store.path == str(db_path)
        assert repr(store) == f"SQLiteStore({str(db_path)!r})"
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_reopening_keeps_the_data(db_path: Path) -> None:
    with SQLiteStore(db_path) as store:
        run = store.create_run(Run(id=new_run_id(), repo="o/r", target=1, kind=RunKind.ISSUE))
    with SQLiteStore(db_path) as store:
        assert store.get_run(run.id) == run


def test_version_1_file_is_migrated_keeping_its_data(db_path: Path) -> None:
    make_v1_file(db_path)
    with SQLiteStore(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        done = store.get_run("r-20261127-235959-000-aaaaaa")
        assert done.status is RunStatus.SUCCEEDED
        assert (done.pid, done.branch, done.pr_number, done.outcome) == (
            321,
            "cgr/issue-12",
            40,
            "pr_opened",
        )
        assert done.cost_usd is None  # the new column, NULL for old rows
        assert [e.to_status for e in store.events(done.id)][-1] is RunStatus.SUCCEEDED
        assert len(store.events(done.id)) == 4
        running = store.get_run("r-20261128-000100-000-bbbbbb")
        assert running.attempt == 2
        assert [r.id for r in store.active_runs()] == [running.id]
        trigger = store.get_trigger(TriggerKind.ISSUE_COMMENT, "9001")
        assert trigger is not None
        assert trigger.run_id == running.id
        cursor = store.get_cursor("octo/repo", "issue_comments")
        assert cursor is not None
        assert cursor.etag == 'W/"abc"'
        # What version 2 added works on the migrated file.
        figured = store.transition(
            running.id, RunStatus.SUCCEEDED, cost_usd=0.3, input_tokens=5, output_tokens=6, turns=2
        )
        assert store.get_run(running.id) == figured
        store.set_agent_session(AgentSession(repo="octo/repo", target=13, session_id="s"))
        assert store.get_agent_session("octo/repo", 13) is not None
    with SQLiteStore(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.counts()[RunStatus.SUCCEEDED] == 2


# Schema version 2 as released: version 1 plus these statements, verbatim (not imported).
V2_DDL = (
    V1_DDL.replace("PRAGMA user_version = 1;", "")
    + """
ALTER TABLE runs ADD COLUMN cost_usd REAL;
ALTER TABLE runs ADD COLUMN input_tokens INTEGER;
ALTER TABLE runs ADD COLUMN output_tokens INTEGER;
ALTER TABLE runs ADD COLUMN turns INTEGER;
CREATE TABLE agent_sessions (
    repo TEXT NOT NULL, target INTEGER NOT NULL, session_id TEXT NOT NULL,
    run_id TEXT REFERENCES runs (id) ON DELETE SET NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (repo, target)
);
PRAGMA user_version = 2;
"""
)

V2_DATA = (
    V1_DATA
    + """
UPDATE runs SET cost_usd = 1.25, turns = 7 WHERE id = 'r-20261127-235959-000-aaaaaa';
INSERT INTO runs (id, repo, target, kind, status, branch, attempt, created_at, ended_at)
VALUES ('r-20261128-000200-000-cccccc', 'Octo/Repo', 41, 'pr_mention', 'failed',
        'cgr/issue-12', 1, '2026-11-28T00:02:00.000000Z', '2026-11-28T00:03:00.000000Z');
INSERT INTO run_events (run_id, at, from_status, to_status, detail) VALUES
    ('r-20261128-000200-000-cccccc', '2026-11-28T00:02:00.000000Z', NULL, 'queued', 'created'),
    ('r-20261128-000200-000-cccccc', '2026-11-28T00:03:00.000000Z', 'queued', 'failed', 'x');
INSERT INTO agent_sessions VALUES
    ('octo/repo', 12, 'sess-12', 'r-20261127-235959-000-aaaaaa', '2026-11-28T00:10:00.000000Z');
"""
)


def make_v2_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(V2_DDL)
        conn.executescript(V2_DATA)
        conn.commit()
    finally:
        conn.close()


def _query_plan(path: Path, sql: str, params: tuple[object, ...]) -> str:
    conn = sqlite3.connect(path)
    try:
        return " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    finally:
        conn.close()


def test_version_2_file_gets_the_target_and_branch_indexes_keeping_its_data(
    db_path: Path,
) -> None:
    make_v2_file(db_path)
    with SQLiteStore(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        done = store.get_run("r-20261127-235959-000-aaaaaa")
        assert (done.cost_usd, done.turns, done.pr_number) == (1.25, 7, 40)
        assert len(store.events(done.id)) == 4
        session = store.get_agent_session("octo/repo", 12)
        assert session is not None
        assert session.session_id == "sess-12"
        # The new lookups answer from the migrated rows, the repo's spelling aside.
        assert [r.id for r in store.runs_for_target("octo/repo", 12)] == [done.id]
        by_branch = store.run_for_branch("octo/repo", "cgr/issue-12")
        assert by_branch is not None
        assert by_branch.id == "r-20261128-000200-000-cccccc"
        issue_run = store.run_for_branch("octo/repo", "cgr/issue-12", kinds=[RunKind.ISSUE])
        assert issue_run == done
        assert store.counts()[RunStatus.FAILED] == 1
        # Version 4's outbox works on the migrated file.
        entry = OutboxEntry(kind="status_comment", key="final", payload="{}")
        assert store.put_outbox(done.id, entry).run_id == done.id
        assert [i.run_id for i in store.pending_outbox()] == [done.id]
    # SQLite really answers them from the new indexes, not by scanning the table.
    target_plan = _query_plan(
        db_path,
        "SELECT id FROM runs WHERE lower(repo) = lower(?) AND target = ?"
        " ORDER BY created_at DESC, id DESC",
        ("octo/repo", 12),
    )
    assert "USING INDEX runs_by_target" in target_plan
    assert "TEMP B-TREE" not in target_plan
    branch_plan = _query_plan(
        db_path,
        "SELECT id FROM runs WHERE lower(repo) = lower(?) AND branch = ?"
        " ORDER BY created_at DESC, id DESC LIMIT 1",
        ("octo/repo", "cgr/issue-12"),
    )
    assert "USING INDEX runs_by_branch" in branch_plan
    with SQLiteStore(db_path) as store:  # a second open finds nothing left to migrate
        assert store.schema_version == SCHEMA_VERSION
        assert len(store.recent_runs()) == 3


def test_migrated_timestamps_compare_correctly(db_path: Path) -> None:
    make_v1_file(db_path)
    now = datetime(2026, 11, 28, 0, 12, tzinfo=UTC)
    with SQLiteStore(db_path) as store:
        # The running run started at 00:01:02 and never sent a heartbeat.
        stale = store.stale_runs(timedelta(minutes=10), now=now)
        assert [r.id for r in stale] == ["r-20261128-000100-000-bbbbbb"]
        assert store.stale_runs(timedelta(minutes=11), now=now) == []


def test_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "cgr.db"
    with pytest.raises(DatabaseUnavailable) as info:
        SQLiteStore(path)
    assert info.value.path == str(path)
    assert str(tmp_path / "absent") in str(info.value)
    assert "create it" in str(info.value)
    assert not (tmp_path / "absent").exists()


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="directory"):
        SQLiteStore(tmp_path)


def assert_refused_untouched(path: Path, error: type[StoreError]) -> StoreError:
    before = path.read_bytes()
    siblings = set(path.parent.iterdir())
    with pytest.raises(error) as info:
        SQLiteStore(path)
    assert str(path) in str(info.value)
    assert "untouched" in str(info.value)
    assert path.read_bytes() == before
    assert set(path.parent.iterdir()) == siblings
    return info.value


def test_a_text_file_is_not_a_database(db_path: Path) -> None:
    db_path.write_text("these are my notes, not a database\n" * 200)
    assert_refused_untouched(db_path, NotADatabase)


def test_another_programs_database_is_refused(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO photos (name) VALUES ('cat.jpg')")
    conn.commit()
    conn.close()
    assert_refused_untouched(db_path, NotADatabase)


def _filled_database(path: Path) -> None:
    with SQLiteStore(path) as store:
        for target in range(150):
            run = Run(id=new_run_id(), repo="o/r", target=target, kind=RunKind.ISSUE)
            store.create_run(msgspec.structs.replace(run, error="x" * 300))


def test_a_damaged_page_is_reported_as_corrupt(db_path: Path) -> None:
    _filled_database(db_path)
    data = bytearray(db_path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[3 * page : 4 * page] = bytes(range(256)) * (page // 256)
    db_path.write_bytes(bytes(data))
    error = assert_refused_untouched(db_path, CorruptDatabase)
    assert "backup" in str(error)


def test_damage_found_later_is_reported_as_corrupt_too(db_path: Path) -> None:
    _filled_database(db_path)
    data = bytearray(db_path.read_bytes())
    data[1 * 4096 : 2 * 4096] = bytes(range(256)) * 16  # page 2: the root of the runs table
    db_path.write_bytes(bytes(data))
    # Without the check at open, the damaged page is met by a query, with the same error.
    with SQLiteStore(db_path, quick_check=False) as store, pytest.raises(CorruptDatabase):
        store.recent_runs(limit=1000)
    assert db_path.read_bytes() == bytes(data)


def test_check_file_finds_damage_done_while_the_store_is_open(db_path: Path) -> None:
    """A long-lived process (the daemon) checks its open file now and then, from a thread."""
    _filled_database(db_path)
    with SQLiteStore(db_path) as store:
        checker = ThreadPoolExecutor(1)
        checker.submit(store.check_file).result()  # a sound file: nothing raised
        with db_path.open("r+b") as f:  # page 4: runs no query below reads
            f.seek(3 * 4096)
            f.write(bytes(range(256)) * 16)
        with pytest.raises(CorruptDatabase, match="backup"):
            checker.submit(store.check_file).result()
        checker.shutdown()
        assert store.get_run(store.recent_runs(limit=1)[0].id)  # the store itself still works


def test_an_event_not_durable_commits_at_normal_and_the_next_commit_is_full(
    db_path: Path,
) -> None:
    """WAL at NORMAL appends without an fsync; every other commit stays FULL."""
    with SQLiteStore(db_path) as store:
        run = store.create_run(Run(id=new_run_id(), repo="o/r", target=1, kind=RunKind.ISSUE))
        seen: list[str] = []
        conn = store._connection()
        conn.set_trace_callback(seen.append)
        store.record_event(run.id, "github comment #1 attempt 1: ok", durable=False)
        store.record_event(run.id, "requeued")
        conn.set_trace_callback(None)
        assert [e.detail for e in store.events(run.id)][-2:] == [
            "github comment #1 attempt 1: ok", "requeued",
        ]  # fmt: skip
    said = [s for s in seen if "synchronous" in s or s.startswith(("BEGIN", "COMMIT"))]
    assert said == [
        "PRAGMA synchronous = NORMAL", "BEGIN IMMEDIATE", "COMMIT", "PRAGMA synchronous = FULL",
        "BEGIN IMMEDIATE", "COMMIT",
    ]  # fmt: skip


def test_a_truncated_file_is_reported_as_corrupt(db_path: Path) -> None:
    _filled_database(db_path)
    db_path.write_bytes(db_path.read_bytes()[: 3 * 4096])
    assert_refused_untouched(db_path, CorruptDatabase)


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    with SQLiteStore(db_path):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    error = assert_refused_untouched(db_path, SchemaTooNew)
    assert isinstance(error, SchemaTooNew)
    assert (error.found, error.supported) == (99, SCHEMA_VERSION)
    assert "upgrade cgr-store" in str(error)


def test_integrity_check_passes_on_a_healthy_file(db_path: Path) -> None:
    _filled_database(db_path)
    with SQLiteStore(db_path) as store:
        store.integrity_check()


def test_a_closed_store_says_so(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    store.close()
    store.close()
    with pytest.raises(DatabaseUnavailable, match="closed"):
        store.counts()


def test_unchanged_cursors_and_cache_entries_write_nothing_to_the_file(db_path: Path) -> None:
    cursors = [Cursor(repo=f"o/r{i}", stream="issues", etag=f'"{i}"') for i in range(50)]
    entries = [HttpCacheEntry(key=f"/r{i}", etag=f'"{i}"', body=b"[]") for i in range(50)]
    with SQLiteStore(db_path) as store:
        assert store.set_cursors(cursors) == 50
        assert store.http_cache_put_many(entries) == 50
        wal = db_path.with_name(db_path.name + "-wal")
        before = (db_path.read_bytes(), wal.read_bytes())
        # An idle poll of 50 repositories: no write transaction, so no fsync either.
        assert store.set_cursors(cursors) == 0
        assert store.http_cache_put_many(entries) == 0
        assert (db_path.read_bytes(), wal.read_bytes()) == before
        assert store.set_cursors([Cursor(repo="o/r1", stream="issues", etag='"x"')]) == 1
        assert wal.read_bytes() != before[1]
