"""The GitHub calls a run makes: read the thread, claim, report, open or update the PR."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from ._client import GitHubClient
from ._discover import split_repo
from ._errors import GitHubRequestError
from ._markers import (
    find_post_key,
    find_status_run_id,
    post_marker,
    splice_owned_section,
    status_marker,
)
from ._steps import AttemptHook, write_step

T = TypeVar("T")

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
    known_absent: bool = False  # the thread, just read, has none: no look before creating
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

    Every write is a step that is safe to repeat (see ``_steps.py``): retried on 5xx,
    dropped connections and timeouts with backoff and jitter for up to ``write_budget``
    seconds (default: the client's ``RetryPolicy.write_budget``); a creation whose answer
    was lost is looked up before anything is sent again. ``on_attempt`` hears of every
    attempt (a :class:`WriteAttempt`) so the caller can record it in the run's history;
    it is called synchronously and must not raise.
    """

    def __init__(
        self,
        gh: GitHubClient,
        *,
        min_edit_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_attempt: AttemptHook | None = None,
        write_budget: float | None = None,
    ) -> None:
        if write_budget is not None and write_budget < 0:
            raise ValueError("RunGitHub write_budget must not be negative")
        self.gh = gh
        self.min_edit_interval = min_edit_interval
        self.on_attempt = on_attempt
        self.write_budget = gh.retry.write_budget if write_budget is None else write_budget
        self._clock = clock
        self._status: dict[str, _StatusState] = {}

    async def _step(
        self,
        step: str,
        target: str,
        write: Callable[[], Awaitable[T]],
        *,
        lookup: Callable[[], Awaitable[T | None]] | None = None,
        exists: Callable[[GitHubRequestError], Awaitable[T | None]] | None = None,
        look_first: bool = False,
    ) -> T:
        return await write_step(
            self.gh,
            step,
            target,
            write,
            budget=self.write_budget,
            hook=self.on_attempt,
            lookup=lookup,
            exists=exists,
            look_first=look_first,
        )

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

        async def listed(url: str) -> list[dict[str, Any]]:
            return [c async for c in self.gh.getiter(url, v)]

        # Read together (one round trip of latency, not two): the issue and its comments;
        # then, for a pull request, the pull and its review comments.
        issue, comments = await _both(
            self.get_issue(repo, number),
            listed("/repos/{owner}/{repo}/issues/{number}/comments{?per_page}"),
        )
        if "pull_request" not in issue:
            return Thread(issue=issue, comments=tuple(comments))
        pull, reviews = await _both(
            self.gh.getitem("/repos/{owner}/{repo}/pulls/{number}", v),
            listed("/repos/{owner}/{repo}/pulls/{number}/comments{?per_page}"),
        )
        return Thread(
            issue=issue, comments=tuple(comments), pull=pull, review_comments=tuple(reviews)
        )

    async def branch_heads(self, repo: str, branches: Iterable[str]) -> dict[str, str]:
        """The commit each branch ``branches`` names points at: ``{branch: sha}``, a branch
        that does not exist left out. A name ending in ``*`` stands for every branch that
        begins with what comes before it (``cgr/12-*``). One request per name, all in
        flight together (``git/matching-refs``, read-only: a run compares the answer with
        its mirror and need not fetch when they agree)."""
        owner, name = split_repo(repo)

        async def matching(branch: str) -> dict[str, str]:
            prefix = branch.removesuffix("*")
            if "*" in prefix or not prefix:
                raise ValueError(f"not a branch name or prefix*: {branch!r}")
            # The name is a path: its slashes stay separators ({+ref}, reserved expansion),
            # anything else a URL could read otherwise (#, %, ?) is escaped first.
            url = "/repos/{owner}/{repo}/git/matching-refs/{+ref}"
            v = {"owner": owner, "repo": name, "ref": quote(f"heads/{prefix}", safe="/")}
            found: dict[str, str] = {}
            async for ref in self.gh.getiter(url, v):
                full = str(ref.get("ref", ""))
                if not full.startswith("refs/heads/"):
                    continue
                head = full.removeprefix("refs/heads/")
                # GitHub lists every ref that begins with the name: heads/main lists
                # main-2 too. A plain name keeps its own ref alone.
                if head == prefix or (branch.endswith("*") and head.startswith(prefix)):
                    found[head] = str(ref["object"]["sha"])
            return found

        answers = await _all([matching(branch) for branch in dict.fromkeys(branches)])
        return {head: sha for found in answers for head, sha in found.items()}

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
        """Add ``labels`` (naturally idempotent: adding a label twice changes nothing)."""
        owner, name = split_repo(repo)

        async def write() -> None:
            await self.gh.post(
                "/repos/{owner}/{repo}/issues/{number}/labels",
                {"owner": owner, "repo": name, "number": number},
                data={"labels": list(labels)},
            )

        await self._step("add_labels", f"{repo}#{number}", write)

    async def remove_label(self, repo: str, number: int, label: str) -> bool:
        """Remove ``label``; returns ``False`` (no error) when it was not there.

        The label name is a URI-template variable, so spaces, ``/`` and non-ASCII
        characters are percent-encoded.
        """
        owner, name = split_repo(repo)
        attempts = 0

        async def write() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                await self.gh.delete(
                    "/repos/{owner}/{repo}/issues/{number}/labels/{name}",
                    {"owner": owner, "repo": name, "number": number, "name": label},
                )
            except GitHubRequestError as exc:
                if exc.status_code == 404:
                    # After an attempt whose answer was lost, 404 means that attempt
                    # removed it.
                    return attempts > 1
                raise
            return True

        return await self._step("remove_label", f"{repo}#{number}", write)

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
        """Create a repository label; one that already exists is returned as it is."""
        owner, name = split_repo(repo)

        async def write() -> dict[str, Any]:
            data: dict[str, Any] = await self.gh.post(
                "/repos/{owner}/{repo}/labels",
                {"owner": owner, "repo": name},
                data={
                    "name": label,
                    "color": color.removeprefix("#"),
                    "description": description,
                },
            )
            return data

        async def lookup() -> dict[str, Any] | None:
            try:
                data: dict[str, Any] = await self.gh.getitem(
                    "/repos/{owner}/{repo}/labels/{name}",
                    {"owner": owner, "repo": name, "name": label},
                )
            except GitHubRequestError as exc:
                if exc.status_code == 404:
                    return None
                raise
            return data

        async def exists(exc: GitHubRequestError) -> dict[str, Any] | None:
            if exc.status_code != 422 or not any("already_exists" in e for e in exc.github_errors):
                return None
            return await lookup()

        return await self._step(
            "create_label", f"{repo} label {label!r}", write, lookup=lookup, exists=exists
        )

    async def assign(self, repo: str, number: int, *logins: str) -> None:
        """Add assignees (naturally idempotent)."""
        owner, name = split_repo(repo)

        async def write() -> None:
            await self.gh.post(
                "/repos/{owner}/{repo}/issues/{number}/assignees",
                {"owner": owner, "repo": name, "number": number},
                data={"assignees": list(logins)},
            )

        await self._step("assign", f"{repo}#{number}", write)

    async def unassign(self, repo: str, number: int, *logins: str) -> None:
        owner, name = split_repo(repo)

        async def write() -> None:
            await self.gh.delete(
                "/repos/{owner}/{repo}/issues/{number}/assignees",
                {"owner": owner, "repo": name, "number": number},
                data={"assignees": list(logins)},
            )

        await self._step("unassign", f"{repo}#{number}", write)

    # --- comments and reactions ------------------------------------------------------

    async def comment(
        self, repo: str, number: int, body: str, *, key: str | None = None
    ) -> dict[str, Any]:
        """Post a comment exactly once, however often the request must be repeated.

        The comment carries a hidden marker that finds it again: the body's status marker
        (``status_marker(run_id)``) if it has one, else ``<!-- cgr:post=<key> -->`` put in
        front (a random key when none is given). After an attempt whose answer was lost,
        the thread is searched for the marker before anything is posted again. With a
        status marker or an explicit ``key`` the thread is searched *before the first
        attempt* too, so a caller that crashed and repeats the call gets the same comment.
        """
        look_first = find_status_run_id(body) is not None or key is not None
        if find_status_run_id(body) is None and find_post_key(body) is None:
            body = f"{post_marker(key or secrets.token_hex(8))}\n{body}"
        return await self._create_comment(repo, number, body, look_first=look_first)

    async def _create_comment(
        self, repo: str, number: int, body: str, *, look_first: bool
    ) -> dict[str, Any]:
        """Post ``body`` (which carries a status or post marker) as one comment."""
        owner, name = split_repo(repo)
        run_id = find_status_run_id(body)
        post_key = find_post_key(body) if run_id is None else None

        async def lookup() -> dict[str, Any] | None:
            return await self._find_comment(repo, number, run_id=run_id, post_key=post_key)

        async def write() -> dict[str, Any]:
            data: dict[str, Any] = await self.gh.post(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                {"owner": owner, "repo": name, "number": number},
                data={"body": body},
            )
            return data

        return await self._step(
            "comment", f"{repo}#{number}", write, lookup=lookup, look_first=look_first
        )

    async def _find_comment(
        self, repo: str, number: int, *, run_id: str | None, post_key: str | None
    ) -> dict[str, Any] | None:
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
                text = comment.get("body")
                if (run_id is not None and find_status_run_id(text) == run_id) or (
                    post_key is not None and find_post_key(text) == post_key
                ):
                    found: dict[str, Any] = comment
                    return found
        return None

    async def react(
        self,
        repo: str,
        content: Reaction,
        *,
        number: int | None = None,
        comment_id: int | None = None,
        review_comment_id: int | None = None,
    ) -> dict[str, Any]:
        """React to an issue/PR (``number``), an issue comment or a review comment.

        Naturally idempotent: GitHub answers an existing reaction with 200 and that
        reaction, so a repeated attempt never adds a second one.
        """
        owner, name = split_repo(repo)
        if sum(x is not None for x in (number, comment_id, review_comment_id)) != 1:
            raise ValueError("react() takes exactly one of number, comment_id, review_comment_id")
        target: int | None
        if comment_id is not None:
            url, target = "/repos/{owner}/{repo}/issues/comments/{id}/reactions", comment_id
            what = f"{repo} comment {comment_id}"
        elif review_comment_id is not None:
            url, target = "/repos/{owner}/{repo}/pulls/comments/{id}/reactions", review_comment_id
            what = f"{repo} review comment {review_comment_id}"
        else:
            url, target = "/repos/{owner}/{repo}/issues/{id}/reactions", number
            what = f"{repo}#{number}"

        async def write() -> dict[str, Any]:
            data: dict[str, Any] = await self.gh.post(
                url, {"owner": owner, "repo": name, "id": target}, data={"content": content}
            )
            return data

        return await self._step("react", what, write)

    async def find_status_comment(self, repo: str, number: int, run_id: str) -> int | None:
        """The id of run ``run_id``'s status comment on the thread, if there is one."""
        found = await self._find_comment(repo, number, run_id=run_id, post_key=None)
        return int(found["id"]) if found is not None else None

    def note_thread_comments(
        self, repo: str, number: int, run_id: str, comments: Iterable[Mapping[str, Any]]
    ) -> None:
        """Learn run ``run_id``'s status comment from the thread's comments, all of them,
        read a moment ago (:meth:`get_thread`): its id, or that there is none. Then the
        first :meth:`update_status` need not look for it first (one round trip fewer in
        a run's claim); without this call it looks."""
        state = self._status.setdefault(run_id, _StatusState(repo=repo, number=number))
        if state.comment_id is not None:
            return
        for comment in comments:
            if find_status_run_id(comment.get("body")) == run_id:
                state.comment_id = int(comment["id"])
                return
        state.known_absent = True

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
        if state.comment_id is None and not state.known_absent:
            # A crash or a second process may have created it already: look before writing.
            state.comment_id = await self.find_status_comment(repo, number, run_id)
        state.known_absent = False  # what the thread said is used once
        if state.comment_id is None:
            created = await self._create_comment(repo, number, body, look_first=False)
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
        comment_id = state.comment_id

        async def edit() -> None:
            await self.gh.patch(
                "/repos/{owner}/{repo}/issues/comments/{id}",
                {"owner": owner, "repo": name, "id": comment_id},
                data={"body": body},
            )

        try:
            # An absolute PATCH (the whole body): repeating it leaves the same comment.
            await self._step("edit_status", f"{repo}#{number}", edit)
        except GitHubRequestError as exc:
            if exc.status_code != 404:
                raise
            # A person deleted the status comment: the run still reports, in a new one.
            created = await self._create_comment(repo, number, body, look_first=False)
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
        self,
        repo: str,
        *,
        head: str,
        base: str,
        title: str,
        body: str,
        draft: bool = False,
        look_first: bool = True,
    ) -> dict[str, Any]:
        """Open a pull request from branch ``head`` into ``base``, exactly once.

        An open pull request for the same head and base is looked for first (a repeated
        call returns it), again after an attempt whose answer was lost, and when GitHub
        answers 422 "A pull request already exists". ``look_first=False`` saves the first
        look (a round trip) for a caller that has just looked, or whose branch is new:
        an existing pull request is still found through the 422.
        """
        owner, name = split_repo(repo)
        head_branch = head.rpartition(":")[2]

        async def lookup() -> dict[str, Any] | None:
            found = await self.find_pull_request(repo, head_branch, state="open")
            if found is not None and found.get("base", {}).get("ref") == base:
                return found
            return None

        async def write() -> dict[str, Any]:
            data: dict[str, Any] = await self.gh.post(
                "/repos/{owner}/{repo}/pulls",
                {"owner": owner, "repo": name},
                data={"head": head, "base": base, "title": title, "body": body, "draft": draft},
            )
            return data

        async def exists(exc: GitHubRequestError) -> dict[str, Any] | None:
            if exc.status_code != 422 or not any(
                "already exists" in e.lower() for e in exc.github_errors
            ):
                return None
            return await lookup()

        return await self._step(
            "create_pull_request",
            f"{repo} {head_branch}",
            write,
            lookup=lookup,
            exists=exists,
            look_first=look_first,
        )

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

        async def write() -> dict[str, Any]:
            # Absolute values (the whole body, the title): safe to send again.
            data: dict[str, Any] = await self.gh.patch(
                "/repos/{owner}/{repo}/pulls/{number}", v, data=patch
            )
            return data

        return await self._step("update_pull_request", f"{repo}#{number}", write)


_A = TypeVar("_A")
_B = TypeVar("_B")


async def _both(first: Awaitable[_A], second: Awaitable[_B]) -> tuple[_A, _B]:
    """Await two independent reads concurrently (see :func:`_all`)."""
    a, b = await _all([first, second])
    return a, b


async def _all(awaitables: Sequence[Awaitable[Any]]) -> list[Any]:
    """Await independent reads concurrently; their results in order. All run to their
    end; then the first failure is raised as itself (callers catch GitHub's errors by type,
    not an exception group)."""
    import anyio

    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    async def one(index: int, awaitable: Awaitable[Any]) -> None:
        try:
            results[index] = await awaitable
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for index, awaitable in enumerate(awaitables):
            tg.start_soon(one, index, awaitable)
    if errors:
        raise errors[0]
    return [results[index] for index in range(len(awaitables))]
