"""Fixtures for the GitHub simulator's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cgr_discovery.testing import GitHubSimulator

REPO = "acme/widgets"


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[GitHubSimulator]:
    with GitHubSimulator(tmp_path / "github") as sim:
        sim.create_repo(REPO, labels=("ready",))
        yield sim


@pytest.fixture
def api(gh: GitHubSimulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"token {gh.token}", "Accept": "application/vnd.github+json"}
    with httpx.Client(base_url=gh.url, headers=headers, timeout=30) as client:
        yield client
