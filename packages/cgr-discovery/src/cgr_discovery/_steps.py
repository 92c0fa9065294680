"""Write steps that are safe to repeat: retried within a budget, every attempt reported.

A GitHub write can fail in three ways that look alike to the client: GitHub never got it
(connection refused), GitHub refused it (a 5xx before doing anything), or GitHub did it
and the answer was lost (a dropped connection or a 502 from the front end after the
backend wrote). Repeating a write is therefore only safe when doing it twice leaves the
same state as doing it once. Each write step of a run is made so:

- naturally idempotent writes (adding labels or assignees, a reaction — GitHub answers the
  existing one —, PATCHes that set absolute values, DELETEs) are simply sent again;
- a creation (a comment, a pull request) carries something that finds it again (cgr's
  hidden marker, the head branch): after an attempt whose outcome is unknown, the step
  *looks it up first* and returns what it finds instead of creating a second one.

The loop lives here rather than in the client because only the caller knows how to look
a write up; the client is told (``GitHubClient._one_attempt``) to send each attempt once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from ._errors import GitHubRequestError, GitHubUnavailable

if TYPE_CHECKING:
    from ._client import GitHubClient

T = TypeVar("T")

WriteOutcome = Literal["ok", "retry", "rate_limited", "found", "exists", "gave_up"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteAttempt:
    """One attempt of a write step, as told to ``RunGitHub(on_attempt=...)``.

    ``step`` names the operation (``add_labels``, ``comment``, ``create_pull_request``,
    ...), ``target`` what it acts on (``acme/widgets#12``), ``attempt`` counts from 1.
    ``outcome``:

    - ``ok``: GitHub answered and the write is done;
    - ``retry``: the attempt failed transiently (``error``, ``status_code``; ``None`` when
      no answer arrived); the next one follows after ``wait`` seconds;
    - ``rate_limited``: a rate-limit answer (``status_code`` 403/429); the client waits
      ``wait`` seconds and sends it again (GitHub did not process it);
    - ``found``: the write had already landed (an earlier attempt whose answer was lost,
      or an earlier call): the lookup found it, so nothing is sent (again);
    - ``exists``: GitHub refused the creation because the object already exists (a pull
      request for the same head); the existing one is returned;
    - ``gave_up``: the step's budget is spent; the error is raised to the caller.
    """

    step: str
    target: str
    attempt: int
    outcome: WriteOutcome
    error: str | None = None
    status_code: int | None = None
    wait: float | None = None


AttemptHook = Callable[[WriteAttempt], None]


async def write_step(
    gh: GitHubClient,
    step: str,
    target: str,
    write: Callable[[], Awaitable[T]],
    *,
    budget: float,
    hook: AttemptHook | None = None,
    lookup: Callable[[], Awaitable[T | None]] | None = None,
    exists: Callable[[GitHubRequestError], Awaitable[T | None]] | None = None,
    look_first: bool = False,
) -> T:
    """Run ``write`` until it succeeds or ``budget`` seconds are spent.

    ``lookup`` finds the result of a write that may have landed; it runs before every
    attempt that follows an uncertain one, once more before giving up, and before the
    first attempt when ``look_first`` is set (a repeated call finds the earlier result). ``exists``
    turns a 4xx that means "already there" into the existing object (or ``None`` to
    raise the error). Rate limits are waited out by the client and reported here; a
    :class:`~cgr_discovery.RateLimited` too long to wait for propagates at once.
    """
    attempt = 0
    started = time.monotonic()
    # Waits are counted unscaled (RetryPolicy.scale shortens real sleeps in tests), so
    # the budget means the same number of attempts in a test as in production.
    slept_real = slept_nominal = 0.0

    def report(
        outcome: WriteOutcome,
        *,
        error: str | None = None,
        status_code: int | None = None,
        wait: float | None = None,
    ) -> None:
        if hook is not None:
            hook(
                WriteAttempt(
                    step=step,
                    target=target,
                    attempt=attempt,
                    outcome=outcome,
                    error=error,
                    status_code=status_code,
                    wait=wait,
                )
            )

    def on_wait(seconds: float, status: int, secondary: bool) -> None:
        kind = "secondary" if secondary else "primary"
        report("rate_limited", status_code=status, wait=seconds, error=f"{kind} rate limit")

    uncertain = look_first
    while True:
        attempt += 1
        try:
            if uncertain and lookup is not None:
                found = await lookup()
                if found is not None:
                    report("found")
                    return found
            with gh._one_attempt(on_wait):
                result = await write()
        except GitHubUnavailable as exc:
            # No answer, or a 5xx: the write may or may not have happened.
            uncertain = True
            wait = gh.retry.backoff(attempt)
            spent = time.monotonic() - started - slept_real + slept_nominal
            if spent + wait > budget:
                found = await _last_look(lookup)
                if found is not None:
                    report("found")
                    return found
                report("gave_up", error=str(exc), status_code=exc.status_code)
                raise
            report("retry", error=str(exc), status_code=exc.status_code, wait=wait)
            await gh.sleep(wait)
            slept_nominal += wait
            slept_real += wait * gh.retry.scale
            continue
        except GitHubRequestError as exc:
            existing = await exists(exc) if exists is not None else None
            if existing is None:
                raise
            report("exists", error=str(exc), status_code=exc.status_code)
            return existing
        report("ok")
        return result


async def _last_look(lookup: Callable[[], Awaitable[T | None]] | None) -> T | None:
    """A final lookup before giving up; GitHub still failing means "not found"."""
    if lookup is None:
        return None
    try:
        return await lookup()
    except GitHubUnavailable:
        return None
