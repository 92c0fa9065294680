"""Answers the simulator does not give, from a scripted loopback server; and what crosses
the wire concurrently, counted on a real transport."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import anyio
import httpx
import pytest
from discovery_support import BOT, FAST, REPO, ClientFactory, Scripted

from cgr_discovery import (
    DiscoveryConfig,
    GitHubClient,
    GitHubRequestError,
    RateLimited,
    TokenAuth,
    discover,
)
from cgr_discovery.testing import GitHubSimulator

pytestmark = pytest.mark.anyio
SECONDARY = json.dumps({"message": "You have exceeded a secondary rate limit."}).encode()
OK = (200, {}, json.dumps({"full_name": "o/r"}).encode())


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted({})
    yield server
    server.close()


async def recorder(slept: list[float], seconds: float) -> None:
    slept.append(seconds)
    await anyio.sleep(seconds)


async def test_secondary_limit_without_retry_after_waits_a_minute_then_doubles(
    scripted: Scripted, make_client: ClientFactory
) -> None:
    scripted.routes["/repos/o/r"] = [(403, {}, SECONDARY), (403, {}, SECONDARY), OK]
    slept: list[float] = []
    gh = make_client(base_url=scripted.url, sleep=lambda s: recorder(slept, s))
    assert (await gh.getitem("/repos/o/r"))["full_name"] == "o/r"
    unscaled = [s / FAST.scale for s in slept]
    assert unscaled[0] == pytest.approx(60.0)
    assert unscaled[1] == pytest.approx(120.0)


async def test_429_without_headers_is_a_secondary_limit(
    scripted: Scripted, make_client: ClientFactory
) -> None:
    scripted.routes["/repos/o/r"] = [(429, {}, b"")]
    gh = make_client(base_url=scripted.url)
    with pytest.raises(RateLimited) as info:
        await gh.getitem("/repos/o/r")
    assert info.value.secondary
    assert len(scripted.hits) == FAST.attempts


async def test_plain_403_is_not_retried(scripted: Scripted, make_client: ClientFactory) -> None:
    body = json.dumps({"message": "Resource not accessible by integration"}).encode()
    scripted.routes["/repos/o/r"] = [(403, {"x-ratelimit-remaining": "4000"}, body)]
    gh = make_client(base_url=scripted.url)
    with pytest.raises(GitHubRequestError, match="Resource not accessible") as info:
        await gh.getitem("/repos/o/r")
    assert info.value.status_code == 403
    assert scripted.hits == ["GET /repos/o/r"]


async def test_renamed_repository_redirect_is_followed(
    scripted: Scripted, make_client: ClientFactory
) -> None:
    scripted.routes["/repos/o/old"] = [(301, {"location": "{url}/repos/o/r"}, b"")]
    scripted.routes["/repos/o/r"] = [OK]
    gh = make_client(base_url=scripted.url)
    assert (await gh.getitem("/repos/o/old"))["full_name"] == "o/r"


async def test_malformed_answer_is_reported_for_that_repository_only(
    scripted: Scripted, make_client: ClientFactory
) -> None:
    broken = json.dumps([{"id": 1, "body": "@cgr-bot hi", "user": {"login": "x"}}]).encode()
    scripted.routes["/repos/o/a/issues"] = [(200, {}, b"[]")]
    scripted.routes["/repos/o/a/issues/comments"] = [(200, {}, broken)]  # no timestamps
    scripted.routes["/repos/o/a/pulls/comments"] = [(200, {}, b"[]")]
    gh = make_client(base_url=scripted.url)
    result = await discover(gh, ["o/a"], DiscoveryConfig(login=BOT))
    assert [(e.repo, e.exception_type) for e in result.errors] == [("o/a", "KeyError")]
    assert [s.before.stream for s in result.streams] == ["review_comments"]


class Counting(httpx.AsyncBaseTransport):
    """A real HTTP transport that counts requests in flight (not a mock: it forwards)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.in_flight = 0
        self.peak = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            response = await self.inner.handle_async_request(request)
            await response.aread()
            return response
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_concurrency_is_bounded(sim: GitHubSimulator) -> None:
    repos = [REPO] + [sim.create_repo(f"acme/r{i}") for i in range(7)]
    sim.faults.latency(0.05)
    transport = Counting()
    async with (
        httpx.AsyncClient(transport=transport) as http,
        GitHubClient(auth=TokenAuth(sim.token), base_url=sim.url, http=http) as gh,
    ):
        result = await discover(gh, repos, DiscoveryConfig(login=BOT, max_concurrent_repos=3))
    assert result.errors == ()
    assert len(result.streams) == 2 * len(repos)
    # A repository's three lists are in flight together, within 3 repositories at once:
    # never more than 9, and more than one repository's worth at some point.
    assert 3 < transport.peak <= 9


async def test_no_token_in_any_log_record(
    sim: GitHubSimulator, gh: GitHubClient, caplog: pytest.LogCaptureFixture
) -> None:
    sim.faults.error(502, path="/issues/comments", count=1)
    sim.seed_outsider_mention(REPO)
    with caplog.at_level(logging.DEBUG):
        await discover(gh, [REPO, "acme/missing"], DiscoveryConfig(login=BOT))
    assert caplog.records  # httpx, httpcore and cgr_discovery all logged something
    assert sim.token not in caplog.text
    assert sim.token not in repr(gh)
