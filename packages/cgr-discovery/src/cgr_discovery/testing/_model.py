"""The simulator's state: users, repositories, issues, pull requests, comments, reactions.

Plain mutable dataclasses guarded by one lock (``Model.lock``) held by whoever reads or
writes them: the HTTP handler threads and the test's own helpers alike. Timestamps are
whole epoch seconds, as GitHub's API has second resolution.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cgr_discovery.testing._errors import (
    UnknownItemError,
    UnknownRepositoryError,
    UnknownUserError,
)

UserType = Literal["User", "Bot", "Organization"]
Role = Literal["admin", "maintain", "write", "triage", "read"]
ROLES: tuple[Role, ...] = ("admin", "maintain", "write", "triage", "read")
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
# The legacy `permission` field of the collaborator-permission endpoint folds the five
# roles into four values.
LEGACY_PERMISSION: dict[str, str] = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
}


@dataclass
class User:
    login: str
    id: int
    type: UserType
    name: str | None
    created_at: int


@dataclass
class Label:
    id: int
    name: str
    color: str
    description: str | None
    default: bool = False


@dataclass
class Reaction:
    id: int
    user: str
    content: str
    created_at: int


@dataclass
class Comment:
    """An issue comment (also used for the conversation comments of pull requests)."""

    id: int
    number: int
    user: str
    body: str
    created_at: int
    updated_at: int
    reactions: list[Reaction] = field(default_factory=list)


@dataclass
class ReviewComment:
    """A pull-request review comment, attached to a line of the diff."""

    id: int
    number: int
    review_id: int
    user: str
    body: str
    path: str
    line: int
    side: str
    diff_hunk: str
    commit_id: str
    original_commit_id: str
    in_reply_to_id: int | None
    created_at: int
    updated_at: int
    reactions: list[Reaction] = field(default_factory=list)


@dataclass
class PullData:
    head_ref: str
    base_ref: str
    draft: bool
    head_sha: str
    base_sha: str
    merged_at: int | None = None
    merge_commit_sha: str | None = None
    merged_by: str | None = None


@dataclass
class IssueEvent:
    """An entry of an issue's timeline as the issue events API lists it.

    Only label changes are recorded: ``labeled``/``unlabeled`` with the label's name and
    the account that applied or removed it (``actor``), which is what cgr's trigger
    policy asks for a ``ready`` label.
    """

    id: int
    event: Literal["labeled", "unlabeled"]
    actor: str
    label: str
    created_at: int


@dataclass
class Issue:
    """An issue, or a pull request when ``pull`` is set (they share one number sequence)."""

    number: int
    id: int
    title: str
    body: str | None
    user: str
    labels: list[str]
    assignees: list[str]
    state: Literal["open", "closed"]
    state_reason: str | None
    created_at: int
    updated_at: int
    closed_at: int | None = None
    closed_by: str | None = None
    locked: bool = False
    reactions: list[Reaction] = field(default_factory=list)
    pull: PullData | None = None
    pull_id: int = 0
    events: list[IssueEvent] = field(default_factory=list)


@dataclass
class Repo:
    owner: str
    name: str
    id: int
    default_branch: str
    private: bool
    description: str | None
    git_dir: Path
    created_at: int
    pushed_at: int
    updated_at: int
    labels: dict[str, Label] = field(default_factory=dict)
    collaborators: dict[str, Role] = field(default_factory=dict)
    issues: dict[int, Issue] = field(default_factory=dict)
    comments: dict[int, Comment] = field(default_factory=dict)
    review_comments: dict[int, ReviewComment] = field(default_factory=dict)
    next_number: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True, kw_only=True)
class ModelEvent:
    """Something happened that GitHub would send a webhook for (see ``_webhooks.py``).

    Emitted with ``Model.lock`` held, by the mutation itself, so the routes and the test
    helpers produce the same events.
    """

    event: str
    action: str
    repo: Repo
    sender: str
    issue: Issue | None = None
    comment: Comment | None = None
    review_comment: ReviewComment | None = None
    label: str | None = None
    changes: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


class Model:
    """All state plus the lock that guards it; lookups raise the helper errors."""

    def __init__(self) -> None:
        # Re-entrant: a helper that holds the lock may call another helper.
        self.lock = threading.RLock()
        self.users: dict[str, User] = {}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.org_members: dict[str, set[str]] = {}
        self._next_id = 1000
        self.clock_offset = 0.0
        # Called with every ModelEvent (the simulator's webhook sender listens here).
        self.listeners: list[Callable[[ModelEvent], None]] = []

    def emit(self, event: ModelEvent) -> None:
        for listener in self.listeners:
            listener(event)

    def now(self) -> int:
        return int(time.time() + self.clock_offset)

    def clock(self) -> float:
        """``now()`` without rounding (token expiry is checked to the sub-second)."""
        return time.time() + self.clock_offset

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def user(self, login: str) -> User:
        try:
            return self.users[login.lower()]
        except KeyError:
            raise UnknownUserError(login) from None

    def find_user(self, login: str) -> User | None:
        return self.users.get(login.lower())

    def repo(self, full_name: str) -> Repo:
        owner, _, name = full_name.partition("/")
        found = self.find_repo(owner, name)
        if found is None:
            raise UnknownRepositoryError(full_name)
        return found

    def find_repo(self, owner: str, name: str) -> Repo | None:
        return self.repos.get((owner.lower(), name.lower()))

    def issue(self, repo: Repo, number: int) -> Issue:
        try:
            return repo.issues[number]
        except KeyError:
            raise UnknownItemError("issue or pull request", repo.full_name, number) from None

    def role(self, repo: Repo, login: str) -> Role | None:
        """The user's role on the repository, owners and org members included."""
        if login.lower() == repo.owner.lower():
            return "admin"
        for member, role in repo.collaborators.items():
            if member.lower() == login.lower():
                return role
        return None

    def association(self, repo: Repo, login: str) -> str:
        """GitHub's ``author_association`` of ``login`` on ``repo``."""
        if login.lower() == repo.owner.lower():
            return "OWNER"
        if login.lower() in self.org_members.get(repo.owner.lower(), set()):
            return "MEMBER"
        if self.role(repo, login) is not None:
            return "COLLABORATOR"
        merged = any(
            i.pull is not None and i.pull.merged_at is not None and i.user.lower() == login.lower()
            for i in repo.issues.values()
        )
        return "CONTRIBUTOR" if merged else "NONE"

    def ensure_label(self, repo: Repo, name: str) -> Label:
        """The repository's label called ``name`` (case-insensitive), created if missing.

        GitHub creates a missing label with colour ``ededed`` when it is added to an issue.
        """
        label = repo.labels.get(name.lower())
        if label is None:
            label = Label(id=self.new_id(), name=name, color="ededed", description=None)
            repo.labels[name.lower()] = label
        return label

    # -- mutations shared by the HTTP routes and the test helpers ----------------------------

    def create_issue(
        self,
        repo: Repo,
        *,
        title: str,
        body: str | None,
        author: str,
        labels: list[str] | tuple[str, ...] = (),
        assignees: list[str] | tuple[str, ...] = (),
        pull: PullData | None = None,
    ) -> Issue:
        self.user(author)
        now = self.now()
        issue = Issue(
            number=repo.next_number,
            id=self.new_id(),
            title=title,
            body=body,
            user=self.user(author).login,
            labels=[],
            assignees=[],
            state="open",
            state_reason=None,
            created_at=now,
            updated_at=now,
            pull=pull,
        )
        if pull is not None:
            issue.pull_id = self.new_id()
        for name in labels:
            # Labels given at creation are applied by the author, as on GitHub.
            self.add_label(repo, issue, name, actor=author, touch=False)
        for login in assignees:
            self.add_assignee(repo, issue, login, touch=False)
        repo.next_number += 1
        repo.issues[issue.number] = issue
        return issue

    def _label_event(
        self, issue: Issue, event: Literal["labeled", "unlabeled"], actor: str, label: str
    ) -> None:
        issue.events.append(
            IssueEvent(
                id=self.new_id(),
                event=event,
                actor=self.user(actor).login,
                label=label,
                created_at=self.now(),
            )
        )

    def add_label(
        self, repo: Repo, issue: Issue, name: str, *, actor: str, touch: bool = True
    ) -> None:
        """Add a label as ``actor``; a ``labeled`` event is recorded when it was not there."""
        label = self.ensure_label(repo, name)
        if all(existing.lower() != label.name.lower() for existing in issue.labels):
            issue.labels.append(label.name)
            self._label_event(issue, "labeled", actor, label.name)
            if issue.pull is None:
                self.emit(
                    ModelEvent(
                        event="issues", action="labeled", repo=repo, sender=actor,
                        issue=issue, label=label.name,
                    )
                )  # fmt: skip
            if touch:
                issue.updated_at = self.now()

    def remove_label(self, repo: Repo, issue: Issue, name: str, *, actor: str) -> bool:
        for existing in issue.labels:
            if existing.lower() == name.lower():
                issue.labels.remove(existing)
                self._label_event(issue, "unlabeled", actor, existing)
                issue.updated_at = self.now()
                return True
        return False

    def set_labels(self, repo: Repo, issue: Issue, names: list[str], *, actor: str) -> None:
        """Replace the labels (PUT labels, PATCH issue): events for what changed only."""
        wanted = {name.lower() for name in names}
        for existing in list(issue.labels):
            if existing.lower() not in wanted:
                self.remove_label(repo, issue, existing, actor=actor)
        for name in names:
            self.add_label(repo, issue, name, actor=actor, touch=False)

    def can_be_assigned(self, repo: Repo, login: str) -> bool:
        user = self.find_user(login)
        return user is not None and self.role(repo, user.login) is not None

    def add_assignee(self, repo: Repo, issue: Issue, login: str, *, touch: bool = True) -> bool:
        """Assign ``login``; like GitHub, someone without access to the repo is ignored."""
        if not self.can_be_assigned(repo, login):
            return False
        user = self.user(login)
        if user.login not in issue.assignees:
            issue.assignees.append(user.login)
            if touch:
                issue.updated_at = self.now()
        return True

    def remove_assignee(self, repo: Repo, issue: Issue, login: str) -> None:
        for existing in issue.assignees:
            if existing.lower() == login.lower():
                issue.assignees.remove(existing)
                issue.updated_at = self.now()

    def add_comment(self, repo: Repo, issue: Issue, *, author: str, body: str) -> Comment:
        now = self.now()
        comment = Comment(
            id=self.new_id(),
            number=issue.number,
            user=self.user(author).login,
            body=body,
            created_at=now,
            updated_at=now,
        )
        repo.comments[comment.id] = comment
        issue.updated_at = now
        self.emit(
            ModelEvent(
                event="issue_comment", action="created", repo=repo, sender=author,
                issue=issue, comment=comment,
            )
        )  # fmt: skip
        return comment

    def edit_comment(self, repo: Repo, comment: Comment, body: str) -> None:
        now = self.now()
        before = comment.body
        comment.body = body
        comment.updated_at = now
        self.emit(
            ModelEvent(
                event="issue_comment", action="edited", repo=repo, sender=comment.user,
                issue=repo.issues[comment.number], comment=comment,
                changes={"body": {"from": before}},
            )
        )  # fmt: skip
        # Only the comment's updated_at moves: discovery finds edits through the comment
        # lists' `since`, which filters on the comment's own updated_at.

    def add_reaction(
        self, target: Issue | Comment | ReviewComment, *, user: str, content: str
    ) -> tuple[Reaction, bool]:
        """The reaction and whether it is new (GitHub answers 201) or existed (200)."""
        login = self.user(user).login
        for reaction in target.reactions:
            if reaction.user == login and reaction.content == content:
                return reaction, False
        reaction = Reaction(id=self.new_id(), user=login, content=content, created_at=self.now())
        target.reactions.append(reaction)
        return reaction, True

    def set_state(self, issue: Issue, state: str, *, actor: str, reason: str | None) -> None:
        if state == issue.state:
            return
        now = self.now()
        if state == "closed":
            issue.state = "closed"
            issue.closed_at = now
            issue.closed_by = self.user(actor).login
            issue.state_reason = reason or ("completed" if issue.pull is None else None)
        else:
            issue.state = "open"
            issue.closed_at = None
            issue.closed_by = None
            issue.state_reason = "reopened" if issue.pull is None else None
        issue.updated_at = now
