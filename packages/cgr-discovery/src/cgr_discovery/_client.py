"""The GitHub client: gidgethub's ``GitHubAPI`` over httpx, sleeping with anyio.

gidgethub does the sans-I/O work (URL templates, headers, pagination, the ETag cache);
this class supplies the I/O (``_request``) and wraps every request in cgr's policy: auth
header injection, retries with backoff for 5xx and connection errors, primary and
secondary rate limits, and counters. Because it sleeps with :func:`anyio.sleep` (the
gidgethub httpx backend uses asyncio's), it runs under asyncio and trio alike.
"""

from __future__ import annotations

import email.utils
import functools
import re
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self

import anyio
import httpx
from gidgethub import abc as gh_abc
from gidgethub import sansio

from ._auth import Auth
from ._cache import LRUCache, PersistentCache
from ._errors import AuthError, GitHubRequestError, GitHubUnavailable, RateLimited
from ._retry import (
    IDEMPOTENT_METHODS,
    Classified,
    RetryPolicy,
    Verdict,
    classify,
    github_error_messages,
    github_message,
)
from ._version import __version__

DEFAULT_BASE_URL: Final = "https://api.github.com"

USER_AGENT: Final = f"cgr-discovery/{__version__} (cgr)"

# Connections per httpx pool (see GitHubClient.__init__).
_POOL_SIZE: Final = 8
_REPO_PATH = re.compile(r"/repos/([^/?#]+/[^/?#]+)")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's roots, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``),
    made once per process and shared by every pool of every client.

    Loading the CA bundle takes 50-60 ms; httpx does it for each ``AsyncClient`` it builds,
    so a client of 8 pools spent half a second in it before its first request. A context is
    configuration only (no connection state), so sharing it - also with a forked child,
    which opens its own connections - is safe.
    """
    return httpx.create_ssl_context()


# Transport errors raised before a single byte of the request left: repeating them cannot
# duplicate a write, so even a POST is retried.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(slots=True)
class _OneAttempt:
    """Set (through a context variable) while ``RunGitHub`` sends one attempt of a write.

    The write step then owns the retry loop (each attempt is reported, a lost answer is
    looked up before anything is repeated), so the client must not repeat the request by
    itself after a 5xx or a transport error. Rate-limit answers are still waited out here
    (GitHub did not process the request) and each wait is told to ``on_wait``.
    """

    on_wait: Callable[[float, int, bool], None] | None = None


# A context variable rather than a parameter: gidgethub's getitem/post/patch call
# ``_request`` without a way to pass options through, and a context variable follows the
# awaiting task under asyncio and trio alike without leaking into concurrent tasks.
_ONE_ATTEMPT: ContextVar[_OneAttempt | None] = ContextVar("cgr_one_attempt", default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientStats:
    """A snapshot of the client's counters, for ``cgr status`` and metrics.

    ``points_spent`` counts responses that cost rate-limit quota (everything but 304
    answers to conditional requests). ``rate_limit_*`` describe the ``core`` quota (the one
    every REST call cgr makes counts against) from the last response that carried it.
    """

    requests: int
    not_modified: int
    points_spent: int
    retries: int
    rate_limited: int
    slept_seconds: float
    rate_limit_limit: int | None
    rate_limit_remaining: int | None
    rate_limit_reset: datetime | None


class GitHubClient(gh_abc.GitHubAPI):
    """gidgethub's :class:`~gidgethub.abc.GitHubAPI`, with cgr's auth and resilience.

    Use it as an async context manager (it closes the httpx client it created)::

        async with GitHubClient(auth=resolve_token()) as gh:
            repo = await gh.getitem("/repos/{owner}/{repo}", {"owner": o, "repo": r})

    ``base_url`` is ``https://HOST/api/v3`` for GitHub Enterprise Server. ``timeout``
    bounds each phase of an HTTP request (connecting, each read, each write, waiting for a
    pooled connection); a timed-out request counts as a transport error. ``cache`` is
    gidgethub's ETag cache (an :class:`LRUCache` by default; a :class:`PersistentCache`,
    such as an :class:`ETagCache` over a persistent backend, keeps it across processes;
    ``None`` disables it).
    ``max_connections`` bounds the connection pool (all kept alive between polls; 64 by
    default, room for discovery's 16 repositories with 3 requests each). An
    ``http`` client passed in is used as is (its own timeout, limits and redirect settings).
    ``sleep`` replaces :func:`anyio.sleep` for every wait the policy makes.

    Create one client per process and event loop: its connection pool must not cross a
    ``fork()`` (cgr's forked children open their own).
    """

    def __init__(
        self,
        *,
        auth: Auth | None = None,
        base_url: str = DEFAULT_BASE_URL,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        max_connections: int = 64,
        cache: gh_abc.CACHE_TYPE | bool | None = True,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        if timeout <= 0 or max_connections < 1:
            raise ValueError("GitHubClient timeout must be positive and max_connections >= 1")
        if cache is True:
            cache = LRUCache()
        elif cache is False:
            cache = None
        super().__init__(user_agent, cache=cache, base_url=base_url.rstrip("/"))
        self.auth = auth
        self.retry = retry or RetryPolicy()
        self._owns_http = http is None
        # Redirects are followed because GitHub answers 301/307 for renamed and transferred
        # repositories; httpx drops the Authorization header if a redirect leaves the host.
        # Every pooled connection is kept alive: reopening connections on each poll costs a
        # TLS handshake each on GitHub. GitHub also asks for no more than 100 concurrent
        # requests (a secondary limit), so the pool stays well below that.
        #
        # The connections are split into pools of at most _POOL_SIZE, a repository's
        # requests always in the same pool: httpcore scans every connection of a pool
        # (asking each idle one whether its socket is readable) each time a request starts
        # or ends, so one pool of 64 costs far more CPU per request than 8 pools of 8.
        pools = max(1, -(-max_connections // _POOL_SIZE))
        per_pool = -(-max_connections // pools)
        limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
        self._pools: list[httpx.AsyncClient] = (
            [http]
            if http is not None
            else [
                httpx.AsyncClient(
                    timeout=httpx.Timeout(timeout),
                    follow_redirects=True,
                    limits=limits,
                    verify=_tls_context(),
                )
                for _ in range(pools)
            ]
        )
        self._http = self._pools[0]
        self._sleep = sleep or anyio.sleep
        self._requests = 0
        self._not_modified = 0
        self._points = 0
        self._retries = 0
        self._rate_limited = 0
        self._slept = 0.0
        # Per rate-limit resource ("core", "search", "graphql", ...): limit, remaining,
        # reset epoch. Each resource has its own quota; an exhausted search quota must not
        # hold back core requests.
        self._quotas: dict[str, tuple[int, int, float]] = {}
        # Server clock minus local clock, from the last Date header: rate-limit resets are
        # server times, and a runner's clock may be off.
        self._skew = 0.0
        self._last_date: datetime | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.flush_cache()
        if self._owns_http:
            for pool in self._pools:
                await pool.aclose()

    def flush_cache(self) -> int:
        """Write a persistent cache's changed entries (:class:`PersistentCache`); how many."""
        # As ``object``: gidgethub types the cache as a plain mapping, which has no flush.
        cache: object = self._cache
        return cache.flush() if isinstance(cache, PersistentCache) else 0

    def __repr__(self) -> str:
        return f"GitHubClient(base_url={self.base_url!r}, auth={self.auth!r})"

    # --- observability ---------------------------------------------------------------

    def stats(self) -> ClientStats:
        quota = self._quotas.get("core")
        limit, remaining, reset = quota if quota else (None, None, None)
        return ClientStats(
            requests=self._requests,
            not_modified=self._not_modified,
            points_spent=self._points,
            retries=self._retries,
            rate_limited=self._rate_limited,
            slept_seconds=self._slept,
            rate_limit_limit=limit,
            rate_limit_remaining=remaining,
            rate_limit_reset=datetime.fromtimestamp(reset, UTC) if reset is not None else None,
        )

    def server_now(self) -> datetime:
        """GitHub's clock: local time corrected by the skew seen in ``Date`` headers."""
        return datetime.fromtimestamp(time.time() + self._skew, UTC)

    @property
    def last_server_date(self) -> datetime | None:
        """The ``Date`` header of the most recent response, if any."""
        return self._last_date

    # --- gidgethub's abstract methods ------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        await self._wait(seconds)

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        response = await self.send(method, url, headers, body)
        return response.status_code, response.headers, response.content

    def _pool(self, url: str) -> httpx.AsyncClient:
        """The connection pool for ``url``: chosen by repository, so a repository's
        requests share warm connections; anything else goes to the first pool."""
        if len(self._pools) == 1:
            return self._http
        match = _REPO_PATH.search(url)
        if match is None:
            return self._http
        return self._pools[zlib.crc32(match.group(1).lower().encode()) % len(self._pools)]

    # --- the policy ------------------------------------------------------------------

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> httpx.Response:
        """Send one logical request with retries; return the final 2xx/3xx response.

        Raises :class:`GitHubUnavailable` (5xx or transport errors after the retries),
        :class:`RateLimited`, :class:`AuthError` (401) or :class:`GitHubRequestError`
        (any other 4xx). Never retries a non-idempotent request that may have reached
        GitHub, except after a rate-limit answer (GitHub did not process it).
        """
        method = method.upper()
        send_headers = dict(headers)
        injected = "authorization" not in {k.lower() for k in send_headers}
        retry = 0
        reauthed = False
        while True:
            await self._respect_known_quota(method, url)
            if injected and self.auth is not None:
                send_headers["authorization"] = await self.auth.authorization(self, url)
            self._requests += 1
            try:
                response = await self._pool(url).request(
                    method, url, headers=send_headers, content=body
                )
            except httpx.TransportError as exc:
                retry = await self._after_transport_error(method, url, exc, retry)
                continue
            self._observe(response)
            verdict = classify(response.status_code, response.headers, response.content)
            if verdict.verdict is Verdict.OK:
                return response
            # An app installation token may have been revoked early: mint a new one,
            # once. A fixed token stays bad, so its 401 is raised at once.
            if (
                response.status_code == 401
                and injected
                and self.auth is not None
                and not reauthed
                and self.auth.invalidate(url)
            ):
                reauthed = True
                continue
            retry = await self._after_failure(method, url, response, verdict, retry)

    @contextmanager
    def _one_attempt(
        self, on_wait: Callable[[float, int, bool], None] | None = None
    ) -> Iterator[None]:
        """Within this block, a 5xx or transport error is raised at once, never repeated.

        Used by ``RunGitHub``'s write steps, which retry (and look up lost answers)
        themselves. ``on_wait(seconds, status, secondary)`` hears of every rate-limit wait.
        """
        token = _ONE_ATTEMPT.set(_OneAttempt(on_wait))
        try:
            yield
        finally:
            _ONE_ATTEMPT.reset(token)

    async def _after_transport_error(
        self, method: str, url: str, exc: httpx.TransportError, retry: int
    ) -> int:
        """Wait and return the next retry number, or raise :class:`GitHubUnavailable`."""
        safe = method in IDEMPOTENT_METHODS or isinstance(exc, _NOT_SENT)
        if _ONE_ATTEMPT.get() is not None:
            safe = False  # the write step decides, after looking
        if safe and retry + 1 < self.retry.attempts:
            await self._backoff(retry + 1)
            return retry + 1
        detail = f": {exc}" if str(exc) else ""
        raise GitHubUnavailable(
            f"{method} {_path(url)} failed: {type(exc).__name__}{detail} "
            f"(after {retry + 1} attempt(s))",
            method=method,
            url=url,
            status_code=None,
        ) from exc

    async def _after_failure(
        self, method: str, url: str, response: httpx.Response, verdict: Classified, retry: int
    ) -> int:
        """Wait and return the next retry number, or raise the error the response means."""
        status = response.status_code
        more = retry + 1 < self.retry.attempts
        one_attempt = _ONE_ATTEMPT.get()
        if verdict.verdict is Verdict.TRANSIENT:
            if method in IDEMPOTENT_METHODS and more and one_attempt is None:
                await self._backoff(retry + 1)
                return retry + 1
            raise GitHubUnavailable(
                f"{method} {_path(url)}: GitHub answered {status} (after {retry + 1} attempt(s))",
                method=method,
                url=url,
                status_code=status,
            )
        if verdict.verdict is Verdict.PRIMARY_LIMIT:
            self._rate_limited += 1
            now = time.time() + self._skew
            reset = verdict.reset_epoch or (now + 60.0)
            wait = max(0.0, reset - now) + 1.0
            if more and wait <= self.retry.max_rate_limit_wait:
                if one_attempt is not None and one_attempt.on_wait is not None:
                    one_attempt.on_wait(wait, status, False)
                await self._wait(wait)
                return retry + 1
            raise RateLimited(
                _primary_message(method, url, reset),
                secondary=False,
                reset_at=datetime.fromtimestamp(reset, UTC),
            )
        if verdict.verdict is Verdict.SECONDARY_LIMIT:
            self._rate_limited += 1
            wait = self.retry.secondary_wait(retry + 1, verdict.retry_after)
            if more and wait <= self.retry.max_rate_limit_wait:
                if one_attempt is not None and one_attempt.on_wait is not None:
                    one_attempt.on_wait(wait, status, True)
                await self._wait(wait)
                return retry + 1
            reset_at = datetime.fromtimestamp(self.server_now().timestamp() + wait, UTC)
            raise RateLimited(
                f"{method} {_path(url)}: GitHub's secondary rate limit persists after "
                f"{retry + 1} attempt(s); retry after {reset_at:%Y-%m-%d %H:%M:%S} UTC",
                secondary=True,
                reset_at=reset_at,
            )
        message = github_message(response.content)
        details = github_error_messages(response.content)
        if status == 401:
            who = repr(self.auth) if self.auth is not None else "no token configured"
            raise AuthError(
                f"GitHub rejected the credentials (401) for {method} {_path(url)}: "
                f"{message or 'Bad credentials'}; check the token or GitHub App settings "
                f"({who})"
            )
        raise GitHubRequestError(
            f"{method} {_path(url)}: GitHub answered {status}"
            + (f": {message}" if message else "")
            + (f" ({'; '.join(details)})" if details else ""),
            method=method,
            url=url,
            status_code=status,
            github_message=message,
            github_errors=details,
        )

    async def _respect_known_quota(self, method: str, url: str) -> None:
        """Never send a request the last response said would be refused.

        When the hourly quota is known to be exhausted, wait for its reset if that is within
        ``max_rate_limit_wait``, else fail fast with :class:`RateLimited` (never spin).
        """
        resource = _resource(url)
        quota = self._quotas.get(resource)
        if quota is None or quota[1] > 0:
            return
        limit, _, reset = quota
        wait = reset - (time.time() + self._skew)
        if wait <= 0:
            return
        if wait + 1.0 > self.retry.max_rate_limit_wait:
            self._rate_limited += 1
            raise RateLimited(
                _primary_message(method, url, reset),
                secondary=False,
                reset_at=datetime.fromtimestamp(reset, UTC),
            )
        await self._wait(wait + 1.0)
        # Assume the reset happened; the next response says the truth.
        self._quotas[resource] = (limit, limit, reset)

    def _observe(self, response: httpx.Response) -> None:
        headers = response.headers
        if response.status_code == 304:
            self._not_modified += 1
        else:
            self._points += 1
        date = headers.get("date")
        if date:
            try:
                parsed = email.utils.parsedate_to_datetime(date)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None and parsed.tzinfo is not None:
                self._last_date = parsed
                # Date has whole seconds: the server's clock was somewhere in [Date, Date+1)
                # when it answered. Differences within that noise are no skew at all.
                skew = parsed.timestamp() + 0.5 - time.time()
                self._skew = skew if abs(skew) > 1.0 else 0.0
        rate = sansio.RateLimit.from_http(headers)
        if rate is not None:
            resource = headers.get("x-ratelimit-resource") or _resource(str(response.url))
            self._quotas[resource] = (rate.limit, rate.remaining, rate.reset_datetime.timestamp())
            self.rate_limit = rate

    async def _backoff(self, retry: int) -> None:
        self._retries += 1
        await self._wait(self.retry.backoff(retry))

    async def _wait(self, seconds: float) -> None:
        scaled = max(0.0, seconds) * self.retry.scale
        self._slept += scaled
        await self._sleep(scaled)

    # --- helpers for callers that need headers ---------------------------------------

    async def get_page(
        self,
        url: str,
        url_vars: Mapping[str, Any] | None = None,
        *,
        etag: str | None = None,
    ) -> Page:
        """One GET with an optional ``If-None-Match``; headers kept (ETag, Date, Link).

        Used for the comment streams, whose ETag is stored in the caller's cursor so that
        a poll in a fresh process still costs nothing when nothing changed.
        """
        full = sansio.format_url(url, url_vars or {}, base_url=self.base_url)
        headers = sansio.create_headers(self.requester, accept=sansio.accept_format())
        if etag:
            headers["if-none-match"] = etag
        response = await self.send("GET", full, headers)
        date = _parse_date(response.headers.get("date"))
        if response.status_code == 304:
            return Page(data=None, not_modified=True, etag=etag, next_url=None, date=date)
        data, _, next_url = sansio.decipher_response(
            response.status_code, response.headers, response.content
        )
        return Page(
            data=data,
            not_modified=False,
            etag=response.headers.get("etag"),
            next_url=next_url,
            date=date,
        )


@dataclass(frozen=True, slots=True)
class Page:
    data: Any
    not_modified: bool
    etag: str | None
    next_url: str | None
    date: datetime | None


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _resource(url: str) -> str:
    """The rate-limit resource a request to ``url`` counts against (GitHub's names)."""
    path = httpx.URL(url).path
    for prefix, resource in (("/search/code", "code_search"), ("/search/", "search"),
                             ("/graphql", "graphql")):  # fmt: skip
        if prefix in path:
            return resource
    return "core"


def _path(url: str) -> str:
    # Only the path and query go into messages: never credentials (none are ever in a
    # URL, but a user-supplied base URL could carry some).
    parsed = httpx.URL(url)
    return parsed.raw_path.decode("ascii", "replace")


def _primary_message(method: str, url: str, reset: float) -> str:
    return (
        f"{method} {_path(url)}: GitHub's hourly rate limit is exhausted until "
        f"{datetime.fromtimestamp(reset, UTC):%Y-%m-%d %H:%M:%S} UTC; waiting that long "
        f"exceeds RetryPolicy.max_rate_limit_wait"
    )
