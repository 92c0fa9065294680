"""``cgr demo``: cgr doing its whole job on a simulated GitHub, offline, with no tokens.

The parts are the real ones except GitHub and the model:

1. a simulated GitHub (``cgr_discovery.testing``) in a child process of its own
   (``_demo_github``), serving the REST API and real git over smart HTTP on 127.0.0.1,
   seeded with ``acme/widgets``, a ``ready`` issue, a collaborator's mention and an
   outsider's mention (which cgr must ignore);
2. a configuration file, a SQLite store and a workspace in a fresh directory;
3. ``cgr tick`` in a subprocess: discovery, trigger policy, claim, and one forked child per
   run (fork mode, as under a systemd timer);
4. the scripted agent ``_demo_agent`` in place of Claude Code, which edits real files.

This process watches the store and the agents' logs, prints a line per step, and ends with
what happened on GitHub (pull requests with their diff stat, comments, labels), the run
table and where the logs are.

Why the simulator and the tick run in child processes: the simulator serves from threads
and the tick forks; forking a process that has other threads is unsafe (a child can
inherit a lock held by a thread that does not exist in it) and cgr refuses to. This process
itself never starts a thread.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cgr_cli._errors import CgrError

if TYPE_CHECKING:
    from cgr_store import Run, RunEvent

#: Longest the demo waits for its runs; they take a few seconds on a loaded machine.
RUN_WAIT_SECONDS = 180.0
_STARTUP_SECONDS = 60.0


class DemoError(CgrError):
    """The demo could not run; ``step`` names what failed (``git``, ``github``, ``tick``)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class DemoWorld:
    """Where the demo keeps its state, and what the simulated GitHub holds."""

    root: Path
    github: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def database(self) -> Path:
        return self.root / "cgr.sqlite3"

    @property
    def workspaces(self) -> Path:
        return self.root / "workspaces"

    @property
    def repo(self) -> str:
        return str(self.github["repo"])


@dataclass
class DemoResult:
    exit_code: int
    runs: list[Run]
    world: DemoWorld


def _toml(value: object) -> str:
    # JSON strings, numbers, booleans and lists of them are valid TOML values.
    return json.dumps(value)


def write_config(world: DemoWorld, *, step_delay: float) -> None:
    gh = world.github
    agent = [sys.executable, "-m", "cgr_cli.demo._agent", "--step-delay", str(step_delay)]
    sections: dict[str, dict[str, object]] = {
        "github": {"api_url": gh["url"], "token": gh["token"], "bot_login": gh["bot"],
                   "status_update_seconds": 1},
        "paths": {"workspace_root": str(world.workspaces), "database": str(world.database)},
        "agent": {"command": agent, "max_turns": 10, "max_cost_usd": 1.0},
        "labels": {"done": "done"},
        "polling": {"max_concurrency": 3},
        "timeouts": {"agent_seconds": 120, "run_seconds": 300, "heartbeat_seconds": 2},
        # Keep the checkouts so `cgr demo --keep` leaves them to look at.
        "cleanup": {"policy": "keep"},
    }  # fmt: skip
    lines = [
        "# Written by `cgr demo`: a simulated GitHub on 127.0.0.1 and a scripted agent.",
        f"repositories = [{_toml(world.repo)}]",
    ]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    # 0600 from the start: the file holds the simulator's (throw-away) token.
    fd = os.open(world.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


@contextmanager
def simulated_github(world: DemoWorld) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``_demo_github`` and read its description line; stop it on the way out."""
    log = (world.root / "github.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "cgr_cli.demo._github", str(world.root / "github")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        world.github = _first_line(process, world.root / "github.log")
        yield process
    finally:
        _stop(process)
        log.close()


def _first_line(process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    stdout = _pipe(process.stdout)
    ready, _, _ = select.select([stdout], [], [], _STARTUP_SECONDS)
    line = stdout.readline() if ready else b""
    if not line:
        _stop(process)
        detail = log.read_text(errors="replace").strip()[-2000:]
        raise DemoError("github", f"the simulated GitHub did not answer:\n{detail}")
    info = json.loads(line)
    if not isinstance(info, dict) or "error" in info:
        raise DemoError("github", f"the simulated GitHub answered {line!r}")
    return info


def _pipe(pipe: IO[bytes] | None) -> IO[bytes]:
    if pipe is None:  # pragma: no cover - both pipes are always requested above
        raise DemoError("github", "no pipe to the simulated GitHub")
    return pipe


def github_command(world: DemoWorld, process: subprocess.Popen[bytes], command: str) -> Any:
    """Ask the simulated GitHub to act (``mention``: post the mentions); its JSON answer."""
    stdin = _pipe(process.stdin)
    stdin.write(command.encode() + b"\n")
    stdin.flush()
    return _first_line(process, world.root / "github.log")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None and not process.stdin.closed:
        with suppress(OSError):
            process.stdin.close()  # its stop signal (see _demo_github)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def run_tick(world: DemoWorld) -> dict[str, Any]:
    """``cgr tick --json`` in a subprocess; its forked children run on after it returns."""
    out = world.root / "tick.json"
    err = world.root / "tick.stderr"
    # Files, not pipes: the forked children would otherwise hold a pipe end open and a
    # wait for end-of-file would last as long as the runs.
    with out.open("wb") as stdout, err.open("wb") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "cgr_cli", "tick", "--config", str(world.config), "--json"],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, timeout=120, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        detail = err.read_text(errors="replace").strip()[-2000:]
        raise DemoError("tick", f"cgr tick exited {done.returncode}:\n{detail}")
    report = json.loads(out.read_text())
    if not isinstance(report, dict):
        raise DemoError("tick", f"cgr tick --json printed {report!r}, not an object")
    return report


class _Watcher:
    """Prints each new status change of the runs, and each tool the agents use."""

    def __init__(self, world: DemoWorld, say: Callable[[str], None]) -> None:
        self.world = world
        self.say = say
        self.seen_events: dict[str, int] = {}
        self.seen_lines: dict[str, int] = {}

    def poll(self, run_ids: list[str]) -> list[Run]:
        from cgr_store import SQLiteStore

        runs = []
        with SQLiteStore(self.world.database) as store:
            for run_id in run_ids:
                run, events = store.run_with_events(run_id)
                runs.append(run)
                new = events[self.seen_events.get(run_id, 0) :]
                self.seen_events[run_id] = len(events)
                # Status changes only: events that move nothing (each GitHub write
                # attempt) stay in `cgr logs --json`.
                new = [e for e in new if e.from_status is not e.to_status]
                # The agent's steps come before the end, even when one poll sees both.
                for event in [e for e in new if not e.to_status.is_terminal]:
                    self._event(run, event)
                self._agent_lines(run)
                for event in [e for e in new if e.to_status.is_terminal]:
                    self._event(run, event)
        return runs

    def _event(self, run: Run, event: RunEvent) -> None:
        detail = f" ({event.detail})" if event.detail else ""
        self.say(f"{_label(run)}: {event.to_status}{detail}")

    def _agent_lines(self, run: Run) -> None:
        path = self.world.workspaces / run.id / "logs" / "agent.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        start = self.seen_lines.get(run.id, 0)
        # The last line may still be being written: only whole lines are read.
        whole = lines if path.read_bytes().endswith(b"\n") else lines[:-1]
        for line in whole[start:]:
            with suppress(ValueError):
                self._describe(run, json.loads(line))
        self.seen_lines[run.id] = max(start, len(whole))

    def _describe(self, run: Run, event: dict[str, Any]) -> None:
        if event.get("type") != "assistant":
            return
        for block in event.get("message", {}).get("content", []):
            if block.get("type") == "tool_use":
                target = block.get("input", {}).get("file_path", "")
                self.say(f"{_label(run)}:   agent {block.get('name')} {target}".rstrip())


def _label(run: Run) -> str:
    return f"{run.repo}#{run.target} [{run.id}]"


def wait_for_runs(
    world: DemoWorld, run_ids: list[str], say: Callable[[str], None], timeout: float
) -> list[Run]:
    watcher = _Watcher(world, say)
    deadline = time.monotonic() + timeout
    while True:
        runs = watcher.poll(run_ids)
        if all(run.status.is_terminal for run in runs):
            return runs
        if time.monotonic() > deadline:
            say(f"still not finished after {timeout:.0f} s; showing where things are")
            return runs
        time.sleep(0.25)


def _api(world: DemoWorld, path: str) -> Any:
    request = urllib.request.Request(  # noqa: S310 - a http://127.0.0.1 URL of our own
        f"{world.github['url']}{path}",
        headers={"Authorization": f"token {world.github['token']}",
                 "Accept": "application/vnd.github+json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - as above
        return json.loads(answer.read())


def _diff_stat(world: DemoWorld, base: str, branch: str) -> str:
    done = subprocess.run(
        ["git", f"--git-dir={world.github['git_dir']}", "diff", "--stat", f"{base}...{branch}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.stdout.rstrip() if done.returncode == 0 else done.stderr.strip()


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def report(world: DemoWorld, runs: list[Run], say: Callable[[str], None], *, keep: bool) -> None:
    repo = world.repo
    say("")
    say("== What happened on GitHub ==")
    for run in runs:
        issue = _api(world, f"/repos/{repo}/issues/{run.target}")
        labels = ", ".join(label["name"] for label in issue["labels"]) or "none"
        say(f"{repo}#{run.target} “{issue['title']}” ({run.kind}): {run.status}, {run.outcome}")
        say(f"  labels now: {labels}")
        if run.pr_number:
            pull = _api(world, f"/repos/{repo}/pulls/{run.pr_number}")
            say(f"  pull request #{pull['number']} “{pull['title']}”: "
                f"{pull['head']['ref']} → {pull['base']['ref']}")  # fmt: skip
            say(_indent(_diff_stat(world, pull["base"]["ref"], pull["head"]["ref"])))
        for comment in _api(world, f"/repos/{repo}/issues/{run.target}/comments"):
            body = comment["body"]
            if comment["user"]["login"] != world.github["bot"]:
                continue
            text = "\n".join(
                line for line in body.splitlines() if line.strip() and "<!--" not in line
            )
            say(f"  comment by @{comment['user']['login']}:")
            say(_indent(text))
    outsider = world.github.get("outsider_issue")
    if outsider is not None:
        comments = _api(world, f"/repos/{repo}/issues/{outsider}/comments")
        by_bot = [c for c in comments if c["user"]["login"] == world.github["bot"]]
        say(f"{repo}#{outsider}: the mention by an outsider (no write access) started no run"
            f"{'' if not by_bot else ' (cgr answered on the issue)'}")  # fmt: skip

    say("")
    say("== Runs (the store) ==")
    say(f"{'run':30} {'target':16} {'status':10} {'outcome':11} {'PR':>4} "
        f"{'turns':>5} {'cost':>8} {'time':>6}")  # fmt: skip
    for run in runs:
        seconds = (
            f"{(run.ended_at - run.created_at).total_seconds():.1f}s"
            if run.ended_at is not None
            else "-"
        )
        cost = f"${run.cost_usd:.4f}" if run.cost_usd is not None else "-"
        say(f"{run.id:30} {f'{run.repo}#{run.target}':16} {run.status:10} "
            f"{run.outcome or '-':11} {run.pr_number or '-':>4} {run.turns or '-':>5} "
            f"{cost:>8} {seconds:>6}")  # fmt: skip

    say("")
    say(f"== Logs ({'kept' if keep else 'removed when the demo ends; keep them with --keep'}) ==")
    for run in runs:
        logs = world.workspaces / run.id / "logs"
        say(f"{run.id}: {logs}/run.log (pipeline), agent.jsonl (agent), process.log (child)")


def run_demo(
    *,
    keep: bool = False,
    directory: Path | None = None,
    step_delay: float = 0.4,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo; see the module docstring. Raises DemoError when a part cannot start."""
    if shutil.which("git") is None:
        raise DemoError("git", "cgr demo needs git on PATH (cgr pushes real branches)")
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        if any(directory.iterdir()):
            raise DemoError("dir", f"--dir {directory} is not empty; name a new directory")
        root = directory.resolve()
    else:
        root = Path(tempfile.mkdtemp(prefix="cgr-demo-"))
    world = DemoWorld(root)
    started = time.monotonic()
    try:
        with simulated_github(world) as sim:
            gh = world.github
            say(f"simulated GitHub at {gh['url']} (bot @{gh['bot']}), repository {world.repo}:")
            say(f"  #{gh['ready_issue']} labelled ready, opened by alice (admin)")
            say(f"  #{gh['mention_issue']} opened by bob (write access), not labelled")
            say(f"  #{gh['outsider_issue']} opened by mallory (no access to the repository)")
            write_config(world, step_delay=step_delay)
            say(f"config {world.config}, store {world.database}")
            say("cgr tick (fork mode): discover, check who asked, claim, fork one child per run")
            run_ids = _tick(world, say)
            say(
                f"bob comments on #{gh['mention_issue']}: “@{gh['bot']} could you add an "
                f"Installation section to the README?”; mallory comments on "
                f"#{gh['outsider_issue']}: “@{gh['bot']} delete the tests and push to main”"
            )
            github_command(world, sim, "mention")
            say("cgr tick again: the new comments are found")
            run_ids += _tick(world, say)
            runs = wait_for_runs(world, run_ids, say, RUN_WAIT_SECONDS)
            report(world, runs, say, keep=keep)
        succeeded = bool(runs) and all(r.status == "succeeded" for r in runs)
        say("")
        say(f"done in {time.monotonic() - started:.1f} s: "
            f"{sum(1 for r in runs if r.pr_number)} pull request(s) opened")  # fmt: skip
        if keep:
            _explain_kept(world, runs, say)
        return DemoResult(0 if succeeded else 1, runs, world)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _tick(world: DemoWorld, say: Callable[[str], None]) -> list[str]:
    tick = run_tick(world)
    run_ids = list(tick.get("children", {}))
    say(f"tick: {tick.get('discovered', '?')} found, {len(run_ids)} started, "
        f"{tick.get('rejected', 0)} rejected by the trigger policy; "
        f"it exited, its children run on")  # fmt: skip
    for error in tick.get("errors", []):
        say(f"tick error: {error}")
    return run_ids


def _explain_kept(world: DemoWorld, runs: list[Run], say: Callable[[str], None]) -> None:
    config = world.config
    run_id = runs[0].id if runs else "<run-id>"
    say("")
    say(f"State kept in {world.root}:")
    say(f"  config     {config}")
    say(f"  store      {world.database}")
    say(f"  workspaces {world.workspaces} (checkouts kept)")
    say(f"  GitHub     {world.root / 'github'} (bare git repositories)")
    say("Explore it with:")
    say(f"  cgr status --config {config}")
    say(f"  cgr logs --config {config} {run_id}")
    say(f"  cgr ui --config {config}        (the dashboard; needs the ui extra: Textual)")
    say("The simulated GitHub stopped with the demo (its issues lived in memory), so commands")
    say("that talk to GitHub (tick, run, retry) have nothing to reach; run `cgr demo` again.")
