"""A fleet of `cgr daemon` hosts on one PostgreSQL, against the GitHub simulator.

Used by test_fleet.py (scaled down) and bench/bench_fleet.py (the full figures). Each host
is a real `python -m cgr_cli daemon` process with its own config, host id and workspace;
they share one database and one simulated GitHub.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
SLOW_AGENT = TESTS / "slow_agent.py"
LABELS = ["ready", "in-progress", "needs-human", "cgr-done"]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, …), read from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Host:
    host_id: str
    config: Path
    workspace: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class FleetWorld:
    """``hosts`` daemons sharing ``database_url``; ``repos`` seeded on ``sim``."""

    sim: Any
    root: Path
    database_url: str
    repos: list[str]
    hosts: list[Host] = field(default_factory=list)

    def add_hosts(
        self, count: int, *, concurrency: int, interval: float, lease: float,
        agent_seconds: float, runs_ahead: int = 0,
    ) -> None:  # fmt: skip
        for _ in range(count):
            i = len(self.hosts)  # hosts added later are numbered on
            host = Host(
                host_id=f"host-{i}",
                config=self.root / f"host-{i}.toml",
                workspace=self.root / f"ws-{i}",
                log=self.root / f"host-{i}.log",
            )
            sections: dict[str, dict[str, Any]] = {
                "github": {"api_url": self.sim.url, "token": self.sim.token,
                           "bot_login": self.sim.bot_login, "status_update_seconds": 0.0},
                "paths": {"workspace_root": str(host.workspace), "database": self.database_url},
                "fleet": {"host_id": host.host_id, "lease_seconds": lease},
                "polling": {"interval_seconds": interval, "max_concurrency": concurrency,
                            "runs_ahead": runs_ahead},
                "agent": {"command": [sys.executable, str(SLOW_AGENT)],
                          "env_passthrough": ["FAKE_CLAUDE_SCENARIO", "FAKE_CLAUDE_STATE",
                                              "SLOW_AGENT_SECONDS"]},
                "timeouts": {"agent_seconds": 60.0, "agent_idle_seconds": 30.0,
                             "watchdog_grace_seconds": 1.0, "heartbeat_seconds": 0.5},
                "cleanup": {"policy": "delete"},
                "labels": {"done": "cgr-done"},
                # The agent runs confined (Landlock); the scripted agent records its calls
                # in agent-state, outside its checkout.
                "agent.sandbox": {"read_write": [str(self.root / "agent-state")]},
            }  # fmt: skip
            (self.root / "agent-state").mkdir(parents=True, exist_ok=True)
            lines = [f"repositories = {json.dumps(self.repos)}"]
            for name, values in sections.items():
                lines.append(f"[{name}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
            host.config.write_text("\n".join(lines) + "\n")
            self.hosts.append(host)

    def env(self, agent_seconds: float) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            FAKE_CLAUDE_SCENARIO="success",
            FAKE_CLAUDE_STATE=str(self.root / "agent-state"),
            SLOW_AGENT_SECONDS=str(agent_seconds),
        )
        return env

    def start(self, host: Host, env: dict[str, str]) -> None:
        with host.log.open("ab") as out:
            host.process = subprocess.Popen(
                [sys.executable, "-m", "cgr_cli", "daemon", "--grace", "5",
                 "--config", str(host.config)],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def kill_with_children(self, host: Host) -> list[int]:
        """SIGKILL the daemon and every process below it, all frozen first (SIGSTOP) so
        none can react or spawn while the others die: a host lost at one instant."""
        assert host.process is not None
        victims = [host.process.pid, *descendants(host.process.pid)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        # Those started between the listing and the stop.
        victims += [p for p in descendants(host.process.pid) if p not in victims]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        host.process.wait(timeout=10)
        return victims

    def stop_all(self) -> None:
        for host in self.hosts:
            if host.process is not None and host.process.poll() is None:
                host.process.send_signal(signal.SIGTERM)
        for host in self.hosts:
            if host.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.process.wait(timeout=30)
                if host.process.poll() is None:
                    host.process.kill()
                    host.process.wait()

    def store(self) -> Any:
        from cgr_store import open_store

        return open_store(self.database_url)

    def runs(self) -> list[Any]:
        with self.store() as store:
            return list(store.recent_runs(limit=10_000))


def seed(sim: Any, repos: list[str], per_repo: int) -> dict[str, list[int]]:
    issues = {}
    for repo in repos:
        sim.create_repo(repo, labels=LABELS)
        sim.add_collaborator(repo, "alice", role="write")
        issues[repo] = sim.seed_ready_issues(repo, per_repo)
    return issues


def pr_closes(pr: Any) -> int | None:
    for line in (pr.body or "").splitlines():
        if line.startswith("Closes #"):
            return int(line.removeprefix("Closes #"))
    return None


def check_outcome(world: FleetWorld, issues: dict[str, list[int]]) -> dict[str, int]:
    """Every issue ends with exactly one visible state (one finalised status comment of
    its last run; a PR when it succeeded, needs-human otherwise), no issue has two PRs,
    no run is active. Returns counts per final status."""
    from cgr_store import RunStatus

    all_runs = world.runs()
    active = [(r.id, r.host, r.status) for r in all_runs if r.status.is_active]
    assert not active, f"active runs after settling: {active}"
    finals: dict[str, int] = {}
    for repo, numbers in issues.items():
        pr_targets = [pr_closes(pr) for pr in world.sim.pull_requests(repo)]
        for number in numbers:
            where = f"{repo}#{number}"
            assert pr_targets.count(number) <= 1, f"{where} has {pr_targets.count(number)} PRs"
            mine = [r for r in all_runs if r.repo == repo and r.target == number]
            assert mine, f"{where} never got a run"
            last = max(mine, key=lambda r: r.created_at)
            labels = set(world.sim.issue(repo, number).labels)
            assert "in-progress" not in labels, f"{where} still labelled in-progress"
            bodies = [c.body for c in world.sim.comments(repo, number)]
            status = [b for b in bodies if f"cgr:run={last.id}" in b]
            assert len(status) == 1, f"{where}: {len(status)} status comments of {last.id}"
            assert "Working on it" not in status[0], f"{where}: status comment not finalised"
            if last.status is RunStatus.SUCCEEDED:
                assert pr_targets.count(number) == 1, f"{where} succeeded without its PR"
            else:
                assert "needs-human" in labels, f"{where} ({last.status}) lacks needs-human"
            finals[last.status.value] = finals.get(last.status.value, 0) + 1
    return finals


@contextlib.contextmanager
def temporary_database(name: str) -> Iterator[str]:
    """A throwaway PostgreSQL server and one empty database in it."""
    from cgr_store.testing import TemporaryPostgres

    with TemporaryPostgres() as server:
        yield server.create_database(name)
