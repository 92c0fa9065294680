"""The client against the simulator over real loopback HTTP: ETags, retries, rate limits."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import anyio
import pytest
from discovery_support import FAST, REPO, ClientFactory
from gidgethub import sansio

from cgr_discovery import (
    USER_AGENT,
    AuthError,
    GitHubClient,
    GitHubRequestError,
    GitHubUnavailable,
    RateLimited,
    RetryPolicy,
    RunGitHub,
    TokenAuth,
)
from cgr_discovery.testing import GitHubSimulator

pytestmark = pytest.mark.anyio
REPO_PATH = f"/repos/{REPO}"


def served(sim: GitHubSimulator, method: str = "GET", path: str = REPO_PATH) -> list[int | None]:
    return [r.status for r in sim.requests if r.method == method and r.path == path]


async def test_etag_makes_unchanged_get_free(sim: GitHubSimulator, gh: GitHubClient) -> None:
    before = sim.rate_limit()["used"]
    first = await gh.getitem(REPO_PATH)
    second = await gh.getitem(REPO_PATH)
    assert first == second
    assert served(sim) == [200, 304]
    assert [r.conditional for r in sim.requests] == [False, True]
    assert sim.rate_limit()["used"] == before + 1
    stats = gh.stats()
    assert (stats.requests, stats.not_modified, stats.points_spent) == (2, 1, 1)
    assert stats.rate_limit_remaining == sim.rate_limit()["remaining"]
    assert stats.rate_limit_limit == 5000


async def test_5xx_burst_is_retried(sim: GitHubSimulator, gh: GitHubClient) -> None:
    sim.faults.error(502, path=f"^{REPO_PATH}$", count=2)
    data = await gh.getitem(REPO_PATH)
    assert data["full_name"] == REPO
    assert served(sim) == [502, 502, 200]
    assert gh.stats().retries == 2


async def test_persistent_5xx_raises_after_attempts(sim: GitHubSimulator, gh: GitHubClient) -> None:
    sim.faults.error(503, path=f"^{REPO_PATH}$")
    with pytest.raises(GitHubUnavailable, match="503") as info:
        await gh.getitem(REPO_PATH)
    assert info.value.status_code == 503
    assert served(sim) == [503] * 4  # FAST.attempts


async def test_post_is_not_retried_after_it_may_have_arrived(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    number = sim.create_issue(REPO, "t", "b")
    path = f"{REPO_PATH}/issues/{number}/comments"
    sim.faults.error(502, method="POST", path=path, count=1)
    with pytest.raises(GitHubUnavailable):
        await gh.post(path, data={"body": "hello"})
    assert served(sim, "POST", path) == [502]
    sim.faults.drop_connection(method="POST", path=path, count=1)
    with pytest.raises(GitHubUnavailable, match=r"RemoteProtocolError|ReadError"):
        await gh.post(path, data={"body": "hello"})
    assert served(sim, "POST", path) == [502, None]
    await gh.post(path, data={"body": "hello"})
    assert [c.body for c in sim.comments(REPO, number)] == ["hello"]


async def test_dropped_get_is_retried(sim: GitHubSimulator, gh: GitHubClient) -> None:
    sim.faults.drop_connection(method="GET", path=f"^{REPO_PATH}$", count=2)
    assert (await gh.getitem(REPO_PATH))["full_name"] == REPO
    assert served(sim) == [None, None, 200]


async def test_connect_errors_retried_even_for_post(make_client: ClientFactory) -> None:
    # A port nobody listens on: the request never leaves, so even a POST may be repeated.
    with anyio.fail_after(10):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
        await listener.aclose()
    gh = make_client(base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(GitHubUnavailable, match="ConnectError") as info:
        await gh.post("/repos/a/b/issues/1/comments", data={"body": "x"})
    assert info.value.status_code is None
    assert gh.stats().requests == 4
    assert gh.stats().retries == 3


async def test_secondary_limit_honours_retry_after(
    sim: GitHubSimulator, make_client: ClientFactory
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await anyio.sleep(seconds)

    gh = make_client(sleep=sleep)
    sim.faults.secondary_rate_limit(retry_after=30, path=f"^{REPO_PATH}$", count=1)
    assert (await gh.getitem(REPO_PATH))["full_name"] == REPO
    assert served(sim) == [403, 200]
    assert slept == [pytest.approx(30 * FAST.scale)]
    assert gh.stats().rate_limited == 1


async def test_secondary_limit_also_retries_posts(sim: GitHubSimulator, gh: GitHubClient) -> None:
    # A 403/429 limit answer means GitHub did not process the request: repeating is safe.
    number = sim.create_issue(REPO, "t", "b")
    path = f"{REPO_PATH}/issues/{number}/comments"
    sim.faults.error(429, method="POST", path=path, count=1, retry_after=1)
    await RunGitHub(gh).comment(REPO, number, "once")
    assert served(sim, "POST", path) == [429, 201]
    assert [c.body.split("\n", 1)[1] for c in sim.comments(REPO, number)] == ["once"]


async def test_persistent_secondary_limit_raises(sim: GitHubSimulator, gh: GitHubClient) -> None:
    sim.faults.secondary_rate_limit(retry_after=5, path=f"^{REPO_PATH}$")
    with pytest.raises(RateLimited, match="secondary") as info:
        await gh.getitem(REPO_PATH)
    assert info.value.secondary
    assert len(served(sim)) == 4


async def test_exhausted_quota_fails_fast_with_reset_time(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    await gh.getitem(REPO_PATH)
    sim.exhaust_rate_limit(reset_in=3600)
    with pytest.raises(RateLimited, match="hourly rate limit is exhausted until") as info:
        await gh.getitem(f"{REPO_PATH}/labels")
    assert not info.value.secondary
    expected = datetime.fromtimestamp(sim.rate_limit()["reset"], UTC)
    assert info.value.reset_at == expected
    sent = len(sim.requests)
    # The client now knows the quota is gone: it raises without spending a request.
    with pytest.raises(RateLimited):
        await gh.getitem(f"{REPO_PATH}/labels")
    assert len(sim.requests) == sent


# It waits in real time for the reset, so one event loop is enough.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_quota_resetting_soon_is_waited_for(
    sim: GitHubSimulator, make_client: ClientFactory
) -> None:
    gh = make_client(retry=RetryPolicy(scale=1.0, max_rate_limit_wait=10.0))
    # The simulator's clock counts whole seconds: a reset "1 s from now" may be a few ms away
    # (CI once sent the request after it had passed and got a 200 at once). Two whole seconds
    # are at least one real second, so the first answer is always the 403.
    sim.exhaust_rate_limit(reset_in=2)
    start = time.monotonic()
    assert (await gh.getitem(REPO_PATH))["full_name"] == REPO
    assert time.monotonic() - start >= 0.5
    assert served(sim) == [403, 200]


async def test_bad_token_is_auth_error_without_the_token(
    sim: GitHubSimulator, make_client: ClientFactory
) -> None:
    secret = "ghp_not_a_valid_token_000000"
    gh = make_client(auth=TokenAuth(secret, source="GH_TOKEN"))
    with pytest.raises(AuthError, match="401") as info:
        await gh.getitem(REPO_PATH)
    assert secret not in str(info.value)
    assert secret not in repr(gh)
    assert "GH_TOKEN" in str(info.value)


async def test_not_found_is_typed(gh: GitHubClient) -> None:
    with pytest.raises(GitHubRequestError) as info:
        await gh.getitem("/repos/acme/nope")
    assert info.value.status_code == 404
    assert info.value.github_message == "Not Found"


async def test_per_request_timeout(sim: GitHubSimulator, make_client: ClientFactory) -> None:
    sim.faults.latency(2.0, path=f"^{REPO_PATH}$")
    gh = make_client(timeout=0.2, retry=RetryPolicy(attempts=2, scale=0.0))
    start = time.monotonic()
    with pytest.raises(GitHubUnavailable, match="ReadTimeout"):
        await gh.getitem(REPO_PATH)
    assert time.monotonic() - start < 1.5


def test_user_agent_and_enterprise_base_url() -> None:
    gh = GitHubClient(base_url="https://ghe.example.com/api/v3/")
    assert gh.requester == USER_AGENT
    assert USER_AGENT.startswith("cgr-discovery/")
    url = sansio.format_url("/repos/{o}/{r}", {"o": "a", "r": "b"}, base_url=gh.base_url)
    assert url == "https://ghe.example.com/api/v3/repos/a/b"


async def test_cache_can_be_disabled(sim: GitHubSimulator, make_client: ClientFactory) -> None:
    gh = make_client(cache=False)
    await gh.getitem(REPO_PATH)
    await gh.getitem(REPO_PATH)
    assert served(sim) == [200, 200]
    assert gh.stats().points_spent == 2


def test_client_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="timeout"):
        GitHubClient(timeout=0)


async def test_exhausted_search_quota_does_not_block_core(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    sim.exhaust_rate_limit(resource="search", reset_in=3600)
    with pytest.raises(RateLimited):
        await gh.getitem("/search/issues?q=repo:acme/widgets")
    with pytest.raises(RateLimited):  # known now: refused without a request
        await gh.getitem("/search/issues?q=is:open")
    assert [r.path for r in sim.requests] == ["/search/issues"]
    assert (await gh.getitem(REPO_PATH))["full_name"] == REPO
    assert gh.stats().rate_limit_limit == 5000  # the core quota
