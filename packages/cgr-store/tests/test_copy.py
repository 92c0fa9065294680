"""copy_store: every record from one store into another, SQLite to PostgreSQL and back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cgr_store import (
    AgentSession,
    CopyTargetNotEmpty,
    Cursor,
    HttpCacheEntry,
    OutboxEntry,
    PostgresStore,
    ProcessedTrigger,
    Run,
    RunKind,
    RunStatus,
    SQLiteStore,
    TriggerKind,
    copy_store,
    new_run_id,
)

T0 = datetime(2026, 11, 30, 23, 59, 58, 123456, tzinfo=UTC)


def fill(store: SQLiteStore | PostgresStore) -> None:
    for n in range(12):
        run = Run(
            id=new_run_id(T0 + timedelta(seconds=n)), repo=f"octo/r{n % 3}", target=n,
            kind=RunKind.ISSUE_MENTION, created_at=T0 + timedelta(seconds=n), branch=f"cgr/{n}",
        )  # fmt: skip
        trigger = ProcessedTrigger(kind=TriggerKind.ISSUE_COMMENT, id=str(1000 + n), repo=run.repo)
        store.create_run(run, trigger=trigger)
        if n % 2:
            store.transition(run.id, RunStatus.CLAIMED, host="box")
            store.transition(run.id, RunStatus.RUNNING, pid=n, process_start_time=n + 0.25)
            report = OutboxEntry(kind="status_comment", key="final", payload=f'{{"n": {n}}}')
            store.transition(
                run.id, RunStatus.SUCCEEDED, outbox=[report], cost_usd=n / 7, input_tokens=2**40
            )
        store.set_agent_session(
            AgentSession(repo=run.repo, target=n, session_id=f"s-{n}", run_id=run.id)
        )
    store.mark_trigger_processed(
        ProcessedTrigger(kind=TriggerKind.WEBHOOK_DELIVERY, id="guid", repo="octo/r0")
    )
    store.set_cursors([Cursor(repo=f"octo/r{i}", stream="issues", etag=f'"{i}"') for i in range(3)])
    store.http_cache_put_many(
        [HttpCacheEntry(key=f"/r{i}", etag=f'"{i}"', body=bytes(range(256))) for i in range(3)]
    )
    delivered = store.pending_outbox(limit=1)[0]
    store.record_outbox_failure(delivered.id, "502")
    store.mark_outbox_delivered(delivered.id)


def snapshot(store: SQLiteStore | PostgresStore) -> dict[str, object]:
    runs = store.recent_runs(limit=100)
    return {
        "runs": runs,
        "events": [store.events(r.id) for r in runs],
        "outbox": [
            [(i.key, i.payload, i.attempts, i.delivered_at) for i in store.outbox_for_run(r.id)]
            for r in runs
        ],
        "sessions": [store.get_agent_session(r.repo, r.target) for r in runs],
        "triggers": [store.get_trigger(TriggerKind.ISSUE_COMMENT, str(1000 + n)) for n in range(12)]
        + [store.get_trigger(TriggerKind.WEBHOOK_DELIVERY, "guid")],
        "cursors": store.get_cursors(),
        "cache": store.http_cache_get_many(),
        "counts": store.counts(),
    }


def test_sqlite_to_postgres_and_back(tmp_path: Path, pg_store_url: str) -> None:
    with SQLiteStore(tmp_path / "a.db") as source, PostgresStore(pg_store_url) as middle:
        fill(source)
        expected = snapshot(source)
        counts = copy_store(source, middle)
        assert counts == source.table_counts()
        assert counts["runs"] == 12
        assert counts["run_events"] == 12 + 6 * 3
        assert (counts["outbox"], counts["http_cache"], counts["processed_triggers"]) == (6, 3, 13)
        assert snapshot(middle) == expected
        # The copy is a working store: the queries and the status machine go on.
        assert middle.run_for_branch("OCTO/r1", "cgr/4") is not None
        queued = middle.runs_by_status(RunStatus.QUEUED)
        assert len(queued) == 6
        middle.transition(queued[0].id, RunStatus.CLAIMED)
        with SQLiteStore(tmp_path / "b.db") as back:
            copy_store(middle, back)
            assert snapshot(back) == snapshot(middle)


def test_copy_refuses_a_target_with_records(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "a.db") as source, SQLiteStore(tmp_path / "b.db") as target:
        fill(source)
        target.set_cursor(Cursor(repo="o/r", stream="issues"))
        with pytest.raises(CopyTargetNotEmpty) as info:
            copy_store(source, target)
        assert (info.value.table, info.value.rows) == ("cursors", 1)
        assert str(tmp_path / "b.db") in str(info.value)
        assert target.recent_runs() == []  # nothing was written
