"""A GitHub App installed on two accounts, against the simulator over real HTTP: each
request carries the token of the installation that holds its repository, tokens are
renewed before they expire, and an expired or misplaced token is refused."""

from __future__ import annotations

import time

import anyio
import pytest
from discovery_support import REPO

from cgr_discovery import (
    AppInstallations,
    AuthError,
    DiscoveryConfig,
    GitHubClient,
    GitHubRequestError,
    TokenAuth,
    discover,
)
from cgr_discovery.testing import GitHubSimulator, app_key_pems

APP = 4343
OTHER = "globex/gears"


def _two_installations(sim: GitHubSimulator) -> tuple[str, int, int]:
    sim.create_repo(OTHER, private=True, labels=("ready",), bot_role=None)
    bot = sim.register_app(APP, app_key_pems()[1], slug="cgr-multi")
    first = sim.install_app(APP, [REPO])
    second = sim.install_app(APP, [OTHER])
    return bot, first, second


@pytest.mark.anyio
async def test_each_repository_gets_its_installations_token(sim: GitHubSimulator) -> None:
    bot, first, second = _two_installations(sim)
    sim.seed_ready_issues(REPO, 1)
    sim.seed_ready_issues(OTHER, 1)
    auth = AppInstallations(app_id=APP, private_key=app_key_pems()[0])
    async with GitHubClient(auth=auth, base_url=sim.url) as gh:
        listed = await auth.installations(gh)
        assert sorted(i["id"] for i in listed) == sorted([first, second])
        assert sorted(await auth.repositories(gh)) == sorted([REPO, OTHER])
        sim.clear_requests()
        result = await discover(gh, [REPO, OTHER], DiscoveryConfig(login=bot))
        assert sorted(j.repo for j in result.jobs) == sorted([REPO, OTHER])
        assert not result.errors
        # A repository nobody listed yet: its installation is asked once, then remembered.
        sim.create_repo("globex/late", private=True, bot_role=None)
        sim.add_installation_repositories(second, "globex/late", notify=False)
        fresh = AppInstallations(app_id=APP, private_key=app_key_pems()[0])
        gh.auth = fresh
        await gh.getitem("/repos/globex/late")
        await gh.getitem("/repos/globex/late/issues")
    on_repo = [r for r in sim.requests if r.path.startswith("/repos/")]
    for record in on_repo:
        if record.path.startswith(f"/repos/{REPO}"):
            assert record.installation == first, record
        elif record.path.endswith("/installation"):
            assert record.installation is None  # the App's JWT, not a token
        else:
            assert record.installation == second, record
    lookups = [r for r in sim.requests if r.path == "/repos/globex/late/installation"]
    assert len(lookups) == 1


@pytest.mark.anyio
async def test_a_token_reaches_only_its_installation(sim: GitHubSimulator) -> None:
    _, first, _ = _two_installations(sim)
    (number,) = sim.seed_ready_issues(OTHER, 1)
    auth = AppInstallations(app_id=APP, private_key=app_key_pems()[0])
    async with GitHubClient(auth=auth, base_url=sim.url) as gh:
        acme = (await auth.installation(str(first)).token(gh)).reveal()
        async with GitHubClient(auth=TokenAuth(acme), base_url=sim.url) as wrong:
            with pytest.raises(GitHubRequestError) as refused:
                await wrong.post(f"/repos/{OTHER}/issues/{number}/comments", data={"body": "x"})
            assert refused.value.status_code == 404  # private: not even visible
            # A public repository of another account: readable, never writable.
            sim.create_repo("globex/open", bot_role=None)
            assert (await wrong.getitem("/repos/globex/open"))["full_name"] == "globex/open"
            with pytest.raises(GitHubRequestError) as refused:
                await wrong.post("/repos/globex/open/labels", data={"name": "x"})
            assert refused.value.status_code == 403
    # restricted to one installation: the other account's repositories are out of reach
    only = AppInstallations(app_id=APP, private_key=app_key_pems()[0], installation_id=first)
    async with GitHubClient(auth=only, base_url=sim.url) as gh:
        assert [i["id"] for i in await only.installations(gh)] == [first]
        assert await only.repositories(gh) == [REPO]
    bad = AppInstallations(app_id=APP, private_key=app_key_pems()[0], installation_id=999)
    async with GitHubClient(auth=bad, base_url=sim.url) as gh:
        with pytest.raises(AuthError, match="installation 999 is not an installation"):
            await bad.installations(gh)
    nowhere = AppInstallations(app_id=APP, private_key=app_key_pems()[0])
    async with GitHubClient(auth=nowhere, base_url=sim.url) as gh:
        sim.create_repo("initech/tps", private=True, bot_role=None)
        with pytest.raises(AuthError, match="not installed on initech/tps"):
            await gh.getitem("/repos/initech/tps")


@pytest.mark.anyio
async def test_short_lived_tokens_are_renewed_before_they_expire(sim: GitHubSimulator) -> None:
    _two_installations(sim)
    sim.installation_token_seconds = 2
    auth = AppInstallations(app_id=APP, private_key=app_key_pems()[0])
    async with GitHubClient(auth=auth, base_url=sim.url) as gh:
        old = (await auth.token_for(gh, REPO)).reveal()
        await gh.getitem(f"/repos/{REPO}")
        await anyio.sleep(2.2)
        # The old token is expired: GitHub (the simulator) refuses it.
        async with GitHubClient(auth=TokenAuth(old), base_url=sim.url) as stale:
            with pytest.raises(AuthError):
                await stale.getitem(f"/repos/{REPO}")
        sim.clear_requests()
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:  # each request finds a token still valid
            await gh.getitem(f"/repos/{REPO}/issues")
            await anyio.sleep(0.1)
        new = (await auth.token_for(gh, REPO)).reveal()
    assert new != old
    listed = [r for r in sim.requests if r.path == f"/repos/{REPO}/issues"]
    assert {r.status for r in listed} <= {200, 304}, {r.status for r in listed}
    minted = [r for r in sim.requests if r.path.endswith("/access_tokens")]
    # Renewed half-way through each token's life (1-2 s), not before every request.
    assert 2 <= len(minted) <= len(listed) // 3, (len(minted), len(listed))


def test_installing_the_app_sends_an_installation_delivery(sim: GitHubSimulator) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on: the log keeps the payload
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sim.add_webhook(f"http://127.0.0.1:{port}/", "secret", events=["installation"])
    sim.create_repo(OTHER, private=True, bot_role=None)
    sim.register_app(APP, app_key_pems()[1], slug="cgr-multi")
    ident = sim.install_app(APP, [OTHER])
    sim.install_app(APP, [REPO], notify=False)
    sim.wait_for_deliveries()
    (delivery,) = sim.deliveries
    assert (delivery.event, delivery.action) == ("installation", "created")
    assert delivery.payload["installation"]["id"] == ident
    assert delivery.payload["installation"]["account"]["login"] == "globex"
    assert [r["full_name"] for r in delivery.payload["repositories"]] == [OTHER]
    assert "repository" not in delivery.payload
