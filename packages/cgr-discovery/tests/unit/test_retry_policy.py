from __future__ import annotations

import json
import random

import pytest

from cgr_discovery import RetryPolicy
from cgr_discovery._retry import Verdict, classify


def body(message: str) -> bytes:
    return json.dumps({"message": message}).encode()


CASES = [
    (200, {}, b"", Verdict.OK, None),
    (304, {}, b"", Verdict.OK, None),
    (500, {}, b"", Verdict.TRANSIENT, None),
    (502, {}, b"", Verdict.TRANSIENT, None),
    (404, {}, body("Not Found"), Verdict.ERROR, None),
    (422, {}, body("Validation Failed"), Verdict.ERROR, None),
    (403, {}, body("Resource not accessible by integration"), Verdict.ERROR, None),
    (
        403,
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000000"},
        b"",
        Verdict.PRIMARY_LIMIT,
        None,
    ),
    (
        429,
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000000"},
        b"",
        Verdict.PRIMARY_LIMIT,
        None,
    ),
    (403, {"retry-after": "30", "x-ratelimit-remaining": "0"}, b"", Verdict.SECONDARY_LIMIT, 30.0),
    (429, {"retry-after": "7"}, b"", Verdict.SECONDARY_LIMIT, 7.0),
    (
        403,
        {"x-ratelimit-remaining": "12"},
        body("You have exceeded a secondary rate limit."),
        Verdict.SECONDARY_LIMIT,
        None,
    ),
    (
        403,
        {},
        body("You have triggered an abuse detection mechanism."),
        Verdict.SECONDARY_LIMIT,
        None,
    ),
    (429, {}, b"not json", Verdict.SECONDARY_LIMIT, None),
]


@pytest.mark.parametrize(("status", "headers", "payload", "verdict", "retry_after"), CASES)
def test_classify(
    status: int,
    headers: dict[str, str],
    payload: bytes,
    verdict: Verdict,
    retry_after: float | None,
) -> None:
    result = classify(status, headers, payload)
    assert result.verdict is verdict
    assert result.retry_after == retry_after
    if verdict is Verdict.PRIMARY_LIMIT:
        assert result.reset_epoch == 1700000000.0


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=10.0, jitter=0.5)
    rng = random.Random(1)
    for retry, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        waits = [policy.backoff(retry, rng) for _ in range(50)]
        assert all(cap * 0.5 <= w <= cap for w in waits)
        assert len(set(waits)) > 1  # jitter really varies


def test_no_jitter_is_deterministic() -> None:
    policy = RetryPolicy(jitter=0.0, backoff_base=0.5)
    assert [policy.backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_secondary_wait_honours_retry_after_else_a_minute_doubling() -> None:
    policy = RetryPolicy()
    assert policy.secondary_wait(1, 5.0) == 5.0
    assert policy.secondary_wait(1, None) >= 60.0
    assert policy.secondary_wait(2, None) >= 120.0
    assert policy.secondary_wait(3, None) >= 240.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"attempts": 0}, "attempts"), ({"jitter": 2.0}, "jitter"), ({"scale": -1.0}, "negative")],
)
def test_invalid_policy(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
