"""``cgr doctor`` against the GitHub simulator, real SQLite files, git and systemctl."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cgr_cli import main
from cgr_cli.ops._doctor import (
    Check,
    CheckStatus,
    DoctorOptions,
    check_database,
    check_systemd,
    format_check,
    run_doctor,
)

REPO = "acme/widgets"
LABELS = ["ready", "in-progress", "needs-human", "blocked"]


class World:
    def __init__(self, sim: Any, root: Path) -> None:
        self.sim = sim
        self.root = root
        self.config = root / "config.toml"
        self.agent = root / "claude"
        self.agent.write_text("#!/bin/sh\necho '2.1.197 (Claude Code)'\n")
        self.agent.chmod(0o755)
        self.write()

    def write(self, token: str | None = None, **github: str) -> None:
        settings = {"api_url": self.sim.url, "token": token or self.sim.token, **github}
        lines = [
            f'repositories = ["{REPO}"]',
            "[paths]",
            f'workspace_root = "{self.root / "ws"}"',
            f'database = "{self.root / "db" / "cgr.sqlite3"}"',
            "[agent]",
            f'command = "{self.agent}"',
            "[github]",
            *(f"{k} = {json.dumps(v)}" for k, v in settings.items()),
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def doctor(self, *extra: str) -> tuple[int, dict[str, Any]]:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["doctor", "--config", str(self.config), "--json", "--min-free-gib",
                         "0.01", *extra])  # fmt: skip
        return code, json.loads(out.getvalue())

    def check(self, name: str, *extra: str) -> tuple[int, dict[str, Any]]:
        """``cgr doctor``'s exit code and its check called ``name``."""
        code, report = self.doctor(*extra)
        return code, by_name(report)[name]


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def _no_systemctl(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(
        "cgr_cli.ops._doctor.shutil.which",
        lambda name, *a, **k: None if name == "systemctl" else real(name, *a, **k),
    )


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The simulator with the repository, a config and an agent; no systemctl (this
    machine's units are not the test's: the systemd check has its own tests below)."""
    from cgr_discovery.testing import GitHubSimulator

    monkeypatch.delenv("CGR_GITHUB_TOKEN", raising=False)
    _no_systemctl(monkeypatch)
    with GitHubSimulator(tmp_path / "sim") as sim:
        sim.create_repo(REPO, labels=LABELS)
        yield World(sim, tmp_path)


def test_a_good_setup_passes(world: World) -> None:
    code, report = world.doctor()
    checks = by_name(report)
    assert code == 0, report
    assert report["ok"] is True
    assert [c["status"] for c in report["checks"]] == ["pass"] * 10 + ["skip"]
    assert list(checks) == ["configuration", "git", "database", "workspace", "agent",
                            "sandbox", "github", f"repository {REPO}", f"labels {REPO}",
                            f"repository file {REPO}", "systemd"]  # fmt: skip
    assert "no .github/cgr.toml" in checks[f"repository file {REPO}"]["detail"]
    assert checks["sandbox"]["detail"].startswith("in force: landlock (")
    assert "landlock: ABI" in checks["sandbox"]["detail"]
    assert "2.1.197 (Claude Code)" in checks["agent"]["detail"]
    assert checks["git"]["detail"].startswith("git version ")
    github = checks["github"]
    assert github["data"]["login"] == world.sim.bot_login
    assert github["data"]["rate_limit"]["limit"] == 5000
    assert "x-oauth-scopes" in github["detail"]  # the simulator sends none: said so
    assert "push" in checks[f"repository {REPO}"]["detail"]
    assert "systemctl not found" in checks["systemd"]["detail"]
    assert world.sim.token not in json.dumps(report)


@pytest.mark.parametrize("damage", ["wake_is_a_file", "another_users_directory"])
def test_agent_slots_this_user_cannot_use_fail_the_workspace_check(
    world: World, damage: str
) -> None:
    """Every run would fail at its agent: doctor says so and what to remove."""
    slots = world.root / "ws" / ".agent-slots"
    slots.mkdir(parents=True)
    if damage == "wake_is_a_file":
        (slots / "wake").write_text("not a FIFO")
        expected = f"{slots / 'wake'} is not a FIFO"
    else:
        if os.geteuid() != 0:
            pytest.skip("giving a directory to another user needs root")
        os.chown(slots, 65534, 65534)  # nobody: a directory made by another user
        expected = f"{slots} belongs to uid 65534"
    code, check = world.check("workspace")
    assert code == 1
    assert check["status"] == "fail"
    assert expected in check["detail"]
    assert f"remove {slots}" in check["fix"]


def test_usable_agent_slots_pass_the_workspace_check(world: World) -> None:
    from cgr_exec import SlotGate

    held = SlotGate(world.root / "ws" / ".agent-slots", 2).try_acquire()
    assert held is not None
    held.release()
    _, check = world.check("workspace")
    assert check["status"] == "pass", check


def test_missing_label_fails_then_fix_creates_it(world: World) -> None:
    world.config.write_text(world.config.read_text() + '[labels]\ndone = "cgr-done"\n')
    code, labels = world.check(f"labels {REPO}")
    assert code == 1
    assert labels["status"] == "fail"
    assert labels["data"]["missing"] == ["cgr-done"]
    assert "cgr doctor --fix" in labels["fix"]
    assert "cgr-done" not in {label.name for label in _labels(world)}

    code, report = world.doctor("--fix")
    assert code == 0, report
    assert by_name(report)[f"labels {REPO}"]["data"]["created"] == ["cgr-done"]
    created = {label.name: label for label in _labels(world)}
    assert created["cgr-done"].color == "5319e7"
    assert world.doctor()[0] == 0  # and it stays fixed


def _labels(world: World) -> list[Any]:
    with world.sim.model.lock:
        return list(world.sim.model.repo(REPO).labels.values())


def test_a_bad_token_fails_with_the_fix(world: World) -> None:
    bad = "ghp_" + "0" * 36
    world.write(token=bad)
    code, report = world.doctor()
    github = by_name(report)["github"]
    assert code == 1
    assert github["status"] == "fail"
    assert "401" in github["detail"]
    assert "set $CGR_GITHUB_TOKEN" in github["fix"]
    assert by_name(report)["repositories"]["status"] == "skip"
    assert bad not in json.dumps(report)


def test_no_token_and_text_output(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    text = world.config.read_text().replace(f'token = "{world.sim.token}"', "")
    world.config.write_text(text)
    code = main(["doctor", "--config", str(world.config), "--min-free-gib", "0.01"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  github" in out
    assert "fix: create a token for the bot account" in out
    assert "\x1b[" not in out  # not a terminal: no colours
    assert "1 check failed" in out


def test_wrong_bot_login_and_read_only_access(world: World) -> None:
    world.write(bot_login="someone-else")
    checks = by_name(world.doctor()[1])
    assert checks["github"]["status"] == "fail"
    assert "someone-else" in checks["github"]["detail"]

    world.sim.add_collaborator(REPO, "reader", role="read")
    world.write(token=world.sim.token_for("reader"))
    checks = by_name(world.doctor()[1])
    repo = checks[f"repository {REPO}"]
    assert repo["status"] == "fail"
    assert "reader may only pull" in repo["detail"]
    assert "Write role" in repo["fix"]


def test_unknown_repository(world: World) -> None:
    world.config.write_text(world.config.read_text().replace(REPO, "acme/nothing"))
    checks = by_name(world.doctor()[1])
    assert checks["repository acme/nothing"]["status"] == "fail"
    assert "not found" in checks["repository acme/nothing"]["detail"]


def test_agent_missing(world: World) -> None:
    world.agent.unlink()
    _, agent = world.check("agent")
    assert agent["status"] == "fail"
    assert "npm install -g @anthropic-ai/claude-code" in agent["fix"]


def test_the_agent_check_is_the_preflights(world: World) -> None:
    """One place decides whether the agent is usable: doctor says what the preflight of
    `tick`, `daemon` and `run` says, problem and fix."""
    from cgr_cli._errors import CgrError
    from cgr_cli.config._load import load_config
    from cgr_cli.run._preflight import PreflightError, preflight

    world.agent.write_text("#!/bin/sh\necho 'broken install' >&2\nexit 3\n")
    config, _ = load_config(str(world.config))
    with pytest.raises(PreflightError) as refused:
        preflight(config)
    assert isinstance(refused.value, CgrError)
    _, agent = world.check("agent")
    assert agent["status"] == "fail"
    assert agent["detail"].endswith("exited 3 (broken install)")
    assert f"{agent['detail']}; {agent['fix']}" in str(refused.value)
    world.agent.unlink()
    with pytest.raises(PreflightError) as missing:
        preflight(config)
    _, agent = world.check("agent")
    assert agent["detail"].startswith(f"the agent command {str(world.agent)!r} was not found")
    assert agent["fix"] in str(missing.value)


def test_invalid_configuration_skips_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[agent]\nmax_turn = 3\n")
    seen: list[Check] = []
    report = run_doctor(DoctorOptions(config_path=str(path), systemctl=None), seen.append)
    assert not report.ok
    assert seen == report.checks
    assert report.checks[0].status is CheckStatus.FAIL
    assert "did you mean 'agent.max_turns'" in report.checks[0].detail
    assert {c.status for c in report.checks[2:]} == {CheckStatus.SKIP}


# -- database ------------------------------------------------------------------------------


def test_database_states(tmp_path: Path) -> None:
    from cgr_store import SCHEMA_VERSION, SQLiteStore

    path = tmp_path / "db" / "cgr.sqlite3"
    missing = check_database(path)
    assert missing.status is CheckStatus.PASS
    assert "does not exist yet" in missing.detail
    assert not path.exists()  # doctor creates nothing without --fix

    path.parent.mkdir()
    SQLiteStore(path).close()
    fine = check_database(path)
    assert fine.status is CheckStatus.PASS
    assert fine.data["schema_version"] == SCHEMA_VERSION

    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.close()
    too_new = check_database(path)
    assert too_new.status is CheckStatus.FAIL
    assert "upgrade cgr-store" in too_new.detail

    other = tmp_path / "notes.txt"
    other.write_text("not a database at all, just some text " * 50)
    bad = check_database(other)
    assert bad.status is CheckStatus.FAIL
    assert other.read_text().startswith("not a database")


def test_old_schema_fails_then_fix_migrates(tmp_path: Path) -> None:
    from cgr_store import SCHEMA_VERSION
    from cgr_store._migrations import APPLICATION_ID, MIGRATIONS

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    c.close()
    old = check_database(path)
    assert old.status is CheckStatus.FAIL
    assert "schema version 1" in old.detail
    assert "--fix" in (old.fix or "")
    fixed = check_database(path, fix=True)
    assert fixed.status is CheckStatus.PASS, fixed
    assert fixed.data["schema_version"] == SCHEMA_VERSION
    assert "migrated from version 1" in fixed.detail


# -- systemd -------------------------------------------------------------------------------

needs_systemctl = pytest.mark.skipif(
    shutil.which("systemctl") is None, reason="systemctl is not installed here"
)


def _unit_tree(root: Path, *enabled: str) -> None:
    from cgr_cli.config._model import Config
    from cgr_cli.ops._systemd import render_units

    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    for unit in render_units(Config(), Path("/etc/cgr/config.toml"), user=False,
                             cgr_argv=["/usr/bin/cgr"]):  # fmt: skip
        (units / unit.name).write_text(unit.text)
    for name in enabled:
        subprocess.run(["systemctl", f"--root={root}", "enable", name],
                       check=True, capture_output=True)  # fmt: skip


@needs_systemctl
def test_daemon_and_timer_both_enabled_fail(tmp_path: Path) -> None:
    _unit_tree(tmp_path, "cgr-daemon.service", "cgr-tick.timer")
    check = check_systemd("systemctl", tmp_path)
    assert check.status is CheckStatus.FAIL
    assert "two schedulers" in check.detail
    assert "disable --now cgr-tick.timer" in (check.fix or "")


@needs_systemctl
def test_only_the_timer_enabled_passes(tmp_path: Path) -> None:
    _unit_tree(tmp_path, "cgr-tick.timer")
    check = check_systemd("systemctl", tmp_path)
    assert check.status is CheckStatus.PASS, check
    assert check.data["states"]["system"] == {
        "cgr-daemon.service": "disabled",
        "cgr-tick.timer": "enabled",
    }


def test_without_systemctl_the_check_says_skipped() -> None:
    check = check_systemd(None)
    assert check.status is CheckStatus.SKIP
    assert "systemctl not found" in check.detail
    assert check_systemd("no-such-systemctl-here").status is CheckStatus.SKIP


def test_format_check_colours_only_when_asked() -> None:
    check = Check(name="git", status=CheckStatus.FAIL, detail="missing", fix="install it")
    plain = format_check(check)
    assert plain.startswith("FAIL  git")
    assert "fix: install it" in plain
    assert "\x1b[1;31mFAIL" in format_check(check, colour=True)


# -- classic token scopes (the simulator sends no x-oauth-scopes; GitHub does) -----------


class _ScopedGitHub:
    """GET /user on 127.0.0.1 answering like github.com does for a classic token."""

    def __init__(self, scopes: str | None, status: int = 200) -> None:
        import http.server
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.authorization = self.headers.get("Authorization")
                user = {"login": "cgr-bot", "type": "User"}
                if status == 403:  # what an app installation token gets from GET /user
                    user = {"message": "Resource not accessible by integration"}
                body = json.dumps(user).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if scopes is not None:
                    self.send_header("x-oauth-scopes", scopes)
                self.send_header("x-ratelimit-limit", "5000")
                self.send_header("x-ratelimit-remaining", "4321")
                self.send_header("x-ratelimit-reset", "4102444800")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.authorization: str | None = None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.mark.parametrize(
    ("scopes", "answer", "status", "fragment"),
    [
        ("repo, workflow", 200, CheckStatus.PASS, "scopes: repo, workflow; rate limit 4321/5000"),
        ("public_repo, read:org", 200, CheckStatus.FAIL, "cgr needs `repo`"),
        (None, 403, CheckStatus.PASS, "GitHub App installation token"),
    ],
)
def test_token_kinds(scopes: str | None, answer: int, status: CheckStatus, fragment: str) -> None:
    import anyio

    from cgr_cli.config._load import parse_config
    from cgr_cli.ops._doctor import _check_auth
    from cgr_discovery import GitHubClient, TokenAuth

    server = _ScopedGitHub(scopes, answer)
    token = ("ghs_" if answer == 403 else "ghp_") + "s" * 36
    config = parse_config(
        {"github": {"api_url": server.url, "token": token, "bot_login": "cgr-bot"}}
    )

    async def check() -> tuple[Check, str | None]:
        async with GitHubClient(auth=TokenAuth(token), base_url=server.url) as gh:
            return await _check_auth(gh, config)

    try:
        result, login = anyio.run(check)
    finally:
        server.close()
    assert login == "cgr-bot"
    assert server.authorization is not None
    assert result.status is status, result
    assert fragment in result.detail
    assert token not in json.dumps(result.data) + result.detail + (result.fix or "")


def test_sandbox_off_is_a_warning_and_an_impossible_mode_fails(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = world.config.read_text()
    world.config.write_text(base + '[agent.sandbox]\nmode = "off"\n')
    code, sandbox = world.check("sandbox")
    assert code == 0
    assert sandbox["status"] == "warn"
    assert sandbox["detail"].startswith("in force: no confinement")
    assert "landlock" in sandbox["fix"]
    # "user" needs root; as root, it needs the account to exist only at run time, so the
    # impossible case shown here is Landlock on a kernel without it (ABI 0).
    from cgr_exec import ConfinementSupport

    monkeypatch.setattr("cgr_exec.probe_confinement", lambda: ConfinementSupport(0, False))
    world.config.write_text(base)
    code, sandbox = world.check("sandbox")
    assert code == 1
    assert sandbox["status"] == "fail"
    assert 'agent.sandbox.mode = "landlock": Landlock is not available' in sandbox["detail"]
    assert "landlock: not available" in sandbox["detail"]
