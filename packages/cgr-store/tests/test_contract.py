"""The behaviour every Store backend must have; runs once per backend (see conftest.store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from cgr_store import (
    ActiveRunExists,
    AgentSession,
    Cursor,
    HttpCacheEntry,
    IllegalTransition,
    InvalidUpdate,
    OutboxEntry,
    OutboxItemNotFound,
    PostgresStore,
    ProcessedTrigger,
    Run,
    RunChanged,
    RunExists,
    RunKind,
    RunNotFound,
    RunStatus,
    Store,
    TriggerAlreadyProcessed,
    TriggerKind,
    new_run_id,
    utcnow,
)


def make_run(target: int = 1, repo: str = "octo/repo", **fields: object) -> Run:
    return Run(id=new_run_id(), repo=repo, target=target, kind=RunKind.ISSUE, **fields)  # type: ignore[arg-type]


def finish(store: Store, run_id: str, to: RunStatus = RunStatus.SUCCEEDED) -> Run:
    store.transition(run_id, RunStatus.CLAIMED)
    store.transition(run_id, RunStatus.RUNNING)
    return store.transition(run_id, to)


def test_store_satisfies_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_create_and_get(store: Store) -> None:
    run = make_run(branch="cgr/issue-1", host="box")
    created = store.create_run(run)
    assert created == run
    assert store.get_run(run.id) == run
    [event] = store.events(run.id)
    assert (event.from_status, event.to_status, event.detail) == (None, RunStatus.QUEUED, "created")
    assert event.at == run.created_at


def test_unknown_run(store: Store) -> None:
    with pytest.raises(RunNotFound) as info:
        store.get_run("r-nope")
    assert info.value.run_id == "r-nope"
    with pytest.raises(RunNotFound):
        store.events("r-nope")
    with pytest.raises(RunNotFound):
        store.transition("r-nope", RunStatus.CLAIMED)
    with pytest.raises(RunNotFound):
        store.update_run("r-nope", pid=1)
    with pytest.raises(RunNotFound):
        store.heartbeat("r-nope")


def test_duplicate_id_is_refused(store: Store) -> None:
    run = store.create_run(make_run(target=1))
    with pytest.raises(RunExists):
        store.create_run(msgspec.structs.replace(run, target=2))


def test_new_runs_must_be_queued(store: Store) -> None:
    with pytest.raises(InvalidUpdate, match="queued"):
        store.create_run(make_run(status=RunStatus.RUNNING))


def test_wrong_types_are_refused_with_the_field_name(store: Store) -> None:
    with pytest.raises(InvalidUpdate) as info:
        store.create_run(make_run(target="12"))
    assert info.value.field == "target"
    run = store.create_run(make_run())
    with pytest.raises(InvalidUpdate) as info:
        store.update_run(run.id, pr_number="seven")
    assert info.value.field == "pr_number"
    with pytest.raises(InvalidUpdate) as info:
        store.update_run(run.id, outcome=object())
    assert info.value.field == "outcome"
    with pytest.raises(InvalidUpdate, match="naive"):
        store.update_run(run.id, heartbeat_at=datetime(2026, 1, 1))
    assert store.get_run(run.id) == run


def test_one_active_run_per_target(store: Store) -> None:
    first = store.create_run(make_run(target=5))
    with pytest.raises(ActiveRunExists) as info:
        store.create_run(make_run(target=5))
    assert info.value.existing_run_id == first.id
    assert (info.value.repo, info.value.target) == ("octo/repo", 5)
    # Other targets and other repositories are independent.
    store.create_run(make_run(target=6))
    store.create_run(make_run(target=5, repo="octo/other"))
    # Once the first ends, the target is free again, for a retry.
    finish(store, first.id, RunStatus.FAILED)
    retry = store.create_run(make_run(target=5, attempt=2))
    assert [r.id for r in store.active_runs() if r.target == 5 and r.repo == "octo/repo"] == [
        retry.id
    ]


def test_active_run_exists_for_claimed_and_running_too(store: Store) -> None:
    run = store.create_run(make_run(target=9))
    for status in (RunStatus.CLAIMED, RunStatus.RUNNING):
        store.transition(run.id, status)
        with pytest.raises(ActiveRunExists):
            store.create_run(make_run(target=9))


def test_full_lifecycle_records_every_event(store: Store) -> None:
    run = store.create_run(make_run())
    claimed = store.transition(run.id, RunStatus.CLAIMED, detail="labelled", host="box")
    assert claimed.status is RunStatus.CLAIMED
    assert claimed.host == "box"
    running = store.transition(run.id, RunStatus.RUNNING, pid=4242, process_start_time=1234.5)
    assert running.started_at is not None
    assert running.ended_at is None
    done = store.transition(
        run.id,
        RunStatus.SUCCEEDED,
        detail="PR opened",
        outcome="pr_opened",
        pr_number=17,
        pr_url="https://github.com/octo/repo/pull/17",
        cost_usd=0.42,
        input_tokens=1000,
        output_tokens=200,
        turns=6,
    )
    assert done.ended_at is not None
    assert done.started_at == running.started_at
    assert store.get_run(run.id) == done
    events = store.events(run.id)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, RunStatus.QUEUED),
        (RunStatus.QUEUED, RunStatus.CLAIMED),
        (RunStatus.CLAIMED, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.SUCCEEDED),
    ]
    assert [e.detail for e in events] == ["created", "labelled", "", "PR opened"]
    assert [e.at for e in events] == sorted(e.at for e in events)
    fetched, history = store.run_with_events(run.id)
    assert (fetched, history) == (done, events)


@pytest.mark.parametrize(
    "end", [RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.NEEDS_HUMAN, RunStatus.TIMED_OUT]
)
@pytest.mark.parametrize("reach", [[], [RunStatus.CLAIMED]])
def test_runs_can_end_before_running(store: Store, reach: list[RunStatus], end: RunStatus) -> None:
    run = store.create_run(make_run())
    for status in reach:
        store.transition(run.id, status)
    ended = store.transition(run.id, end, detail="fork failed", error="boom")
    assert ended.status is end
    assert ended.ended_at is not None
    assert ended.error == "boom"
    assert not store.active_runs()


def test_illegal_transitions_raise_and_write_nothing(store: Store) -> None:
    run = store.create_run(make_run())
    with pytest.raises(IllegalTransition) as info:
        store.transition(run.id, RunStatus.SUCCEEDED, outcome="x")
    assert (info.value.from_status, info.value.to_status) == ("queued", "succeeded")
    assert store.get_run(run.id) == run
    assert len(store.events(run.id)) == 1

    done = finish(store, run.id, RunStatus.CANCELLED)
    for to in RunStatus:
        with pytest.raises(IllegalTransition):
            store.transition(done.id, to, detail="again", error="late")
    assert store.get_run(run.id) == done
    assert len(store.events(run.id)) == 4


def test_transition_with_bad_field_writes_nothing(store: Store) -> None:
    run = store.create_run(make_run())
    with pytest.raises(InvalidUpdate):
        store.transition(run.id, RunStatus.CLAIMED, pid="not a pid")
    with pytest.raises(InvalidUpdate):
        store.transition(run.id, RunStatus.CLAIMED, repo="elsewhere")
    with pytest.raises(InvalidUpdate):
        store.transition(run.id, "exploded")  # type: ignore[arg-type]
    assert store.get_run(run.id) == run
    assert len(store.events(run.id)) == 1


def test_transition_accepts_status_strings(store: Store) -> None:
    run = store.create_run(make_run())
    assert store.transition(run.id, "claimed").status is RunStatus.CLAIMED  # type: ignore[arg-type]


def test_released_claim_goes_back_to_the_queue(store: Store) -> None:
    run = store.create_run(make_run())
    store.transition(run.id, RunStatus.CLAIMED, host="box")
    back = store.transition(run.id, RunStatus.QUEUED, detail="draining")
    assert back.status is RunStatus.QUEUED
    assert [r.id for r in store.active_runs()] == [run.id]


def test_record_event_appends_to_the_history_without_a_status_change(store: Store) -> None:
    run = store.create_run(make_run())
    noted = store.record_event(run.id, "github add_labels #1 attempt 1: ok")
    assert (noted.from_status, noted.to_status) == (RunStatus.QUEUED, RunStatus.QUEUED)
    finish(store, run.id)
    store.record_event(run.id, "github comment #1 attempt 2: found")
    events = store.events(run.id)
    assert [e.detail for e in events if e.from_status is e.to_status] == [
        "github add_labels #1 attempt 1: ok",
        "github comment #1 attempt 2: found",
    ]
    assert events[-1].to_status is RunStatus.SUCCEEDED  # a terminal run stays terminal
    assert store.get_run(run.id).status is RunStatus.SUCCEEDED
    with pytest.raises(RunNotFound):
        store.record_event("r-nope", "x")


def test_an_event_recorded_without_waiting_for_the_disk_is_history_all_the_same(
    store: Store,
) -> None:
    run = store.create_run(make_run())

    def setting() -> object:  # PostgreSQL's, for this session
        assert isinstance(store, PostgresStore)
        return store._read(lambda c: c.execute("SHOW synchronous_commit").fetchone()[0])

    if isinstance(store, PostgresStore):  # tests' servers run at off: this session at on
        store._read(lambda c: c.execute("SET synchronous_commit = on"))
        assert setting() == "on"
    store.record_event(run.id, "github comment #1 attempt 1: ok", durable=False)
    store.transition(run.id, RunStatus.CLAIMED, host="box")  # durable: covers it
    details = [e.detail for e in store.events(run.id)]
    assert details[1:] == ["github comment #1 attempt 1: ok", details[2]]
    assert store.get_run(run.id).status is RunStatus.CLAIMED
    with pytest.raises(RunNotFound):
        store.record_event("r-nope", "x", durable=False)
    if isinstance(store, PostgresStore):  # SET LOCAL: that transaction only
        assert setting() == "on"


def test_update_run_with_expect_is_a_compare_and_set(store: Store) -> None:
    """``expect``: the fields the run must still have, checked in the write's transaction;
    a run that changed is not written (RunChanged names the field), an unknown field is
    refused before anything is read."""
    run = store.create_run(make_run())
    store.update_run(run.id, pid=7, process_start_time=1.0)
    updated = store.update_run(
        run.id, expect={"status": RunStatus.QUEUED, "pid": 7}, pid=None, process_start_time=None
    )
    assert (updated.pid, updated.process_start_time) == (None, None)
    with pytest.raises(RunChanged) as info:
        store.update_run(run.id, expect={"status": RunStatus.QUEUED, "pid": 7}, pid=8)
    assert (info.value.field, info.value.expected, info.value.actual) == ("pid", 7, None)
    store.transition(run.id, RunStatus.CLAIMED, pid=9)
    with pytest.raises(RunChanged) as info:
        store.update_run(run.id, expect={"status": RunStatus.QUEUED}, pid=10)
    assert info.value.field == "status"
    assert store.get_run(run.id).pid == 9  # nothing written by the refused updates
    with pytest.raises(InvalidUpdate):
        store.update_run(run.id, expect={"nonsense": 1}, pid=10)


def test_update_run_sets_only_non_status_fields(store: Store) -> None:
    run = store.create_run(make_run())
    updated = store.update_run(
        run.id,
        pid=99,
        process_start_time=5.0,
        branch="cgr/1",
        base_branch="main",
        agent_session_id="sess-1",
        cost_usd=1.5,
        turns=3,
    )
    assert (updated.pid, updated.branch, updated.agent_session_id) == (99, "cgr/1", "sess-1")
    assert store.get_run(run.id) == updated
    assert len(store.events(run.id)) == 1  # not a status change
    for field in ("status", "id", "repo", "target", "kind", "created_at", "nonsense"):
        with pytest.raises(InvalidUpdate) as info:
            store.update_run(run.id, **{field: None})
        assert info.value.field == field
    # Figures may still be recorded after the run ended.
    finish(store, run.id)
    assert store.update_run(run.id, output_tokens=10).output_tokens == 10


def test_heartbeat(store: Store) -> None:
    run = store.create_run(make_run())
    store.transition(run.id, RunStatus.CLAIMED)
    store.transition(run.id, RunStatus.RUNNING)
    moment = utcnow()
    assert store.heartbeat(run.id, at=moment) is RunStatus.RUNNING
    assert store.get_run(run.id).heartbeat_at == moment
    # A runner learns from its heartbeat that the run was cancelled meanwhile.
    store.transition(run.id, RunStatus.CANCELLED, detail="cgr cancel")
    assert store.heartbeat(run.id) is RunStatus.CANCELLED
    assert store.get_run(run.id).heartbeat_at == moment


def test_queries(store: Store) -> None:
    a = store.create_run(make_run(target=1, host="alpha"))
    b = store.create_run(make_run(target=2, host="beta"))
    c = store.create_run(make_run(target=3, host="alpha"))
    store.transition(b.id, RunStatus.CLAIMED)
    finish(store, c.id, RunStatus.FAILED)
    assert [r.id for r in store.active_runs()] == [a.id, b.id]
    assert [r.id for r in store.active_runs(host="alpha")] == [a.id]
    assert [r.id for r in store.active_runs(host="nobody")] == []
    assert [r.id for r in store.runs_by_status(RunStatus.FAILED)] == [c.id]
    assert [r.id for r in store.runs_by_status(RunStatus.QUEUED, RunStatus.CLAIMED)] == [
        a.id,
        b.id,
    ]
    assert store.runs_by_status() == []
    counts = store.counts()
    assert set(counts) == set(RunStatus)
    assert counts[RunStatus.QUEUED] == 1
    assert counts[RunStatus.CLAIMED] == 1
    assert counts[RunStatus.FAILED] == 1
    assert sum(counts.values()) == 3


def test_recent_runs_paginate_newest_first(store: Store) -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    ids = []
    for i in range(7):
        run = make_run(target=i, created_at=base + timedelta(minutes=i))
        ids.append(store.create_run(run).id)
    newest_first = ids[::-1]
    assert [r.id for r in store.recent_runs(limit=3)] == newest_first[:3]
    assert [r.id for r in store.recent_runs(limit=3, offset=3)] == newest_first[3:6]
    assert [r.id for r in store.recent_runs(limit=3, offset=6)] == newest_first[6:]
    assert store.recent_runs(limit=3, offset=9) == []
    assert len(store.recent_runs()) == 7
    with pytest.raises(InvalidUpdate):
        store.recent_runs(limit=-1)


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 5, 1, 0, 5, tzinfo=UTC),  # just after midnight: the cutoff is yesterday
        datetime(2026, 5, 1, 14, 0, tzinfo=UTC),  # within one day
        datetime(2027, 1, 1, 0, 2, tzinfo=UTC),  # across a year boundary
    ],
)
def test_stale_runs(store: Store, now: datetime) -> None:
    def at(minutes_ago: float) -> datetime:
        return now - timedelta(minutes=minutes_ago)

    # Last sign of life: heartbeat, else start, else creation.
    beat_old = make_run(target=1, created_at=at(60), started_at=at(59), heartbeat_at=at(11))
    beat_new = make_run(target=2, created_at=at(60), started_at=at(59), heartbeat_at=at(9))
    start_old = make_run(target=3, created_at=at(60), started_at=at(30))
    start_new = make_run(target=4, created_at=at(60), started_at=at(1))
    queued_old = make_run(target=5, created_at=at(10.5), host="other")
    queued_new = make_run(target=6, created_at=at(0.5))
    ended_old = make_run(target=7, created_at=at(600))
    for run in (beat_old, beat_new, start_old, start_new, queued_old, queued_new, ended_old):
        store.create_run(run)
    store.transition(ended_old.id, RunStatus.CANCELLED)

    stale = store.stale_runs(timedelta(minutes=10), now=now)
    assert {r.id for r in stale} == {beat_old.id, start_old.id, queued_old.id}
    assert [r.id for r in store.stale_runs(timedelta(minutes=10), host="other", now=now)] == [
        queued_old.id
    ]
    assert store.stale_runs(timedelta(days=1), now=now) == []
    # A heartbeat makes a run fresh again.
    store.heartbeat(beat_old.id, at=at(1))
    assert beat_old.id not in {r.id for r in store.stale_runs(timedelta(minutes=10), now=now)}


def test_stale_runs_without_now_uses_the_clock(store: Store) -> None:
    run = store.create_run(make_run(created_at=utcnow() - timedelta(hours=2)))
    assert [r.id for r in store.stale_runs(timedelta(hours=1))] == [run.id]
    assert store.stale_runs(timedelta(hours=3)) == []


def test_trigger_is_marked_with_the_run(store: Store) -> None:
    trigger = ProcessedTrigger(kind=TriggerKind.ISSUE_COMMENT, id="1001", repo="octo/repo")
    assert not store.is_trigger_processed(TriggerKind.ISSUE_COMMENT, "1001")
    run = store.create_run(make_run(), trigger=trigger)
    assert run.trigger_id == "1001"
    assert store.is_trigger_processed(TriggerKind.ISSUE_COMMENT, "1001")
    stored = store.get_trigger(TriggerKind.ISSUE_COMMENT, "1001")
    assert stored is not None
    assert stored.run_id == run.id
    # Ids are unique within their kind only.
    assert not store.is_trigger_processed(TriggerKind.REVIEW_COMMENT, "1001")


def test_a_trigger_never_makes_two_runs(store: Store) -> None:
    trigger = ProcessedTrigger(kind=TriggerKind.WEBHOOK_DELIVERY, id="guid-1", repo="octo/repo")
    first = store.create_run(make_run(target=1), trigger=trigger)
    finish(store, first.id)
    # Even with the target free again, and on another target, the same trigger is refused.
    for target in (1, 2):
        with pytest.raises(TriggerAlreadyProcessed) as info:
            store.create_run(make_run(target=target), trigger=trigger)
        assert info.value.run_id == first.id
    assert len(store.recent_runs()) == 1


def test_create_with_trigger_is_atomic(store: Store) -> None:
    busy = store.create_run(make_run(target=3))
    trigger = ProcessedTrigger(kind=TriggerKind.ISSUE_COMMENT, id="77", repo="octo/repo")
    with pytest.raises(ActiveRunExists):
        store.create_run(make_run(target=3), trigger=trigger)
    # The failed create left the trigger unprocessed, so it can still make a run later.
    assert not store.is_trigger_processed(TriggerKind.ISSUE_COMMENT, "77")
    finish(store, busy.id)
    assert store.create_run(make_run(target=3), trigger=trigger).trigger_id == "77"


def test_mark_trigger_processed_without_a_run(store: Store) -> None:
    trigger = ProcessedTrigger(kind=TriggerKind.ISSUE_COMMENT, id="5", repo="octo/repo")
    assert store.mark_trigger_processed(trigger) is True
    assert store.mark_trigger_processed(trigger) is False
    stored = store.get_trigger(TriggerKind.ISSUE_COMMENT, "5")
    assert stored == trigger
    with pytest.raises(TriggerAlreadyProcessed) as info:
        store.create_run(make_run(), trigger=trigger)
    assert info.value.run_id is None
    with pytest.raises(RunNotFound):
        store.mark_trigger_processed(
            ProcessedTrigger(kind=TriggerKind.ISSUE, id="x", repo="octo/repo", run_id="r-none")
        )


def test_cursors(store: Store) -> None:
    assert store.get_cursor("octo/repo", "issues") is None
    cursor = Cursor(repo="octo/repo", stream="issues", since=utcnow(), etag='W/"1"')
    store.set_cursor(cursor)
    assert store.get_cursor("octo/repo", "issues") == cursor
    moved = Cursor(repo="octo/repo", stream="issues", since=utcnow(), etag='W/"2"')
    store.set_cursor(moved)
    assert store.get_cursor("octo/repo", "issues") == moved
    assert store.get_cursor("octo/repo", "issue_comments") is None
    assert store.get_cursor("octo/other", "issues") is None


def test_agent_sessions(store: Store) -> None:
    assert store.get_agent_session("octo/repo", 4) is None
    run = store.create_run(make_run(target=4))
    session = AgentSession(repo="octo/repo", target=4, session_id="s-1", run_id=run.id)
    store.set_agent_session(session)
    assert store.get_agent_session("octo/repo", 4) == session
    newer = AgentSession(repo="octo/repo", target=4, session_id="s-2")
    store.set_agent_session(newer)
    assert store.get_agent_session("octo/repo", 4) == newer
    with pytest.raises(RunNotFound):
        store.set_agent_session(
            AgentSession(repo="octo/repo", target=5, session_id="s", run_id="r-none")
        )


def test_timestamps_keep_their_instant(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2026, 6, 1, 1, 30, 0, 123456, tzinfo=plus_two)
    run = store.create_run(make_run(created_at=created))
    stored = store.get_run(run.id).created_at
    assert stored == created
    assert stored.tzinfo is UTC
    assert stored.hour == 23


def test_runs_for_target_newest_first(store: Store) -> None:
    base = datetime(2026, 4, 1, tzinfo=UTC)
    ids = []
    for i in range(3):
        run = store.create_run(make_run(target=8, created_at=base + timedelta(hours=i)))
        finish(store, run.id, RunStatus.FAILED)
        ids.append(run.id)
    store.create_run(make_run(target=9, created_at=base))
    store.create_run(make_run(target=8, repo="octo/other", created_at=base))
    latest = store.create_run(make_run(target=8, created_at=base + timedelta(hours=5)))
    newest_first = [latest.id, *ids[::-1]]
    assert [r.id for r in store.runs_for_target("octo/repo", 8)] == newest_first
    # GitHub names are case-insensitive: one repository, however it is spelt.
    assert [r.id for r in store.runs_for_target("Octo/Repo", 8)] == newest_first
    assert [r.id for r in store.runs_for_target("octo/repo", 8, limit=2)] == newest_first[:2]
    assert store.runs_for_target("octo/repo", 8, limit=0) == []
    assert store.runs_for_target("octo/repo", 10) == []
    assert store.runs_for_target("octo/repo", 8)[0] == store.get_run(latest.id)
    with pytest.raises(InvalidUpdate):
        store.runs_for_target("octo/repo", 8, limit=-1)


def test_run_for_branch(store: Store) -> None:
    base = datetime(2026, 4, 1, tzinfo=UTC)
    issue = store.create_run(make_run(target=3, branch="cgr/3-fix", created_at=base))
    finish(store, issue.id)
    mention = Run(
        id=new_run_id(),
        repo="octo/repo",
        target=40,
        kind=RunKind.PR_MENTION,
        branch="cgr/3-fix",
        created_at=base + timedelta(minutes=5),
    )
    store.create_run(mention)
    store.create_run(make_run(target=4, branch="cgr/4-other", created_at=base))
    store.create_run(make_run(target=3, repo="octo/other", branch="cgr/3-fix", created_at=base))

    newest = store.run_for_branch("octo/repo", "cgr/3-fix")
    assert newest is not None
    assert newest.id == mention.id
    issue_kinds = (RunKind.ISSUE, RunKind.ISSUE_MENTION)
    found = store.run_for_branch("OCTO/repo", "cgr/3-fix", kinds=issue_kinds)
    assert found == store.get_run(issue.id)
    assert store.run_for_branch("octo/repo", "cgr/3-fix", kinds=[RunKind.REVIEW_COMMENT]) is None
    assert store.run_for_branch("octo/repo", "cgr/3-fix", kinds=[]) is None
    assert store.run_for_branch("octo/repo", "cgr/9-none") is None
    # Branch names are case-sensitive in git.
    assert store.run_for_branch("octo/repo", "CGR/3-fix") is None


def report(key: str = "final", **payload: object) -> OutboxEntry:
    return OutboxEntry(
        kind="status_comment", key=key, payload=msgspec.json.encode(payload or {"x": 1}).decode()
    )


def test_outbox_put_is_idempotent_per_run_and_key(store: Store) -> None:
    run = store.create_run(make_run())
    first = store.put_outbox(run.id, report(body="done"))
    assert (first.run_id, first.kind, first.key) == (run.id, "status_comment", "final")
    assert msgspec.json.decode(first.payload) == {"body": "done"}
    assert (first.attempts, first.last_error, first.delivered_at) == (0, None, None)
    # Recording the same report again (a retried pass) keeps the one there is.
    again = store.put_outbox(run.id, report(body="done, retried"))
    assert again == first
    other_key = store.put_outbox(run.id, report(key="labels", add=["done"]))
    other_run = store.create_run(make_run(target=2))
    same_key_other_run = store.put_outbox(other_run.id, report(body="x"))
    assert len({first.id, other_key.id, same_key_other_run.id}) == 3
    assert [i.id for i in store.outbox_for_run(run.id)] == [first.id, other_key.id]
    with pytest.raises(RunNotFound):
        store.put_outbox("r-none", report())


def test_outbox_refuses_what_cannot_be_sent_later(store: Store) -> None:
    run = store.create_run(make_run())
    with pytest.raises(InvalidUpdate) as info:
        store.put_outbox(run.id, OutboxEntry(kind="labels", key="k", payload="{not json"))
    assert info.value.field == "payload"
    with pytest.raises(InvalidUpdate) as info:
        store.put_outbox(run.id, OutboxEntry(kind="labels", key="", payload="{}"))
    assert info.value.field == "key"
    with pytest.raises(InvalidUpdate):
        store.transition(
            run.id, RunStatus.FAILED, outbox=[OutboxEntry(kind="l", key="k", payload="")]
        )
    assert store.get_run(run.id) == run  # the bad entry stopped the transition too
    assert store.outbox_for_run(run.id) == []


def test_outbox_pending_oldest_first_delivered_and_failed(store: Store) -> None:
    runs = [store.create_run(make_run(target=t)) for t in range(3)]
    items = [store.put_outbox(r.id, report()) for r in runs]
    assert [i.id for i in store.pending_outbox()] == [i.id for i in items]
    assert [i.id for i in store.pending_outbox(limit=2)] == [i.id for i in items[:2]]
    assert [i.id for i in store.pending_outbox(run_id=runs[1].id)] == [items[1].id]
    with pytest.raises(InvalidUpdate):
        store.pending_outbox(limit=-1)

    moment = datetime(2026, 7, 1, 12, tzinfo=UTC)
    failed = store.record_outbox_failure(items[0].id, "502 Bad Gateway", at=moment)
    failed = store.record_outbox_failure(items[0].id, "timeout", at=moment + timedelta(1))
    assert (failed.attempts, failed.last_error) == (2, "timeout")
    assert failed.last_attempt_at == moment + timedelta(1)
    assert failed.delivered_at is None
    assert items[0].id in [i.id for i in store.pending_outbox()]  # still to send

    delivered = store.mark_outbox_delivered(items[0].id, at=moment + timedelta(2))
    assert delivered.delivered_at == moment + timedelta(2)
    assert delivered.attempts == 2
    # A second mark (a sender that raced another) keeps the first time.
    assert store.mark_outbox_delivered(items[0].id).delivered_at == moment + timedelta(2)
    assert [i.id for i in store.pending_outbox()] == [items[1].id, items[2].id]
    assert store.outbox_for_run(runs[0].id) == [delivered]
    for missing in (items[-1].id + 1000,):
        with pytest.raises(OutboxItemNotFound) as info:
            store.mark_outbox_delivered(missing)
        assert info.value.item_id == missing
        with pytest.raises(OutboxItemNotFound):
            store.record_outbox_failure(missing, "x")


def test_terminal_transition_records_its_report_atomically(store: Store) -> None:
    run = store.create_run(make_run())
    store.transition(run.id, RunStatus.CLAIMED)
    store.transition(run.id, RunStatus.RUNNING)
    entries = [report(body="PR #3"), report(key="labels", add=["done"])]
    done = store.transition(run.id, RunStatus.SUCCEEDED, outcome="pr_opened", outbox=entries)
    assert done.status is RunStatus.SUCCEEDED
    pending = store.pending_outbox(run_id=run.id)
    assert [(i.key, i.payload) for i in pending] == [(e.key, e.payload) for e in entries]
    assert all(i.created_at == done.ended_at for i in pending)
    # An illegal transition writes neither the status nor its report.
    other = store.create_run(make_run(target=2))
    with pytest.raises(IllegalTransition):
        store.transition(other.id, RunStatus.SUCCEEDED, outbox=[report()])
    assert store.outbox_for_run(other.id) == []
    with pytest.raises(RunNotFound):
        store.transition("r-none", RunStatus.FAILED, outbox=[report()])


def test_cursors_written_many_at_once_and_only_when_changed(store: Store) -> None:
    since = datetime(2026, 5, 1, tzinfo=UTC)
    first = [
        Cursor(repo=f"octo/r{i}", stream=stream, since=since, etag=f'W/"{i}"')
        for i in range(3)
        for stream in ("issues", "issue_comments")
    ]
    assert store.set_cursors(first) == 6
    assert store.get_cursors() == sorted(first, key=lambda c: (c.repo, c.stream))
    assert store.get_cursors("octo/r1") == sorted(
        [c for c in first if c.repo == "octo/r1"], key=lambda c: c.stream
    )
    assert store.get_cursors("octo/none") == []
    # An idle poll: the same positions, a later clock. Nothing is written, not even the time.
    later = [msgspec.structs.replace(c, updated_at=utcnow() + timedelta(hours=1)) for c in first]
    assert store.set_cursors(later) == 0
    assert store.get_cursors() == sorted(first, key=lambda c: (c.repo, c.stream))
    # One moved, one new: those two are written; the last cursor of a key given twice wins.
    moved = msgspec.structs.replace(first[0], since=since + timedelta(minutes=1))
    new = Cursor(repo="octo/r9", stream="issues", etag='W/"9"')
    stale = msgspec.structs.replace(new, etag='W/"8"')
    assert store.set_cursors([*later, stale, moved, new]) == 2
    assert store.get_cursor(moved.repo, moved.stream) == moved
    assert store.get_cursor("octo/r9", "issues") == new
    assert store.set_cursors([]) == 0


def test_http_cache(store: Store) -> None:
    assert store.http_cache_get("https://api.github.com/repos/o/r/issues") is None
    entries = [
        HttpCacheEntry(key=f"/repos/o/r{i}/issues", etag=f'W/"{i}"', body=bytes([i, 0, 255]) * 3)
        for i in range(4)
    ]
    assert store.http_cache_put_many(entries) == 4
    assert store.http_cache_get("/repos/o/r2/issues") == entries[2]
    assert store.http_cache_get_many() == {e.key: e for e in entries}
    keys = ["/repos/o/r1/issues", "/nothing", "/repos/o/r3/issues", "/repos/o/r1/issues"]
    assert store.http_cache_get_many(keys) == {e.key: e for e in (entries[1], entries[3])}
    # Unchanged entries (the 304 case) are not written again.
    assert store.http_cache_put_many(entries) == 0
    changed = msgspec.structs.replace(entries[0], etag='W/"new"', body=b'{"a": 1}')
    modified = msgspec.structs.replace(entries[1], last_modified="Tue, 01 Dec 2026 10:00:00 GMT")
    assert store.http_cache_put_many([changed, modified, entries[2]]) == 2
    assert store.http_cache_get(changed.key) == changed
    assert store.http_cache_get(modified.key) == modified
    assert store.http_cache_delete([changed.key, "/nothing"]) == 1
    assert store.http_cache_get(changed.key) is None
    assert store.http_cache_delete([]) == 0
    assert store.http_cache_put_many([]) == 0
