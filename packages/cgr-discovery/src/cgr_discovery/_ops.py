"""The GitHub calls a run makes: read the thread, claim, report, open or update the PR."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from ._client import GitHubClient
from ._discover import split_repo
from ._errors import GitHubRequestError
from ._markers import find_status_run_id, splice_owned_section, status_marker

Reaction = Literal["+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Thread:
    """An issue or pull request with its conversation.

    ``pull`` (head and base branches, draft, …) and ``review_comments`` are set for pull
    requests only.
    """

    issue: dict[str, Any]
    comments: tuple[dict[str, Any], ...]
    pull: dict[str, Any] | None = None
    review_comments: tuple[dict[str, Any], ...] = ()

    @property
    def is_pull_request(self) -> bool:
        return self.pull is not None


@dataclass(slots=True)
class _StatusState:
    comment_id: int | None = None
    last_edit: float | None = None
    last_body: str | None = None
    pending: str | None = None
    repo: str = ""
    number: int = 0


class RunGitHub:
    """GitHub operations for one run, over a :class:`GitHubClient`.

    Status comments: one per run, found by the hidden ``<!-- cgr:run=<id> -->`` marker,
    created once and edited in place. Edits closer together than
    ``min_edit_interval`` seconds are held back (the newest text is kept) because GitHub
    limits content creation; a ``final=True`` update always goes through.
    """

    def __init__(
        self,
        gh: GitHubClient,
        *,
        min_edit_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gh = gh
        self.min_edit_interval = min_edit_interval
        self._clock = clock
        self._status: dict[str, _StatusState] = {}

    # --- reading ---------------------------------------------------------------------

    async def get_issue(self, repo: str, number: int) -> dict[str, Any]:
        owner, name = split_repo(repo)
        data: dict[str, Any] = await self.gh.getitem(
            "/repos/{owner}/{repo}/issues/{number}",
            {"owner": owner, "repo": name, "number": number},
        )
        return data

    async def get_thread(self, repo: str, number: int) -> Thread:
        """The issue or PR, all its conversation comments and, for a PR, its branches
        and review comments."""
        owner, name = split_repo(repo)
        v: dict[str, Any] = {"owner": owner, "repo": name, "number": number, "per_page": 100}
        issue = await self.get_issue(repo, number)
        comments = [
            c
            async for c in self.gh.getiter(
                "/repos/{owner}/{repo}/issues/{number}/comments{?per_page}", v
            )
        ]
        if "pull_request" not in issue:
            return Thread(issue=issue, comments=tuple(comments))
        pull = await self.gh.getitem("/repos/{owner}/{repo}/pulls/{number}", v)
        reviews = [
            c
            async for c in self.gh.getiter(
                "/repos/{owner}/{repo}/pulls/{number}/comments{?per_page}", v
            )
        ]
        return Thread(
            issue=issue, comments=tuple(comments), pull=pull, review_comments=tuple(reviews)
        )

    async def default_branch(self, repo: str) -> str:
        owner, name = split_repo(repo)
        data = await self.gh.getitem("/repos/{owner}/{repo}", {"owner": owner, "repo": name})
        return str(data["default_branch"])

    async def collaborator_permission(self, repo: str, login: str) -> str:
        """``admin``, ``maintain``, ``write``, ``triage``, ``read`` or ``none``."""
        owner, name = split_repo(repo)
        try:
            data = await self.gh.getitem(
                "/repos/{owner}/{repo}/collaborators/{username}/permission",
                {"owner": owner, "repo": name, "username": login},
            )
        except GitHubRequestError as exc:
            if exc.status_code == 404:
                return "none"
            raise
        return str(data.get("role_name") or data.get("permission") or "none")

    # --- labels and assignees --------------------------------------------------------

    async def add_labels(self, repo: str, number: int, *labels: str) -> None:
        owner, name = split_repo(repo)
        await self.gh.post(
            "/repos/{owner}/{repo}/issues/{number}/labels",
            {"owner": owner, "repo": name, "number": number},
            data={"labels": list(labels)},
        )

    async def remove_label(self, repo: str, number: int, label: str) -> bool:
        """Remove ``label``; returns ``False`` (no error) when it was not there.

        The label name is a URI-template variable, so spaces, ``/`` and non-ASCII
        characters are percent-encoded.
        """
        owner, name = split_repo(repo)
        try:
            await self.gh.delete(
                "/repos/{owner}/{repo}/issues/{number}/labels/{name}",
                {"owner": owner, "repo": name, "number": number, "name": label},
            )
        except GitHubRequestError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    async def list_labels(self, repo: str) -> list[dict[str, Any]]:
        owner, name = split_repo(repo)
        return [
            label
            async for label in self.gh.getiter(
                "/repos/{owner}/{repo}/labels{?per_page}",
                {"owner": owner, "repo": name, "per_page": 100},
            )
        ]

    async def create_label(
        self, repo: str, label: str, *, color: str = "ededed", description: str = ""
    ) -> dict[str, Any]:
        owner, name = split_repo(repo)
        data: dict[str, Any] = await self.gh.post(
            "/repos/{owner}/{repo}/labels",
            {"owner": owner, "repo": name},
            data={"name": label, "color": color.removeprefix("#"), "description": description},
        )
        return data

    async def assign(self, repo: str, number: int, *logins: str) -> None:
        owner, name = split_repo(repo)
        await self.gh.post(
            "/repos/{owner}/{repo}/issues/{number}/assignees",
            {"owner": owner, "repo": name, "number": number},
            data={"assignees": list(logins)},
        )

    async def unassign(self, repo: str, number: int, *logins: str) -> None:
        owner, name = split_repo(repo)
        await self.gh.delete(
            "/repos/{owner}/{repo}/issues/{number}/assignees",
            {"owner": owner, "repo": name, "number": number},
            data={"assignees": list(logins)},
        )

    # --- comments and reactions ------------------------------------------------------

    async def comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        """A new comment (never retried once it may have reached GitHub)."""
        owner, name = split_repo(repo)
        data: dict[str, Any] = await self.gh.post(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            {"owner": owner, "repo": name, "number": number},
            data={"body": body},
        )
        return data

    async def react(
        self,
        repo: str,
        content: Reaction,
        *,
        number: int | None = None,
        comment_id: int | None = None,
        review_comment_id: int | None = None,
    ) -> None:
        """React to an issue/PR (``number``), an issue comment or a review comment."""
        owner, name = split_repo(repo)
        if sum(x is not None for x in (number, comment_id, review_comment_id)) != 1:
            raise ValueError("react() takes exactly one of number, comment_id, review_comment_id")
        target: int | None
        if comment_id is not None:
            url, target = "/repos/{owner}/{repo}/issues/comments/{id}/reactions", comment_id
        elif review_comment_id is not None:
            url, target = "/repos/{owner}/{repo}/pulls/comments/{id}/reactions", review_comment_id
        else:
            url, target = "/repos/{owner}/{repo}/issues/{id}/reactions", number
        await self.gh.post(
            url, {"owner": owner, "repo": name, "id": target}, data={"content": content}
        )

    async def find_status_comment(self, repo: str, number: int, run_id: str) -> int | None:
        """The id of run ``run_id``'s status comment on the thread, if there is one."""
        owner, name = split_repo(repo)
        # aclosing: leaving the loop early must close the generator now, not when the
        # garbage collector finds it (trio reports that as an unclosed async generator).
        async with aclosing(
            self.gh.getiter(
                "/repos/{owner}/{repo}/issues/{number}/comments{?per_page}",
                {"owner": owner, "repo": name, "number": number, "per_page": 100},
            )
        ) as comments:
            async for comment in comments:
                if find_status_run_id(comment.get("body")) == run_id:
                    return int(comment["id"])
        return None

    async def update_status(
        self, repo: str, number: int, run_id: str, text: str, *, final: bool = False
    ) -> bool:
        """Create or edit run ``run_id``'s one status comment; ``True`` if GitHub was written.

        A non-final edit within ``min_edit_interval`` of the previous one is held back and
        written by the next update that is allowed (or the final one).
        """
        body = f"{status_marker(run_id)}\n{text}"
        state = self._status.setdefault(run_id, _StatusState(repo=repo, number=number))
        now = self._clock()
        if state.comment_id is None:
            # A crash or a second process may have created it already: look before writing.
            state.comment_id = await self.find_status_comment(repo, number, run_id)
        if state.comment_id is None:
            created = await self.comment(repo, number, body)
            state.comment_id = int(created["id"])
            state.last_edit, state.last_body, state.pending = now, body, None
            return True
        if body == state.last_body:
            state.pending = None
            return False
        if (
            not final
            and state.last_edit is not None
            and now - state.last_edit < self.min_edit_interval
        ):
            state.pending = body
            return False
        owner, name = split_repo(repo)
        try:
            await self.gh.patch(
                "/repos/{owner}/{repo}/issues/comments/{id}",
                {"owner": owner, "repo": name, "id": state.comment_id},
                data={"body": body},
            )
        except GitHubRequestError as exc:
            if exc.status_code != 404:
                raise
            # A person deleted the status comment: the run still reports, in a new one.
            created = await self.comment(repo, number, body)
            state.comment_id = int(created["id"])
        state.last_edit, state.last_body, state.pending = now, body, None
        return True

    async def flush_status(self, run_id: str) -> bool:
        """Write a held-back status edit now, if there is one."""
        state = self._status.get(run_id)
        if state is None or state.pending is None:
            return False
        text = state.pending.split("\n", 1)[1]
        return await self.update_status(state.repo, state.number, run_id, text, final=True)

    # --- pull requests ---------------------------------------------------------------

    async def find_pull_request(
        self, repo: str, head_branch: str, *, state: Literal["open", "closed", "all"] = "all"
    ) -> dict[str, Any] | None:
        """The newest PR whose head is ``owner:head_branch`` in this repository."""
        owner, name = split_repo(repo)
        url_vars: dict[str, Any] = {
            "owner": owner,
            "repo": name,
            "head": f"{owner}:{head_branch}",
            "state": state,
            "sort": "created",
            "direction": "desc",
            "per_page": 100,
        }
        async with aclosing(
            self.gh.getiter(
                "/repos/{owner}/{repo}/pulls{?head,state,sort,direction,per_page}", url_vars
            )
        ) as pulls:
            async for pull in pulls:
                if pull.get("head", {}).get("ref") == head_branch:
                    found: dict[str, Any] = pull
                    return found
        return None

    async def create_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str, draft: bool = False
    ) -> dict[str, Any]:
        owner, name = split_repo(repo)
        data: dict[str, Any] = await self.gh.post(
            "/repos/{owner}/{repo}/pulls",
            {"owner": owner, "repo": name},
            data={"head": head, "base": base, "title": title, "body": body, "draft": draft},
        )
        return data

    async def update_pull_request(
        self, repo: str, number: int, *, section: str | None = None, title: str | None = None
    ) -> dict[str, Any]:
        """Rewrite cgr's marked section of the PR description (and the title if given),
        keeping everything else a person or the agent wrote."""
        owner, name = split_repo(repo)
        v: dict[str, Any] = {"owner": owner, "repo": name, "number": number}
        patch: dict[str, Any] = {}
        if section is not None:
            pull = await self.gh.getitem("/repos/{owner}/{repo}/pulls/{number}", v)
            patch["body"] = splice_owned_section(pull.get("body"), section)
        if title is not None:
            patch["title"] = title
        if not patch:
            raise ValueError("update_pull_request() needs a section or a title")
        data: dict[str, Any] = await self.gh.patch(
            "/repos/{owner}/{repo}/pulls/{number}", v, data=patch
        )
        return data
