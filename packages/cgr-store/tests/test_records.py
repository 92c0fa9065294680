from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from cgr_store import Cursor, ProcessedTrigger, Run, RunKind, RunStatus, TriggerKind, new_run_id


def test_run_defaults() -> None:
    run = Run(id="r-1", repo="o/r", target=7, kind=RunKind.ISSUE)
    assert run.status is RunStatus.QUEUED
    assert run.attempt == 1
    assert run.created_at.tzinfo is UTC
    assert run.pid is None
    assert run.cost_usd is None


def test_records_are_frozen_and_keyword_only() -> None:
    run = Run(id="r-1", repo="o/r", target=7, kind=RunKind.ISSUE)
    with pytest.raises(AttributeError):
        run.status = RunStatus.RUNNING  # type: ignore[misc]
    with pytest.raises(TypeError):
        Run("r-1", "o/r", 7, RunKind.ISSUE)  # type: ignore[misc]
    assert hash(run) == hash(msgspec.structs.replace(run))


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="nonsense"):
        msgspec.convert(
            {"id": "r", "repo": "o/r", "target": 1, "kind": "issue", "nonsense": 1}, type=Run
        )


def test_old_records_without_new_fields_still_decode() -> None:
    # A record as schema version 1 wrote it: no cost/tokens/turns fields.
    old = msgspec.json.encode(
        {"id": "r", "repo": "o/r", "target": 1, "kind": "pr_mention", "status": "running"}
    )
    run = msgspec.json.decode(old, type=Run)
    assert run.kind is RunKind.PR_MENTION
    assert run.status is RunStatus.RUNNING
    assert run.turns is None


def test_json_round_trip() -> None:
    run = Run(id=new_run_id(), repo="o/r", target=3, kind=RunKind.REVIEW_COMMENT, cost_usd=0.25)
    assert msgspec.json.decode(msgspec.json.encode(run), type=Run) == run
    trigger = ProcessedTrigger(kind=TriggerKind.WEBHOOK_DELIVERY, id="abc", repo="o/r")
    assert msgspec.json.decode(msgspec.json.encode(trigger), type=ProcessedTrigger) == trigger
    cursor = Cursor(repo="o/r", stream="issues", etag='W/"x"')
    assert msgspec.json.decode(msgspec.json.encode(cursor), type=Cursor) == cursor


def test_run_ids_have_the_documented_shape_and_sort_by_time() -> None:
    start = datetime(2026, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    ids = [new_run_id(start + timedelta(milliseconds=i)) for i in range(3)]
    assert ids[0].startswith("r-20261231-235959-999-")
    assert ids[1].startswith("r-20270101-000000-000-")
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"r-\d{8}-\d{6}-\d{3}-[0-9a-f]{6}", i) for i in ids)
    assert len({new_run_id() for _ in range(1000)}) == 1000
