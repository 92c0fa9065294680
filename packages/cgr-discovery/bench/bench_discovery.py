"""Benchmark: polling 50 repositories through the GitHub simulator with 50 ms latency.

Poll 1 is a first poll (no cursors); poll 2 repeats it with the cursors from poll 1 and
nothing changed on GitHub: every request should be a 304 that costs no rate-limit point.
Poll 3 is the same idle poll from a fresh client (as in ``cgr tick``, a new process): the
stream ETags come from the stored cursors, the ready-issue lists have no cache.

Run: ``nox -s bench`` or ``python packages/cgr-discovery/bench/bench_discovery.py``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence

import anyio

from cgr_discovery import (
    DiscoveryConfig,
    GitHubClient,
    PollResult,
    StreamCursor,
    TokenAuth,
    advance_cursors,
    discover,
)
from cgr_discovery.testing import GitHubSimulator

REPOS = 50
LATENCY = 0.050
CONCURRENCY = (8, 32)


async def poll(
    label: str,
    *,
    sim: GitHubSimulator,
    gh: GitHubClient,
    repos: Sequence[str],
    config: DiscoveryConfig,
    cursors: Sequence[StreamCursor],
) -> PollResult:
    sim.clear_requests()
    used_before = sim.rate_limit()["used"]
    stats_before = gh.stats()
    start = time.perf_counter()
    result = await discover(gh, repos, config, cursors=cursors)
    wall = time.perf_counter() - start
    stats = gh.stats()
    sent = stats.requests - stats_before.requests
    not_modified = stats.not_modified - stats_before.not_modified
    spent = sim.rate_limit()["used"] - used_before
    assert not result.errors, result.errors
    print(
        f"  {label:<34} wall {wall * 1000:7.0f} ms   requests {sent:4d}   "
        f"304s {not_modified:4d}   rate-limit points {spent:4d}   jobs {len(result.jobs)}"
    )
    return result


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, GitHubSimulator(tmp, bot_login="cgr-bot") as sim:
        repos = [sim.create_repo(f"bench/repo{i:02d}") for i in range(REPOS)]
        sim.seed_ready_issues(repos[0], 2)
        sim.faults.latency(LATENCY)
        print(
            f"cgr-discovery: idle poll of {REPOS} repositories, {LATENCY * 1000:.0f} ms "
            "simulated latency per request (GitHub simulator on 127.0.0.1)"
        )
        for concurrency in CONCURRENCY:
            config = DiscoveryConfig(login="cgr-bot", max_concurrent_repos=concurrency)
            print(f"max_concurrent_repos={concurrency}")
            async with GitHubClient(auth=TokenAuth(sim.token), base_url=sim.url) as gh:
                args = {"sim": sim, "repos": repos, "config": config}
                first = await poll("poll 1 (first, no cursors)", gh=gh, cursors=(), **args)
                cursors = advance_cursors(first, {j.trigger_id for j in first.jobs})
                second = await poll("poll 2 (nothing changed)", gh=gh, cursors=cursors, **args)
                cursors = advance_cursors(second, {j.trigger_id for j in second.jobs})
            async with GitHubClient(auth=TokenAuth(sim.token), base_url=sim.url) as fresh:
                await poll("poll 3 (fresh process, cursors)", gh=fresh, cursors=cursors, **args)


if __name__ == "__main__":
    anyio.run(main)
