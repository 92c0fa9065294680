"""When to retry a GitHub request and how long to wait: pure decisions, no I/O.

The client (``_client.py``) asks these functions what a response means and sleeps as told;
keeping them pure makes every rule table-testable with no server.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

# Methods whose repetition cannot do anything twice. PATCH is included because every PATCH
# cgr sends sets absolute values (a comment body, a PR title), so sending it twice leaves
# the same state. POST is excluded: a repeated "create comment" posts two comments.
IDEMPOTENT_METHODS: Final[frozenset[str]] = frozenset(
    {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How persistent the client is, and how long it may wait.

    ``attempts`` bounds tries of one request for 5xx, connection errors and secondary rate
    limits. Backoff is exponential (``backoff_base * 2**n`` capped at ``backoff_max``) with
    jitter: each wait is drawn from ``[delay * (1 - jitter), delay]`` so many runners
    hitting the same outage do not retry in lockstep.

    ``max_rate_limit_wait``: when the hourly quota is exhausted, wait for its reset only if
    it is at most this far away; otherwise raise :class:`RateLimited` at once.
    ``secondary_min_wait``: the wait after a secondary limit that gave no ``retry-after``
    (GitHub asks for at least a minute).

    ``write_budget``: how long one write step of a run (add labels, post the status
    comment, open the pull request) may keep retrying, in seconds: the backoff waits
    plus the time the attempts themselves took. Past it the step gives up.

    ``scale`` multiplies every real sleep (never the decisions): tests and the simulator
    run the same code paths with ``scale=0.001`` so a "60 s" wait takes 60 ms.
    """

    attempts: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    jitter: float = 0.5
    secondary_min_wait: float = 60.0
    max_rate_limit_wait: float = 900.0
    write_budget: float = 120.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("RetryPolicy.jitter must be between 0 and 1")
        if (
            self.scale < 0
            or self.backoff_base < 0
            or self.max_rate_limit_wait < 0
            or self.write_budget < 0
        ):
            raise ValueError("RetryPolicy waits and scale must not be negative")

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """The (unscaled) wait before retry number ``retry`` (1-based), jitter included."""
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** max(0, retry - 1))
        low = delay * (1.0 - self.jitter)
        return float((rng or _RNG).uniform(low, delay))

    def secondary_wait(
        self, retry: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """The (unscaled) wait after a secondary rate limit on retry number ``retry``.

        ``retry-after`` is honoured as given; without it, at least
        ``secondary_min_wait``, doubling on each further hit.
        """
        if retry_after is not None:
            return max(0.0, retry_after)
        return max(self.secondary_min_wait * 2.0 ** max(0, retry - 1), self.backoff(retry, rng))


_RNG = random.Random()  # noqa: S311 - jitter, not cryptography


class Verdict(Enum):
    """What a response means for the request that produced it."""

    OK = "ok"
    TRANSIENT = "transient"  # 5xx: try again later if repeating is safe
    PRIMARY_LIMIT = "primary_limit"  # hourly quota exhausted: wait for reset or give up
    SECONDARY_LIMIT = "secondary_limit"  # abuse limit: the request was not processed
    ERROR = "error"  # anything else: do not retry


@dataclass(frozen=True, slots=True)
class Classified:
    verdict: Verdict
    retry_after: float | None = None
    reset_epoch: float | None = None


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Classified:
    """What ``status``/``headers``/``body`` mean; ``headers`` must have lowercase keys."""
    if status < 400:
        return Classified(Verdict.OK)
    if status >= 500:
        return Classified(Verdict.TRANSIENT)
    if status not in (403, 429):
        return Classified(Verdict.ERROR)
    retry_after = _float(headers.get("retry-after"))
    if retry_after is None and headers.get("x-ratelimit-remaining") == "0":
        reset = _float(headers.get("x-ratelimit-reset"))
        return Classified(Verdict.PRIMARY_LIMIT, reset_epoch=reset)
    message = (github_message(body) or "").lower()
    # A 403 with neither header is a plain permission error unless GitHub's message names
    # the secondary limit; a 429 is always a limit.
    if (
        retry_after is not None
        or status == 429
        or "secondary rate limit" in message
        or "abuse" in message
    ):
        return Classified(Verdict.SECONDARY_LIMIT, retry_after=retry_after)
    return Classified(Verdict.ERROR)


def github_message(body: bytes) -> str | None:
    """GitHub's ``message`` field of an error body, if the body is JSON with one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    message = data.get("message") if isinstance(data, dict) else None
    return message if isinstance(message, str) else None


def github_error_messages(body: bytes) -> tuple[str, ...]:
    """The ``errors[].message`` texts of a GitHub error body (a 422's real reason).

    GitHub's ``message`` for a validation error is only "Validation Failed"; what failed
    ("A pull request already exists for acme:branch.") is in ``errors``. An error without
    a message is described by its ``code`` and ``field``.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ()
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return ()
    found: list[str] = []
    for error in errors:
        if isinstance(error, str):
            found.append(error)
        elif isinstance(error, dict):
            text = error.get("message")
            if isinstance(text, str):
                found.append(text)
            elif isinstance(error.get("code"), str):
                field = error.get("field")
                found.append(
                    f"{error['code']} {field}" if isinstance(field, str) else error["code"]
                )
    return tuple(found)


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
