"""Issue 14's chaos scenario and its figures, shared by tests/test_chaos_once.py (which
asserts them) and bench/bench_chaos.py (which prints them).

The scenario: ready issues and @mentions in three repositories of the GitHub simulator;
real ``cgr tick`` processes first, then a real ``cgr daemon`` (concurrency 3); 10% of every
request — every REST route and git's smart HTTP alike — fails (a 5xx, the connection
dropped before the request is applied, or dropped after it was applied), plus a few
secondary rate limits; about 20% of the run processes are SIGKILLed at a random moment,
and the daemon three times. Then the faults stop, the work settles, and the figures are
read from the store and the simulator.

The process that drives it is a child subreaper (schedworld.set_subreaper), so the forked
children of a tick come back to it and no process can be left unseen.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedworld import pr_closes, processes, reap_exited, set_subreaper

HERE = Path(__file__).parent
SLOW_AGENT = HERE / "slow_agent.py"
REPOS = ("acme/widgets", "acme/gadgets", "acme/gizmos")
LABELS = ["ready", "in-progress", "needs-human", "cgr-done"]


@dataclass
class Plan:
    ready_per_repo: int = 10
    mentions: int = 10
    fault_rate: float = 0.10
    run_kill_rate: float = 0.20
    daemon_kills: int = 3
    concurrency: int = 3
    agent_seconds: float = 0.3
    tick_seconds: float = 12.0
    seed: int = 14


@dataclass
class Figures:
    triggers: int = 0
    ready_issues: int = 0
    mentions: int = 0
    runs: int = 0
    succeeded: int = 0
    failed_killed: int = 0
    failed_by_fault: list[str] = field(default_factory=list)
    requeues: int = 0
    write_retries: int = 0
    git_retries: int = 0
    visible_state_errors: list[str] = field(default_factory=list)
    pull_requests: int = 0
    max_prs_per_issue: int = 0
    unreported_prs: list[str] = field(default_factory=list)
    active_runs: int = 0
    leftover_processes: list[str] = field(default_factory=list)
    undelivered: int = 0
    triggers_without_run: list[str] = field(default_factory=list)
    faults_injected: dict[str, int] = field(default_factory=dict)
    killed_runs: int = 0
    killed_daemons: int = 0
    ticks: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        rows = [
            ("triggers (ready issues + mentions)", f"{self.triggers} ({self.ready_issues} + "
                                                   f"{self.mentions})"),
            ("runs / succeeded / failed after a SIGKILL", f"{self.runs} / {self.succeeded} / "
                                                         f"{self.failed_killed}"),
            ("runs failed because of a transient fault", str(len(self.failed_by_fault))),
            ("claims requeued / GitHub write retries / git retries",
             f"{self.requeues} / {self.write_retries} / {self.git_retries}"),
            ("issues with a wrong or missing visible state", str(len(self.visible_state_errors))),
            ("pull requests / most per issue / not reported", f"{self.pull_requests} / "
             f"{self.max_prs_per_issue} / {len(self.unreported_prs)}"),
            ("active runs / leftover processes / undelivered reports after settling",
             f"{self.active_runs} / {len(self.leftover_processes)} / {self.undelivered}"),
            ("triggers without a run or a stated reason", str(len(self.triggers_without_run))),
            ("faults injected", ", ".join(f"{k} {v}" for k, v in
                                          sorted(self.faults_injected.items()))),
            ("run processes / daemons SIGKILLed", f"{self.killed_runs} / {self.killed_daemons}"),
            ("cgr tick processes", str(self.ticks)),
            ("wall time", f"{self.seconds:.0f} s"),
        ]  # fmt: skip
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class RandomFaults:
    """Every request (REST and git smart HTTP) fails with probability ``rate``: a 500, 502
    or 503, a connection dropped before the request is applied, or one dropped after it was
    applied. Installed over the simulator's ``Faults.take`` (the faults a test adds on top,
    such as secondary limits, still apply first)."""

    def __init__(self, sim: Any, rate: float, rng: random.Random) -> None:
        from cgr_discovery.testing import Fault

        self._fault = Fault
        self.sim, self.rate, self.rng = sim, rate, rng
        self.on = True
        self.injected: dict[str, int] = {}
        self._take = sim.faults.take
        sim.faults.take = self.take

    def take(self, method: str, path: str) -> tuple[float, Any]:
        delay, chosen = self._take(method, path)
        if chosen is not None or not self.on or self.rng.random() >= self.rate:
            return delay, chosen
        kind = self.rng.choice(["500", "502", "503", "drop", "drop_after"])
        where = "git" if ".git/" in path else "rest"
        self.injected[f"{where} {kind}"] = self.injected.get(f"{where} {kind}", 0) + 1
        if kind in ("drop", "drop_after"):
            return delay, self._fault(kind=kind, method=None, path=None)
        return delay, self._fault(kind="error", method=None, path=None, status=int(kind))


@dataclass
class World:
    sim: Any
    root: Path
    config_path: Path
    workspace: Path
    database: Path
    env: dict[str, str]
    ready: list[tuple[str, int]] = field(default_factory=list)
    quiet: list[tuple[str, int]] = field(default_factory=list)  # issues to mention the bot on
    mentions: list[tuple[str, int, int]] = field(default_factory=list)  # repo, issue, comment

    def post_mentions(self) -> None:
        """An @mention on each quiet issue. Posted after the first pass: discovery starts
        reading comments from the moment it first looks (older ones are history)."""
        for repo, number in self.quiet:
            comment = self.sim.add_comment(repo, number, f"@{self.sim.bot_login} please add "
                                           "a greeting", author="alice")  # fmt: skip
            self.mentions.append((repo, number, int(comment)))

    def store(self) -> Any:
        from cgr_store import SQLiteStore

        return SQLiteStore(self.database)

    def cgr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cgr_cli", *args, "--config", str(self.config_path)],
            capture_output=True, text=True, timeout=timeout, check=False, env=self.env,
        )  # fmt: skip

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "cgr_cli", *args, "--config", str(self.config_path)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip


def make_world(sim: Any, root: Path, plan: Plan) -> World:
    """Repositories, issues and mentions in ``sim``; the configuration under ``root``."""
    bot = sim.bot_login
    world = World(
        sim=sim,
        root=root,
        config_path=root / "config.toml",
        workspace=root / "ws",
        database=root / "cgr.sqlite3",
        env={
            **os.environ,
            "FAKE_CLAUDE_SCENARIO": "success",
            "FAKE_CLAUDE_STATE": str(root / "agent-state"),
            "SLOW_AGENT_SECONDS": str(plan.agent_seconds),
        },
    )
    (root / "agent-state").mkdir(parents=True, exist_ok=True)
    for repo in REPOS:
        sim.create_repo(repo, labels=LABELS)
        sim.add_collaborator(repo, "alice", role="write")
        world.ready += [(repo, n) for n in sim.seed_ready_issues(repo, plan.ready_per_repo)]
    for i in range(plan.mentions):
        repo = REPOS[i % len(REPOS)]
        number = sim.create_issue(repo, f"Mention {i}", "Something small.", author="alice")
        world.quiet.append((repo, int(number)))
    config = {
        "repositories": list(REPOS),
        "github": {"api_url": sim.url, "token": sim.token, "bot_login": bot,
                   "status_update_seconds": 0.0},
        "paths": {"workspace_root": str(world.workspace), "database": str(world.database)},
        "agent": {"command": [sys.executable, str(SLOW_AGENT)], "max_cost_usd": 5.0,
                  "env_passthrough": ["FAKE_CLAUDE_SCENARIO", "FAKE_CLAUDE_STATE",
                                      "SLOW_AGENT_SECONDS"]},
        # The scripted agent keeps its calls outside its checkout: let the sandbox allow it.
        "agent.sandbox": {"read_write": [str(root / "agent-state")]},
        "timeouts": {"agent_seconds": 60.0, "agent_idle_seconds": 30.0,
                     "watchdog_grace_seconds": 1.0, "heartbeat_seconds": 0.5},
        "polling": {"interval_seconds": 0.3, "max_concurrency": plan.concurrency,
                    "retry_backoff_seconds": 1.0, "retry_backoff_max_seconds": 4.0},
        "cleanup": {"policy": "delete"},
        "labels": {"done": "cgr-done"},
    }  # fmt: skip
    lines = [f"repositories = {json.dumps(config.pop('repositories'))}"]
    for name, values in config.items():
        assert isinstance(values, dict)
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    world.config_path.write_text("\n".join(lines) + "\n")
    return world


# -- processes ------------------------------------------------------------------------------


def _alive(run: Any) -> bool:
    from cgr_cli.schedule._runs import process_alive

    return bool(process_alive(run))


def leftovers(world: World) -> list[str]:
    """cgr processes, agents or zombies still here, and anything working in the workspace."""
    found = []
    me = os.getpid()
    for p in processes():
        mine = p.ppid == me and ("cgr_cli" in p.cmd or "agent" in p.cmd or p.state == "Z")
        if mine or (p.cwd or "").startswith(str(world.workspace)):
            found.append(f"{p.pid} {p.state} {p.cmd[:120]}")
    return found


class Killer:
    """SIGKILLs about ``rate`` of the run processes, each at a random moment of its life.

    A run chosen whose life ended before its moment came passes its kill on to the next
    run seen, or to a live one spared so far: otherwise the faster the runs, the fewer
    kills (CI once saw 1 in 40)."""

    def __init__(self, world: World, rate: float, rng: random.Random) -> None:
        self.world, self.rate, self.rng = world, rate, rng
        self.decided: dict[str, float | None] = {}  # run id -> when to kill it (None: never)
        self.killed: set[str] = set()
        self.owed = 0  # kills of chosen runs that ended first

    def step(self, runs: list[Any]) -> None:
        now = time.monotonic()
        for run in runs:
            if (
                run.status.is_terminal
                and self.decided.get(run.id) is not None
                and run.id not in self.killed
            ):
                self.decided[run.id] = None
                self.owed += 1
            # Claimed or running: the row names the run's own process (a queued one may
            # still name its scheduler).
            if run.status.value not in ("claimed", "running") or not _alive(run):
                continue
            if run.id not in self.decided:
                chosen = self.owed > 0 or self.rng.random() < self.rate
                if chosen and self.owed:
                    self.owed -= 1
                self.decided[run.id] = now + self.rng.uniform(0.0, 1.2) if chosen else None
            elif self.decided[run.id] is None and self.owed and run.id not in self.killed:
                # A kill owed, and no new run may come (the last runs of the scenario): a
                # live run spared so far takes it (CI once saw 2 kills in 40 runs).
                self.owed -= 1
                self.decided[run.id] = now + self.rng.uniform(0.0, 1.2)
            when = self.decided[run.id]
            if when is not None and now >= when and run.id not in self.killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.pid, signal.SIGKILL)
                self.killed.add(run.id)


# -- the scenario -----------------------------------------------------------------------------


def run_scenario(world: World, plan: Plan, *, log: Callable[[str], None] = print) -> Figures:
    """Drive the scenario to its settled end and measure it."""
    rng = random.Random(plan.seed)
    figures = Figures()
    started = time.monotonic()
    faults = RandomFaults(world.sim, plan.fault_rate, rng)
    for path in (r"/comments", r"/labels", r"/pulls", r"/issues$"):
        world.sim.faults.secondary_rate_limit(retry_after=1, path=path, count=1)
    killer = Killer(world, plan.run_kill_rate, rng)
    killed_daemons: set[int] = set()
    logs = world.root / "logs"
    logs.mkdir(exist_ok=True)
    set_subreaper(True)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        # Fork mode first: `cgr tick` as a timer would run it.
        deadline = time.monotonic() + plan.tick_seconds
        while time.monotonic() < deadline:
            tick = world.start("tick", log=logs / "ticks.log")
            figures.ticks += 1
            while tick.poll() is None:
                killer.step(_runs(world))
                time.sleep(0.1)
            reap_exited()
            if not world.mentions:
                world.post_mentions()
            for _ in range(5):
                killer.step(_runs(world))
                time.sleep(0.1)
        # Then the daemon, SIGKILLed `daemon_kills` times and started again each time.
        daemon = world.start("daemon", "--grace", "30", log=logs / "daemon.log")
        kills_at = [time.monotonic() + 7.0 * (i + 1) for i in range(plan.daemon_kills)]
        work_deadline = time.monotonic() + 400
        while time.monotonic() < work_deadline:
            runs = _runs(world)
            killer.step(runs)
            if kills_at and time.monotonic() >= kills_at[0]:
                kills_at.pop(0)
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(30)
                figures.killed_daemons += 1
                killed_daemons.add(daemon.pid)
                daemon = world.start("daemon", "--grace", "30", log=logs / "daemon.log")
            if not kills_at and _settled(world, runs):
                break
            reap_exited()
            time.sleep(0.2)
        # The faults stop; whatever still waits (backed-off issues, pending reports) ends.
        faults.on = False
        world.sim.faults.clear()
        settle_deadline = time.monotonic() + 120
        while time.monotonic() < settle_deadline and not _settled(world, _runs(world)):
            reap_exited()
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        daemon = None
        world.cgr("reap")
        end = time.monotonic() + 30
        while time.monotonic() < end and leftovers(world):
            reap_exited()
            time.sleep(0.1)
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(30)
        faults.on = False
        reap_exited()
        set_subreaper(False)
    figures.seconds = time.monotonic() - started
    figures.faults_injected = dict(faults.injected)
    figures.killed_runs = len(killer.killed)
    measure(world, figures, killed=killer.killed, killed_pids=killed_daemons)
    log(figures.table())
    return figures


def _runs(world: World) -> list[Any]:
    with world.store() as store:
        return list(store.recent_runs(limit=10_000))


def _settled(world: World, runs: list[Any]) -> bool:
    if any(r.status.is_active for r in runs) or len(world.mentions) < len(world.quiet):
        return False
    targets = {(r.repo, r.target) for r in runs}
    if any(t not in targets for t in world.ready):
        return False
    if any("ready" in world.sim.issue(repo, n).labels for repo, n in world.ready):
        return False
    triggered = {r.trigger_id for r in runs}
    if any(str(c) not in triggered for _, _, c in world.mentions):
        return False
    with world.store() as store:
        return not store.pending_outbox(1)


# -- the figures ------------------------------------------------------------------------------


def measure(world: World, figures: Figures, *, killed: set[str], killed_pids: set[int]) -> None:
    from cgr_cli.run._outbox import is_attempt_event
    from cgr_cli.run._requeue import is_requeue
    from cgr_store import RunStatus

    figures.ready_issues, figures.mentions = len(world.ready), len(world.quiet)
    figures.triggers = figures.ready_issues + figures.mentions
    runs = _runs(world)
    figures.runs = len(runs)
    figures.active_runs = sum(1 for r in runs if r.status.is_active)
    figures.leftover_processes = leftovers(world)
    with world.store() as store:
        figures.undelivered = len(store.pending_outbox(10_000))
        history = {r.id: store.events(r.id) for r in runs}
        reported = {r.id for r in runs if store.outbox_for_run(r.id)}
    for run in runs:
        events = history[run.id]
        figures.requeues += sum(1 for e in events if is_requeue(e.detail))
        figures.write_retries += sum(
            1 for e in events if is_attempt_event(e.detail) and ": retry" in e.detail
        )
        if run.status is RunStatus.SUCCEEDED:
            figures.succeeded += 1
        elif run.id in killed or any(f"(pid {pid})" in (run.error or "") for pid in killed_pids):
            # Its process was SIGKILLed, or the daemon that had just written its row was.
            figures.failed_killed += 1
        elif run.status is not RunStatus.QUEUED:
            # With its status, outcome and history: what a CI log needs to tell why.
            moves = " > ".join(f"{e.to_status}" + (f" ({e.detail[:80]})" if e.detail else "")
                               for e in events if e.from_status != e.to_status)  # fmt: skip
            figures.failed_by_fault.append(
                f"{run.id} {run.repo}#{run.target}: {run.status}/{run.outcome}: {run.error}"
                f" [{moves}]"
            )
    for log in world.workspace.glob("r-*/logs/run.log"):
        figures.git_retries += log.read_text(errors="replace").count(": transient failure")
    # Every trigger got a run (a ready issue: a run on it; a mention: a run it caused).
    triggered = {r.trigger_id for r in runs}
    targets = {(r.repo, r.target) for r in runs}
    figures.triggers_without_run = [f"{repo}#{n}" for repo, n in world.ready if (repo, n)
                                    not in targets] + [
        f"{repo}#{n} comment {c}" for repo, n, c in world.mentions if str(c) not in triggered
    ]  # fmt: skip
    unmentioned = world.quiet[len(world.mentions) :]
    figures.triggers_without_run += [f"{repo}#{n} never mentioned" for repo, n in unmentioned]
    # Pull requests: at most one per issue, each reported on its issue.
    for repo in REPOS:
        pulls = world.sim.pull_requests(repo)
        figures.pull_requests += len(pulls)
        closes: dict[int, list[int]] = {}
        for pr in pulls:
            if (issue := pr_closes(pr)) is not None:
                closes.setdefault(issue, []).append(pr.number)
        for issue, numbers in closes.items():
            figures.max_prs_per_issue = max(figures.max_prs_per_issue, len(numbers))
            bodies = [c.body for c in world.sim.comments(repo, issue)]
            for number in numbers:
                if not any(f"pull request #{number}:" in b for b in bodies):
                    figures.unreported_prs.append(f"{repo}#{number} (for #{issue})")
    # Every issue: the latest run's one status comment says its outcome; labels as in 5.
    by_target: dict[tuple[str, int], list[Any]] = {}
    for run in runs:
        by_target.setdefault((run.repo, run.target), []).append(run)
    for (repo, number), mine in sorted(by_target.items()):
        problem = visible_state_problem(
            world, repo, number, runs=mine, history=history, reported=reported
        )
        if problem:
            figures.visible_state_errors.append(f"{repo}#{number}: {problem}")


def visible_state_problem(  # noqa: PLR0911 - one return per kind of problem
    world: World,
    repo: str,
    number: int,
    *,
    runs: list[Any],
    history: dict[str, list[Any]],
    reported: set[str],
) -> str | None:
    """What is wrong with what GitHub shows for one issue, or None."""
    from cgr_store import RunStatus

    issue = world.sim.issue(repo, number)
    labels = set(issue.labels)
    if "in-progress" in labels:
        return "still labelled in-progress"
    # The runs GitHub shows: claimed ones, and ones ended from outside with a report.
    claimed = [
        r
        for r in runs
        if r.id in reported or any(e.to_status is RunStatus.CLAIMED for e in history[r.id])
    ]
    comments = [c.body for c in world.sim.comments(repo, number)]
    for run in claimed:
        mine = [b for b in comments if f"cgr:run={run.id}" in b]
        if len(mine) != 1:
            return f"run {run.id} has {len(mine)} status comments"
        text = mine[0]
        if "Working on it" in text:
            return f"run {run.id}'s status comment never got its final text"
        expected = {
            RunStatus.SUCCEEDED: f"pull request #{run.pr_number}:",
            RunStatus.FAILED: "❌ The run failed",
            RunStatus.TIMED_OUT: "⏱️ The run timed out",
            RunStatus.CANCELLED: "🛑 The run was cancelled",
            RunStatus.NEEDS_HUMAN: "⚠️",
        }[run.status]
        if expected not in text:
            return f"run {run.id} is {run.status.value} but its comment says {text[:80]!r}"
    if not claimed:
        return None  # never claimed: nothing was ever shown (a later pass took the issue)
    latest = max(claimed, key=lambda r: r.created_at)
    ok = latest.status is RunStatus.SUCCEEDED
    if ok and ("cgr-done" not in labels or "needs-human" in labels):
        return f"latest run succeeded but labels are {sorted(labels)}"
    if not ok and ("needs-human" not in labels or "cgr-done" in labels):
        return f"latest run is {latest.status.value} but labels are {sorted(labels)}"
    return None
