"""Scheduling: 100 ready issues across 10 repositories, concurrency 3, an agent of 0.5 s.

For fork mode (`cgr tick` run every 0.5 s, as a timer would) and daemon mode (`cgr daemon`
polling every 0.5 s), prints the total wall time until every run has ended and the
scheduling overhead per job: from the moment its run row was written (right after the
discovery that found it) to the moment its agent process started (fork or spawn,
interpreter start-up, pick-up, the claim on GitHub, the mirror fetch and clone).

Real processes, the GitHub simulator on 127.0.0.1, real git, a real SQLite file; the agent
is tests/fake_claude.py behind a 0.5 s pause. ``CGR_BENCH_ISSUES`` (default 100) shrinks
the run on a slow machine; the figures printed say how many were run.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from cgr_discovery.testing import GitHubSimulator
from cgr_store import SQLiteStore

FAKE = Path(__file__).resolve().parents[1] / "tests" / "fake_claude.py"
REPOS = 10
ISSUES = int(os.environ.get("CGR_BENCH_ISSUES", "100"))
CONCURRENCY = 3
AGENT_SECONDS = 0.5
INTERVAL = 0.5
# The agent: note when it started (keyed by its working directory, which names the
# issue), take 0.5 s, then become the scripted agent.
AGENT = f"""
import os, sys, time, pathlib
d = pathlib.Path(os.environ["BENCH_STARTS"]); d.mkdir(exist_ok=True)
(d / f"{{os.getpid()}}.json").write_text('{{"cwd": "%s", "t": %r}}' % (os.getcwd(), time.time()))
time.sleep({AGENT_SECONDS})
os.execv(sys.executable, [sys.executable, {str(FAKE)!r}, *sys.argv[1:]])
"""


def subreaper() -> None:
    # The tick's children outlive it; as subreaper this process inherits and reaps them.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def world(tmp: Path, sim: GitHubSimulator) -> Path:
    repos = [f"bench/r{n}" for n in range(REPOS)]
    for n, repo in enumerate(repos):
        sim.create_repo(repo, labels=["ready", "in-progress", "needs-human"])
        share = ISSUES // REPOS + (1 if n < ISSUES % REPOS else 0)
        sim.seed_ready_issues(repo, share)
    config = tmp / "config.toml"
    config.write_text(
        f"repositories = {json.dumps(repos)}\n"
        f"[github]\napi_url = {json.dumps(sim.url)}\ntoken = {json.dumps(sim.token)}\n"
        f"bot_login = {json.dumps(sim.bot_login)}\nstatus_update_seconds = 0.0\n"
        f"[paths]\nworkspace_root = {json.dumps(str(tmp / 'ws'))}\n"
        f"database = {json.dumps(str(tmp / 'cgr.sqlite3'))}\n"
        f"[agent]\ncommand = {json.dumps([sys.executable, '-c', AGENT])}\n"
        'env_passthrough = ["FAKE_CLAUDE_SCENARIO", "FAKE_CLAUDE_STATE", "BENCH_STARTS"]\n'
        f"[polling]\ninterval_seconds = {INTERVAL}\nmax_concurrency = {CONCURRENCY}\n"
        '[cleanup]\npolicy = "delete"\n'
    )
    os.environ.update(
        FAKE_CLAUDE_STATE=str(tmp / "agent"),
        FAKE_CLAUDE_SCENARIO="success",
        BENCH_STARTS=str(tmp / "starts"),
    )
    return config


def finished(db: Path) -> tuple[int, int]:
    if not db.exists():
        return 0, 0
    with SQLiteStore(db) as store:
        runs = store.recent_runs(limit=10_000)
    return len(runs), sum(1 for r in runs if r.status.is_terminal)


def overhead(tmp: Path) -> list[float]:
    """Per run: agent start minus the run row's creation time, seconds."""
    starts: dict[tuple[str, int], float] = {}
    for path in (tmp / "starts").glob("*.json"):
        data = json.loads(path.read_text())
        parts = Path(data["cwd"]).parts  # .../targets/<owner>/<name>/<number>/repo
        starts[(f"{parts[-4]}/{parts[-3]}", int(parts[-2]))] = data["t"]
    with SQLiteStore(tmp / "cgr.sqlite3") as store:
        runs = store.recent_runs(limit=10_000)
    return [
        starts[(r.repo, r.target)] - r.created_at.timestamp()
        for r in runs
        if (r.repo, r.target) in starts
    ]


def cgr(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cgr_cli", *args, "--config", str(config)]


def bench(mode: str) -> None:
    with tempfile.TemporaryDirectory() as t, GitHubSimulator(Path(t) / "sim") as sim:
        tmp = Path(t)
        config = world(tmp, sim)
        db = tmp / "cgr.sqlite3"
        start = time.perf_counter()
        daemon = None
        ticks = 0
        if mode == "daemon":
            daemon = subprocess.Popen(
                cgr(config, "daemon", "--grace", "30"), stderr=subprocess.DEVNULL
            )
        deadline = start + 600
        while time.perf_counter() < deadline:
            if mode == "tick":
                subprocess.run(cgr(config, "tick"), capture_output=True, check=True)
                ticks += 1
            reap()
            total, ended = finished(db)
            if total == ISSUES and ended == ISSUES:
                break
            time.sleep(INTERVAL)
        wall = time.perf_counter() - start
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
        reap()
        total, ended = finished(db)
        with SQLiteStore(db) as store:
            outcomes: dict[str, int] = {}
            for run in store.recent_runs(limit=10_000):
                key = run.outcome or str(run.status)
                outcomes[key] = outcomes.get(key, 0) + 1
        gaps = sorted(overhead(tmp))
        p95 = gaps[int(0.95 * (len(gaps) - 1))] if gaps else float("nan")
        extra = f", {ticks} ticks" if ticks else ""
        print(
            f"  {mode:6s}: {ended}/{ISSUES} runs ended in {wall:.1f} s{extra}; outcomes "
            f"{outcomes}; row written -> agent start: median {statistics.median(gaps):.2f} s, "
            f"p95 {p95:.2f} s, max {max(gaps):.2f} s"
        )


def main() -> None:
    subreaper()
    print(
        f"cgr-cli scheduling: {ISSUES} ready issues in {REPOS} repositories, concurrency "
        f"{CONCURRENCY}, agent {AGENT_SECONDS} s, poll/tick interval {INTERVAL} s "
        f"({datetime.now().astimezone():%Y-%m-%d %H:%M %Z})"
    )
    ideal = ISSUES / CONCURRENCY * AGENT_SECONDS
    print(f"  (the agent alone, perfectly packed, would take {ideal:.1f} s)")
    for mode in ("tick", "daemon"):
        bench(mode)


if __name__ == "__main__":
    main()
