"""The world of one ``cgr run`` test: simulator, config, workspace, scripted agent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FAKE_CLAUDE = Path(__file__).with_name("fake_claude.py")
REPO = "acme/widgets"


@dataclass
class Env:
    """One test's world: the simulator, a config file, the workspace and the agent's state."""

    sim: Any
    root: Path
    config_path: Path
    workspace: Path
    database: Path
    agent_state: Path
    monkeypatch: pytest.MonkeyPatch

    def write_config(self, **sections: dict[str, Any]) -> Path:
        base: dict[str, dict[str, Any]] = {
            "github": {"api_url": self.sim.url, "token": self.sim.token,
                       "bot_login": self.sim.bot_login},
            "paths": {"workspace_root": str(self.workspace), "database": str(self.database)},
            "agent": {
                "command": [sys.executable, str(FAKE_CLAUDE)],
                "env_passthrough": ["FAKE_CLAUDE_SCENARIO", "FAKE_CLAUDE_STATE",
                                    "FAKE_CLAUDE_VERSION"],
                "max_cost_usd": 5.0,
            },
            "timeouts": {"agent_seconds": 30.0, "agent_idle_seconds": 20.0,
                         "watchdog_grace_seconds": 1.0, "heartbeat_seconds": 0.5},
            "cleanup": {"policy": "keep"},
            "labels": {"done": "cgr-done"},
            # The agent runs confined (Landlock, the default); the scripted agent records
            # its calls in agent_state, outside its checkout.
            "agent.sandbox": {"read_write": [str(self.agent_state)]},
        }  # fmt: skip
        self.agent_state.mkdir(parents=True, exist_ok=True)
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        lines = [f"repositories = [{json.dumps(REPO)}]"]
        for name, values in base.items():
            lines.append(f"[{name}]")
            # None leaves a key out (its default applies).
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def scenario(self, name: str) -> None:
        self.monkeypatch.setenv("FAKE_CLAUDE_SCENARIO", name)

    def calls(self) -> list[dict[str, Any]]:
        calls = sorted((self.agent_state / "calls").glob("*.json"))
        return [json.loads(p.read_text()) for p in calls]

    def run(self, number: int, *extra: str) -> int:
        from cgr_cli import main

        return main(["run", "--config", str(self.config_path), "--repo", REPO,
                     "--number", str(number), *extra])  # fmt: skip

    def run_new_issue(self, title: str, body: str = "", *, code: int = 1) -> int:
        """Open a ready issue (by alice) and `cgr run` it in this process; the run exits
        with ``code``. The issue's number."""
        number = int(self.sim.create_issue(REPO, title, body, author="alice", labels=["ready"]))
        assert self.run(number) == code
        return number

    def store(self) -> Any:
        from cgr_store import SQLiteStore

        return SQLiteStore(self.database)


def start_run(env: Env, number: int, *extra: str, capture: bool = False) -> subprocess.Popen[Any]:
    """``cgr run`` on ``number`` (``extra``: more of its arguments, e.g. ``--run-id R`` as
    a scheduler starts it) as a real process (its output kept as text with ``capture``,
    else discarded), for tests that signal or kill it."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "cgr_cli", "run", "--config", str(env.config_path),
         "--repo", REPO, "--number", str(number), *extra],
        stdout=out, stderr=out, text=capture,
    )  # fmt: skip


def sigterm_run(
    env: Env,
    number: int,
    *,
    started: Callable[[], object],
    what: str,
    timeout: float,
    settle: float,
) -> tuple[int, str, str]:
    """``cgr run`` on ``number`` as a real process, sent SIGTERM ``settle`` seconds after
    ``started()`` holds (``what`` has started; it must within ``timeout``): its exit code,
    stdout and stderr."""
    process = start_run(env, number, capture=True)
    try:
        deadline = time.monotonic() + timeout
        while not started() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started(), f"{what} never started"
        time.sleep(settle)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, err


def walk_files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def assert_no_token(env: Env, *roots: Path) -> None:
    """The token appears in no file under the workspace (checkouts and .git/ included),
    no log, no artifact, and no comment or PR text on GitHub."""
    token = env.sim.token.encode()
    for root in roots or (env.workspace,):
        for path in walk_files(root):
            assert token not in path.read_bytes(), f"token found in {path}"
    for issue in env.sim.pull_requests(REPO):
        assert env.sim.token not in (issue.body or "")
    for number in range(1, 30):
        try:
            comments = env.sim.comments(REPO, number)
        except Exception:
            break
        for comment in comments:
            assert env.sim.token not in comment.body
            assert str(env.workspace) not in comment.body


StatusCheck = Callable[[str], None]
