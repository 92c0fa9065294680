"""Fixtures for runs against the GitHub simulator, real git and the scripted agent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from runworld import REPO, Env

if TYPE_CHECKING:
    from schedworld import Sched


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    from cgr_discovery.testing import GitHubSimulator

    with GitHubSimulator(tmp_path / "sim") as sim:
        sim.create_repo(REPO, labels=["ready", "in-progress", "needs-human", "cgr-done"])
        sim.add_collaborator(REPO, "alice", role="write")
        state = tmp_path / "agent-state"
        monkeypatch.setenv("FAKE_CLAUDE_STATE", str(state))
        monkeypatch.setenv("FAKE_CLAUDE_SCENARIO", "success")
        # Tokens in cgr's own environment must never reach the agent.
        monkeypatch.setenv("GH_TOKEN", sim.token)
        monkeypatch.setenv("GITHUB_TOKEN", sim.token)
        monkeypatch.delenv("CGR_CONFIG", raising=False)
        world = Env(
            sim=sim,
            root=tmp_path,
            config_path=tmp_path / "config.toml",
            workspace=tmp_path / "ws",
            database=tmp_path / "cgr.sqlite3",
            agent_state=state,
            monkeypatch=monkeypatch,
        )
        world.write_config()
        yield world


@pytest.fixture
def sched(env: Env) -> Sched:
    """The scheduling helpers (schedworld.Sched) bound to this test's ``env``."""
    from schedworld import Sched

    return Sched(env)


@pytest.fixture
def subreaper(sched: Sched) -> Iterator[None]:
    """Orphans (a tick's detached children, agents of a killed run) come to this process,
    so a test can prove none is left; see schedworld."""
    from schedworld import reap_zombies, set_subreaper

    set_subreaper(True)
    try:
        yield
        sched.wait_all_gone("leftover processes to end", timeout=30)
    finally:
        set_subreaper(False)
        reap_zombies()
