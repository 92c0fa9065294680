"""``cgr demo`` as a user runs it: a real subprocess, a simulated GitHub in another process,
two real ``cgr tick`` passes that fork their runs, the scripted demo agent, real git."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from cgr_cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CGR_", "GH_", "GITHUB_"))}
    return subprocess.run(
        [sys.executable, "-c", code, "demo", "--step-delay", "0", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_demo_keeps_its_state_for_status(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = _demo("--dir", str(state), cwd=tmp_path)
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}"
    # Progress: both ticks, each step of both runs, the agent's tools.
    assert out.count("tick: ") == 2
    assert "1 rejected by the trigger policy" in out  # mallory's mention
    assert re.search(r"acme/widgets#1 \[r-[^\]]+\]: claimed", out)
    assert re.search(r"acme/widgets#2 \[r-[^\]]+\]:   agent Edit README\.md", out)
    # The outcome: two pull requests with their diff stat, the comments, the labels.
    assert "cgr/1-add-a-greet-helper → main" in out
    assert "widgets/greet.py    | 6 ++++++" in out
    assert "cgr/2-readme-no-install-instructions → main" in out
    assert "README.md | 8 ++++++++" in out
    assert out.count("✅ Opened pull request #") == 2
    assert out.count("labels now: done") == 2
    assert "acme/widgets#3: the mention by an outsider (no write access) started no run" in out
    assert re.search(r"r-\S+ +acme/widgets#1 +succeeded +pr_opened", out)
    assert "2 pull request(s) opened" in out
    # The kept state: a 0600 config, the store with both runs, logs, and cgr status on it.
    config = state / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    from cgr_store import SQLiteStore

    with SQLiteStore(state / "cgr.sqlite3") as store:
        runs = store.recent_runs()
    assert sorted((r.target, r.status, r.outcome) for r in runs) == [
        (1, "succeeded", "pr_opened"), (2, "succeeded", "pr_opened")
    ]  # fmt: skip
    for run in runs:
        assert (state / "workspaces" / run.id / "logs" / "run.log").is_file()
    status = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "status", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert all(run.id in status.stdout for run in runs)
    # Nothing left running: the simulated GitHub and the forked runs are gone.
    assert _processes_mentioning(str(state)) == []


def test_demo_cleans_up_without_keep(tmp_path: Path) -> None:
    done = _demo(cwd=tmp_path)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    match = re.search(r"^config (\S+)/config\.toml,", done.stdout, re.MULTILINE)
    assert match, done.stdout
    root = Path(match.group(1))
    assert not root.exists()
    assert "removed when the demo ends" in done.stdout
    assert _processes_mentioning(str(root)) == []


def test_demo_refuses_a_directory_in_use(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("mine\n")
    done = _demo("--dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert f"--dir {tmp_path} is not empty" in done.stderr
    assert (tmp_path / "something").read_text() == "mine\n"
