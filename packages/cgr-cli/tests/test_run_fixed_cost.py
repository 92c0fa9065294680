"""What one run costs before its agent starts: git processes and GitHub round trips.

Counted, never timed (bench/bench_startup.py and bench_scheduling.py print the times):
how many git processes cgr starts before the agent and in the whole run, and that the
claim's GitHub writes are in flight together.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runworld import REPO, Env


def _git_shim(env: Env) -> Path:
    """A `git` first on PATH that logs each invocation (time, parent pid, its first 13
    arguments: cgr's are `-c core.hooksPath=/dev/null [-c X ...] <command>`) and execs the
    real git.
    Only cgr's own invocations (and the simulator's) have this test process as parent."""
    real = shutil.which("git")
    assert real
    bin_dir = env.root / "shim"
    bin_dir.mkdir()
    log = env.root / "git.log"
    shim = bin_dir / "git"
    line = '"$(date +%s%N)" "$PPID" "$1" "$2" "$3 $4 $5 $6 $7 $8 $9 ${10} ${11} ${12} ${13}"'
    shim.write_text(f'#!/bin/sh\nprintf "%s %s %s %s %s\\n" {line} >> {log}\nexec {real} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env.monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def _cgr_git_commands(log: Path) -> list[tuple[int, str]]:
    """(time ns, git subcommand) of the git processes this process started."""
    out = []
    for line in log.read_text().splitlines():
        parts = line.split(" ", 4)
        if len(parts) < 5 or not parts[0].isdigit():
            continue  # the rest of an argument with a line break (a commit message)
        ns, ppid, option, value, command = parts
        # The simulator, in this process too, runs git for its git server and API; cgr's
        # own git commands all start with `-c core.hooksPath=/dev/null`.
        if int(ppid) == os.getpid() and (option, value) == ("-c", "core.hooksPath=/dev/null"):
            words = command.split()
            while words[:1] == ["-c"]:  # more settings (e.g. no automatic maintenance)
                words = words[2:]
            out.append((int(ns), words[0]))
    return out


@pytest.mark.parametrize("main_moved", [False, True])
def test_a_run_starts_three_git_processes_before_its_agent(env: Env, main_moved: bool) -> None:
    """Three when its branches are where the mirror has them, four (the fetch) when one
    moved on GitHub."""
    first = env.sim.create_issue(REPO, "One", "", author="alice", labels=["ready"])
    assert env.run(first) == 0  # creates the mirror
    if main_moved:
        env.sim.commit(REPO, "main", {"later.txt": "later\n"})
    log = _git_shim(env)
    number = env.sim.create_issue(REPO, "Two", "", author="alice", labels=["ready"])
    assert env.run(number) == 0
    agent_started = max(int(p.stem) for p in (env.agent_state / "calls").glob("*.json"))
    commands = _cgr_git_commands(log)
    before = [name for ns, name in commands if ns < agent_started]
    # The mirror fetch, only when GitHub's API said one of the run's branches (main,
    # cgr/<n>-*) is not where the mirror has it; whether the default branch has
    # .github/cgr.toml or .cgr.toml (the repository's settings: one ls-tree for both, at
    # the commit read from the mirror's ref files); local clone; the branch. origin's URL
    # is written into the clone's config by cgr (run/_git._point_origin_at), origin's refs
    # are read from the clone's ref files (run/_ref_files.py).
    assert before == ["fetch"] * main_moved + ["ls-tree", "clone", "checkout"]
    after = [name for ns, name in commands if ns >= agent_started]
    # commit what is left (add, anything staged?, commit), the new commits (HEAD and count
    # in one rev-list), the diff, the gate, the file list, then publish from a bare repository
    # (the gated commit fetched into it by its sha: no rev-parse after).
    # (the secret gate reads the new commits as they would be pushed: one log -p). A push
    # that exited 0 is not followed by an ls-remote (only a failed one is looked up).
    assert after == ["add", "diff", "commit", "rev-list", "diff", "log", "diff",
                     "init", "fetch", "push"]  # fmt: skip


def test_the_claims_github_writes_are_in_flight_together(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels, assignee, reaction and the status comment are sent at once, not one after
    another: counted on the real calls (the simulator's latency keeps each in flight)."""

    claim = ("add_labels", "remove_label", "assign", "react", "update_status")
    in_flight = _InFlight(monkeypatch, claim)
    env.sim.faults.latency(0.2, method="POST", path=r"/issues/\d+/(labels|assignees|reactions)")
    number = env.sim.create_issue(REPO, "Three", "", author="alice", labels=["ready"])
    assert env.run(number, "--json") == 0
    assert in_flight.max == len(claim)
    issue = env.sim.issue(REPO, number)
    assert env.sim.bot_login in issue.assignees
    assert "ready" not in issue.labels
    assert [r.content for r in env.sim.reactions(REPO, number=number)] == ["eyes"]
    summary = json.loads((env.workspace / _only_run(env) / "artifacts" / "summary.json")
                         .read_text())  # fmt: skip
    assert summary["outcome"] == "pr_opened"


def test_a_run_reads_its_threads_comments_once(env: Env) -> None:
    """The thread's read (the issue and its comments, together) tells the claim whether the
    run's status comment exists: the claim does not list the comments again to find out."""
    number = env.sim.create_issue(REPO, "Five", "", author="alice", labels=["ready"])
    env.sim.add_comment(REPO, number, "a person's comment", author="alice")
    assert env.run(number, "--json") == 0
    path = f"/repos/{REPO}/issues/{number}/comments"
    assert [r.method for r in env.sim.requests if r.path == path] == ["GET", "POST"]
    (status,) = [c for c in env.sim.comments(REPO, number) if "<!-- cgr:run=" in c.body]
    assert "pull request #" in status.body


class _InFlight:
    """How many of RunGitHub's ``names`` are in flight at once at most (``max``), counted
    on the real calls while ``counting()`` says so; ``calls``: ("start" | "end", name) of
    the counted ones, in order."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        names: tuple[str, ...],
        counting: Callable[[], bool] = lambda: True,
    ) -> None:
        from cgr_discovery import RunGitHub

        self.now = self.max = 0
        self.calls: list[tuple[str, str]] = []
        for name in names:
            original = getattr(RunGitHub, name)

            async def counted(github: RunGitHub, *args: Any, _original: Any = original,
                              _name: str = name, **kwargs: Any) -> Any:  # fmt: skip
                if not counting():
                    return await _original(github, *args, **kwargs)
                self.calls.append(("start", _name))
                self.now += 1
                self.max = max(self.max, self.now)
                try:
                    return await _original(github, *args, **kwargs)
                finally:
                    self.now -= 1
                    self.calls.append(("end", _name))

            monkeypatch.setattr(RunGitHub, name, counted)


def _only_run(env: Env) -> str:
    runs = [p.name for p in env.workspace.iterdir() if p.name.startswith("r-")]
    assert len(runs) == 1
    return runs[0]


def _whole_file_checks(env: Env) -> list[str]:
    """The database files SQLiteStore checks whole from now on (in this process)."""
    from cgr_store import SQLiteStore

    checks: list[str] = []
    real = SQLiteStore._check_whole_file

    def counted(store: SQLiteStore) -> None:
        checks.append(os.fspath(store.path))
        real(store)

    env.monkeypatch.setattr(SQLiteStore, "_check_whole_file", counted)
    return checks


def test_a_run_process_checks_the_database_file_once(env: Env) -> None:
    """SQLite's whole-file check reads every page (25 ms at 13 MB, ~0.3 s at 100,000
    runs): a `cgr run` of its own makes it once (the preflight's), not at each of its
    opens of the store; a queued run handed over by a scheduler (which checked the file
    when it opened it) makes none."""
    from cgr_store import Run, RunKind, new_run_id

    checks = _whole_file_checks(env)
    first = env.sim.create_issue(REPO, "One", "", author="alice", labels=["ready"])
    assert env.run(first) == 0  # the file is created here: nothing to check yet
    checks.clear()
    second = env.sim.create_issue(REPO, "Two", "", author="alice", labels=["ready"])
    assert env.run(second) == 0
    assert checks == [os.fspath(env.database)]
    # A queued run, as a scheduler hands it over with --run-id.
    third = env.sim.create_issue(REPO, "Three", "", author="alice", labels=["ready"])
    with env.store() as store:
        queued = store.create_run(Run(id=new_run_id(), repo=REPO, target=third,
                                      kind=RunKind.ISSUE))  # fmt: skip
    checks.clear()
    assert env.run(third, "--run-id", queued.id) == 0
    assert checks == []
    with env.store() as store:
        assert store.get_run(queued.id).status.value == "succeeded"


def test_a_run_plans_its_sandbox_once(env: Env) -> None:
    """The repository's set-up and check commands and the agent run under one sandbox,
    planned once per run (planning reads directory listings, ~3 ms; it was planned for the
    commands and again for the agent)."""
    from cgr_cli.run import _agent_run

    plans: list[object] = []
    real = _agent_run.plan_sandbox

    def counted(*args: Any, **kwargs: Any) -> Any:
        plans.append(real(*args, **kwargs))
        return plans[-1]

    env.monkeypatch.setattr(_agent_run, "plan_sandbox", counted)
    number = env.sim.create_issue(REPO, "One", "", author="alice", labels=["ready"])
    assert env.run(number) == 0
    assert len(plans) == 1


def test_a_tick_childs_pass_for_its_next_job_does_not_check_the_database_file(
    env: Env,
) -> None:
    """A `cgr tick` child that takes job after job opens the store for each pass; the tick
    that forked it checked the whole file a moment before (and every tick checks it
    again), so those passes do not."""
    from cgr_cli import load_config
    from cgr_cli.schedule._tick import _next_in_slot

    first = env.sim.create_issue(REPO, "One", "", author="alice", labels=["ready"])
    assert env.run(first) == 0
    with env.store() as store:
        (done,) = store.recent_runs()
    second = env.sim.create_issue(REPO, "Two", "", author="alice", labels=["ready"])
    checks = _whole_file_checks(env)
    config, _path = load_config(env.config_path)
    nxt, _pending = _next_in_slot(config, after=done.id, repos=[REPO])
    assert nxt is not None
    assert nxt.target == second
    assert checks == []


def test_the_reports_github_writes_are_in_flight_together(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the pull request, the run's report - three labels off (the in-progress one,
    and ready and needs-human, which are not there), the done label on, the status comment's
    final text - takes two round trips, not five: the removals and the comment are in
    flight together, the label that goes on follows the removals."""
    from cgr_discovery import RunGitHub

    opened = {"pr": False}
    original_create = RunGitHub.create_pull_request

    async def create(self: RunGitHub, *args: Any, **kwargs: Any) -> Any:
        result = await original_create(self, *args, **kwargs)
        opened["pr"] = True
        return result

    monkeypatch.setattr(RunGitHub, "create_pull_request", create)
    report = ("add_labels", "remove_label", "update_status")
    in_flight = _InFlight(monkeypatch, report, counting=lambda: opened["pr"])
    env.sim.faults.latency(0.2, method="DELETE", path=r"/issues/\d+/labels/")
    env.sim.faults.latency(0.2, method="PATCH", path=r"/issues/comments/\d+")
    number = env.sim.create_issue(REPO, "Four", "", author="alice", labels=["ready"])
    assert env.run(number, "--json") == 0
    assert in_flight.max == 4  # three removals and the comment
    # The label that goes on is sent once every removal has ended (never two verdicts).
    add = in_flight.calls.index(("start", "add_labels"))
    assert in_flight.calls[:add].count(("end", "remove_label")) == 3
    issue = env.sim.issue(REPO, number)
    assert sorted(issue.labels) == ["cgr-done"]  # in-progress, ready, needs-human are off
    (status,) = [c for c in env.sim.comments(REPO, number) if "pull request #" in c.body]
    assert "✅" in status.body


def test_the_checkout_is_made_while_the_claims_writes_are_in_flight(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's GitHub writes and the checkout need nothing of each other: with 0.5 s
    of latency on the claim's writes, the clone and the branch's checkout are done before
    those writes have answered - and the agent still starts only after they have."""
    import time

    from cgr_discovery import RunGitHub

    first = env.sim.create_issue(REPO, "One", "", author="alice", labels=["ready"])
    assert env.run(first) == 0  # creates the mirror
    log = _git_shim(env)
    claim_ended: list[int] = []
    original = RunGitHub.react

    async def react(github: RunGitHub, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(github, *args, **kwargs)
        finally:
            claim_ended.append(time.time_ns())

    monkeypatch.setattr(RunGitHub, "react", react)
    env.sim.faults.latency(0.5, method="POST", path=r"/issues/\d+/(labels|assignees|reactions)")
    number = env.sim.create_issue(REPO, "Two", "", author="alice", labels=["ready"])
    assert env.run(number) == 0
    (ended,) = claim_ended
    made = {name: ns for ns, name in _cgr_git_commands(log)}
    assert made["clone"] < ended
    assert made["checkout"] < ended
    agent_started = max(int(p.stem) for p in (env.agent_state / "calls").glob("*.json"))
    assert agent_started > ended
    issue = env.sim.issue(REPO, number)
    assert env.sim.bot_login in issue.assignees
    assert [r.content for r in env.sim.reactions(REPO, number=number)] == ["eyes"]


def test_a_claim_that_fails_beside_the_checkout_puts_the_run_back_to_queued(env: Env) -> None:
    """GitHub down for the claim's comment while the checkout is made: the run goes back
    to the queue (nothing spent), the agent never starts, and the checkout made meanwhile
    does not count - the same run, picked up again, finishes."""
    env.write_config(github={"write_retry_seconds": 0.5})
    number = env.sim.create_issue(REPO, "One", "", author="alice", labels=["ready"])
    down = env.sim.faults.error(503, method="POST", path=rf"/issues/{number}/comments$")
    assert env.run(number) == 1
    with env.store() as store:
        (run,) = store.recent_runs()
        assert run.status.value == "queued"
        assert "running" not in {e.to_status.value for e in store.events(run.id)}
    assert not list((env.agent_state / "calls").glob("*")), "the agent must not have started"
    down.remove()
    assert env.run(number, "--run-id", run.id) == 0
    with env.store() as store:
        assert store.get_run(run.id).status.value == "succeeded"


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def _git_refs(git_dir: Path) -> list[str]:
    return _git("for-each-ref", "--format=%(refname)", cwd=git_dir).split()


def _run_logs(env: Env) -> list[str]:
    """The runs' logs, oldest run first."""
    return [p.read_text() for p in sorted(env.workspace.glob("r-*/logs/run.log"))]


def _uploads(env: Env) -> int:
    """git fetches (and clones) the simulator has served a pack for."""
    return sum(1 for r in env.sim.requests if r.method == "POST"
               and r.path.endswith("/git-upload-pack"))  # fmt: skip


def _git_requests(env: Env) -> int:
    """Fetches' requests to the simulator's git server: ref advertisements and packs (a
    push's are to git-receive-pack)."""
    return sum(1 for r in env.sim.requests if r.path.endswith("/git-upload-pack")
               or (r.path.endswith("/info/refs")
                   and r.query.get("service") == "git-upload-pack"))  # fmt: skip


def _ref_reads(env: Env) -> list[str]:
    """The refs the API was asked for (``git/matching-refs/<ref>``)."""
    return [r.path.split("/git/matching-refs/", 1)[1] for r in env.sim.requests
            if "/git/matching-refs/" in r.path]  # fmt: skip


def test_an_issue_runs_mirror_fetch_is_of_its_own_branches_alone(env: Env) -> None:
    """An issue's run needs the default branch and its own (``cgr/<n>-*``): when GitHub's
    API says they are where the mirror has them, nothing is fetched at all - not even a
    ref advertisement; when one moved, those are fetched, and nothing else: another branch
    pushed meanwhile (another run's, a person's) is not downloaded. A branch deleted on
    GitHub leaves the mirror with the next fetch of its pattern."""
    first = env.sim.create_issue(REPO, "One", "", author="alice", labels=["ready"])
    assert env.run(first) == 0  # creates the mirror
    env.sim.commit(REPO, "feature/elsewhere", {"x.txt": "x\n"}, start_point="main")
    second = env.sim.create_issue(REPO, "Two", "", author="alice", labels=["ready"])
    git_requests, reads = _git_requests(env), len(_ref_reads(env))
    assert env.run(second) == 0
    assert _git_requests(env) == git_requests  # neither main nor cgr/<second>-* had moved
    assert sorted(_ref_reads(env)[reads:]) == [f"heads/cgr/{second}-", "heads/main"]
    run_log = _run_logs(env)[-1]
    assert f"mirror: main, cgr/{second}-* as on the remote; nothing to fetch" in run_log
    mirror = env.workspace / ".mirrors" / "acme" / "widgets.git"
    heads = set(_git_refs(mirror))
    assert "refs/heads/feature/elsewhere" not in heads
    assert "refs/heads/main" in heads
    # main moves; the first issue is asked again: its branch (from the first run) and the
    # new main come with the fetch, and the run continues that branch on the new main.
    moved = env.sim.commit(REPO, "main", {"later.txt": "later\n"})
    comment = env.sim.add_comment(REPO, first, f"@{env.sim.bot_login} once more", author="alice")
    env.scenario("commits")  # new work on the branch, so it is pushed again
    assert env.run(first, "--comment-id", str(comment)) == 0
    run_log = _run_logs(env)[-1]
    assert (f"+refs/heads/main:refs/heads/main +refs/heads/cgr/{first}-*:"
            f"refs/heads/cgr/{first}-*") in run_log  # fmt: skip
    branch = next(b for b in env.sim.branches(REPO) if b.startswith(f"cgr/{first}-"))
    log = _git("log", "--format=%H", branch, cwd=env.sim.git_dir(REPO))
    assert moved in log
    assert "feature/elsewhere" not in set(_git_refs(mirror))
    # The branch is deleted on GitHub: the API lists none of cgr/<first>-*, the mirror
    # has one - fetched (pruned), and the next run starts the issue's branch afresh.
    old_tip = env.sim.branches(REPO)[branch]
    _git("branch", "-D", branch, cwd=env.sim.git_dir(REPO))
    comment = env.sim.add_comment(REPO, first, f"@{env.sim.bot_login} again", author="alice")
    git_requests = _git_requests(env)
    assert env.run(first, "--comment-id", str(comment)) == 0
    assert _git_requests(env) > git_requests
    assert f"cgr/{first}-* as on the remote" not in _run_logs(env)[-1]
    pushed = next(b for b in env.sim.branches(REPO) if b.startswith(f"cgr/{first}-"))
    history = _git("log", "--format=%H", pushed, cwd=env.sim.git_dir(REPO)).split()
    assert moved in history
    assert old_tip not in history


def test_an_issue_run_fetches_its_branches_when_the_api_cannot_say_where_they_are(
    env: Env,
) -> None:
    """GitHub's API failing (every answer a 502, retried) delays the run's checkout by at
    most ``REMOTE_HEADS_SECONDS``: the mirror is fetched as without the API, and the run
    builds on what GitHub has."""
    from cgr_cli.run._pipeline import REMOTE_HEADS_SECONDS

    first = env.sim.create_issue(REPO, "One", "", author="alice", labels=["ready"])
    assert env.run(first) == 0  # creates the mirror
    moved = env.sim.commit(REPO, "main", {"later.txt": "later\n"})
    env.sim.faults.error(502, method="GET", path="/git/matching-refs/")
    second = env.sim.create_issue(REPO, "Two", "", author="alice", labels=["ready"])
    assert env.run(second) == 0
    run_log = _run_logs(env)[-1]
    assert (f"mirror: the API did not say where main, cgr/{second}-* are (no answer in time); "
            "fetching them") in run_log  # fmt: skip
    assert f"+refs/heads/cgr/{second}-*:refs/heads/cgr/{second}-*" in run_log
    summary = json.loads(next(env.workspace.glob("r-*/artifacts/summary.json")).read_text())
    assert summary  # the runs' summaries are written
    branch = next(b for b in env.sim.branches(REPO) if b.startswith(f"cgr/{second}-"))
    assert moved in _git("log", "--format=%H", branch, cwd=env.sim.git_dir(REPO))
    assert REMOTE_HEADS_SECONDS <= 2.0


def test_a_pull_requests_run_fetches_every_branch_and_runs_queued_together_share_it(
    env: Env,
) -> None:
    """A run on a pull request needs its head branch, which the issue's pattern does not
    name: it fetches every branch. Two such runs queued by one pass: the second begins
    after the first fetched, a fetch that began after its row was written - so it fetches
    nothing more. A run queued after that fetch began fetches again."""
    from cgr_store import Run, RunKind, new_run_id

    first = env.sim.create_issue(REPO, "One", "", author="alice", labels=["ready"])
    assert env.run(first) == 0  # creates the mirror
    pulls = []
    for name in ("two", "three", "four"):
        env.sim.commit(REPO, f"feature/{name}", {f"{name}.txt": "x\n"}, start_point="main")
        number = env.sim.create_pull_request(REPO, f"feature/{name}", name, author="alice")
        comment = env.sim.add_comment(REPO, number, f"@{env.sim.bot_login} please",
                                      author="alice")  # fmt: skip
        pulls.append((number, comment))

    def queued(number: int, comment: int) -> str:
        with env.store() as store:
            return store.create_run(
                Run(
                    id=new_run_id(),
                    repo=REPO,
                    target=number,
                    kind=RunKind.PR_MENTION,
                    trigger_id=str(comment),
                )
            ).id

    two, three = (queued(*pull) for pull in pulls[:2])
    log = _git_shim(env)
    for run_id, (number, comment) in zip((two, three), pulls, strict=False):
        assert env.run(number, "--run-id", run_id, "--comment-id", str(comment)) == 0
    four = queued(*pulls[2])
    assert env.run(pulls[2][0], "--run-id", four, "--comment-id", str(pulls[2][1])) == 0
    mirror_fetches = [name for _ns, name in _cgr_git_commands(log) if name == "fetch"]
    # Each run's publish fetches its commit into its own bare repository (one fetch each);
    # the mirror was fetched by the first and the third run only, every branch.
    assert len(mirror_fetches) == 3 + 2
    run_log = (env.workspace / three / "logs" / "run.log").read_text()
    assert "mirror: fetched by another run since this one began; not again" in run_log
    assert "+refs/heads/*:refs/heads/*" in (env.workspace / two / "logs/run.log").read_text()


def test_an_issue_run_whose_repository_names_another_prefix_fetches_every_branch(
    env: Env,
) -> None:
    """The early fetch names the host's prefix; the repository's cgr.toml (read from the
    just-fetched default branch) narrows it to ``cgr/bots``: the run's own branch is not
    among the fetched ones, so every branch is fetched before the clone - its branch
    from an earlier run is found and continued, not started afresh."""
    env.sim.commit(REPO, "main", {".github/cgr.toml": '[branching]\nprefix = "cgr/bots"\n'})
    first = env.sim.create_issue(REPO, "One", "", author="alice", labels=["ready"])
    assert env.run(first) == 0  # creates the mirror: every branch
    env.sim.commit(REPO, "feature/elsewhere", {"x.txt": "x\n"}, start_point="main")
    comment = env.sim.add_comment(REPO, first, f"@{env.sim.bot_login} once more", author="alice")
    env.scenario("commits")
    assert env.run(first, "--comment-id", str(comment)) == 0
    run_log = _run_logs(env)[-1]
    # The early step: main and cgr/<first>-* (none: the branch is under cgr/bots/) as the
    # mirror has them, so nothing fetched; then every branch, for the repository's prefix.
    narrow = f"mirror: main, cgr/{first}-* as on the remote; nothing to fetch"
    assert narrow in run_log
    assert "+refs/heads/*:refs/heads/*" in run_log.split(narrow, 1)[1]
    mirror = env.workspace / ".mirrors" / "acme" / "widgets.git"
    assert "refs/heads/feature/elsewhere" in set(_git_refs(mirror))
    (branch,) = [b for b in env.sim.branches(REPO) if b.startswith("cgr/")]
    assert branch.startswith(f"cgr/bots/{first}-")
    log = _git("log", "--format=%s", branch, cwd=env.sim.git_dir(REPO))
    # The second run's work (the agent's commit, cgr's of what it left) on the first's.
    assert log.split("\n")[:3] == [f"cgr: One (#{first})", "agent: add committed.txt",
                                   f"cgr: One (#{first})"]  # fmt: skip
