"""Fixtures: the GitHub simulator on loopback and a client pointed at it.

Every async test runs under asyncio and trio: the client must depend on neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from discovery_support import BOT, FAST, REPO, ClientFactory

from cgr_discovery import GitHubClient, TokenAuth
from cgr_discovery.testing import GitHubSimulator


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[GitHubSimulator]:
    with GitHubSimulator(tmp_path / "github", bot_login=BOT) as simulator:
        simulator.create_repo(REPO, labels=("ready", "in-progress", "blocked"))
        yield simulator


@pytest.fixture
async def make_client(sim: GitHubSimulator) -> AsyncIterator[ClientFactory]:
    """``make_client(**kwargs)``: a GitHubClient on the simulator, closed after the test."""
    clients: list[GitHubClient] = []

    def make(**kwargs: Any) -> GitHubClient:
        kwargs.setdefault("auth", TokenAuth(sim.token))
        kwargs.setdefault("base_url", sim.url)
        kwargs.setdefault("retry", FAST)
        kwargs.setdefault("timeout", 10.0)
        client = GitHubClient(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def gh(make_client: ClientFactory) -> GitHubClient:
    return make_client()
