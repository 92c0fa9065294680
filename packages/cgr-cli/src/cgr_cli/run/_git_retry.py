"""Retrying git's network commands (clone, fetch, push, ls-remote) on transient failures.

GitHub's git front end fails now and then like its API does: a 502 or 503 from the smart
HTTP endpoint, a connection reset, a timeout, "the remote end hung up unexpectedly". The
agent's work must not be thrown away for that, so these commands are tried again with
exponential backoff and jitter. Anything else (authentication, a rejected push, a missing
repository) is final at once: repeating it changes nothing.

A push is the one command whose failure does not say whether it happened: git reports a
dropped connection the same way whether the server applied the new ref or not. So before a
push is sent again, the remote branch is read (``ls-remote``): if it already points at the
commit being pushed, the push landed and is not repeated (a second ``--force-with-lease``
push would even be refused, the lease no longer matching).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cgr_cli._errors import GitError

T = TypeVar("T")

# What git and libcurl print for failures that are worth another try. Checked against
# git's own messages (transport.c, remote-curl.c, http.c) and curl's error strings.
_TRANSIENT = re.compile(
    "|".join(
        (
            r"The requested URL returned error: 5\d\d",
            r"\bHTTP 5\d\d\b",
            r"error: RPC failed",
            r"[Cc]onnection reset",
            r"[Cc]onnection refused",
            r"[Cc]onnection timed out",
            r"[Oo]peration timed out",
            r"the remote end hung up",
            r"Empty reply from server",
            r"early EOF",
            r"unexpected disconnect",
            r"Recv failure",
            r"Send failure",
            r"[Ff]ailed to connect",
            r"transfer closed with",
            r"Could not resolve host",
            r"GnuTLS recv error",
            r"SSL_read",
        )
    )
)


class OutcomeUnknownError(GitError):
    """A network command failed and the check of whether it took effect failed too (a
    push git called rejected may have been its own resent request): always worth another
    try, which checks first."""

    def __init__(self, command: str, check: GitError) -> None:
        why = f"could not check whether the {command} landed (git {check.command} failed)"
        super().__init__(command, check.returncode, f"{(check.output or '').rstrip()}\n{why}")


# Final whatever else git prints after it (a missing ref is followed by "the remote end
# hung up unexpectedly": git closing the connection, not the network failing).
_FINAL = re.compile(r"couldn't find remote ref")


def is_transient(error: GitError) -> bool:
    """Whether a failed network git command is worth repeating."""
    if isinstance(error, OutcomeUnknownError):
        return True
    if error.returncode is None:  # killed at its timeout: a stalled connection
        return True
    output = error.output or ""
    return _FINAL.search(output) is None and _TRANSIENT.search(output) is not None


@dataclass(frozen=True, slots=True)
class GitRetryPolicy:
    """``attempts`` tries in all; waits of ``base * 2**n`` seconds (at most ``cap``), each
    drawn from ``[wait * (1 - jitter), wait]`` so runners hit by one outage spread out."""

    attempts: int = 5
    base: float = 1.0
    cap: float = 30.0
    jitter: float = 0.5

    def wait(self, retry: int) -> float:
        delay = min(self.cap, self.base * 2.0 ** max(0, retry - 1))
        return random.uniform(delay * (1.0 - self.jitter), delay)  # noqa: S311 - jitter


def retrying(
    action: Callable[[], T],
    *,
    what: str,
    policy: GitRetryPolicy,
    log: Callable[[str], None],
    before_retry: Callable[[], T | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action`` until it succeeds, a failure is not transient, or the attempts are
    spent (the last GitError is raised).

    ``before_retry`` runs before each repetition; a result other than None means the
    earlier attempt did land after all, and is returned instead of repeating it.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return action()
        except GitError as exc:
            if not is_transient(exc) or attempt >= policy.attempts:
                raise
            wait = policy.wait(attempt)
            first = (exc.output or "").strip().splitlines()
            log(
                f"git {what}: transient failure (attempt {attempt} of {policy.attempts}: "
                f"{first[-1] if first else 'timed out'}); again in {wait:.1f}s"
            )
            sleep(wait)
            if before_retry is not None:
                try:
                    landed = before_retry()
                except GitError as check:
                    # The check itself failed: we still do not know; try the action again.
                    log(f"git {what}: could not check whether it landed ({check.command})")
                    landed = None
                if landed is not None:
                    log(f"git {what}: the earlier attempt landed; not repeating it")
                    return landed
