"""A fleet of 3 `cgr daemon` hosts on one PostgreSQL: issue 17's figures.

1. Lost host: 60 ready issues in 6 repos, 3 daemons (host ids host-0..2, own workspaces),
   2 slots each. Once host-0 runs agents it is SIGKILLed with all its children. Prints how
   long until its runs were taken over (ended or requeued) against the lease, how the
   issues ended, duplicate PRs and the active runs left after settling, the time from the
   kill to all settled and the wall time. ASSERTS issue 17's invariants: taken over within
   twice the lease, every issue one visible state (``check_outcome``), 0 duplicate PRs, 0
   active runs after settling, the survivors finished every issue the lost host was not
   running.
2. Idle: GitHub requests per poll interval with 1 host and with 3 hosts (only the poll
   leader asks GitHub); asserts 3 hosts cost no more than 1 (one interval's jitter).
3. Claim throughput: 8 processes claiming at once, PostgreSQL beside SQLite (cgr-store's
   ``bench/bench_claims.py``, run from here so the fleet's figures are in one place; it
   asserts every run claimed once).

The agent is tests/slow_agent.py (the scripted agent after a pause), so the figures are
cgr's own scheduling, not a model's.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fleetworld import FleetWorld, check_outcome, pr_closes, seed, wait_until

LEASE = 5.0
AGENT_SECONDS = 2.0
INTERVAL = 0.5


def lost_host(tmp: Path, database_url: str) -> None:
    from cgr_discovery.testing import GitHubSimulator

    with GitHubSimulator(tmp / "sim") as sim:
        repos = [f"bench/repo-{i}" for i in range(6)]
        issues = seed(sim, repos, 10)
        world = FleetWorld(sim=sim, root=tmp, database_url=database_url, repos=repos)
        world.add_hosts(
            3, concurrency=2, interval=INTERVAL, lease=LEASE, agent_seconds=AGENT_SECONDS
        )
        env = world.env(AGENT_SECONDS)
        start = time.monotonic()
        for host in world.hosts:
            world.start(host, env)
        try:

            def victim_running() -> bool:
                return any(r.host == "host-0" and r.status.value == "running" for r in world.runs())

            wait_until(victim_running, 120, "host-0 to run an agent")
            time.sleep(AGENT_SECONDS / 2)
            with world.store() as store:
                orphaned = [r.id for r in store.active_runs(host="host-0")]
            world.kill_with_children(world.hosts[0])
            killed = time.monotonic()

            def taken() -> bool:
                with world.store() as store:
                    return not store.active_runs(host="host-0")

            wait_until(taken, 10 * LEASE, "the take-over")
            took = time.monotonic() - killed

            def settled() -> bool:
                runs = world.runs()
                done = {(r.repo, r.target) for r in runs if r.status.is_terminal}
                return len(done) >= 60 and not any(r.status.is_active for r in runs)

            wait_until(settled, 900, "all 60 issues")
            settle = time.monotonic() - killed
            wall = time.monotonic() - start
        finally:
            world.stop_all()
        finals, by_host, prs, duplicates, active = _invariants(world, issues, orphaned, took)
        print("lost host: 3 daemons x 2 slots, 60 issues in 6 repos, host-0 SIGKILLed")
        print(f"  host-0 active runs at the kill      {len(orphaned)}")
        print(f"  taken over after                    {took:.1f} s (lease {LEASE:g} s)")
        print(f"  issues by final state               {finals}")
        print(f"  succeeded runs by host              {dict(sorted(by_host.items()))}")
        print(f"  pull requests / duplicates          {prs} / {duplicates}")
        print(f"  active runs after settling          {len(active)}")
        print(f"  kill to all settled                 {settle:.1f} s")
        print(f"  wall time                           {wall:.1f} s")


def _invariants(
    world: FleetWorld, issues: dict[str, list[int]], orphaned: list[str], took: float
) -> tuple[dict[str, int], Counter[str], int, int, list[str]]:
    """Issue 17's invariants, asserted; returns the figures printed."""
    # check_outcome: one visible state per issue, no issue with two PRs, no active run.
    finals = check_outcome(world, issues)
    runs = world.runs()
    active = [r.id for r in runs if r.status.is_active]
    by_host = Counter(str(r.host) for r in runs if r.status.value == "succeeded")
    prs = duplicates = 0
    for repo in issues:
        targets = Counter(pr_closes(pr) for pr in world.sim.pull_requests(repo))
        prs += sum(targets.values())
        duplicates += sum(n - 1 for n in targets.values() if n > 1)
    assert took <= 2 * LEASE, f"taken over after {took:.1f} s, lease {LEASE:g} s"
    assert duplicates == 0, duplicates
    assert active == [], active
    assert finals.get("succeeded", 0) >= 60 - len(orphaned), finals
    assert set(by_host) - {"host-0"}, by_host  # the survivors did the work
    return finals, by_host, prs, duplicates, active


def idle(tmp: Path, database_url: str) -> None:
    from cgr_discovery.testing import GitHubSimulator

    with GitHubSimulator(tmp / "sim-idle") as sim:
        repos = [f"bench/idle-{i}" for i in range(6)]
        seed(sim, repos, 0)
        world = FleetWorld(sim=sim, root=tmp / "idle", database_url=database_url, repos=repos)
        world.root.mkdir()
        world.add_hosts(3, concurrency=2, interval=1.0, lease=LEASE, agent_seconds=0.1)
        env = world.env(0.1)
        figures = {}
        for count in (1, 3):
            for host in world.hosts[:count]:
                world.start(host, env)
            try:
                time.sleep(4.0)
                before = len(sim.requests)
                time.sleep(20.0)
                figures[count] = (len(sim.requests) - before) / 20.0
            finally:
                world.stop_all()
        print("idle: GitHub requests per poll interval (1 s, 6 repos)")
        print(f"  1 host   {figures[1]:.1f}")
        print(f"  3 hosts  {figures[3]:.1f}")
        # Only the leader polls: a multiplied poll would be 3x; allow one interval's jitter.
        assert figures[1] > 0
        assert figures[3] <= figures[1] * (1 + 1 / 3), figures


def claims() -> None:
    """cgr-store's claim benchmark (8 processes, PostgreSQL beside SQLite)."""
    script = Path(__file__).resolve().parents[2] / "cgr-store" / "bench" / "bench_claims.py"
    spec = importlib.util.spec_from_file_location("bench_claims", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()


def main() -> None:
    from cgr_store.testing import TemporaryPostgres

    with tempfile.TemporaryDirectory() as tmp, TemporaryPostgres() as server:
        (Path(tmp) / "lost").mkdir()
        lost_host(Path(tmp) / "lost", server.create_database("bench_lost"))
        idle(Path(tmp), server.create_database("bench_idle"))
    claims()


if __name__ == "__main__":
    main()
