"""The error boundary and the exit code table (README "Exit codes"), with real processes:
each code from a real `python -m cgr_cli` invocation, Ctrl-C as a real SIGINT, a closed
pipe as a real closed pipe."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runworld import REPO, Env


def cgr_proc(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cgr_cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def one_line(stderr: str) -> str:
    """The boundary's promise: one line on stderr, no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_ok_is_0_and_usage_is_2(env: Env) -> None:
    assert cgr_proc("--help").returncode == 0
    bad = cgr_proc("tick", "--no-such-option")
    assert bad.returncode == 2
    assert "unrecognized arguments" in bad.stderr


def test_a_failure_is_1_with_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[agent]\nmax_turns = 'x'\n")
    done = cgr_proc("status", "--config", str(path))
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith("cgr status: configuration error: ")
    assert "agent.max_turns" in line
    debug = cgr_proc("--debug", "status", "--config", str(path))
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    from_env = cgr_proc("status", "--config", str(path), env={**os.environ, "CGR_DEBUG": "1"})
    assert "Traceback (most recent call last)" in from_env.stderr


def test_not_found_is_3(env: Env) -> None:
    missing = cgr_proc("status", "--config", str(env.root / "nope.toml"))
    assert missing.returncode == 3
    assert "nope.toml" in one_line(missing.stderr)
    with env.store():
        pass  # the database exists: the run id is what is missing
    nothing = cgr_proc("logs", "r-nope", "--config", str(env.config_path))
    assert nothing.returncode == 3
    assert "no run 'r-nope'" in one_line(nothing.stderr)


def test_busy_is_4_when_a_daemon_holds_the_store(env: Env) -> None:
    lock = Path(f"{env.database}.daemon.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        done = cgr_proc("tick", "--config", str(env.config_path))
    finally:
        os.close(fd)
    assert done.returncode == 4, done.stderr
    assert "owns the store" in one_line(done.stderr)


def _interrupt(proc: subprocess.Popen[bytes], ready: str, timeout: float = 60) -> tuple[int, str]:
    """Wait until ``ready`` is on the process's stderr, then Ctrl-C it (SIGINT)."""
    import select

    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while ready.encode() not in seen:
        assert time.monotonic() < deadline, seen
        assert proc.poll() is None, seen
        if select.select([fd], [], [], 0.1)[0]:
            seen += os.read(fd, 65536)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    return code, (seen + proc.stderr.read()).decode()


def test_ctrl_c_in_tick_is_130_and_says_what_it_waited_for(env: Env) -> None:
    schedule_lock = Path(f"{env.database}.schedule.lock")
    fd = os.open(schedule_lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another tick's pass, as far as this one can tell
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "cgr_cli", "tick", "--config", str(env.config_path)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        ) as proc:  # fmt: skip
            code, stderr = _interrupt(proc, "waiting for")
    finally:
        os.close(fd)
    assert code == 130
    assert f"waiting for {schedule_lock}: another `cgr tick` pass holds it" in stderr
    assert "Traceback" not in stderr
    assert stderr.rstrip().endswith("cgr tick: interrupted")


def test_ctrl_c_in_logs_follow_is_130(env: Env) -> None:
    from cgr_store import Run, RunKind, RunStatus, new_run_id

    run_id = new_run_id()
    with env.store() as store:
        store.create_run(Run(id=run_id, repo=REPO, target=1, kind=RunKind.ISSUE))
        store.transition(run_id, RunStatus.CLAIMED)
        store.transition(run_id, RunStatus.RUNNING)
    log = env.workspace / run_id / "logs" / "run.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-12-04 12:00:00,000 INFO cloning\n")
    with subprocess.Popen(
        [sys.executable, "-m", "cgr_cli", "logs", run_id, "--follow",
         "--config", str(env.config_path)],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        time.sleep(1.0)  # following: the run stays active
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "cloning" in out
    assert one_line(err) == "cgr logs: interrupted"


def test_a_closed_pipe_is_quiet(env: Env) -> None:
    """`cgr doctor | head -1`: the reader is gone; cgr stops without a word (141)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cgr_cli", "completion", "bash"],
            stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(writer)
    assert done.returncode == 141
    assert done.stderr == ""
    # The same through a real shell pipeline with head.
    script = (
        f"{sys.executable} -m cgr_cli doctor --config {env.config_path} | head -1; "
        'echo "status ${PIPESTATUS[0]}" >&2'
    )
    shell = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert shell.stdout.count("\n") == 1
    assert "Traceback" not in shell.stderr
    assert "BrokenPipe" not in shell.stderr


def test_an_internal_error_says_how_to_get_the_traceback() -> None:
    from cgr_cli._main import describe_error

    message, code = describe_error(ZeroDivisionError("division by zero"))
    assert code == 1
    assert message.startswith("internal error: ZeroDivisionError")


def test_tick_with_no_repositories_fails(env: Env) -> None:
    text = env.config_path.read_text().replace(f'repositories = ["{REPO}"]', "repositories = []")
    env.config_path.write_text(text)
    done = cgr_proc("tick", "--config", str(env.config_path))
    assert done.returncode == 1
    assert "no repositories to watch" in one_line(done.stderr)
    assert cgr_proc("reap", "--config", str(env.config_path)).returncode == 1
    assert cgr_proc("daemon", "--config", str(env.config_path)).returncode == 1


def test_tick_fails_when_discovery_failed_for_every_repository(env: Env) -> None:
    text = env.config_path.read_text().replace(REPO, "acme/nothing-here")
    env.config_path.write_text(text)
    done = cgr_proc("tick", "--json", "--config", str(env.config_path))
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["failed_repos"] == ["acme/nothing-here"]
    text_run = cgr_proc("tick", "--config", str(env.config_path))
    assert text_run.returncode == 1
    assert "discovery failed for every repository" in text_run.stderr


def test_tick_json_lists_the_ready_issues_it_skipped(env: Env, subreaper: None) -> None:
    env.sim.add_collaborator(REPO, "dave")
    taken = env.sim.create_issue(REPO, "taken", "", author="alice", labels=["ready"],
                                 assignees=["dave"])  # fmt: skip
    blocked = env.sim.create_issue(REPO, "blocked", "", author="alice",
                                   labels=["ready", "blocked"])  # fmt: skip
    done = cgr_proc("tick", "--json", "--config", str(env.config_path))
    assert done.returncode == 0, done.stderr
    skipped = {(s["number"], s["reason"]) for s in json.loads(done.stdout)["skipped"]}
    assert skipped == {(taken, "assigned to @dave"), (blocked, "blocked (label 'blocked')")}
    text = cgr_proc("tick", "--config", str(env.config_path))
    assert f"skipped: {REPO}#{taken}: assigned to @dave" in text.stdout


def test_preflight_claims_nothing_when_the_agent_is_missing(env: Env) -> None:
    env.write_config(agent={"command": str(env.root / "no-such-claude")})
    number = env.sim.create_issue(REPO, "Ready", "", author="alice", labels=["ready"])
    env.sim.clear_requests()
    for args in (["tick"], ["run", "--repo", REPO, "--number", str(number)], ["daemon"]):
        done = cgr_proc(*args, "--config", str(env.config_path))
        assert done.returncode == 1, (args, done.stderr)
        line = one_line(done.stderr)
        assert "nothing was claimed" in line
        assert "no-such-claude" in line
        assert "agent.command" in line  # the fix
    # Nothing changed on GitHub: no label, no comment, no assignment.
    assert [r for r in env.sim.requests if r.method != "GET"] == []
    assert env.sim.issue(REPO, number).labels == ["ready"]
    assert env.sim.comments(REPO, number) == []
    with env.store() as store:
        assert store.recent_runs(limit=10) == []


def test_preflight_names_an_unwritable_workspace(env: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env.write_config(paths={"workspace_root": str(blocker / "ws")})
    done = cgr_proc("tick", "--config", str(env.config_path))
    assert done.returncode == 1
    assert "workspace root" in one_line(done.stderr)


def test_zero_byte_and_foreign_database_files_are_refused(env: Env) -> None:
    env.database.write_bytes(b"")
    # Just made, it could be another cgr creating the store this very moment: allowed.
    assert cgr_proc("status", "--config", str(env.config_path)).returncode == 0
    env.database.write_bytes(b"")
    old = time.time() - 3600  # a truncated store: empty, and not new
    os.utime(env.database, (old, old))
    for command in ("status", "tick", "reap"):
        done = cgr_proc(command, "--config", str(env.config_path))
        assert done.returncode == 1, done.stderr
        line = one_line(done.stderr)
        assert str(env.database) in line
        assert "0 bytes" in line
    assert env.database.stat().st_size == 0  # left as it was
    env.database.write_text("some other program's notes\n" * 100)
    for command in ("status", "reap"):
        done = cgr_proc(command, "--config", str(env.config_path))
        assert done.returncode == 1
        assert "is not a cgr database" in one_line(done.stderr)
