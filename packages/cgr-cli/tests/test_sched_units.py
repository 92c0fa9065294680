"""The scheduler's pieces on their own: locks, trigger ids, how a child is started."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cgr_cli import DaemonRunningError, SchedulerBusyError, parse_config
from cgr_cli.config._model import Config
from cgr_cli.schedule._locks import DaemonLock, daemon_owner, tick_locks
from cgr_cli.schedule._runs import request_for, run_argv
from cgr_cli.schedule._triggers import ProcessedInStore, trigger_key


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parse_config({"paths": {"database": str(tmp_path / "db" / "cgr.sqlite3"),
                                   "workspace_root": str(tmp_path / "ws")}})  # fmt: skip


def test_a_daemon_lock_refuses_ticks_and_a_second_daemon_and_names_its_pid(
    config: Config,
) -> None:
    assert daemon_owner(config) is None
    lock = DaemonLock(config)
    try:
        owner = daemon_owner(config)
        assert owner is not None
        assert owner.pid == os.getpid()
        with pytest.raises(DaemonRunningError) as err, tick_locks(config):
            pass
        assert err.value.pid == os.getpid()
        assert f"(pid {os.getpid()})" in str(err.value)
        with pytest.raises(DaemonRunningError):
            DaemonLock(config, wait=0.1)
        before = owner.heartbeat_at
        lock.heartbeat()
        assert (daemon_owner(config) or owner).heartbeat_at >= before
    finally:
        lock.release()
    assert daemon_owner(config) is None
    with tick_locks(config) as fds:  # free again
        assert len(fds) == 2


def test_a_daemon_waits_for_a_tick_in_progress_then_gives_up(config: Config) -> None:
    with tick_locks(config), pytest.raises(SchedulerBusyError) as err:
        DaemonLock(config, wait=0.2)
    assert err.value.waited == 0.2
    assert str(err.value.lock_path).endswith("cgr.sqlite3.daemon.lock")
    DaemonLock(config, wait=0.2).release()  # the tick is over: it gets the lock


def test_ticks_take_turns(config: Config) -> None:
    with tick_locks(config), pytest.raises(SchedulerBusyError):
        with tick_locks(config, wait=0.1):
            pass


def test_trigger_ids_map_to_store_kinds(config: Config) -> None:
    from cgr_store import ProcessedTrigger, SQLiteStore, TriggerKind

    assert trigger_key("issue_comment:12") == (TriggerKind.ISSUE_COMMENT, "12")
    assert trigger_key("review_comment:7") == (TriggerKind.REVIEW_COMMENT, "7")
    assert trigger_key("ready:acme/widgets#3") is None  # never marked: the label decides
    config.database.parent.mkdir(parents=True)
    with SQLiteStore(config.database) as store:
        processed = ProcessedInStore(store)
        assert "issue_comment:12" not in processed
        store.mark_trigger_processed(
            ProcessedTrigger(kind=TriggerKind.ISSUE_COMMENT, id="12", repo="acme/widgets")
        )
        assert "issue_comment:12" in processed
        assert "review_comment:12" not in processed
        assert "ready:acme/widgets#3" not in processed


def test_a_child_is_started_with_the_same_config_and_the_run_id() -> None:
    from cgr_store import Run, RunKind

    review = Run(id="r-1", repo="acme/widgets", target=9, kind=RunKind.REVIEW_COMMENT,
                 trigger_id="4455")  # fmt: skip
    argv = run_argv(Path("/etc/cgr/config.toml"), review)
    assert argv[:4] == [sys.executable, "-m", "cgr_cli", "run"]
    assert argv[4:6] == ["--config", "/etc/cgr/config.toml"]
    assert argv[argv.index("--run-id") + 1] == "r-1"
    assert argv[-3:] == ["--comment-id", "4455", "--review-comment"]
    issue = Run(id="r-2", repo="acme/widgets", target=3, kind=RunKind.ISSUE)
    request = request_for(issue)
    assert (request.comment_id, request.review_comment, request.run_id) == (None, False, "r-2")
    assert "--comment-id" not in run_argv(None, issue)


def test_stale_heartbeat_must_allow_two_beats() -> None:
    from cgr_cli import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config({"timeouts": {"heartbeat_seconds": 30, "stale_heartbeat_seconds": 45}})
    assert caught.value.key == "timeouts.stale_heartbeat_seconds"
    assert "at least twice timeouts.heartbeat_seconds (30)" in str(caught.value)
    ok = parse_config({"timeouts": {"heartbeat_seconds": 30, "stale_heartbeat_seconds": 60}})
    assert ok.timeouts.stale_heartbeat_seconds == 60
