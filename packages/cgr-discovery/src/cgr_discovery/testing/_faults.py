"""Fault injection, the primary rate limit and the request log of the GitHub simulator."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# "drop" closes the connection before the request is applied (nothing happened on the
# server); "drop_after" applies it (a comment exists, a push landed) and then closes the
# connection without an answer: the client cannot tell the two apart, which is exactly
# the case an idempotent retry must handle.
# "drop_delivery" loses a webhook delivery of the matching event (nothing is sent).
FaultKind = Literal["error", "drop", "drop_after", "latency", "drop_delivery"]

SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID "
    "0000:0000:0000000:0000000:00000000."
)
SECONDARY_DOCS = (
    "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)
PRIMARY_DOCS = (
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
    "#about-the-primary-rate-limit"
)


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One request as the simulator saw it, for tests to assert on.

    ``path`` is percent-decoded (``/labels/needs human``); ``query`` holds the first value
    of each parameter. ``status`` is ``None`` when the connection was dropped without a
    response.
    ``fault`` names the injected fault that shaped the answer: ``"drop_after"`` means the
    request was applied in full (``applied_status`` is the status it would have answered)
    and only the answer was lost.
    ``conditional`` says whether ``If-None-Match`` was sent; ``counted`` whether the
    request used up one unit of the primary rate limit (a 304 does not, as on GitHub).
    Tokens are never recorded; ``installation`` is the id of the GitHub App installation
    whose token authenticated the request (None for any other credential).
    """

    method: str
    path: str
    query: Mapping[str, str]
    status: int | None
    conditional: bool
    counted: bool
    resource: str | None
    fault: FaultKind | None = None
    applied_status: int | None = None
    installation: int | None = None


@dataclass(eq=False, kw_only=True)
class Fault:
    """An injected fault; ``remove()`` switches it off, ``remaining`` counts down.

    ``remaining`` is ``None`` for a fault that stays on until removed.
    """

    kind: FaultKind
    method: str | None
    path: re.Pattern[str] | None
    status: int = 0
    retry_after: int | None = None
    seconds: float = 0.0
    remaining: int | None = None
    hits: int = 0
    _owner: Faults | None = field(default=None, repr=False)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or self.path.search(path) is not None

    def remove(self) -> None:
        if self._owner is not None:
            self._owner.remove(self)


class Faults:
    """The set of active faults. Thread-safe; every method may be called from a test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        # Set by the simulator's close() so a request sleeping in injected latency wakes up
        # at once instead of holding the shutdown back.
        self.closing = threading.Event()

    def _add(
        self,
        kind: FaultKind,
        method: str | None,
        path: str | None,
        count: int | None,
        **kwargs: object,
    ) -> Fault:
        if count is not None and count < 1:
            raise ValueError(f"count must be a positive number of requests or None, not {count}")
        fault = Fault(
            kind=kind,
            method=method,
            path=re.compile(path) if path is not None else None,
            remaining=count,
            _owner=self,
            **kwargs,  # type: ignore[arg-type]
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def latency(
        self,
        seconds: float,
        *,
        method: str | None = None,
        path: str | None = None,
        count: int | None = None,
    ) -> Fault:
        """Delay matching requests (every request by default) by ``seconds``."""
        return self._add("latency", method, path, count, seconds=seconds)

    def error(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        count: int | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        """Answer matching requests with ``status`` and GitHub's body for it.

        ``path`` is a regular expression searched in the request path; ``count=1`` makes a
        one-shot fault on the next matching request. 403 is GitHub's secondary rate limit
        (with ``retry-after``, 60 s unless given), 429 likewise; 500, 502 and 503 are the
        server errors GitHub's front end produces.
        """
        if status not in (403, 429, 500, 502, 503):
            raise ValueError(f"no GitHub fault body for status {status}; use 403/429/500/502/503")
        if status in (403, 429) and retry_after is None:
            retry_after = 60
        return self._add("error", method, path, count, status=status, retry_after=retry_after)

    def secondary_rate_limit(
        self,
        *,
        retry_after: int = 60,
        method: str | None = None,
        path: str | None = None,
        count: int | None = None,
    ) -> Fault:
        """GitHub's secondary rate limit: 403 with ``retry-after`` on matching requests."""
        return self.error(403, method=method, path=path, count=count, retry_after=retry_after)

    def drop_connection(
        self, *, method: str | None = None, path: str | None = None, count: int | None = 1
    ) -> Fault:
        """Close the socket of matching requests without sending any response.

        The request is not applied: GitHub never saw it.
        """
        return self._add("drop", method, path, count)

    def drop_after_apply(
        self, *, method: str | None = None, path: str | None = None, count: int | None = 1
    ) -> Fault:
        """Apply matching requests, then close the socket without sending the answer.

        The REST write happened (a comment was created, a label added) or the push landed
        (``git-receive-pack``), but the client sees a dropped connection, as when GitHub's
        front end loses a response. A client must find out what happened by looking.
        """
        return self._add("drop_after", method, path, count)

    def drop_delivery(self, *, event: str | None = None, count: int | None = 1) -> Fault:
        """Lose the next webhook delivery (of ``event``, a regular expression on the event
        name, if given): it is logged as dropped and never sent, as when GitHub's delivery
        fails. GitHub does not retry it; only a redelivery or polling finds the change."""
        return self._add("drop_delivery", "WEBHOOK", event, count)

    def take_delivery(self, event: str) -> Fault | None:
        """The drop_delivery fault for a delivery of ``event``, counted down, if any."""
        with self._lock:
            for fault in list(self._faults):
                if fault.kind != "drop_delivery" or not fault.matches("WEBHOOK", event):
                    continue
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                return fault
        return None

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self._faults.clear()

    @property
    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, method: str, path: str) -> tuple[float, Fault | None]:
        """Total latency and the first error/drop fault for a request, counting them down."""
        delay = 0.0
        chosen: Fault | None = None
        with self._lock:
            for fault in list(self._faults):
                if fault.kind == "drop_delivery" or not fault.matches(method, path):
                    continue
                if fault.kind == "latency":
                    delay += fault.seconds
                elif chosen is None:
                    chosen = fault
                else:
                    continue
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
        return delay, chosen


@dataclass
class _Bucket:
    limit: int
    used: int = 0
    reset: int = 0


RESOURCES = {"core": 5000, "search": 30, "graphql": 5000, "code_search": 10}
# How long one rate-limit window lasts per resource, as on GitHub.
WINDOWS = {"core": 3600, "search": 60, "graphql": 3600, "code_search": 60}


class RateLimits:
    """GitHub's primary rate limit, one bucket per resource, windows that reset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets = {name: _Bucket(limit=limit) for name, limit in RESOURCES.items()}

    def _current(self, resource: str, now: int) -> _Bucket:
        bucket = self._buckets[resource]
        if bucket.reset <= now:
            bucket.used = 0
            bucket.reset = now + WINDOWS[resource]
        return bucket

    def snapshot(self, resource: str, now: int) -> dict[str, int]:
        with self._lock:
            bucket = self._current(resource, now)
            return {
                "limit": bucket.limit,
                "remaining": max(bucket.limit - bucket.used, 0),
                "reset": bucket.reset,
                "used": bucket.used,
            }

    def consume(self, resource: str, now: int) -> bool:
        """Count one request; False (and nothing counted) when the limit is exhausted."""
        with self._lock:
            bucket = self._current(resource, now)
            if bucket.used >= bucket.limit:
                return False
            bucket.used += 1
            return True

    def exhaust(self, resource: str, now: int, reset_in: int) -> None:
        with self._lock:
            bucket = self._current(resource, now)
            bucket.used = bucket.limit
            bucket.reset = now + reset_in

    def set_limit(self, resource: str, limit: int) -> None:
        with self._lock:
            self._buckets[resource].limit = limit

    def reset(self) -> None:
        with self._lock:
            for bucket in self._buckets.values():
                bucket.used = 0
                bucket.reset = 0
