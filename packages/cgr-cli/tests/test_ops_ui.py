"""``cgr ui`` headless with Textual's pilot: every screen against a committed SVG snapshot,
the live agent-log tail, cancel and retry with confirmation (cancel against the GitHub
simulator), and a real terminal left clean on exit.

Snapshots are deterministic: fixed run ids, fixed times (the store's event times are set
in the file), a fixed clock for ages, no live reloading. After a deliberate change of the
screens (or a Textual bump), regenerate them with::

    CGR_UPDATE_SNAPSHOTS=1 nox -s test-cli -- packages/cgr-cli/tests/test_ops_ui.py

and look at the SVGs (any browser shows them) before committing.
"""

from __future__ import annotations

import html
import os
import pty
import re
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual")

from cgr_cli.ui._app import CgrApp, ConfirmScreen, HelpScreen, RunScreen
from cgr_cli.ui._data import LogTail, RunSource, render_agent_line
from cgr_store import Run, RunKind, RunStatus, SQLiteStore

SNAPSHOTS = Path(__file__).with_name("snapshots")
# The snapshots show this release's recorded stream (samples are per release).
SAMPLE = Path(__file__).parent / "e2e" / "samples" / "2.1.197" / "success.jsonl"
NOW = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)
SIZE = (110, 26)
RUNNING = "r-20261128-122500-000-aaaaaa"
SUCCEEDED = "r-20261128-120000-000-bbbbbb"
FAILED = "r-20261128-110000-000-cccccc"
QUEUED = "r-20261128-122900-000-dddddd"


@pytest.fixture
def anyio_backend() -> str:
    """Textual runs on asyncio only."""
    return "asyncio"


def assert_snapshot(app: CgrApp, name: str, tmp_path: Path) -> None:
    svg = app.export_screenshot(title=f"cgr ui: {name}")
    path = SNAPSHOTS / f"ui_{name}.svg"
    if os.environ.get("CGR_UPDATE_SNAPSHOTS") == "1":
        path.write_text(svg, encoding="utf-8")
        return
    actual = tmp_path / path.name
    actual.write_text(svg, encoding="utf-8")
    assert path.is_file(), f"no snapshot {path}; create it with CGR_UPDATE_SNAPSHOTS=1"
    assert svg == path.read_text(encoding="utf-8"), (
        f"screen {name!r} differs from {path}; the new one is {actual} "
        "(regenerate with CGR_UPDATE_SNAPSHOTS=1 if the change is intended)"
    )


def screen_text(app: CgrApp) -> str:
    """The characters drawn on the screen (the SVG export's text runs, joined), so a test
    can say that a dialog's words are visible, not only that the widget exists."""
    svg = app.export_screenshot()
    runs = re.findall(r"<text[^>]*>(.*?)</text>", svg, flags=re.S)
    return html.unescape("".join(runs)).replace("\xa0", " ")


def _fill(store: SQLiteStore) -> None:
    def made(run_id: str, repo: str, target: int, minutes_ago: int, kind: RunKind) -> None:
        store.create_run(Run(id=run_id, repo=repo, target=target, kind=kind,
                             created_at=NOW - timedelta(minutes=minutes_ago)))  # fmt: skip

    made(SUCCEEDED, "acme/widgets", 12, 30, RunKind.ISSUE)
    store.transition(SUCCEEDED, RunStatus.CLAIMED, host="build-1")
    store.transition(SUCCEEDED, RunStatus.RUNNING, pid=4321)
    store.transition(SUCCEEDED, RunStatus.SUCCEEDED, detail="PR #13", outcome="pr_opened",
                     cost_usd=0.4213, turns=3, branch="cgr/12-add-a-greeting",
                     pr_url="https://github.com/acme/widgets/pull/13")  # fmt: skip
    made(FAILED, "acme/gadgets", 3, 90, RunKind.ISSUE_MENTION)
    store.transition(FAILED, RunStatus.CLAIMED)
    store.transition(FAILED, RunStatus.RUNNING)
    store.transition(FAILED, RunStatus.FAILED, detail="agent exited 1", outcome="failed",
                     error="the agent exited 1: Invalid API key", cost_usd=0.0)  # fmt: skip
    made(RUNNING, "acme/widgets", 14, 5, RunKind.PR_MENTION)
    store.transition(RUNNING, RunStatus.CLAIMED)
    store.transition(RUNNING, RunStatus.RUNNING, cost_usd=0.05)
    made(QUEUED, "acme/widgets", 15, 1, RunKind.ISSUE)


def _fix_times(path: Path) -> None:
    """Event times are the store's clock; pin them so the screens are reproducible."""
    conn = sqlite3.connect(path)
    with conn:
        seqs = [row[0] for row in conn.execute("SELECT seq FROM run_events ORDER BY seq")]
        for seq in seqs:
            at = NOW - timedelta(minutes=60) + timedelta(seconds=37 * seq)
            conn.execute("UPDATE run_events SET at = ? WHERE seq = ?",
                         (at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), seq))  # fmt: skip
    conn.close()


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.database = root / "cgr.sqlite3"
        self.workspace = root / "ws"
        self.store = SQLiteStore(self.database)
        _fill(self.store)
        _fix_times(self.database)
        logs = self.workspace / SUCCEEDED / "logs"
        logs.mkdir(parents=True)
        shutil.copy(SAMPLE, logs / "agent.jsonl")
        (self.workspace / SUCCEEDED / "prompt.md").write_text(
            "You are cgr's coding agent.\n\nTask: acme/widgets#12 Add a greeting file\n"
            "<<<UNTRUSTED-1a2b issue body>>>\nPlease add hello.txt.\n<<<END UNTRUSTED-1a2b>>>\n"
        )

    def app(self, config: Any = None, refresh: float | None = None) -> CgrApp:
        source = RunSource(self.store, self.workspace, clock=lambda: NOW)
        return CgrApp(source, config=config, refresh_seconds=refresh)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.store.close()


@pytest.mark.anyio
async def test_every_screen_matches_its_snapshot(world: World, tmp_path: Path) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert_snapshot(app, "runs", tmp_path)
        await pilot.press("down", "down")  # active first (running, queued), then ended
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, RunScreen)
        assert app.screen.run_id == SUCCEEDED
        assert_snapshot(app, "run_events", tmp_path)
        await pilot.press("l")
        await pilot.pause()
        assert_snapshot(app, "run_agent_log", tmp_path)
        await pilot.press("p")
        await pilot.pause()
        assert_snapshot(app, "run_prompt", tmp_path)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        # The dialog's words are drawn (it once rendered as an empty box, snapshot and all).
        drawn = screen_text(app)
        for words in ("cgr ui — keys", "retry the run: queue a new attempt", "back to the runs"):
            assert words in drawn, drawn
        assert_snapshot(app, "help", tmp_path)
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert not isinstance(app.screen, RunScreen | HelpScreen)
        assert app.is_running  # the runs screen is the one Escape quits


@pytest.mark.anyio
async def test_q_and_escape_work_on_every_screen(world: World) -> None:
    for key in ("q", "escape"):
        app = world.app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("enter")  # a run
            await pilot.pause()
            assert isinstance(app.screen, RunScreen)
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            await pilot.press(key)  # closes the help
            await pilot.pause()
            assert isinstance(app.screen, RunScreen), key
            await pilot.press("r")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press(key)  # "no"
            await pilot.pause()
            assert isinstance(app.screen, RunScreen), key
            assert len(world.store.recent_runs(limit=50)) == 4
            await pilot.press(key)  # back to the runs
            await pilot.pause()
            assert not isinstance(app.screen, RunScreen | HelpScreen | ConfirmScreen), key
            await pilot.press(key)  # quits
            await pilot.pause()
            assert app.return_code == 0, key
            assert not app.is_running, key


@pytest.mark.anyio
async def test_retry_asks_then_queues_a_new_attempt(world: World, tmp_path: Path) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "down", "down")  # the failed run
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert FAILED in app.screen.question
        drawn = screen_text(app)
        assert f"Retry: queue a new attempt for the target of {FAILED}?" in drawn, drawn
        assert "y yes" in drawn, drawn
        assert "Esc no" in drawn, drawn
        assert_snapshot(app, "confirm_retry", tmp_path)
        await pilot.press("n")
        await pilot.pause()
        assert len(world.store.recent_runs(limit=50)) == 4  # "no" changes nothing
        await pilot.press("r", "y")
        await pilot.pause()
    runs = world.store.recent_runs(limit=50)
    assert len(runs) == 5
    new = [r for r in runs if r.attempt == 2]
    assert [(r.repo, r.target, r.status) for r in new] == [("acme/gadgets", 3, RunStatus.QUEUED)]
    assert app.last_message.startswith(f"queued {new[0].id} (attempt 2)")


@pytest.mark.anyio
async def test_cancel_asks_then_ends_the_run_on_github(world: World, tmp_path: Path) -> None:
    from cgr_cli.config._load import parse_config
    from cgr_cli.schedule._runs import hostname
    from cgr_discovery.testing import GitHubSimulator

    with GitHubSimulator(tmp_path / "sim") as sim:
        sim.create_repo("acme/widgets", labels=["ready", "in-progress", "needs-human"])
        sim.add_collaborator("acme/widgets", "alice")
        for n in range(1, 16):
            sim.create_issue("acme/widgets", f"issue {n}", "body", author="alice")
        config = parse_config({
            "github": {"api_url": sim.url, "token": sim.token},
            "paths": {"workspace_root": str(world.workspace), "database": str(world.database)},
            "timeouts": {"watchdog_grace_seconds": 1.0},
        })  # fmt: skip
        # A run of this host whose process is gone: cgr ends it itself, visibly.
        world.store.update_run(RUNNING, host=hostname())
        app = world.app(config=config)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("c")  # the first row: the running run (its process is gone)
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            assert RUNNING in app.screen.question
            await pilot.press("y")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.last_message == f"run {RUNNING}: cancelled", app.last_message
        assert world.store.get_run(RUNNING).status is RunStatus.CANCELLED
        # Ended visibly: the status comment of the run on acme/widgets#14 says so.
        comments = [c.body for c in sim.comments("acme/widgets", 14)]
        assert any(RUNNING in body and "cancel" in body.lower() for body in comments), comments


@pytest.mark.anyio
async def test_the_agent_log_is_followed_live(world: World) -> None:
    log = world.workspace / RUNNING / "logs" / "agent.jsonl"
    log.parent.mkdir(parents=True)
    lines = SAMPLE.read_text().splitlines(keepends=True)
    log.write_text(lines[0])
    app = world.app(refresh=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "l")  # the first row: the running run
        await pilot.pause()
        assert isinstance(app.screen, RunScreen)
        assert app.screen.run_id == RUNNING
        widget = app.screen.query_one("#log")
        first = str(widget.lines[0])  # type: ignore[attr-defined]
        assert first.startswith("▶ session ")
        with log.open("a") as handle:
            handle.writelines(lines[1:])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shown = [str(x) for x in widget.lines]  # type: ignore[attr-defined]
            if any(s.startswith("■ result: success") for s in shown):
                break
            await pilot.pause(0.1)
        else:
            pytest.fail(f"the new lines never appeared: {shown}")


def test_rendering_and_tailing(tmp_path: Path) -> None:
    rendered = [t for line in SAMPLE.read_text().splitlines() for t in render_agent_line(line)]
    assert rendered[0].startswith("▶ session ")
    assert any(t.startswith("tool Write: ") for t in rendered)
    assert rendered[-2].startswith("■ result: success, ")
    assert render_agent_line("not json") == ["not json"]
    path = tmp_path / "a.jsonl"
    tail = LogTail(path)
    assert tail.read() == []
    path.write_text('{"a": 1}\n{"b"')
    assert tail.read() == ['{"a": 1}']
    with path.open("a") as handle:
        handle.write(": 2}\n")
    assert tail.read() == ['{"b": 2}']
    path.write_text("{}\n")  # replaced by a shorter file: read from the start
    assert tail.read() == ["{}"]


def test_a_real_terminal_is_left_clean(world: World, tmp_path: Path) -> None:
    """`cgr ui` in a pseudo-terminal: it starts, draws, quits on `q` and restores the
    terminal (leaves the alternate screen, shows the cursor, mouse reporting off)."""
    config = tmp_path / "config.toml"
    config.write_text(f'[paths]\nworkspace_root = "{world.workspace}"\n'
                      f'database = "{world.database}"\n')  # fmt: skip
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    child = subprocess.Popen([sys.executable, "-m", "cgr_cli", "ui", "--config", str(config)],
                             stdin=follower, stdout=follower, stderr=follower, env=env,
                             start_new_session=True)  # fmt: skip
    os.close(follower)
    output = b""
    try:
        deadline = time.monotonic() + 60
        sent = False
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:
                    break  # the child closed the terminal
                if not chunk:
                    break
                output += chunk
            if not sent and SUCCEEDED.encode() in output:
                os.write(leader, b"q")
                sent = True
            if child.poll() is not None and not ready:
                break
        assert child.wait(timeout=30) == 0, output[-2000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(leader)
    assert sent, output[-2000:]
    tail = output[output.rfind(b"\x1b[?1049h") :]
    assert b"\x1b[?1049l" in tail  # the alternate screen was left
    assert b"\x1b[?25h" in tail  # the cursor is visible again
    assert b"\x1b[?1000l" in tail  # mouse reporting switched off
