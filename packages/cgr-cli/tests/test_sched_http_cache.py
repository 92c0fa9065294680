"""The GitHub client's ETag cache kept in the store: a fresh `cgr tick` polls for free."""

from __future__ import annotations

import json
from pathlib import Path

from runworld import REPO, Env
from schedworld import Sched


def test_an_idle_tick_in_a_fresh_process_costs_no_rate_limit_point(env: Env, sched: Sched) -> None:
    sched.config()
    first = sched.cgr("tick", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["discovered"] == 0
    # The first poll has nothing to send an ETag for: GitHub counts its lists.
    assert [r for r in env.sim.requests if r.counted]
    with env.store() as store:
        assert store.http_cache_get_many()  # the pass kept its ETags
    for _ in range(2):  # the second idle tick, and one more: nothing accumulates
        env.sim.clear_requests()
        before = env.sim.rate_limit()["used"]
        with env.store() as store:
            cursors = store.get_cursors()
        assert cursors  # the first pass stored where each stream stands
        again = sched.cgr("tick", "--json")  # a new process: nothing in memory
        assert again.returncode == 0, again.stderr
        with env.store() as store:  # no cursor moved, so none was written (updated_at)
            assert store.get_cursors() == cursors
        polled = [r for r in env.sim.requests if r.path.startswith(f"/repos/{REPO}")]
        assert polled  # it did poll the repository's lists
        assert {r.status for r in polled} == {304}
        assert [r for r in env.sim.requests if r.counted] == []
        assert env.sim.rate_limit()["used"] == before


def test_new_work_is_still_found_after_a_free_idle_poll(
    env: Env, sched: Sched, subreaper: None
) -> None:
    """A 304 replays the stored list; a changed list (a new ready issue) is fetched."""
    sched.config(polling={"max_concurrency": 1, "runs_ahead": 0})
    assert sched.cgr("tick", "--json").returncode == 0
    assert sched.cgr("tick", "--json").returncode == 0
    number = env.sim.create_issue(REPO, "New work", "", author="alice", labels=["ready"])
    env.sim.clear_requests()
    report = json.loads(sched.cgr("tick", "--json").stdout)
    assert report["discovered"] == 1
    assert report["started"]
    assert [r for r in env.sim.requests if r.path.startswith(f"/repos/{REPO}/issues")
            and r.status == 200]  # fmt: skip
    sched.wait_until(sched.all_terminal, 60, "the run to end")
    assert [r.target for r in sched.runs()] == [number]


def test_the_cache_writes_only_changes_and_drops_what_a_pass_did_not_use(tmp_path: Path) -> None:
    from cgr_cli.schedule._http_cache import PersistedCache
    from cgr_store import SQLiteStore

    with SQLiteStore(tmp_path / "cgr.sqlite3") as store:
        first = PersistedCache(store)
        first["/a?since=1"] = ('"e1"', None, [{"n": 1}], None)
        first["/b"] = ('"e2"', "Tue, 01 Dec 2026 10:00:00 GMT", {"x": "y"}, "/b?page=2")
        first.save()
        second = PersistedCache(store)  # a fresh process: the entries come back
        assert second["/b"] == ('"e2"', "Tue, 01 Dec 2026 10:00:00 GMT", {"x": "y"}, "/b?page=2")
        second.save()  # "/a?since=1" was not asked for: its cursor moved on
        assert sorted(store.http_cache_get_many()) == ["/b"]
        before = store.http_cache_get_many()["/b"].updated_at
        third = PersistedCache(store)
        third["/b"] = third["/b"]  # unchanged (a 304 replayed): nothing rewritten
        third.save()
        assert store.http_cache_get_many()["/b"].updated_at == before


def test_the_cache_is_discoverys_persistent_cache_flushed_at_the_end_of_a_poll(
    env: Env, sched: Sched
) -> None:
    """The client writes the changed entries when discovery's poll ends, before the pass
    saves (and prunes)."""
    import anyio

    from cgr_cli.config._load import load_config
    from cgr_cli.schedule._github import discovery_config
    from cgr_cli.schedule._http_cache import PersistedCache
    from cgr_discovery import GitHubClient, PersistentCache, TokenAuth, discover

    config, _ = load_config(sched.config())

    async def poll() -> int:
        with env.store() as store:
            cache = PersistedCache(store)
            assert isinstance(cache, PersistentCache)
            async with GitHubClient(
                auth=TokenAuth(env.sim.token), base_url=env.sim.url, cache=cache
            ) as gh:
                await discover(gh, [REPO], discovery_config(config, env.sim.bot_login))
                stored = len(store.http_cache_get_many())  # before save(), before aclose()
                assert cache.flush() == 0  # all written already
            return stored

    assert anyio.run(poll) > 0
