"""Which git failures cgr retries, how long it waits, and the landed-push check
(run/_git_retry.py); the end-to-end cases with real git are in test_exactly_once.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cgr_cli._errors import GitError
from cgr_cli.run._git_retry import GitRetryPolicy, is_transient, retrying


@pytest.mark.parametrize(
    "output",
    [
        "error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502",
        "fatal: unable to access 'http://h/a.git/': The requested URL returned error: 503",
        "error: RPC failed; curl 56 Recv failure: Connection reset by peer",
        "fatal: the remote end hung up unexpectedly",
        "error: RPC failed; curl 52 Empty reply from server",
        "send-pack: unexpected disconnect while reading sideband packet",
        "fatal: early EOF",
        "fatal: unable to access 'http://h/': Failed to connect to h port 80: Connection refused",
    ],
)
def test_transient_failures_are_retried(output: str) -> None:
    assert is_transient(GitError("push", 128, output))


@pytest.mark.parametrize(
    "output",
    [
        "fatal: unable to access 'http://h/a.git/': The requested URL returned error: 403",
        " ! [rejected]        main -> main (non-fetch first)\nerror: failed to push some refs",
        " ! [rejected] b -> b (stale info)",
        "remote: Repository not found.\nfatal: repository 'http://h/a.git/' not found",
        "fatal: Authentication failed for 'http://h/a.git/'",
    ],
)
def test_final_failures_are_not(output: str) -> None:
    assert not is_transient(GitError("push", 1, output))


def test_a_timeout_is_transient() -> None:
    assert is_transient(GitError("fetch", None, ""))


def test_waits_double_with_jitter() -> None:
    policy = GitRetryPolicy()
    assert policy.attempts == 5
    for retry, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8)], start=1):
        waits = [policy.wait(retry) for _ in range(50)]
        assert all(low <= w <= high for w in waits), (retry, min(waits), max(waits))
    assert policy.wait(20) <= policy.cap


def _failing(outputs: list[str], result: str = "done") -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def action() -> str:
        calls.append(1)
        if len(calls) <= len(outputs):
            raise GitError("push", 1, outputs[len(calls) - 1])
        return result

    return calls, action


def test_retrying_repeats_transient_failures_then_succeeds() -> None:
    lines: list[str] = []
    calls, action = _failing(["fatal: the remote end hung up unexpectedly"] * 2)
    got = retrying(action, what="push", policy=GitRetryPolicy(), log=lines.append,
                   sleep=lambda _s: None)  # fmt: skip
    assert got == "done"
    assert len(calls) == 3
    assert "git push: transient failure (attempt 1 of 5" in lines[0]


def test_retrying_gives_up_after_the_attempts_and_at_once_on_a_final_error() -> None:
    calls, action = _failing(["error: RPC failed; HTTP 500"] * 9)
    with pytest.raises(GitError):
        retrying(action, what="push", policy=GitRetryPolicy(attempts=3), log=lambda _l: None,
                 sleep=lambda _s: None)  # fmt: skip
    assert len(calls) == 3
    calls, action = _failing(["fatal: Authentication failed"])
    with pytest.raises(GitError):
        retrying(action, what="push", policy=GitRetryPolicy(), log=lambda _l: None,
                 sleep=lambda _s: None)  # fmt: skip
    assert len(calls) == 1


def test_a_push_that_landed_is_not_repeated() -> None:
    calls, action = _failing(["error: RPC failed; curl 52 Empty reply from server"])
    lines: list[str] = []
    got = retrying(action, what="push", policy=GitRetryPolicy(), log=lines.append,
                   before_retry=lambda: "landed", sleep=lambda _s: None)  # fmt: skip
    assert got == "landed"
    assert len(calls) == 1
    assert lines[-1] == "git push: the earlier attempt landed; not repeating it"
