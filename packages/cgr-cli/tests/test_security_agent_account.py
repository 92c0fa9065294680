"""``agent.sandbox.mode = "user"`` and ``"landlock+user"`` end to end: a real ``cgr run``
(the simulator, real git, a real store) whose agent (tests/hostile_agent.py) runs as a
dedicated unprivileged account made for the test with ``useradd`` and removed after it.

Shown: the agent's uid is the account's; it writes and commits in its checkout; it cannot
read cgr's configuration, env file or store, nor list the workspace; cgr's own git after
it (commit, the secret gate's log, the local fetch it publishes from) works in a checkout
another uid owns, without "dubious ownership"; the PR is opened; the run's directories are
closed to the account again at the end, or by ``cgr reap`` when the run was killed first.
A workspace the account cannot reach, and a missing account, are refused before the claim
with a message naming what to fix; ``cgr doctor`` says what is in force and what is wrong.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgr_cli.config._load import parse_config
from runworld import REPO, Env, start_run
from schedworld import processes

HOSTILE = Path(__file__).with_name("hostile_agent.py")


def _usable_by_anyone(path: Path) -> bool:
    """Every directory on the way is searchable and the file executable by others."""
    real = Path(os.path.realpath(path))
    if not real.is_file() or not real.stat().st_mode & stat.S_IXOTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in real.parents)


def _python_for_the_account() -> str:
    import sys

    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if _usable_by_anyone(Path(candidate)):
            return candidate
    pytest.skip("no Python interpreter the agent's account can execute (all under 0700 dirs)")


@pytest.fixture
def account() -> Iterator[pwd.struct_passwd]:
    """A system account of its own for this test (the name holds the pid: helpers and CI
    jobs may run this suite side by side)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: cgr switches the agent to its own account only as root")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("needs useradd and userdel to make the agent's account")
    name = f"cgr-t{os.getpid()}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)  # fmt: skip
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def shared(env: Env, account: pwd.struct_passwd) -> Iterator[Path]:
    """A place the account can search (``0711``, as /srv or /var/lib are), holding the
    workspace, cgr's configuration and store (each in a ``0700`` directory of cgr's, as
    ``cgr init`` makes them) and the agent's state directory (the account's own)."""
    top = Path(tempfile.mkdtemp(prefix="cgr-user-"))
    os.chmod(top, 0o711)  # noqa: S103 - search only: the account cannot list it
    (top / "cgr").mkdir(mode=0o700)
    (top / "db").mkdir(mode=0o700)
    env.workspace = top / "ws"
    env.database = top / "db" / "cgr.sqlite3"
    env.config_path = top / "cgr" / "config.toml"
    env.agent_state = top / "state"
    env.agent_state.mkdir()
    os.chown(env.agent_state, account.pw_uid, account.pw_gid)
    os.chmod(env.agent_state, 0o700)
    env.monkeypatch.setenv("FAKE_CLAUDE_STATE", str(env.agent_state))
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _configure(env: Env, mode: str, user: str, attacks: str, spec: dict[str, object]) -> None:
    env.monkeypatch.setenv("HOSTILE", attacks)
    env.agent_state.mkdir(parents=True, exist_ok=True)
    (env.agent_state / "spec.json").write_text(json.dumps(spec))
    env.write_config(
        agent={"command": [_python_for_the_account(), str(HOSTILE)],
               "env_passthrough": ["FAKE_CLAUDE_STATE", "HOSTILE"]},
        **{"agent.sandbox": {"mode": mode, "user": user,
                             "read_write": [str(env.agent_state)]}},
    )  # fmt: skip


def _results(env: Env) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((env.agent_state / "hostile.json").read_text())
    return data


def _git(git_dir: Path, *args: str) -> str:
    done = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout


@pytest.mark.parametrize("mode", ["user", "landlock+user"])
def test_the_agent_runs_as_its_own_account_and_the_pr_is_opened(
    env: Env, account: pwd.struct_passwd, shared: Path, mode: str
) -> None:
    from cgr_exec import landlock_supported

    if mode == "landlock+user" and landlock_supported() < 4:
        pytest.skip("needs Landlock ABI >= 4")
    env_file = env.config_path.with_name("cgr.env")
    env_file.write_text(f"CGR_GITHUB_TOKEN={env.sim.token}\n")
    spec = {
        "read": {
            "config.toml": str(env.config_path),
            "env file": str(env_file),
            "the store": str(env.database),
            "the workspace root": str(env.workspace),
        }
    }
    _configure(env, mode, account.pw_name, "whoami,read,commit", spec)
    number = env.sim.create_issue(REPO, "Do the thing", "", author="alice", labels=["ready"])

    assert env.run(number) == 0
    got = _results(env)
    # The agent ran as the account (its `id -u`), and did its work with its own git.
    assert (env.agent_state / "whoami.txt").read_text().strip() == str(account.pw_uid)
    assert got["commit"]["ok"] is True, got["commit"]
    # cgr's configuration, env file and store, and a listing of the workspace: denied.
    for name in spec["read"]:
        assert got[f"read:{name}"]["ok"] is False, (name, got[f"read:{name}"])
        assert "PermissionError" in str(got[f"read:{name}"]["detail"]), got[f"read:{name}"]
    # cgr committed what the agent left, scanned and published from a checkout the
    # account owns: no "dubious ownership" anywhere, the PR is open with both changes.
    (rd,) = [p for p in env.workspace.iterdir() if p.name.startswith("r-")]
    log = (rd / "logs" / "run.log").read_text()
    assert "dubious ownership" not in log
    assert f"user {account.pw_name}" in log.split("agent sandbox: ", 1)[1].splitlines()[0]
    summary = json.loads((rd / "artifacts" / "summary.json").read_text())
    assert summary["outcome"] == "pr_opened", summary
    assert len(env.sim.pull_requests(REPO)) == 1
    branch = summary["branch"]
    bare = env.sim.git_dir(REPO)
    files = _git(bare, "ls-tree", "-r", "--name-only", f"refs/heads/{branch}").split()
    assert {"agent.txt", "work.txt"} <= set(files)
    assert "the agent's own commit" in _git(bare, "log", "--format=%s", f"refs/heads/{branch}")
    # The checkout was the account's, cloned without hard links (the mirror's objects
    # keep their owner); at the end the target's and the run's directories are closed
    # to the account again.
    checkout = env.workspace / "targets" / "acme" / "widgets" / str(number) / "repo"
    assert checkout.stat().st_uid == account.pw_uid
    mirror_objects = list((env.workspace / ".mirrors").rglob("objects/pack/*"))
    assert mirror_objects
    assert all(p.stat().st_uid == 0 for p in mirror_objects)
    assert stat.S_IMODE(checkout.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(rd.stat().st_mode) == 0o700


def test_a_workspace_the_account_cannot_reach_is_refused_naming_the_directory(
    env: Env, account: pwd.struct_passwd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The workspace under a 0700 directory (pytest's own temp root is one; made sure).
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    env.workspace = closed / "ws"
    _configure(env, "user", account.pw_name, "whoami", {})
    number = env.sim.create_issue(REPO, "Do the thing", "", author="alice", labels=["ready"])

    assert env.run(number) == 1
    err = capsys.readouterr().err
    assert f"the account '{account.pw_name}' cannot reach the workspace root" in err
    # The first directory on the way it cannot search is named, with the fix.
    way = reversed((closed / "ws").parents)
    first = next(p for p in way if not p.stat().st_mode & stat.S_IXOTH)
    assert f"{first} is not searchable by it" in err
    assert f"chmod o+x {first}" in err
    # Refused before the claim: the issue is untouched and no agent ran.
    assert "ready" in env.sim.issue(REPO, number).labels
    assert not (env.agent_state / "hostile.json").exists()


def test_a_missing_account_is_refused_naming_the_setting(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: as another user the mode itself is refused first")
    _configure(env, "user", "cgr-no-such-account", "whoami", {})
    number = env.sim.create_issue(REPO, "Do the thing", "", author="alice", labels=["ready"])
    assert env.run(number) == 1
    err = capsys.readouterr().err
    assert "agent.sandbox.user = 'cgr-no-such-account': no such account" in err
    assert "ready" in env.sim.issue(REPO, number).labels


def test_doctor_reports_the_user_mode(account: pwd.struct_passwd, tmp_path: Path) -> None:
    from cgr_cli.ops._doctor import check_sandbox
    from cgr_exec import landlock_supported

    reachable = Path(tempfile.mkdtemp(prefix="cgr-user-"))
    try:
        os.chmod(reachable, 0o711)  # noqa: S103 - search only, no listing
        for mode in ("user", "landlock+user"):
            if mode == "landlock+user" and landlock_supported() < 4:
                continue
            config = parse_config(
                {"paths": {"workspace_root": str(reachable / "ws"),
                           "database": str(tmp_path / "db.sqlite3")},
                 "agent": {"sandbox": {"mode": mode, "user": account.pw_name}}},
                source="test",
            )  # fmt: skip
            check = check_sandbox(config, {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
            assert check.status.value == "pass", check
            assert check.data["mode"] == mode
            assert "run as another user: yes" in " ".join(check.data["available"])
            assert f"user {account.pw_name}" in check.data["in_force"]
            assert ("landlock" in check.data["in_force"]) == (mode == "landlock+user")
        # The same with the workspace where the account cannot reach it: a failure that
        # names the directory.
        closed = tmp_path / "closed"
        closed.mkdir(mode=0o700)
        config = parse_config(
            {"paths": {"workspace_root": str(closed / "ws"),
                       "database": str(tmp_path / "db.sqlite3")},
             "agent": {"sandbox": {"mode": "user", "user": account.pw_name}}},
            source="test",
        )  # fmt: skip
        check = check_sandbox(config, {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert check.status.value == "fail"
        assert "is not searchable by it" in check.detail
        assert f"user {account.pw_name}" in check.data["in_force"]
        assert check.fix is not None
        assert "reach the workspace" in check.fix
    finally:
        shutil.rmtree(reachable)


def test_set_up_checks_and_a_second_attempt_run_as_the_account(
    env: Env, account: pwd.struct_passwd, shared: Path
) -> None:
    # The repository's set-up and check commands run like the agent (as the account); the
    # check fails once, so the agent works a second time after cgr's git has written the
    # checkout (the index, objects): the checkout is the account's again for it.
    from runworld import FAKE_CLAUDE

    check = 'grep -q fixed hello.txt && [ "$(id -u)" = "' + str(account.pw_uid) + '" ]'
    env.sim.commit(REPO, "main", {".github/cgr.toml": (
        'setup = ["id -u > setup-uid.txt"]\n'
        f"check = [{json.dumps(check)}]\n")}, message="cgr settings", author="alice")  # fmt: skip
    env.scenario("fix_on_retry")
    env.write_config(
        agent={"command": [_python_for_the_account(), str(FAKE_CLAUDE)]},
        **{"agent.sandbox": {"mode": "user", "user": account.pw_name,
                             "read_write": [str(env.agent_state)]}},
    )  # fmt: skip
    number = env.sim.create_issue(REPO, "Add a greeting", "", author="alice", labels=["ready"])
    assert env.run(number) == 0
    (rd,) = [p for p in env.workspace.iterdir() if p.name.startswith("r-")]
    summary = json.loads((rd / "artifacts" / "summary.json").read_text())
    assert summary["outcome"] == "pr_opened", summary
    assert summary["agent_attempts"] == 2
    ran = [(c["phase"], c["attempt"], c["exit_code"]) for c in summary["commands"]]
    assert ran == [("setup", 0, 0), ("check", 1, 1), ("check", 2, 0)]
    checkout = env.workspace / "targets" / "acme" / "widgets" / str(number) / "repo"
    assert (checkout / "setup-uid.txt").read_text().strip() == str(account.pw_uid)
    assert "dubious ownership" not in (rd / "logs" / "run.log").read_text()


def test_a_killed_run_is_closed_to_the_account_by_reap(
    env: Env, account: pwd.struct_passwd, shared: Path
) -> None:
    """A user-mode run SIGKILLed while its agent works never reaches its own end, which
    closes its directories to the account; `cgr reap` ends what it left and closes them."""
    import signal
    import time

    from cgr_cli import main

    _configure(env, "user", account.pw_name, "hang", {})
    number = env.sim.create_issue(REPO, "Do the thing", "", author="alice", labels=["ready"])
    process = start_run(env, number)
    hung = env.agent_state / "hostile.json"
    try:
        deadline = time.monotonic() + 60
        while not hung.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hung.exists(), "the agent never started"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    target = env.workspace / "targets" / "acme" / "widgets" / str(number)
    (rd,) = [p for p in env.workspace.iterdir() if p.name.startswith("r-")]
    # Left open to the account by the killed run (search only) ...
    assert stat.S_IMODE(target.stat().st_mode) & stat.S_IXOTH
    assert stat.S_IMODE(rd.stat().st_mode) & stat.S_IXOTH
    assert main(["reap", "--config", str(env.config_path)]) == 0
    # ... closed again by the reaper, the run ended and its agent gone.
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert stat.S_IMODE(rd.stat().st_mode) == 0o700
    with env.store() as store:
        (run,) = store.recent_runs(10)
    assert run.status.value == "failed"
    # (A zombie is dead, only not yet waited for by whoever adopted it.)
    live = [p.pid for p in processes() if p.state != "Z"]
    assert not [pid for pid in live if _uid_of(pid) == account.pw_uid]


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:  # ended meanwhile
        return None
