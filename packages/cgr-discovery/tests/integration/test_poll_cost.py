"""What an idle poll costs: a repository's lists requested together, and a persisted ETag
cache that makes an idle poll in a fresh process (every ``cgr tick``) cost 0 points."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from discovery_support import BOT, REPO, ClientFactory

from cgr_discovery import (
    CacheBackend,
    DiscoveryConfig,
    ETagCache,
    LRUCache,
    PersistentCache,
    StreamCursor,
    advance_cursors,
    discover,
)
from cgr_discovery.testing import GitHubSimulator

pytestmark = pytest.mark.anyio
CONFIG = DiscoveryConfig(login=BOT, replay_since=datetime(2000, 1, 1, tzinfo=UTC))
REPOS = [REPO, "acme/gadgets", "acme/gizmos"]


class SQLiteBackend:
    """A persistent backend as a store would provide it: one table, one transaction per
    flush. (A real SQLite file, reopened by each "process".)"""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS http_cache (key TEXT PRIMARY KEY, v BLOB)")
        self.gets = 0
        self.flushes: list[int] = []

    def http_cache_get(self, key: str) -> bytes | None:
        self.gets += 1
        row = self.db.execute("SELECT v FROM http_cache WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def http_cache_put_many(self, entries: Mapping[str, bytes]) -> None:
        self.flushes.append(len(entries))
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO http_cache (key, v) VALUES (?, ?)", entries.items()
            )

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def repos(sim: GitHubSimulator) -> list[str]:
    for name in REPOS[1:]:
        sim.create_repo(name, labels=("ready",))
    return REPOS


async def settle(make_client: ClientFactory, db: Path, repos: list[str]) -> list[StreamCursor]:
    """Two polls in one "process": the first sets the cursors, the second settles them."""
    backend = SQLiteBackend(db)
    gh = make_client(cache=ETagCache(backend))
    cursors: list[StreamCursor] = []
    for _ in range(2):
        result = await discover(gh, repos, CONFIG, cursors=cursors)
        assert result.errors == ()
        cursors = list(advance_cursors(result, {j.trigger_id for j in result.jobs}))
    await gh.aclose()
    backend.close()
    return cursors


async def test_idle_poll_in_a_fresh_process_costs_no_points(
    sim: GitHubSimulator, make_client: ClientFactory, repos: list[str], tmp_path: Path
) -> None:
    db = tmp_path / "cache.sqlite"
    cursors = await settle(make_client, db, repos)
    # A fresh "process": a new client, a new cache object, the same database file.
    backend = SQLiteBackend(db)
    assert isinstance(backend, CacheBackend)
    fresh = make_client(cache=ETagCache(backend))
    sim.clear_requests()
    used = sim.rate_limit()["used"]
    result = await discover(fresh, repos, CONFIG, cursors=cursors)
    assert result.jobs == ()
    assert result.errors == ()
    assert len(sim.requests) == 3 * len(repos)  # ready issues and two comment streams each
    assert {(r.status, r.conditional, r.counted) for r in sim.requests} == {(304, True, False)}
    assert sim.rate_limit()["used"] == used
    assert fresh.stats().points_spent == 0
    assert backend.gets == len(repos)  # the ready-issue list of each repository
    assert backend.flushes == []  # nothing changed: nothing written
    backend.close()


async def test_without_a_persisted_cache_a_fresh_process_pays(
    sim: GitHubSimulator, make_client: ClientFactory, repos: list[str], tmp_path: Path
) -> None:
    cursors = await settle(make_client, tmp_path / "cache.sqlite", repos)
    used = sim.rate_limit()["used"]
    fresh = make_client()  # in-memory cache only, as before
    await discover(fresh, repos, CONFIG, cursors=cursors)
    assert sim.rate_limit()["used"] - used == len(repos)  # one ready-issue list each


async def test_changed_entries_are_written_once_per_poll(
    sim: GitHubSimulator, make_client: ClientFactory, repos: list[str], tmp_path: Path
) -> None:
    cursors = await settle(make_client, tmp_path / "cache.sqlite", repos)
    backend = SQLiteBackend(tmp_path / "cache.sqlite")
    gh = make_client(cache=ETagCache(backend))
    sim.add_collaborator(REPO, "alice", role="write")
    sim.create_issue(REPO, "new work", author="alice", labels=["ready"])
    result = await discover(gh, repos, CONFIG, cursors=cursors)
    assert [j.labelled_by for j in result.jobs] == ["alice"]
    # One write, after the poll: the changed issue list, the new issue's events and the
    # labeller's permission.
    assert backend.flushes == [3]
    backend.close()


class OwnCache(dict[str, Any]):
    """A caller's own persisted cache (not an ETagCache): a mapping with ``flush``."""

    def __init__(self) -> None:
        super().__init__()
        self.dirty: set[str] = set()
        self.flushes: list[int] = []

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.dirty.add(key)

    def flush(self) -> int:
        self.flushes.append(len(self.dirty))
        self.dirty.clear()
        return self.flushes[-1]


async def test_a_callers_own_persistent_cache_is_flushed_like_an_etag_cache(
    sim: GitHubSimulator, make_client: ClientFactory, repos: list[str]
) -> None:
    cache = OwnCache()
    assert isinstance(cache, PersistentCache)
    assert not isinstance(LRUCache(), PersistentCache)  # in memory only: nothing to flush
    gh = make_client(cache=cache)
    result = await discover(gh, repos, CONFIG)
    assert result.errors == ()
    # Once, at the end of the poll, with every list the poll fetched (200s it keeps).
    assert len(cache.flushes) == 1
    assert cache.flushes[0] == len(cache) > 0
    await gh.getitem(f"/repos/{REPO}")
    await gh.aclose()  # closing writes what changed since
    assert cache.flushes == [cache.flushes[0], 1]


def test_undecodable_entries_are_ignored(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "c.sqlite")
    backend.http_cache_put_many({"u1": b"not json", "u2": b'["e", null, {"a": 1}, null]'})
    cache = ETagCache(backend)
    with pytest.raises(KeyError):
        cache["u1"]
    assert cache["u2"] == ("e", None, {"a": 1}, None)
    with pytest.raises(KeyError):
        cache["u3"]
    gets = backend.gets
    with pytest.raises(KeyError):
        cache["u3"]
    assert backend.gets == gets  # a miss is not asked again by the same process
    cache["u3"] = ("e3", None, [1], "next")
    assert cache.pending == 1
    assert cache.flush() == 1
    assert ETagCache(backend)["u3"] == ("e3", None, [1], "next")
    backend.close()


async def test_a_repositorys_lists_are_requested_together(
    sim: GitHubSimulator, make_client: ClientFactory, repos: list[str], tmp_path: Path
) -> None:
    cursors = await settle(make_client, tmp_path / "cache.sqlite", repos)
    gh = make_client()
    await gh.getitem("/rate_limit")  # the server's clock is known: no ready-first ordering
    # The ready-issue list is slow; asked one after another, it would be answered first.
    sim.faults.latency(1.0, path=r"^/repos/acme/widgets/issues$")
    sim.clear_requests()
    await discover(gh, [REPO], CONFIG, cursors=cursors)
    assert [r.path.rsplit("/", 2)[-2:] for r in sim.requests] in (
        [["issues", "comments"], ["pulls", "comments"], ["widgets", "issues"]],
        [["pulls", "comments"], ["issues", "comments"], ["widgets", "issues"]],
    )


async def test_connections_are_split_into_small_pools_by_repository(
    make_client: ClientFactory,
) -> None:
    # httpcore scans a whole pool on every request start and end: 8 pools of 8 instead
    # of one of 64, and a repository's requests always share one pool's warm connections.
    gh = make_client(max_connections=64)
    pools = gh._pools
    assert len(pools) == 8
    assert all(p._transport._pool._max_connections == 8 for p in pools)  # type: ignore[attr-defined]
    base = "http://127.0.0.1/repos/acme/widgets"
    chosen = {id(gh._pool(f"{base}{suffix}")) for suffix in ("/issues", "/pulls/comments", "")}
    assert len(chosen) == 1
    spread = {id(gh._pool(f"http://127.0.0.1/repos/acme/r{i}/issues")) for i in range(64)}
    assert len(spread) > 4
    assert gh._pool("http://127.0.0.1/user") is pools[0]
    assert len(make_client(max_connections=5)._pools) == 1
