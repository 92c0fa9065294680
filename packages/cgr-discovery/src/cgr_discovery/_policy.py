"""Who may trigger a run: the pure part of the trigger policy.

By default only people with write access trigger runs, because a run spends money and
pushes code. The comment's ``author_association`` decides cheaply for owners, members and
collaborators; for anyone else (``CONTRIBUTOR``/``NONE`` may still have write access
through an organisation team) discovery asks ``/collaborators/{user}/permission``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})


class Decision(enum.Enum):
    """What :meth:`TriggerPolicy.decide` says about one author."""

    ALLOW = "allow"
    DENY = "deny"  # on the deny list
    CHECK = "check"  # association does not decide: ask the permission API
    IGNORE = "ignore"  # the bot itself or another bot: never triggers, never answered


def _lower_set(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values if v.strip())


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerPolicy:
    """Allow and deny lists (logins, case-insensitive) and the write-access rule.

    Order: bots are ignored; ``deny`` wins; ``allow`` admits without a permission check;
    then, with ``require_write`` (default), a trusted association or a write-level
    permission from the API admits; without it, everyone admits.
    """

    allow: frozenset[str] = field(default_factory=frozenset)
    deny: frozenset[str] = field(default_factory=frozenset)
    require_write: bool = True
    trusted_associations: frozenset[str] = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow", _lower_set(self.allow))
        object.__setattr__(self, "deny", _lower_set(self.deny))
        object.__setattr__(
            self, "trusted_associations", frozenset(a.upper() for a in self.trusted_associations)
        )

    def decide(self, *, author: str, association: str, is_bot: bool, self_login: str) -> Decision:
        login = author.lower()
        me = self_login.lower()
        if is_bot or login in (me, me.removesuffix("[bot]")) or login.endswith("[bot]"):
            return Decision.IGNORE
        if login in self.deny:
            return Decision.DENY
        if login in self.allow or not self.require_write:
            return Decision.ALLOW
        if association.upper() in self.trusted_associations:
            return Decision.ALLOW
        return Decision.CHECK


def is_bot_user(user: Any) -> bool:
    """Whether a GitHub ``user`` object is a bot account (type Bot or ``…[bot]`` login)."""
    if not isinstance(user, dict):
        return False
    login = str(user.get("login") or "")
    return user.get("type") == "Bot" or login.lower().endswith("[bot]")
