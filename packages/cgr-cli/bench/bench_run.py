"""Whole runs against the GitHub simulator with the scripted agent: where the time goes.

Prints, for a first run (mirror created) and later runs (mirror made: each a new issue,
whose branches the API shows unmoved, so nothing is fetched), the wall time of a run and
its phases. The agent is tests/fake_claude.py, so the figures are cgr's own
overhead: GitHub calls, git over smart HTTP, the store, the artifacts.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from cgr_cli import parse_config
from cgr_cli.run._pipeline import RunRequest, execute_run
from cgr_discovery.testing import GitHubSimulator

REPO = "bench/big"
FAKE = Path(__file__).resolve().parents[1] / "tests" / "fake_claude.py"
RUNS = 6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, GitHubSimulator(Path(tmp) / "sim") as sim:
        sim.create_repo(REPO, labels=["ready"])
        for batch in range(20):  # 20 commits x 50 files of ~2 KB: a small real project
            files = {f"src/m{batch}_{i}.py": f"# {batch} {i}\n" + "x = 1\n" * 300
                     for i in range(50)}  # fmt: skip
            sim.commit(REPO, "main", files, message=f"batch {batch}")
        config = parse_config(
            {
                "repositories": [REPO],
                "github": {"api_url": sim.url, "token": sim.token, "bot_login": sim.bot_login},
                "paths": {"workspace_root": f"{tmp}/ws", "database": f"{tmp}/cgr.sqlite3"},
                "agent": {"command": [sys.executable, str(FAKE)],
                          "env_passthrough": ["FAKE_CLAUDE_SCENARIO", "FAKE_CLAUDE_STATE"],
                          # confined (the default): its state dir is granted explicitly
                          "sandbox": {"read_write": [f"{tmp}/agent"]}},
                "cleanup": {"policy": "delete"},
            }
        )  # fmt: skip
        os.environ["FAKE_CLAUDE_STATE"] = f"{tmp}/agent"
        os.makedirs(f"{tmp}/agent", exist_ok=True)
        os.environ["FAKE_CLAUDE_SCENARIO"] = "success"
        rows = []
        for n in range(RUNS):
            number = sim.create_issue(REPO, f"Task {n}", "", labels=["ready"])
            started = time.perf_counter()
            summary = anyio.run(execute_run, config, RunRequest(repo=REPO, number=number))
            wall = time.perf_counter() - started
            assert summary.outcome == "pr_opened", summary
            rows.append((wall, summary.timings))
        first, later = rows[0], rows[1:]
        print(f"cgr-cli run pipeline, {RUNS} runs, repo of 1000 files / 21 commits")
        print(f"  first run (mirror created): {first[0]:.2f} s  phases {json.dumps(first[1])}")
        walls = [w for w, _ in later]
        print(f"  later runs (mirror made): median {statistics.median(walls):.2f} s, "
              f"min {min(walls):.2f} s, max {max(walls):.2f} s")  # fmt: skip
        keys = sorted({k for _, t in later for k in t})
        medians = {k: round(statistics.median(t.get(k, 0.0) for _, t in later), 3) for k in keys}
        print(f"  later runs, median phase seconds: {json.dumps(medians)}")

        # The same with a repository file: one trivial set-up and one trivial check
        # command, so the figures are the cost of reading the file and running commands.
        sim.commit(REPO, "main", {".github/cgr.toml": 'setup = ["true"]\ncheck = ["true"]\n'})
        with_file = []
        for n in range(3):
            number = sim.create_issue(REPO, f"Checked task {n}", "", labels=["ready"])
            summary = anyio.run(execute_run, config, RunRequest(repo=REPO, number=number))
            assert summary.outcome == "pr_opened", summary
            assert summary.checks_passed, summary
            with_file.append(summary.timings)
        phases = ("repo_file", "setup", "checks")
        figures = {k: round(statistics.median(t.get(k, 0.0) for t in with_file), 3) for k in phases}
        print(f"  with .github/cgr.toml (setup true, check true), median: {json.dumps(figures)}")

        # The sandbox a run plans once, before its first command (run/_sandbox.py): the
        # directory listings behind its rules, on this machine.
        from cgr_cli.run._sandbox import RunPaths, plan_sandbox
        from cgr_exec import probe_confinement

        paths = RunPaths.of(config, Path(tmp) / "ws" / "t" / "repo", Path(tmp) / "ws" / "r")
        support, plans = probe_confinement(), []
        for _ in range(21):
            began = time.perf_counter()
            plan = plan_sandbox(config, paths, dict(os.environ), support=support)
            plans.append(time.perf_counter() - began)
        print(
            f"  sandbox plan (once a run): median {statistics.median(plans) * 1000:.1f} ms, "
            f"{len(plan.read_only)} read-only and {len(plan.read_write)} read-write rules"
        )


if __name__ == "__main__":
    main()
