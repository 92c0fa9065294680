"""Turning GitHub objects (REST items and webhook payloads alike) into jobs, and screening
them with the trigger policy."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ._client import GitHubClient
from ._errors import GitHubRequestError
from ._mentions import find_mentions
from ._model import DiscoveryConfig, Job, JobKind, Rejected, StreamName
from ._policy import WRITE_PERMISSIONS, Decision, is_bot_user


def parse_time(value: str) -> datetime:
    """A GitHub timestamp (``2024-05-01T12:00:00Z``) as an aware UTC datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _last_number(url: object) -> int:
    return int(str(url or "").rstrip("/").rsplit("/", 1)[-1])


def ready_issue_skip_reason(issue: dict[str, Any], config: DiscoveryConfig) -> str | None:
    """Why an open issue labelled ready is not a job, when a person would want to know:
    it is assigned to someone, or carries a blocking label. None otherwise (a pull
    request, a closed issue, or one already in progress is not worth a word)."""
    if "pull_request" in issue or issue.get("state", "open") != "open":
        return None
    assignees = [str(a.get("login", "")) for a in issue.get("assignees") or [] if a]
    if assignees:
        return "assigned to " + ", ".join(f"@{login}" for login in assignees)
    labels = {str(label.get("name", "")).lower() for label in issue.get("labels", [])}
    blocked = sorted(labels & {label.lower() for label in config.blocked_labels})
    if blocked:
        return f"blocked (label {blocked[0]!r})"
    return None


def ready_issue_job(issue: dict[str, Any], repo: str, config: DiscoveryConfig) -> Job | None:
    """The job for an open issue labelled ready, or ``None`` when it must be left alone:
    a pull request, already in progress, blocked, or assigned to someone."""
    if "pull_request" in issue or issue.get("state", "open") != "open" or issue.get("assignees"):
        return None
    labels = {str(label.get("name", "")).lower() for label in issue.get("labels", [])}
    skip = {label.lower() for label in config.blocked_labels} | {config.in_progress_label.lower()}
    if config.ready_label.lower() not in labels or labels & skip:
        return None
    user = issue.get("user") or {}
    return Job(
        kind=JobKind.READY_ISSUE,
        repo=repo,
        number=int(issue["number"]),
        trigger_id=f"ready:{repo}#{issue['number']}",
        trigger_time=parse_time(issue["created_at"]),
        updated_at=parse_time(issue["updated_at"]),
        author=str(user.get("login", "")),
        author_association=str(issue.get("author_association", "NONE")),
        is_pull_request=False,
        title=str(issue.get("title") or ""),
        body=str(issue.get("body") or ""),
        url=str(issue.get("html_url") or ""),
        priority=config.repo_priority.get(repo, 0),
    )


def comment_job(
    comment: dict[str, Any], repo: str, stream: StreamName, config: DiscoveryConfig
) -> Job | None:
    """The job for an issue or review comment that mentions the bot, or ``None``.

    ``None`` also for comments by the bot itself or any other bot: those never trigger
    and are never answered (two bots answering each other would loop).
    """
    user = comment.get("user") or {}
    author = str(user.get("login", ""))
    body = str(comment.get("body") or "")
    mentions = find_mentions(body, config.login)
    if not mentions:
        return None
    association = str(comment.get("author_association", "NONE"))
    if (
        config.policy.decide(
            author=author,
            association=association,
            is_bot=is_bot_user(user),
            self_login=config.login,
        )
        is Decision.IGNORE
    ):
        return None
    html_url = str(comment.get("html_url") or "")
    if stream == "review_comments":
        number = _last_number(comment.get("pull_request_url"))
        is_pr = True
        kind = JobKind.REVIEW_COMMENT
        trigger_id = f"review_comment:{comment['id']}"
    else:
        number = _last_number(comment.get("issue_url"))
        # An issue comment in a pull request's conversation links to /pull/N.
        is_pr = "/pull/" in html_url
        kind = JobKind.PR_MENTION if is_pr else JobKind.ISSUE_MENTION
        trigger_id = f"issue_comment:{comment['id']}"
    command = mentions[0].command
    if command is not None:
        kind = JobKind.CANCEL if command == "cancel" else JobKind.RETRY
    return Job(
        kind=kind,
        repo=repo,
        number=number,
        trigger_id=trigger_id,
        trigger_time=parse_time(comment["created_at"]),
        updated_at=parse_time(comment.get("updated_at") or comment["created_at"]),
        author=author,
        author_association=association,
        is_pull_request=is_pr,
        body=body,
        url=html_url,
        comment_id=int(comment["id"]),
        instruction=mentions[0].text,
        stream=stream,
        priority=config.repo_priority.get(repo, 0),
    )


class LabellerMemo:
    """Who applied an issue's ready label, remembered from one poll to the next.

    A ready issue that waits for a free slot is listed again by every poll, and each poll
    asked its events again: with a backlog of N ready issues that is N requests per poll
    (304s, free of rate-limit points, but each a round trip and CPU on both ends). The
    answer can only change when the label is removed or applied again, and either moves
    the issue's ``updated_at``: an entry is used only for the same ``updated_at``.
    GitHub's timestamps have whole seconds, so a re-labelling within the second of the
    answer could keep ``updated_at``; an answer read less than ``SETTLE_SECONDS`` after
    the issue's last change (by GitHub's clock) is not remembered. Write access is still
    asked on every poll (:class:`PermissionCache`): it can be revoked at any time.
    """

    SETTLE_SECONDS = 2.0

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[str, int, str], tuple[datetime, dict[str, Any] | None]] = {}

    @staticmethod
    def _key(repo: str, number: int, label: str) -> tuple[str, int, str]:
        return repo.lower(), number, label.lower()

    def get(
        self, repo: str, number: int, label: str, updated_at: datetime
    ) -> tuple[bool, dict[str, Any] | None]:
        """(found, actor) for the issue as of ``updated_at``."""
        entry = self._entries.get(self._key(repo, number, label))
        if entry is None or entry[0] != updated_at:
            return False, None
        return True, entry[1]

    def put(
        self,
        repo: str,
        number: int,
        label: str,
        updated_at: datetime,
        actor: dict[str, Any] | None,
        *,
        read_at: datetime,
    ) -> None:
        if (read_at - updated_at).total_seconds() < self.SETTLE_SECONDS:
            return
        key = self._key(repo, number, label)
        self._entries.pop(key, None)
        self._entries[key] = (updated_at, actor)
        while len(self._entries) > self.max_entries:  # the oldest written goes first
            del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        return len(self._entries)


class PermissionCache:
    """Write access per (repository, login), asked once per poll through the API; and who
    applied an issue's ready label, from the issue events API (remembered across polls in
    ``memo`` when one is given)."""

    def __init__(self, gh: GitHubClient, memo: LabellerMemo | None = None) -> None:
        self.gh = gh
        self.memo = memo
        self._known: dict[tuple[str, str], bool] = {}

    async def labeller(
        self, repo: str, number: int, label: str, updated_at: datetime | None = None
    ) -> dict[str, Any] | None:
        """The ``actor`` (a user object) of the issue's latest ``labeled`` event for
        ``label`` (case-insensitive), or ``None`` when there is none.

        The events list is oldest first and read whole (an issue rarely has more than a
        page); gidgethub's ETag cache makes an unchanged list a free 304. With a memo and
        the issue's ``updated_at``, an answer for the same ``updated_at`` is not asked again.
        """
        if self.memo is not None and updated_at is not None:
            found, remembered = self.memo.get(repo, number, label, updated_at)
            if found:
                return remembered
        owner, _, name = repo.partition("/")
        actor: dict[str, Any] | None = None
        async for event in self.gh.getiter(
            "/repos/{owner}/{repo}/issues/{number}/events{?per_page}",
            {"owner": owner, "repo": name, "number": number, "per_page": 100},
        ):
            if not isinstance(event, dict) or event.get("event") != "labeled":
                continue
            named = str((event.get("label") or {}).get("name", ""))
            if named.lower() == label.lower() and isinstance(event.get("actor"), dict):
                actor = event["actor"]
        if self.memo is not None and updated_at is not None:
            self.memo.put(repo, number, label, updated_at, actor, read_at=self.gh.server_now())
        return actor

    async def has_write(self, repo: str, login: str) -> bool:
        key = (repo.lower(), login.lower())
        if key not in self._known:
            owner, _, name = repo.partition("/")
            try:
                data = await self.gh.getitem(
                    "/repos/{owner}/{repo}/collaborators/{username}/permission",
                    {"owner": owner, "repo": name, "username": login},
                )
            except GitHubRequestError as exc:
                if exc.status_code != 404:  # 404: not a collaborator at all
                    raise
                data = {}
            role = str(data.get("role_name") or data.get("permission") or "none").lower()
            self._known[key] = role in WRITE_PERMISSIONS
        return self._known[key]


async def screen(job: Job, config: DiscoveryConfig, permissions: PermissionCache) -> Job | Rejected:
    """``job`` when its trigger may start a run (a ready issue gains ``labelled_by``), else
    the :class:`Rejected` to report.

    A mention is judged by its author. A ready issue is judged by the account that applied
    the ready label (the issue's latest ``labeled`` event for it), never by the issue's
    author: triage access suffices to label, and a maintainer labelling an outsider's
    issue is exactly how such an issue is meant to run.
    """
    if job.kind is JobKind.READY_ISSUE:
        return await _screen_ready(job, config, permissions)
    decision = config.policy.decide(
        author=job.author,
        association=job.author_association,
        is_bot=False,
        self_login=config.login,
    )
    if decision is Decision.DENY:
        return Rejected(
            job=job, code="denied", reason=f"@{job.author} is not allowed to trigger runs"
        )
    if decision is Decision.CHECK and not await permissions.has_write(job.repo, job.author):
        return Rejected(
            job=job,
            code="no_write_access",
            reason=f"@{job.author} needs write access to {job.repo} to trigger runs",
        )
    return job


async def _screen_ready(
    job: Job, config: DiscoveryConfig, permissions: PermissionCache
) -> Job | Rejected:
    label = config.ready_label
    where = f"{job.repo}#{job.number}"
    actor = await permissions.labeller(job.repo, job.number, label, job.updated_at)
    if actor is None:
        return Rejected(
            job=job,
            code="labeller_unknown",
            reason=f"no '{label}' label event found on {where}; remove and re-apply the label",
        )
    login = str(actor.get("login") or "")
    # The events API gives no author_association for the actor, so only the allow list
    # or the permission API can admit them.
    decision = config.policy.decide(
        author=login, association="NONE", is_bot=is_bot_user(actor), self_login=config.login
    )
    if decision is Decision.IGNORE:
        return Rejected(
            job=job,
            code="labelled_by_bot",
            reason=f"the '{label}' label on {where} was applied by the bot account @{login}; "
            "bots never trigger runs",
        )
    if decision is Decision.DENY:
        return Rejected(job=job, code="denied", reason=f"@{login} is not allowed to trigger runs")
    if decision is Decision.CHECK and not await permissions.has_write(job.repo, login):
        return Rejected(
            job=job,
            code="no_write_access",
            reason=f"@{login} applied the '{label}' label on {where} but needs write access "
            f"to {job.repo} to trigger runs",
        )
    return replace(job, labelled_by=login)


async def apply_policy(
    gh: GitHubClient, jobs: Iterable[Job], config: DiscoveryConfig
) -> tuple[tuple[Job, ...], tuple[Rejected, ...]]:
    """Split ``jobs`` (e.g. from :func:`parse_webhook`) into allowed and rejected ones,
    asking the permission API where the author association does not decide."""
    permissions = PermissionCache(gh)
    allowed: list[Job] = []
    rejected: list[Rejected] = []
    for job in jobs:
        verdict = await screen(job, config, permissions)
        if isinstance(verdict, Job):
            allowed.append(verdict)
        else:
            rejected.append(verdict)
    return tuple(allowed), tuple(rejected)
