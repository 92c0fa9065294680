"""Benchmark: what an idle poll costs at 50 and 500 repositories, each figure beside its goal.

For each size, the GitHub simulator (in a separate process, so its CPU does not compete
with the client's for one interpreter lock) serves N repositories. Two polls in one
"process" settle the cursors and fill a persisted ETag cache (a SQLite file, as cgr's store
would keep it). Then the measured poll: a fresh client with a fresh cache object over the
same file, the stored cursors, nothing changed on GitHub (as every ``cgr tick`` starts). It
is run without added latency (requests, rate-limit points) and with 50 ms added to every
request (wall time).

Goals (issue 16): 50 repositories ≤ 0.35 s and 500 ≤ 2 s per idle poll at 50 ms latency,
0 rate-limit points from a fresh process.

Run: ``nox -s bench`` or ``python packages/cgr-discovery/bench/bench_discovery.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import tempfile
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import anyio

from cgr_discovery import (
    DiscoveryConfig,
    ETagCache,
    GitHubClient,
    StreamCursor,
    TokenAuth,
    advance_cursors,
    discover,
)

SIZES = (50, 500)
LATENCY = 0.050
GOALS = {50: 0.35, 500: 2.0}
CONFIG = DiscoveryConfig(login="cgr-bot")


def serve(root: str, repos: int, conn: Connection) -> None:
    """The simulator process: seed, report the URL, obey "latency"/"count"/"stop"."""
    from cgr_discovery.testing import GitHubSimulator

    with GitHubSimulator(root, bot_login="cgr-bot") as sim:
        names = [f"bench/repo{i:03d}" for i in range(repos)]
        for name in names:
            sim.create_repo(name)
        conn.send((sim.url, sim.token, names))
        while True:
            command, arg = conn.recv()
            if command == "latency":
                sim.faults.clear()
                if arg:
                    sim.faults.latency(arg)
                conn.send(None)
            elif command == "mark":
                sim.clear_requests()
                conn.send(sim.rate_limit()["used"])
            elif command == "count":
                requests = sim.requests
                conn.send((len(requests), sum(r.status == 304 for r in requests)))
            else:
                conn.send(None)
                return


class SQLiteBackend:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS http_cache (key TEXT PRIMARY KEY, v BLOB)")

    def http_cache_get(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT v FROM http_cache WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def http_cache_put_many(self, entries: Mapping[str, bytes]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO http_cache VALUES (?, ?)", entries.items())


def ask(conn: Connection, command: str, arg: object = None) -> object:
    conn.send((command, arg))
    return conn.recv()


async def idle_poll(
    conn: Connection, gh: GitHubClient, repos: Sequence[str], cursors: Sequence[StreamCursor]
) -> tuple[float, int, int, int]:
    """One idle poll: wall s, requests, 304s, rate-limit points (counted by the server)."""
    used = ask(conn, "mark")
    start = time.perf_counter()
    result = await discover(gh, repos, CONFIG, cursors=cursors)
    wall = time.perf_counter() - start
    assert not result.errors, result.errors[:3]
    requests, not_modified = ask(conn, "count")  # type: ignore[misc]
    points = int(ask(conn, "mark")) - int(used)  # type: ignore[call-overload]
    return wall, requests, not_modified, points


async def fresh_poll(
    conn: Connection, url: str, token: str, repos: Sequence[str], *, db: Path,
    cursors: Sequence[StreamCursor],
) -> tuple[float, int, int, int]:  # fmt: skip
    """An idle poll as ``cgr tick`` makes it: a new client, a new cache over the file."""
    backend = SQLiteBackend(db)
    cache = ETagCache(backend)
    async with GitHubClient(auth=TokenAuth(token), base_url=url, cache=cache) as gh:
        figures = await idle_poll(conn, gh, repos, cursors)
    backend.db.close()
    return figures


async def measure(size: int, tmp: str) -> None:
    parent, child = multiprocessing.Pipe()
    # spawn: the simulator process starts clean (no inherited event loop or threads).
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(os.path.join(tmp, f"github{size}"), size, child)
    )
    process.start()
    try:
        url, token, repos = parent.recv()
        db = Path(tmp) / f"cache{size}.sqlite"
        backend = SQLiteBackend(db)
        cursors: Sequence[StreamCursor] = ()
        cache = ETagCache(backend)
        async with GitHubClient(auth=TokenAuth(token), base_url=url, cache=cache) as gh:
            for _ in range(2):  # the first poll sets the cursors, the second settles them
                result = await discover(gh, repos, CONFIG, cursors=cursors)
                cursors = advance_cursors(result, {j.trigger_id for j in result.jobs})
            gh.flush_cache()
            _, requests, not_modified, points = await fresh_poll(
                parent, url, token, repos, db=db, cursors=cursors
            )
            ask(parent, "latency", LATENCY)
            # The daemon: one process, warm connections. Median of 3.
            warm = sorted([(await idle_poll(parent, gh, repos, cursors))[0] for _ in range(3)])
        backend.db.close()
        fresh = [await fresh_poll(parent, url, token, repos, db=db, cursors=cursors)]
        fresh += [await fresh_poll(parent, url, token, repos, db=db, cursors=cursors)]
        fresh += [await fresh_poll(parent, url, token, repos, db=db, cursors=cursors)]
        cold = sorted(f[0] for f in fresh)
        goal = GOALS[size]
        print(
            f"  {size:4d} repos: requests {requests:5d} ({not_modified} of them 304), "
            f"rate-limit points {points} (goal 0, fresh process)\n"
            f"             wall at {LATENCY * 1000:.0f} ms latency: daemon (warm connections) "
            f"{warm[1]:5.2f} s, fresh process {cold[1]:5.2f} s (goal ≤ {goal:.2f} s; "
            f"medians of 3; fresh-process points {max(f[3] for f in fresh)})"
        )
    finally:
        ask(parent, "stop")
        process.join(30)


async def main() -> None:
    print(
        "cgr-discovery: idle poll from a fresh process with a warm persisted ETag cache "
        f"(max_concurrent_repos={CONFIG.max_concurrent_repos}, GitHub simulator in its own "
        f"process on 127.0.0.1; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at start: wall times scale with it)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            await measure(size, tmp)


if __name__ == "__main__":
    anyio.run(main)
