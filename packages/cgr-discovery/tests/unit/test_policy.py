from __future__ import annotations

import pytest

from cgr_discovery import TriggerPolicy
from cgr_discovery._policy import Decision, is_bot_user

CASES = [
    # policy kwargs, author, association, is_bot, expected
    ({}, "alice", "OWNER", False, Decision.ALLOW),
    ({}, "alice", "MEMBER", False, Decision.ALLOW),
    ({}, "alice", "COLLABORATOR", False, Decision.ALLOW),
    ({}, "alice", "collaborator", False, Decision.ALLOW),
    ({}, "alice", "CONTRIBUTOR", False, Decision.CHECK),
    ({}, "alice", "NONE", False, Decision.CHECK),
    ({}, "alice", "FIRST_TIME_CONTRIBUTOR", False, Decision.CHECK),
    ({}, "bot", "OWNER", False, Decision.IGNORE),
    ({}, "BOT", "OWNER", False, Decision.IGNORE),
    ({}, "dependabot[bot]", "NONE", False, Decision.IGNORE),
    ({}, "ci-user", "MEMBER", True, Decision.IGNORE),
    ({"deny": frozenset({"Alice"})}, "alice", "OWNER", False, Decision.DENY),
    ({"allow": frozenset({"Eve"})}, "eve", "NONE", False, Decision.ALLOW),
    (
        {"allow": frozenset({"eve"}), "deny": frozenset({"eve"})},
        "eve",
        "OWNER",
        False,
        Decision.DENY,
    ),
    ({"require_write": False}, "stranger", "NONE", False, Decision.ALLOW),
    ({"require_write": False}, "other[bot]", "NONE", False, Decision.IGNORE),
    ({"trusted_associations": frozenset({"owner"})}, "m", "MEMBER", False, Decision.CHECK),
]


@pytest.mark.parametrize(("kwargs", "author", "association", "is_bot", "expected"), CASES)
def test_decide(
    kwargs: dict[str, object], author: str, association: str, is_bot: bool, expected: Decision
) -> None:
    policy = TriggerPolicy(**kwargs)  # type: ignore[arg-type]
    decided = policy.decide(author=author, association=association, is_bot=is_bot, self_login="bot")
    assert decided is expected


def test_app_login_counts_as_self() -> None:
    policy = TriggerPolicy()
    assert (
        policy.decide(author="cgr-app", association="NONE", is_bot=False, self_login="cgr-app[bot]")
        is Decision.IGNORE
    )


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"login": "x", "type": "Bot"}, True),
        ({"login": "renovate[bot]", "type": "User"}, True),
        ({"login": "alice", "type": "User"}, False),
        (None, False),
    ],
)
def test_is_bot_user(user: object, expected: bool) -> None:
    assert is_bot_user(user) is expected
