"""Backoff for ready issues whose runs keep failing before the claim.

Unit tests of the planning rule against a real SQLite store, and one real `cgr tick`
process against the simulator failing to answer for the issue the run reads first.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cgr_cli import ConfigError, parse_config
from cgr_cli.config._model import Config
from cgr_cli.schedule._backoff import backoff_delay, preclaim_backoffs
from cgr_store import Run, RunKind, SQLiteStore, new_run_id
from runworld import REPO, Env
from schedworld import Sched

OTHER = "acme/gadgets"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parse_config(
        {
            "paths": {"database": str(tmp_path / "cgr.sqlite3"), "workspace_root": str(tmp_path)},
            "polling": {"retry_backoff_seconds": 10, "retry_backoff_max_seconds": 35},
        }
    )


def _ended(
    store: SQLiteStore, target: int, how: str, *, repo: str = REPO, kind: str = "issue"
) -> Run:
    """A run on ``target`` that ended: ``preclaim`` (failed while queued), ``claimed_failed``
    (claimed, then failed), ``succeeded``, ``cancelled`` or ``timed_out`` (before a claim)."""
    from cgr_store import RunStatus

    run = store.create_run(Run(id=new_run_id(), repo=repo, target=target, kind=RunKind(kind)))
    t = store.transition
    if how == "preclaim":
        return t(run.id, RunStatus.FAILED, detail="GitHub answered 502")
    if how in ("cancelled", "timed_out"):
        return t(run.id, RunStatus(how), detail=how)
    t(run.id, RunStatus.CLAIMED, detail="claiming on GitHub")
    t(run.id, RunStatus.RUNNING, detail="claimed")
    return t(run.id, RunStatus.SUCCEEDED if how == "succeeded" else RunStatus.FAILED, detail=how)


def test_the_delay_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 10, 35) for n in (1, 2, 3, 4, 60)] == [10, 20, 35, 35, 35]
    assert backoff_delay(10_000, 60, 3600) == 3600  # a long streak does not overflow


def test_preclaim_failures_back_off_and_a_claim_or_success_resets(config: Config) -> None:
    with SQLiteStore(config.database) as store:
        # 1: one failure before the claim -> 10 s from its end.
        first = _ended(store, 1, "preclaim")
        # 2: three in a row (cancelled and timed out before a claim count too) -> capped 35 s.
        _ended(store, 2, "preclaim")
        _ended(store, 2, "cancelled")
        last2 = _ended(store, 2, "timed_out")
        # 3: two failures, but the newest run was claimed before it failed: a real outcome.
        _ended(store, 3, "preclaim")
        _ended(store, 3, "preclaim")
        _ended(store, 3, "claimed_failed")
        # 4: a success, then two pre-claim failures: the streak counts from the success.
        _ended(store, 4, "preclaim")
        _ended(store, 4, "preclaim")
        _ended(store, 4, "succeeded")
        _ended(store, 4, "preclaim")
        last4 = _ended(store, 4, "preclaim")
        # 5: a mention run failing before its claim is not a ready-issue loop.
        _ended(store, 5, "preclaim", kind="issue_mention")
        # the same number in another repository has its own history
        _ended(store, 1, "succeeded", repo=OTHER)
        targets = {(REPO, n) for n in (1, 2, 3, 4, 5, 6)} | {(OTHER, 1)}
        now = last4.ended_at
        found = preclaim_backoffs(config, store, targets, now=now)
        assert set(found) == {(REPO, 1), (REPO, 2), (REPO, 4)}
        assert found[(REPO, 1)].failures == 1
        assert found[(REPO, 1)].retry_at == first.ended_at + timedelta(seconds=10)
        assert found[(REPO, 2)].failures == 3
        assert found[(REPO, 2)].retry_at == last2.ended_at + timedelta(seconds=35)
        assert found[(REPO, 4)].failures == 2
        assert found[(REPO, 4)].retry_at == last4.ended_at + timedelta(seconds=20)
        view = found[(REPO, 4)].as_dict(now)
        assert view["target"] == f"{REPO}#4"
        assert view["retry_in_seconds"] == 20.0
        # After its delay an issue is free again (the others still wait).
        later = preclaim_backoffs(config, store, targets, now=now + timedelta(seconds=21))
        assert set(later) == {(REPO, 2)}
        assert preclaim_backoffs(config, store, targets, now=now + timedelta(seconds=36)) == {}
        # Only the targets asked about are looked at.
        assert set(preclaim_backoffs(config, store, {(REPO, 4)}, now=now)) == {(REPO, 4)}
        # An active run is ignored (the store refuses a second one anyway).
        store.create_run(Run(id=new_run_id(), repo=REPO, target=1, kind=RunKind.ISSUE))
        assert preclaim_backoffs(config, store, {(REPO, 1)}, now=now)[(REPO, 1)].failures == 1


def test_backoff_settings_are_validated() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"polling": {"retry_backoff_seconds": 0}})
    assert "polling.retry_backoff_seconds" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"polling": {"retry_backoff_seconds": 60, "retry_backoff_max_seconds": 30}})
    assert err.value.key == "polling.retry_backoff_max_seconds"
    assert "at least polling.retry_backoff_seconds (60)" in str(err.value)
    defaults = parse_config({}).polling
    assert (defaults.retry_backoff_seconds, defaults.retry_backoff_max_seconds) == (60, 3600)


def _tick(sched: Sched) -> dict[str, object]:
    done = sched.cgr("tick", "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def _wait_ended(sched: Sched, count: int) -> None:
    sched.wait_until(
        lambda: len(sched.runs()) == count and sched.all_terminal(), 60, f"{count} runs ended"
    )


def _requeued_at(sched: Sched) -> list[datetime]:
    from cgr_cli.run._requeue import is_requeue

    (run,) = sched.runs()
    with sched.env.store() as store:
        return [e.at for e in store.events(run.id) if is_requeue(e.detail)]


def _wait_requeued(sched: Sched, count: int) -> None:
    def requeued() -> bool:
        (run,) = sched.runs()
        return (
            run.status.value == "queued" and run.pid is None and len(_requeued_at(sched)) == count
        )

    sched.wait_until(requeued, 60, f"the run to be requeued {count} time(s)")


@pytest.mark.slow
def test_tick_backs_off_a_run_requeued_before_its_claim_then_retries_it(
    env: Env, sched: Sched, subreaper: None
) -> None:
    # Delays long enough that a `cgr tick` process started on a loaded machine still sees
    # the backoff (its start-up must not outlast the delay it is meant to observe).
    sched.config(polling={"retry_backoff_seconds": 2.5, "retry_backoff_max_seconds": 6.0})
    [number] = env.sim.seed_ready_issues(REPO, 1)
    # The run reads the issue first: GitHub refusing there (transiently) puts the run back
    # to the queue, with nothing written on GitHub: the issue keeps its ready label. (A
    # secondary rate limit asking for 1 s keeps the client's retries short; a lasting 5xx
    # ends the same way, after longer waits.)
    fault = env.sim.faults.secondary_rate_limit(
        retry_after=1, method="GET", path=rf"/issues/{number}$"
    )
    first = _tick(sched)
    assert len(first["started"]) == 1  # type: ignore[arg-type]
    _wait_requeued(sched, 1)
    (run,) = sched.runs()
    assert "ready" in env.sim.issue(REPO, number).labels
    assert env.sim.comments(REPO, number) == []

    delays = []
    for failures in (1, 2, 3):
        requeued_at = _requeued_at(sched)[-1]
        backed = _tick(sched)
        assert backed["started"] == []
        assert backed["pending"] == []
        [entry] = backed["backed_off"]  # type: ignore[misc]
        assert entry["target"] == f"{REPO}#{number}"
        assert entry["failures"] == failures
        delay = (datetime.fromisoformat(entry["retry_at"]) - requeued_at).total_seconds()
        delays.append(delay)
        assert len(sched.runs()) == 1  # nothing written, nothing started
        due = requeued_at.timestamp() + delay + 0.05
        time.sleep(max(0.0, due - time.time()))
        if failures == 3:
            fault.remove()  # GitHub is back: the same run goes through
        again = _tick(sched)
        assert again["started"] == [run.id], again
        assert again["backed_off"] == []
        if failures < 3:
            _wait_requeued(sched, failures + 1)
    _wait_ended(sched, 1)
    assert delays == [2.5, 5.0, 6.0]  # doubled, then capped
    (done,) = sched.runs()
    assert (done.id, done.status.value, done.outcome) == (run.id, "succeeded", "pr_opened")
    with env.store() as store:
        moves = [e for e in store.events(run.id) if e.from_status is not e.to_status]
    assert [e.to_status.value for e in moves] == ["queued", "claimed", "running", "succeeded"]
    # Done: the ready label is gone, nothing is backed off or started any more.
    last = _tick(sched)
    assert last["started"] == []
    assert last["backed_off"] == []


@pytest.mark.slow
def test_plain_tick_says_which_issue_is_backed_off_and_until_when(
    env: Env, sched: Sched, subreaper: None
) -> None:
    sched.config(polling={"retry_backoff_seconds": 600, "retry_backoff_max_seconds": 600})
    [number] = env.sim.seed_ready_issues(REPO, 1)
    with env.store() as store:
        _ended(store, number, "preclaim")
    done = sched.cgr("tick")
    assert done.returncode == 0, done.stderr
    assert "0 started" in done.stdout
    assert f"backed off: {REPO}#{number} failed 1 time(s) before its claim" in done.stdout
    assert "tried again from " in done.stdout
    assert len(sched.runs()) == 1  # nothing new was written
