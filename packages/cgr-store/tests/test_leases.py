"""Hosts, leases, fencing, the queue and leadership: the contract, on every backend."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from cgr_store import (
    Cursor,
    HostLeaseHeld,
    IllegalTransition,
    InvalidUpdate,
    LeaseLost,
    PostgresStore,
    Run,
    RunKind,
    RunOwnedElsewhere,
    RunStatus,
    SQLiteStore,
    Store,
    new_run_id,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=30)


def make_run(target: int, created: datetime | None = None) -> Run:
    return Run(
        id=new_run_id(), repo="octo/fleet", target=target, kind=RunKind.ISSUE,
        created_at=created or datetime.now(UTC),
    )  # fmt: skip


def test_acquire_renew_release(store: Store) -> None:
    lease = store.acquire_host_lease("alpha", TTL, slots=2, now=T0)
    assert (lease.host_id, lease.epoch, lease.slots, lease.running) == ("alpha", 1, 2, 0)
    assert lease.lease_expires_at == T0 + TTL
    # A second process with the same host id is refused while the lease is live.
    with pytest.raises(HostLeaseHeld) as info:
        store.acquire_host_lease("alpha", TTL, now=T0 + timedelta(seconds=10))
    assert (info.value.host_id, info.value.expires_at) == ("alpha", T0 + TTL)
    renewed = store.renew_host_lease("alpha", 1, TTL, running=2, now=T0 + timedelta(seconds=20))
    assert (renewed.epoch, renewed.running, renewed.slots) == (1, 2, 2)
    assert renewed.lease_expires_at == T0 + timedelta(seconds=50)
    assert renewed.heartbeat_at == T0 + timedelta(seconds=20)
    assert store.hosts() == [renewed]
    # Once it expired, the host id can be acquired again: a new epoch.
    again = store.acquire_host_lease("alpha", TTL, now=T0 + timedelta(seconds=51))
    assert again.epoch == 2
    with pytest.raises(LeaseLost) as lost:
        store.renew_host_lease("alpha", 1, TTL, now=T0 + timedelta(seconds=52))
    assert (lost.value.epoch, lost.value.current_epoch) == (1, 2)
    # A restart that cannot wait takes over explicitly.
    assert store.acquire_host_lease("alpha", TTL, takeover=True, now=T0 + timedelta(60)).epoch == 3
    store.release_host_lease("alpha", 3, now=T0 + timedelta(seconds=61))
    assert [h.host_id for h in store.expired_hosts(now=T0 + timedelta(seconds=62))] == ["alpha"]
    with pytest.raises(LeaseLost):
        store.renew_host_lease("nobody", 1, TTL)
    with pytest.raises(InvalidUpdate):
        store.acquire_host_lease("beta", timedelta(0))


def test_expired_hosts(store: Store) -> None:
    store.acquire_host_lease("alpha", TTL, now=T0)
    store.acquire_host_lease("beta", TTL * 2, now=T0)
    assert store.expired_hosts(now=T0 + TTL / 2) == []
    assert [h.host_id for h in store.expired_hosts(now=T0 + TTL)] == ["alpha"]
    assert [h.host_id for h in store.expired_hosts(now=T0 + TTL * 3)] == ["alpha", "beta"]


def test_claims_are_fenced_by_the_lease_epoch(store: Store) -> None:
    alpha = store.acquire_host_lease("alpha", TTL)
    run = store.create_run(make_run(1))
    claimed = store.transition(run.id, RunStatus.CLAIMED, lease=alpha)
    assert (claimed.host, claimed.lease_epoch) == ("alpha", alpha.epoch)
    running = store.transition(run.id, RunStatus.RUNNING, lease=alpha, pid=7)
    assert store.heartbeat(run.id, lease=alpha) is RunStatus.RUNNING
    assert store.update_run(run.id, lease=alpha, branch="cgr/1").branch == "cgr/1"
    # Another host may not touch alpha's run, even with a valid lease of its own.
    beta = store.acquire_host_lease("beta", TTL)
    for write in (
        lambda: store.transition(run.id, RunStatus.FAILED, lease=beta),
        lambda: store.update_run(run.id, lease=beta, error="mine"),
        lambda: store.heartbeat(run.id, lease=beta),
    ):
        with pytest.raises(RunOwnedElsewhere) as info:
            write()
        assert (info.value.owner, info.value.owner_epoch) == ("alpha", alpha.epoch)
    after = store.get_run(run.id)
    assert (after.status, after.error, after.started_at) == (
        RunStatus.RUNNING, None, running.started_at,
    )  # fmt: skip


def test_a_host_that_lost_its_lease_cannot_overwrite_the_takeover(store: Store) -> None:
    now = datetime.now(UTC)
    alpha = store.acquire_host_lease("alpha", TTL, now=now - TTL * 2)  # long expired
    beta = store.acquire_host_lease("beta", TTL)
    claimed = store.create_run(make_run(1))
    store.transition(claimed.id, RunStatus.CLAIMED, lease=alpha)
    running = store.create_run(make_run(2))
    store.transition(running.id, RunStatus.CLAIMED, lease=alpha)
    store.transition(running.id, RunStatus.RUNNING, lease=alpha)
    ended = store.create_run(make_run(3))
    store.transition(ended.id, RunStatus.CLAIMED, lease=alpha)
    store.transition(ended.id, RunStatus.FAILED, lease=alpha)

    assert [h.host_id for h in store.expired_hosts()] == ["alpha"]
    taken = store.take_over_runs("alpha", beta)
    assert [r.id for r in taken] == [claimed.id, running.id]  # active ones only
    assert all((r.host, r.lease_epoch) == ("beta", beta.epoch) for r in taken)
    # The reaper ends or requeues them under its own lease...
    store.transition(claimed.id, RunStatus.QUEUED, lease=beta, detail="host alpha lost")
    store.transition(running.id, RunStatus.TIMED_OUT, lease=beta, detail="host alpha lost")
    # ...and alpha, back from a long pause, is refused whatever it writes.
    for write in (
        lambda: store.transition(running.id, RunStatus.SUCCEEDED, lease=alpha),
        lambda: store.heartbeat(running.id, lease=alpha),
        lambda: store.update_run(claimed.id, lease=alpha, pid=1),
        lambda: store.renew_host_lease("alpha", alpha.epoch, TTL),
        lambda: store.claim_next(alpha),
    ):
        with pytest.raises(LeaseLost) as info:
            write()
        assert (info.value.epoch, info.value.current_epoch) == (alpha.epoch, alpha.epoch + 1)
    assert store.get_run(running.id).status is RunStatus.TIMED_OUT
    assert store.get_run(claimed.id).status is RunStatus.QUEUED


def test_a_live_host_is_not_taken_over(store: Store) -> None:
    alpha = store.acquire_host_lease("alpha", TTL)
    beta = store.acquire_host_lease("beta", TTL)
    run = store.create_run(make_run(1))
    store.transition(run.id, RunStatus.CLAIMED, lease=alpha)
    with pytest.raises(HostLeaseHeld):
        store.take_over_runs("alpha", beta)
    assert store.get_run(run.id).host == "alpha"
    store.renew_host_lease("alpha", alpha.epoch, TTL)  # still alpha's


def test_claim_next_takes_the_oldest_queued_runs_once(store: Store) -> None:
    alpha = store.acquire_host_lease("alpha", TTL)
    beta = store.acquire_host_lease("beta", TTL)
    runs = [store.create_run(make_run(t, T0 + timedelta(minutes=t))) for t in range(5)]
    first = store.claim_next(alpha, limit=2)
    assert [r.id for r in first] == [runs[0].id, runs[1].id]
    assert all((r.status, r.host, r.lease_epoch) == (RunStatus.CLAIMED, "alpha", 1) for r in first)
    second = store.claim_next(beta, limit=10, pid=42)
    assert [r.id for r in second] == [r.id for r in runs[2:]]
    assert all(r.pid == 42 and r.host == "beta" for r in second)
    assert store.claim_next(alpha) == []
    assert store.claim_next(alpha, limit=0) == []
    [event] = [e for e in store.events(runs[0].id) if e.to_status is RunStatus.CLAIMED]
    assert event.detail == "claimed by alpha"
    assert store.get_run(runs[4].id) == second[-1]
    with pytest.raises(IllegalTransition):  # a claimed run is not claimed again
        store.transition(runs[0].id, RunStatus.CLAIMED, lease=alpha)
    with pytest.raises(RunOwnedElsewhere):  # least of all by another host
        store.transition(runs[0].id, RunStatus.CLAIMED, lease=beta)


def test_leadership(store: Store) -> None:
    assert store.acquire_leadership("poll", "alpha", TTL, now=T0)
    assert store.acquire_leadership("poll", "alpha", TTL, now=T0 + timedelta(seconds=20))
    if isinstance(store, SQLiteStore):
        # One SQLite file serves one host: it always leads.
        assert store.acquire_leadership("poll", "beta", TTL, now=T0 + timedelta(seconds=21))
        return
    assert isinstance(store, PostgresStore)
    # beta waits while alpha's lease runs (renewed at +20 s: until +50 s)...
    assert not store.acquire_leadership("poll", "beta", TTL, now=T0 + timedelta(seconds=49))
    # ...and takes over as soon as it ran out: fail-over within one lease.
    assert store.acquire_leadership("poll", "beta", TTL, now=T0 + timedelta(seconds=50))
    assert not store.acquire_leadership("poll", "alpha", TTL, now=T0 + timedelta(seconds=51))
    assert store.acquire_leadership("other", "alpha", TTL, now=T0 + timedelta(seconds=51))
    store.release_leadership("poll", "beta")  # a clean stop hands over at once
    assert store.acquire_leadership("poll", "alpha", TTL, now=T0 + timedelta(seconds=52))


def _second_handle(store: Store) -> Store:
    """Another connection to the same store (another host's process, in effect)."""
    if isinstance(store, PostgresStore):
        return PostgresStore(store._url)
    assert isinstance(store, SQLiteStore)
    if store.path == ":memory:":
        pytest.skip("an in-memory store has no second connection")
    return SQLiteStore(store.path)


def test_writes_racing_a_take_over_land_before_it_or_not_at_all(store: Store) -> None:
    # The paused host keeps heartbeating its run from another connection while a live
    # host takes the run over and stamps its own decision: the paused host's writes stop
    # at the take-over, and none of them overwrites what the live host wrote after it.
    import threading

    dead_view = _second_handle(store)
    now = datetime.now(UTC)
    alpha = store.acquire_host_lease("alpha", TTL, now=now - TTL * 2)
    beta = store.acquire_host_lease("beta", TTL)
    run = store.create_run(make_run(1))
    store.transition(run.id, RunStatus.CLAIMED, lease=alpha)
    store.transition(run.id, RunStatus.RUNNING, lease=alpha)
    beats: list[int] = []
    refused: list[BaseException] = []

    def paused_host() -> None:
        for n in range(100_000):
            try:
                dead_view.heartbeat(
                    run.id, at=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(n), lease=alpha
                )
            except LeaseLost as exc:
                refused.append(exc)
                return
            beats.append(n)

    worker = threading.Thread(target=paused_host)
    worker.start()
    try:
        while len(beats) < 20:
            time.sleep(0.001)
        store.take_over_runs("alpha", beta)
        decided = datetime(2040, 1, 1, tzinfo=UTC)
        store.heartbeat(run.id, at=decided, lease=beta)
    finally:
        worker.join(timeout=60)
        dead_view.close()
    assert refused, "the paused host was never refused"
    assert store.get_run(run.id).heartbeat_at == decided


def test_overlapping_batches_from_two_hosts_do_not_fail(store: Store) -> None:
    # Two hosts writing the same cursors in opposite orders: written in key order, so
    # they take turns instead of deadlocking (PostgreSQL) or failing busy (SQLite).
    import threading

    other = _second_handle(store)
    errors: list[BaseException] = []

    def write(handle: Store, reverse: bool) -> None:
        try:
            for n in range(15):
                cursors = [
                    Cursor(repo=f"octo/r{i}", stream="issues", etag=f'"{n}-{reverse}"')
                    for i in range(20)
                ]
                handle.set_cursors(reversed(cursors) if reverse else cursors)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(store, False)),
        threading.Thread(target=write, args=(other, True)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    other.close()
    assert errors == []
    assert len(store.get_cursors()) == 20
