"""Helpers for the scheduling tests: real `cgr tick` / `cgr daemon` processes against the
GitHub simulator, with the scripted agent.

A test takes the ``sched`` fixture (conftest.py): a :class:`Sched` bound to its ``env``,
whose methods are the helpers below (write the config, run or start ``cgr``, read the runs,
wait, check the end state), instead of importing each helper by name.

The pytest process never forks: `cgr tick` runs as a subprocess (`python -m cgr_cli tick`).
The test process makes itself a child subreaper (prctl), so the tick's detached children
are re-parented to it when the tick exits; the tests can then prove that no process and
no zombie is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from runworld import REPO, Env

SLOW_AGENT = Path(__file__).with_name("slow_agent.py")
PR_SET_CHILD_SUBREAPER = 36


def set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@dataclass(frozen=True)
class Proc:
    """One process as /proc shows it; ``cwd`` is None where it cannot be read."""

    pid: int
    ppid: int
    state: str
    cmd: str
    cwd: str | None


def processes() -> Iterator[Proc]:
    """Every process /proc lists (one that ends while it is read is passed over)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        try:
            cwd: str | None = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = None
        fields = stat.rsplit(")", 1)[1].split()
        yield Proc(int(entry), int(fields[1]), fields[0], cmd, cwd)


def children_of(pid: int) -> list[tuple[int, str, str]]:
    """(pid, state, command) of every process whose parent is ``pid``."""
    return [(p.pid, p.state, p.cmd) for p in processes() if p.ppid == pid]


def reap_zombies() -> None:
    """Collect re-parented children that have exited (they are ours as subreaper).

    This may also collect a `git http-backend` the simulator started and is about to wait
    for; that is harmless: the simulator reads the backend's whole answer from its pipes
    first and parses its status from there, so a lost exit status changes nothing.
    """
    for pid, state, _ in children_of(os.getpid()):
        if state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def reap_exited() -> None:
    """Collect every child that has exited (``waitpid(-1)``), without reading /proc: for
    loops that must stay cheap (the chaos scenario, the benchmarks)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def processes_in(root: Path) -> list[int]:
    """Processes whose working directory is under ``root`` (agents, git)."""
    return [p.pid for p in processes() if p.cwd is not None and p.cwd.startswith(str(root))]


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    explain: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap_zombies()
        if predicate():
            return
        time.sleep(0.05)
    detail = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def pr_closes(pr: Any) -> int | None:
    for line in (pr.body or "").splitlines():
        if line.startswith("Closes #"):
            return int(line.removeprefix("Closes #"))
    return None


def dead_process() -> tuple[int, float]:
    from cgr_exec import ProcessIdentity

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = ProcessIdentity.of(child.pid)
    child.wait()
    return identity.pid, float(identity.start_time)


@dataclass
class Sched:
    """The scheduling helpers bound to one test's :class:`Env` (the ``sched`` fixture)."""

    env: Env

    # Helpers that need no env, here too so a test needs nothing but the fixture.
    wait_until = staticmethod(wait_until)
    stop = staticmethod(stop)
    processes_in = staticmethod(processes_in)

    def config(self, **sections: dict[str, Any]) -> Path:
        """The run tests' config plus fast polling and an agent that takes ~0.5 s."""
        base: dict[str, dict[str, Any]] = {
            "polling": {"interval_seconds": 0.2, "max_concurrency": 3},
            "agent": {
                "command": [sys.executable, str(SLOW_AGENT)],
                "env_passthrough": [
                    "FAKE_CLAUDE_SCENARIO",
                    "FAKE_CLAUDE_STATE",
                    "FAKE_CLAUDE_VERSION",
                    "SLOW_AGENT_SECONDS",
                ],
            },
            "github": {"status_update_seconds": 0.0},
            "cleanup": {"policy": "delete"},
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        return self.env.write_config(**base)

    def config_with(self, other: str, **sections: dict[str, Any]) -> Path:
        """``config(**sections)`` watching a second repository, ``other``, created here in
        the simulator as REPO is (cgr's labels; alice may write)."""
        self.env.sim.create_repo(other, labels=["ready", "in-progress", "needs-human", "cgr-done"])
        self.env.sim.add_collaborator(other, "alice", role="write")
        config = self.config(**sections)
        text = config.read_text()
        both = f'repositories = ["{REPO}", "{other}"]'
        config.write_text(text.replace(f'repositories = ["{REPO}"]', both, 1))
        return config

    def issue_lists(self, repo: str) -> int:
        """How many times a pass read ``repo``'s issue list (GET /repos/R/issues)."""
        path = f"/repos/{repo}/issues"
        return sum(1 for r in self.env.sim.requests if r.method == "GET" and r.path == path)

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "cgr_cli", *args, "--config", str(self.env.config_path)]

    def cgr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``python -m cgr_cli ARGS --config …`` as a real process."""
        return subprocess.run(
            self._argv(args), capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """``python -m cgr_cli ARGS --config …`` started, its output appended to ``log``."""
        with log.open("ab") as out:
            return subprocess.Popen(self._argv(args), stdout=out, stderr=subprocess.STDOUT)

    def runs(self) -> list[Any]:
        with self.env.store() as store:
            return store.recent_runs(limit=1000)

    def explain(self, log: Path | None = None) -> str:
        """What a failed wait needs to be understood: the runs as stored, the tail of each
        run's process log and of ``log`` (a daemon's or a tick's output)."""
        lines = []
        for run in self.runs():
            lines.append(f"run {run.id} #{run.target} {run.status.value} {run.outcome} {run.error}")
            for name in ("run.log", "process.log"):
                run_log = self.env.workspace / run.id / "logs" / name
                if run_log.exists():
                    tail = run_log.read_text(errors="replace").splitlines()[-15:]
                    lines += [f"  {name}: {x}" for x in tail]
        if log is not None and log.exists():
            lines += ["output:", *log.read_text(errors="replace").splitlines()[-40:]]
        return "\n".join(lines)

    def all_terminal(self) -> bool:
        return all(r.status.is_terminal for r in self.runs())

    def settled(self) -> bool:
        """Every run ended and its report sent: a run's row ends before its report's GitHub
        writes (the outbox), so until then their webhook deliveries may still come."""
        with self.env.store() as store:
            runs = store.recent_runs(limit=1000)
            return all(r.status.is_terminal for r in runs) and not store.pending_outbox(1)

    def all_ended(self, count: int) -> bool:
        """Exactly ``count`` runs, every one ended: read in one snapshot (asking
        ``all_terminal()`` and then counting could see one run end and, a moment later, a
        new queued row make the count)."""
        runs = self.runs()
        return len(runs) == count and all(r.status.is_terminal for r in runs)

    def start_slow_runs(self, count: int, *, agent_seconds: float) -> list[int]:
        """Seed ``count`` ready issues, start them with one `cgr tick` and wait until every
        run is running: each agent then works ``agent_seconds`` (the chaos and reap tests'
        start, before they kill or stop what runs)."""
        self.env.monkeypatch.setenv("SLOW_AGENT_SECONDS", str(agent_seconds))
        issues: list[int] = self.env.sim.seed_ready_issues(REPO, count)
        done = self.cgr("tick")
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: (
                len(self.runs()) == count and all(r.status.value == "running" for r in self.runs())
            ),
            30,
            f"{count} running runs",
        )
        return issues

    def live_active(self) -> int:
        """Active runs whose process is alive: the slots in use right now."""
        from cgr_cli.schedule._runs import process_alive

        return sum(1 for r in self.runs() if r.status.is_active and process_alive(r))

    def agent_spans(self) -> list[tuple[datetime, datetime, str]]:
        """(agent start, agent end, run id) of every run whose agent ran, from its log: both
        lines are written while the run holds an agent slot (run/_agent_gate.py)."""
        spans = []
        for run in self.runs():
            log = self.env.workspace / run.id / "logs" / "run.log"
            lines = log.read_text().splitlines() if log.exists() else []

            def at(prefix: str, pick: int, lines: list[str] = lines) -> datetime | None:
                found = [ln for ln in lines if ln[24:].startswith(prefix)]
                if not found:
                    return None
                # The log's local time, made aware to compare with the store's (UTC).
                return datetime.strptime(found[pick][:23], "%Y-%m-%d %H:%M:%S,%f").astimezone()

            # The first agent's start, the last one's end (the checks may run it again).
            start, end = at("INFO agent: ", 0), at("INFO agent ended: ", -1)
            if start is not None:
                assert end is not None, f"run {run.id}'s agent has no end in its log"
                spans.append((start, end, run.id))
        return sorted(spans)

    def agent_peak(self) -> int:
        """The most agents that ran at once (agent_spans)."""
        edges = sorted([(s, 1) for s, _, _ in self.agent_spans()] +
                       [(e, -1) for _, e, _ in self.agent_spans()])  # fmt: skip
        peak = current = 0
        for _, step in edges:  # an end sorts before a start at the same instant
            current += step
            peak = max(peak, current)
        return peak

    def wait_tracking_peak(self, done: Callable[[], bool], timeout: float, what: str) -> int:
        """Wait until ``done()``; return the most slots seen in use at once on the way."""
        peak = 0

        def check() -> bool:
            nonlocal peak
            peak = max(peak, self.live_active())
            return done()

        wait_until(check, timeout, what)
        return peak

    def leftovers(self) -> Iterator[str]:
        """Our cgr processes, agents and zombies still here, and anything working in the
        workspace."""
        me = os.getpid()
        for pid, state, cmd in children_of(me):
            if "cgr_cli" in cmd or "fake_claude" in cmd or "slow_agent" in cmd or state == "Z":
                yield f"{pid} {state} {cmd}"
        for pid in processes_in(self.env.workspace):
            yield f"{pid} still works in the workspace"

    def wait_all_gone(self, what: str, timeout: float = 20) -> None:
        """Wait until no process of the test is left (see :meth:`leftovers`)."""
        wait_until(lambda: not list(self.leftovers()), timeout, what)

    def assert_consistent(self, issues: list[int]) -> None:
        """Every triggered issue ends in exactly one visible terminal state; no issue has
        two PRs or two active runs; the store's history explains every run."""
        from cgr_store import RunStatus

        env = self.env
        all_runs = self.runs()
        assert all(r.status.is_terminal for r in all_runs), [
            (r.id, r.status) for r in all_runs if r.status.is_active
        ]
        pr_targets = [pr_closes(pr) for pr in env.sim.pull_requests(REPO)]
        for number in issues:
            assert pr_targets.count(number) <= 1, f"#{number} has {pr_targets.count(number)} PRs"
            issue = env.sim.issue(REPO, number)
            labels = set(issue.labels)
            assert "in-progress" not in labels, f"#{number} still labelled in-progress"
            mine = [r for r in all_runs if r.target == number]
            assert mine, f"#{number} never got a run"
            last = max(mine, key=lambda r: r.created_at)
            comments = [c.body for c in env.sim.comments(REPO, number)]
            status_comments = [b for b in comments if f"cgr:run={last.id}" in b]
            assert len(status_comments) == 1, f"#{number}: {len(status_comments)} status comments"
            body = status_comments[0]
            assert "Working on it" not in body, f"#{number}: status comment never finalised"
            if last.status is RunStatus.SUCCEEDED:
                assert pr_targets.count(number) == 1
                assert "cgr-done" in labels or "pull request" in body
            else:
                assert "needs-human" in labels, f"#{number} ({last.status}) lacks needs-human"
        with env.store() as store:
            for run in all_runs:
                events = store.events(run.id)
                assert events[0].from_status is None
                assert events[-1].to_status is run.status
                assert run.outcome, f"{run.id} ended without an outcome"

    def stored_running_run(self, number: int, *, branch: str | None = None) -> str:
        """A run row as a `cgr run` process killed mid-run leaves it: running, dead pid."""
        from cgr_cli.schedule._runs import hostname
        from cgr_store import Run, RunKind, RunStatus, new_run_id

        pid, start = dead_process()
        with self.env.store() as store:
            run = store.create_run(
                Run(id=new_run_id(), repo=REPO, target=number, kind=RunKind.ISSUE,
                    host=hostname(), pid=pid, process_start_time=start)
            )  # fmt: skip
            store.transition(run.id, RunStatus.CLAIMED)
            store.transition(run.id, RunStatus.RUNNING, branch=branch)
        self.env.sim.add_labels(REPO, number, "in-progress")
        return run.id
