"""The REST endpoints the simulator serves, each a function ``(App, Request) -> Reply``.

Called with ``Model.lock`` held. Parameters, defaults, status codes and error bodies
follow GitHub's REST API documentation for each endpoint.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cgr_discovery.testing import _git
from cgr_discovery.testing._errors import UnknownItemError
from cgr_discovery.testing._http import (
    App,
    Handler,
    HTTPError,
    Installation,
    Reply,
    Request,
    Route,
    not_found,
    validation_failed,
)
from cgr_discovery.testing._model import (
    REACTIONS,
    Comment,
    Issue,
    Label,
    Model,
    ModelEvent,
    PullData,
    Repo,
    ReviewComment,
)
from cgr_discovery.testing._render import iso

_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"


# -- helpers --------------------------------------------------------------------------------


def _repo(app: App, req: Request) -> Repo:
    repo = app.model.find_repo(req.params["owner"], req.params["repo"])
    if repo is None or (repo.private and app.model.role(repo, req.login) is None):
        # GitHub hides private repositories behind 404, never 403.
        raise not_found()
    return repo


def _issue(app: App, req: Request, repo: Repo) -> Issue:
    issue = repo.issues.get(int(req.params["number"]))
    if issue is None:
        raise not_found()
    return issue


def _pull(app: App, req: Request, repo: Repo) -> tuple[Issue, PullData]:
    issue = _issue(app, req, repo)
    if issue.pull is None:
        raise not_found()
    return issue, issue.pull


def _require_push(app: App, req: Request, repo: Repo) -> None:
    if app.model.role(repo, req.login) not in ("admin", "maintain", "write", "triage"):
        raise HTTPError(403, "Must have admin rights to Repository.")


def _since(req: Request) -> int | None:
    raw = req.arg("since")
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPError(
            422, f"Invalid request.\n\nFor 'since', {raw!r} is not a valid timestamp."
        ) from None
    # GitHub reads a timestamp without an offset as UTC, not as the server's local time.
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def _choice(req: Request, name: str, default: str, allowed: Iterable[str]) -> str:
    value = req.arg(name) or default
    if value not in allowed:
        raise validation_failed(
            {"resource": "Search" if name == "order" else "Issue", "field": name,
             "code": "invalid", "value": value}
        )  # fmt: skip
    return value


def _string_list(data: Any, key: str) -> list[str]:
    """``{"labels": [...]}`` or a bare list, as GitHub accepts both for labels."""
    values = data.get(key) if isinstance(data, dict) else data
    if values is None:
        values = []
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise HTTPError(422, f"Invalid request.\n\nFor '{key}', {values!r} is not an array.")
    return values


def _mentions(body: str | None, login: str) -> bool:
    if not body:
        return False
    return re.search(rf"(?<![\w-])@{re.escape(login)}(?![\w-])", body, re.IGNORECASE) is not None


# -- users, rate limit, repositories ---------------------------------------------------------


def get_user(app: App, req: Request) -> Reply:
    return Reply(200, app.renderer.private_user(app.model.user(req.login)))


def get_rate_limit(app: App, req: Request) -> Reply:
    now = app.model.now()
    resources = {
        name: {**app.rate_limits.snapshot(name, now), "resource": name}
        for name in ("core", "search", "graphql", "code_search")
    }
    return Reply(200, {"resources": resources, "rate": resources["core"]})


def get_repo(app: App, req: Request) -> Reply:
    return Reply(200, app.renderer.repo(_repo(app, req), viewer=req.login))


def get_permission(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    user = app.model.find_user(req.params["user"])
    if user is None:
        raise HTTPError(404, f"{req.params['user']} is not a user")
    return Reply(200, app.renderer.permission(repo, user.login))


def list_repo_labels(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    labels = sorted(repo.labels.values(), key=lambda label: label.name.lower())
    return app.paginate(req, [app.renderer.label(repo, label) for label in labels])


def get_repo_label(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    label = repo.labels.get(req.params["name"].lower())
    if label is None:
        raise not_found()
    return Reply(200, app.renderer.label(repo, label))


def create_repo_label(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    _require_push(app, req, repo)
    data = req.json_object()
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise validation_failed({"resource": "Label", "code": "missing_field", "field": "name"})
    if name.lower() in repo.labels:
        raise validation_failed({"resource": "Label", "code": "already_exists", "field": "name"})
    color = str(data.get("color") or "ededed").removeprefix("#")
    if not re.fullmatch(r"[0-9a-fA-F]{6}", color):
        raise validation_failed({"resource": "Label", "code": "invalid", "field": "color"})
    description = data.get("description")
    label = Label(
        id=app.model.new_id(),
        name=name,
        color=color.lower(),
        description=description if isinstance(description, str) else None,
    )
    repo.labels[name.lower()] = label
    return Reply(201, app.renderer.label(repo, label))


# -- issues -----------------------------------------------------------------------------------


_ISSUE_SORT_KEYS: dict[str, Callable[[Repo, Issue], Any]] = {
    "created": lambda repo, issue: (issue.created_at, issue.number),
    "updated": lambda repo, issue: (issue.updated_at, issue.number),
    "comments": lambda repo, issue: (
        sum(1 for c in repo.comments.values() if c.number == issue.number),
        issue.number,
    ),
}


def list_matching_refs(app: App, req: Request) -> Reply:
    """Every ref whose name starts with ``refs/<ref>`` (``heads/main`` also lists
    ``heads/main-2``: the caller filters), as GitHub answers: a plain array, ``[]`` when
    none matches. Branches only: the simulator's repositories have no tags."""
    repo = _repo(app, req)
    prefix = "refs/" + req.params["ref"]
    refs = sorted((f"refs/heads/{name}", sha) for name, sha in _git.heads(repo.git_dir).items())
    return Reply(
        200, [app.renderer.git_ref(repo, ref, sha) for ref, sha in refs if ref.startswith(prefix)]
    )


def list_issues(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    state = _choice(req, "state", "open", ("open", "closed", "all"))
    sort = _choice(req, "sort", "created", _ISSUE_SORT_KEYS)
    direction = _choice(req, "direction", "desc", ("asc", "desc"))
    since = _since(req)
    wanted_labels = [n.strip().lower() for n in (req.arg("labels") or "").split(",") if n.strip()]
    assignee = req.arg("assignee")
    creator = req.arg("creator")
    mentioned = req.arg("mentioned")
    items = []
    for issue in repo.issues.values():
        if state not in ("all", issue.state):
            continue
        if since is not None and issue.updated_at < since:
            continue
        have = {name.lower() for name in issue.labels}
        if not all(name in have for name in wanted_labels):
            continue
        if assignee == "none" and issue.assignees:
            continue
        if assignee == "*" and not issue.assignees:
            continue
        if assignee not in (None, "none", "*") and assignee.lower() not in {
            a.lower() for a in issue.assignees
        }:
            continue
        if creator is not None and issue.user.lower() != creator.lower():
            continue
        if mentioned is not None and not _mentioned_in(repo, issue, mentioned):
            continue
        items.append(issue)
    items.sort(key=lambda i: _ISSUE_SORT_KEYS[sort](repo, i), reverse=direction == "desc")
    return app.paginate(req, [app.renderer.issue(repo, issue) for issue in items])


def _mentioned_in(repo: Repo, issue: Issue, login: str) -> bool:
    if _mentions(issue.body, login):
        return True
    return any(_mentions(c.body, login) for c in repo.comments.values() if c.number == issue.number)


def get_issue(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    return Reply(200, app.renderer.issue(repo, _issue(app, req, repo)))


def create_issue(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    data = req.json_object()
    title = data.get("title")
    if not isinstance(title, (str, int)) or str(title) == "":
        raise validation_failed({"resource": "Issue", "code": "missing_field", "field": "title"})
    can_triage = app.model.role(repo, req.login) is not None
    body = data.get("body")
    issue = app.model.create_issue(
        repo,
        title=str(title),
        body=body if isinstance(body, str) else None,
        author=req.login,
        # Without push access GitHub silently drops labels and assignees.
        labels=_string_list(data, "labels") if can_triage else [],
        assignees=_string_list(data, "assignees") if can_triage else [],
    )
    return Reply(201, app.renderer.issue(repo, issue))


def update_issue(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue = _issue(app, req, repo)
    data = req.json_object()
    is_author = issue.user.lower() == req.login.lower()
    if not is_author:
        _require_push(app, req, repo)
    if "title" in data:
        if not isinstance(data["title"], str) or not data["title"]:
            raise validation_failed(
                {"resource": "Issue", "code": "missing_field", "field": "title"}
            )
        issue.title = data["title"]
    if "body" in data:
        issue.body = data["body"] if isinstance(data["body"], str) else None
    if "labels" in data:
        app.model.set_labels(repo, issue, _string_list(data, "labels"), actor=req.login)
    if "assignees" in data:
        issue.assignees = []
        for login in _string_list(data, "assignees"):
            app.model.add_assignee(repo, issue, login, touch=False)
    if "state" in data:
        state = data["state"]
        if state not in ("open", "closed"):
            raise validation_failed(
                {"resource": "Issue", "code": "invalid", "field": "state", "value": state}
            )
        reason = data.get("state_reason")
        app.model.set_state(issue, state, actor=req.login, reason=reason)
    issue.updated_at = app.model.now()
    return Reply(200, app.renderer.issue(repo, issue))


# -- issue comments -------------------------------------------------------------------------


class _Dated(Protocol):
    id: int
    created_at: int
    updated_at: int


_D = TypeVar("_D", bound=_Dated)


def _filter_and_page(
    app: App,
    req: Request,
    items: Iterable[_D],
    render: Callable[[_D], dict[str, Any]],
    *,
    sorts: tuple[str, ...] = (),
) -> Reply:
    """``since``, ``sort``, ``direction`` and pagination, as GitHub's comment lists do them.

    Shared by every list of dated items (issue comments per issue and per repository,
    review comments per PR and per repository). ``since`` keeps items *updated* at or
    after it. Without ``sort`` (or where the endpoint has none: ``sorts`` empty) GitHub
    answers in ascending id order and ignores ``direction``; with it, by ``created`` or
    ``updated`` time (ties by id), descending unless ``direction=asc``.
    """
    since = _since(req)
    chosen = [item for item in items if since is None or item.updated_at >= since]
    if not sorts or req.arg("sort") is None:
        chosen.sort(key=lambda item: item.id)
    else:
        sort = _choice(req, "sort", "created", sorts)
        direction = _choice(req, "direction", "desc", ("asc", "desc"))
        key = "updated_at" if sort == "updated" else "created_at"
        chosen.sort(key=lambda item: (getattr(item, key), item.id), reverse=direction == "desc")
    return app.paginate(req, [render(item) for item in chosen])


def list_issue_comments(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue = _issue(app, req, repo)
    comments = (c for c in repo.comments.values() if c.number == issue.number)
    return _filter_and_page(app, req, comments, lambda c: app.renderer.comment(repo, c))


def create_issue_comment(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue = _issue(app, req, repo)
    body = req.json_object().get("body")
    if not isinstance(body, str) or not body:
        raise validation_failed(
            {"resource": "IssueComment", "code": "missing_field", "field": "body"}
        )
    if issue.locked and app.model.role(repo, req.login) is None:
        raise HTTPError(403, "Unable to create comment because issue is locked.")
    comment = app.model.add_comment(repo, issue, author=req.login, body=body)
    reply = Reply(201, app.renderer.comment(repo, comment))
    reply.headers.append(("Location", app.renderer.comment(repo, comment)["url"]))
    return reply


def list_repo_comments(app: App, req: Request) -> Reply:
    """``GET /repos/{o}/{r}/issues/comments``: every issue comment of the repository."""
    repo = _repo(app, req)
    return _filter_and_page(
        app,
        req,
        repo.comments.values(),
        lambda c: app.renderer.comment(repo, c),
        sorts=("created", "updated"),
    )


def _comment(app: App, req: Request, repo: Repo) -> Comment:
    comment = repo.comments.get(int(req.params["comment_id"]))
    if comment is None:
        raise not_found()
    return comment


def get_comment(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    return Reply(200, app.renderer.comment(repo, _comment(app, req, repo)))


def update_comment(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    comment = _comment(app, req, repo)
    if comment.user.lower() != req.login.lower():
        _require_push(app, req, repo)
    body = req.json_object().get("body")
    if not isinstance(body, str) or not body:
        raise validation_failed(
            {"resource": "IssueComment", "code": "missing_field", "field": "body"}
        )
    app.model.edit_comment(repo, comment, body)
    return Reply(200, app.renderer.comment(repo, comment))


def delete_comment(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    comment = _comment(app, req, repo)
    if comment.user.lower() != req.login.lower():
        _require_push(app, req, repo)
    del repo.comments[comment.id]
    return Reply(204)


# -- labels and assignees on issues -----------------------------------------------------------


def _issue_labels(app: App, repo: Repo, issue: Issue) -> list[dict[str, Any]]:
    return [app.renderer.label(repo, app.model.ensure_label(repo, n)) for n in issue.labels]


def list_issue_labels(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    return app.paginate(req, _issue_labels(app, repo, _issue(app, req, repo)))


def add_issue_labels(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue = _issue(app, req, repo)
    _require_push(app, req, repo)
    names = _string_list(req.json(), "labels")
    if not names:
        raise validation_failed({"resource": "Label", "code": "missing_field", "field": "labels"})
    for name in names:
        app.model.add_label(repo, issue, name, actor=req.login)
    return Reply(200, _issue_labels(app, repo, issue))


def set_issue_labels(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue = _issue(app, req, repo)
    _require_push(app, req, repo)
    app.model.set_labels(repo, issue, _string_list(req.json(), "labels"), actor=req.login)
    issue.updated_at = app.model.now()
    return Reply(200, _issue_labels(app, repo, issue))


def remove_issue_label(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue = _issue(app, req, repo)
    _require_push(app, req, repo)
    if not app.model.remove_label(repo, issue, req.params["name"], actor=req.login):
        raise HTTPError(
            404,
            "Label does not exist",
            documentation_url="https://docs.github.com/rest/issues/labels#remove-a-label-from-an-issue",
        )
    return Reply(200, _issue_labels(app, repo, issue))


def list_issue_events(app: App, req: Request) -> Reply:
    """``GET /repos/{o}/{r}/issues/{n}/events``: the issue's events, oldest first."""
    repo = _repo(app, req)
    issue = _issue(app, req, repo)
    return app.paginate(req, [app.renderer.issue_event(repo, e) for e in issue.events])


def add_assignees(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue = _issue(app, req, repo)
    _require_push(app, req, repo)
    for login in _string_list(req.json_object(), "assignees"):
        app.model.add_assignee(repo, issue, login)
    return Reply(201, app.renderer.issue(repo, issue))


def remove_assignees(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue = _issue(app, req, repo)
    _require_push(app, req, repo)
    for login in _string_list(req.json_object(), "assignees"):
        app.model.remove_assignee(repo, issue, login)
    return Reply(200, app.renderer.issue(repo, issue))


# -- reactions ------------------------------------------------------------------------------


def _reaction_target(app: App, req: Request, repo: Repo) -> Any:
    if "number" in req.params:
        return _issue(app, req, repo)
    if "review_comment_id" in req.params:
        comment = repo.review_comments.get(int(req.params["review_comment_id"]))
        if comment is None:
            raise not_found()
        return comment
    return _comment(app, req, repo)


def create_reaction(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    target = _reaction_target(app, req, repo)
    content = req.json_object().get("content")
    if content not in REACTIONS:
        raise validation_failed(
            {"resource": "Reaction", "code": "invalid", "field": "content", "value": content}
        )
    reaction, created = app.model.add_reaction(target, user=req.login, content=content)
    return Reply(201 if created else 200, app.renderer.reaction(reaction))


def delete_reaction(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    target = _reaction_target(app, req, repo)
    reaction_id = int(req.params["reaction_id"])
    for reaction in target.reactions:
        # Only the person who reacted can take the reaction back.
        if reaction.id == reaction_id and reaction.user.lower() == req.login.lower():
            target.reactions.remove(reaction)
            return Reply(204)
    raise not_found()


def list_reactions(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    target = _reaction_target(app, req, repo)
    content = req.arg("content")
    reactions = [r for r in target.reactions if content is None or r.content == content]
    return app.paginate(req, [app.renderer.reaction(r) for r in reactions])


# -- pull requests --------------------------------------------------------------------------


def list_pulls(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    state = _choice(req, "state", "open", ("open", "closed", "all"))
    sort = _choice(req, "sort", "created", ("created", "updated", "popularity", "long-running"))
    direction = _choice(
        req, "direction", "desc" if sort != "long-running" else "asc", ("asc", "desc")
    )
    head = req.arg("head")
    base = req.arg("base")
    heads = _git.heads(repo.git_dir)
    items = []
    for issue in repo.issues.values():
        if issue.pull is None or state not in ("all", issue.state):
            continue
        if head is not None:
            owner, _, branch = head.rpartition(":")
            if owner and owner.lower() != repo.owner.lower():
                continue
            if branch != issue.pull.head_ref:
                continue
        if base is not None and base != issue.pull.base_ref:
            continue
        items.append(issue)
    key = "updated_at" if sort == "updated" else "created_at"
    items.sort(key=lambda i: (getattr(i, key), i.number), reverse=direction == "desc")
    return app.paginate(req, [app.renderer.pull(repo, i, heads) for i in items])


def get_pull(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue, _ = _pull(app, req, repo)
    return Reply(200, app.renderer.pull(repo, issue, _git.heads(repo.git_dir), full=True))


def create_pull(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    data = req.json_object()
    for required in ("head", "base"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise validation_failed(
                {"resource": "PullRequest", "code": "missing_field", "field": required}
            )
    if not isinstance(data.get("title"), str) or not data["title"]:
        raise validation_failed(
            {"resource": "PullRequest", "code": "missing_field", "field": "title"}
        )
    issue = open_pull(
        app,
        repo,
        author=req.login,
        head=data["head"],
        base=data["base"],
        title=data["title"],
        body=data.get("body") if isinstance(data.get("body"), str) else None,
        draft=bool(data.get("draft", False)),
    )
    return Reply(201, app.renderer.pull(repo, issue, _git.heads(repo.git_dir), full=True))


def open_pull(
    app: App,
    repo: Repo,
    *,
    author: str,
    head: str,
    base: str,
    title: str,
    body: str | None,
    draft: bool,
) -> Issue:
    """Create a pull request with GitHub's checks; also used by the test helpers."""
    heads = _git.heads(repo.git_dir)
    head_owner, _, head_ref = head.rpartition(":")
    if head_owner and head_owner.lower() != repo.owner.lower():
        # Cross-fork pull requests are not simulated: the head must live in this repo.
        raise validation_failed({"resource": "PullRequest", "field": "head", "code": "invalid"})
    if base not in heads:
        raise validation_failed({"resource": "PullRequest", "field": "base", "code": "invalid"})
    if head_ref not in heads:
        raise validation_failed({"resource": "PullRequest", "field": "head", "code": "invalid"})
    for other in repo.issues.values():
        if (
            other.pull is not None
            and other.state == "open"
            and other.pull.head_ref == head_ref
            and other.pull.base_ref == base
        ):
            raise validation_failed(
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": f"A pull request already exists for {repo.owner}:{head_ref}.",
                }
            )
    if _git.count_commits(repo.git_dir, heads[base], heads[head_ref]) == 0:
        raise validation_failed(
            {
                "resource": "PullRequest",
                "code": "custom",
                "message": f"No commits between {base} and {head_ref}",
            }
        )
    pull = PullData(
        head_ref=head_ref,
        base_ref=base,
        draft=draft,
        head_sha=heads[head_ref],
        base_sha=heads[base],
    )
    return app.model.create_issue(repo, title=title, body=body, author=author, pull=pull)


def update_pull(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue, pull = _pull(app, req, repo)
    if issue.user.lower() != req.login.lower():
        _require_push(app, req, repo)
    data = req.json_object()
    heads = _git.heads(repo.git_dir)
    if "title" in data and isinstance(data["title"], str):
        issue.title = data["title"]
    if "body" in data:
        issue.body = data["body"] if isinstance(data["body"], str) else None
    if "base" in data:
        if data["base"] not in heads:
            raise validation_failed({"resource": "PullRequest", "field": "base", "code": "invalid"})
        pull.base_ref = data["base"]
    if "state" in data:
        state = data["state"]
        if state not in ("open", "closed"):
            raise validation_failed(
                {"resource": "PullRequest", "code": "invalid", "field": "state", "value": state}
            )
        if pull.merged_at is not None and state == "open":
            raise validation_failed(
                {"resource": "PullRequest", "code": "custom",
                 "message": "Cannot reopen a merged pull request"}
            )  # fmt: skip
        app.model.set_state(issue, state, actor=req.login, reason=None)
    issue.updated_at = app.model.now()
    return Reply(200, app.renderer.pull(repo, issue, heads, full=True))


# -- review comments --------------------------------------------------------------------------


# GitHub's review-comment lists accept "created_at" as a synonym of "created".
_REVIEW_SORTS = ("created", "updated", "created_at")


def list_repo_review_comments(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    return _filter_and_page(
        app,
        req,
        repo.review_comments.values(),
        lambda c: app.renderer.review_comment(repo, c),
        sorts=_REVIEW_SORTS,
    )


def list_pull_review_comments(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue, _ = _pull(app, req, repo)
    return _filter_and_page(
        app,
        req,
        (c for c in repo.review_comments.values() if c.number == issue.number),
        lambda c: app.renderer.review_comment(repo, c),
        sorts=_REVIEW_SORTS,
    )


def get_review_comment(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    comment = repo.review_comments.get(int(req.params["review_comment_id"]))
    if comment is None:
        raise not_found()
    return Reply(200, app.renderer.review_comment(repo, comment))


def reply_to_review_comment(app: App, req: Request) -> Reply:
    repo = _repo(app, req)
    issue, _ = _pull(app, req, repo)
    parent = repo.review_comments.get(int(req.params["review_comment_id"]))
    if parent is None or parent.number != issue.number:
        raise not_found()
    body = req.json_object().get("body")
    if not isinstance(body, str) or not body:
        raise validation_failed(
            {"resource": "PullRequestReviewComment", "code": "missing_field", "field": "body"}
        )
    comment = add_review_comment_locked(
        app.model, repo, issue, author=req.login, body=body, path=parent.path,
        line=parent.line, in_reply_to=parent.id,
    )  # fmt: skip
    return Reply(201, app.renderer.review_comment(repo, comment))


def add_review_comment_locked(
    model: Model,
    repo: Repo,
    issue: Issue,
    *,
    author: str,
    body: str,
    path: str,
    line: int,
    in_reply_to: int | None = None,
) -> ReviewComment:
    """Create a review comment on ``issue`` (a PR); the caller holds ``model.lock``."""
    pull = issue.pull
    if pull is None:
        raise UnknownItemError("pull request", repo.full_name, issue.number)
    heads = _git.heads(repo.git_dir)
    head_sha = heads.get(pull.head_ref, pull.head_sha)
    now = model.now()
    parent = repo.review_comments.get(in_reply_to) if in_reply_to is not None else None
    comment = ReviewComment(
        id=model.new_id(),
        number=issue.number,
        # A reply belongs to the review of the comment it answers.
        review_id=parent.review_id if parent is not None else model.new_id(),
        user=model.user(author).login,
        body=body,
        path=path,
        line=line,
        side="RIGHT",
        diff_hunk=_diff_hunk(repo.git_dir, pull.base_sha, head_sha, path, line),
        commit_id=head_sha,
        original_commit_id=parent.original_commit_id if parent is not None else head_sha,
        in_reply_to_id=parent.id if parent is not None else None,
        created_at=now,
        updated_at=now,
    )
    repo.review_comments[comment.id] = comment
    issue.updated_at = now
    model.emit(
        ModelEvent(
            event="pull_request_review_comment", action="created", repo=repo, sender=author,
            issue=issue, review_comment=comment,
        )
    )  # fmt: skip
    return comment


def _diff_hunk(git_dir: Path, base: str, head: str, path: str, line: int) -> str:
    """The diff hunk up to ``line`` of ``path``, as GitHub shows above a review comment."""
    diff = _git.run_git(git_dir, "diff", "--unified=3", f"{base}...{head}", "--", path)
    hunk: list[str] = []
    new_line = 0
    for text in diff.splitlines():
        if text.startswith("@@"):
            if new_line >= line and hunk:
                break
            hunk = [text]
            start = text.split("+", 1)[1].split(" ", 1)[0].split(",")[0]
            new_line = int(start) - 1
            continue
        if not hunk:
            continue
        hunk.append(text)
        if not text.startswith("-"):
            new_line += 1
        if new_line >= line:
            break
    return "\n".join(hunk) if hunk else f"@@ -0,0 +1,{line} @@"


# -- search ---------------------------------------------------------------------------------

_TOKEN = re.compile(r'(-?)([A-Za-z_-]+):("(?:[^"]*)"|\S+)|"([^"]*)"|(\S+)')


def search_issues(app: App, req: Request) -> Reply:
    query = req.arg("q")
    if not query:
        raise validation_failed({"resource": "Search", "field": "q", "code": "missing"})
    sort = req.arg("sort")
    if sort is not None:
        _choice(req, "sort", sort, ("comments", "reactions", "created", "updated", "interactions"))
    order = _choice(req, "order", "desc", ("asc", "desc"))
    filters: list[Callable[[Repo, Issue], bool]] = []
    repos: list[Repo] = []
    for negate, key, value, quoted, word in _TOKEN.findall(query):
        if not key:
            filters.append(_text_filter(quoted or word))
            continue
        test = _qualifier(app, key.lower(), value.strip('"'), repos)
        if test is None:
            # An unknown qualifier is plain text to GitHub's search too.
            filters.append(_text_filter(f"{key}:{value}"))
        elif negate:
            filters.append(_negated(test))
        else:
            filters.append(test)
    candidates = repos or [
        r
        for r in app.model.repos.values()
        if not r.private or app.model.role(r, req.login) is not None
    ]
    found = [
        (repo, issue)
        for repo in candidates
        for issue in repo.issues.values()
        if all(f(repo, issue) for f in filters)
    ]
    if sort in ("created", "updated"):
        attr = f"{sort}_at"
        found.sort(key=lambda pair: (getattr(pair[1], attr), pair[1].id), reverse=order == "desc")
    elif sort == "comments":
        found.sort(
            key=lambda pair: sum(
                1 for c in pair[0].comments.values() if c.number == pair[1].number
            ),
            reverse=order == "desc",
        )
    else:
        # "Best match": newest first is as good a relevance as any for exact filters.
        found.sort(key=lambda pair: pair[1].id, reverse=True)
    items = [
        # The search schema's body is a non-nullable string, unlike the issue schema's.
        {**app.renderer.issue(repo, issue), "body": issue.body or "", "score": 1.0}
        for repo, issue in found
    ]
    # GitHub caps search results at 1000 and pages through them like any list.
    page = app.paginate(req, items[:1000])
    page.data = {
        "total_count": len(items),
        "incomplete_results": False,
        "items": page.data,
        "search_type": "lexical",
    }
    return page


def _text_filter(text: str) -> Callable[[Repo, Issue], bool]:
    needle = text.lower()
    return lambda r, i: needle in (i.title + " " + (i.body or "")).lower()


def _negated(test: Callable[[Repo, Issue], bool]) -> Callable[[Repo, Issue], bool]:
    return lambda r, i: not test(r, i)


# One branch per search qualifier reads better than a table of factories.
def _qualifier(  # noqa: PLR0911, PLR0912
    app: App, key: str, value: str, repos: list[Repo]
) -> Callable[[Repo, Issue], bool] | None:
    lower = value.lower()
    if key == "repo":
        owner, _, name = value.partition("/")
        repo = app.model.find_repo(owner, name)
        if repo is None:
            raise validation_failed(
                {
                    "message": "The listed users and repositories cannot be searched either "
                    "because the resources do not exist or you do not have permission to "
                    "view them.",
                    "resource": "Search",
                    "field": "q",
                    "code": "invalid",
                }
            )
        repos.append(repo)
        return lambda r, i: r is repo
    if key in ("user", "org", "owner"):
        return lambda r, i: r.owner.lower() == lower
    if key in ("is", "type", "state"):
        return {
            "issue": lambda r, i: i.pull is None,
            "pr": lambda r, i: i.pull is not None,
            "pull-request": lambda r, i: i.pull is not None,
            "open": lambda r, i: i.state == "open",
            "closed": lambda r, i: i.state == "closed",
            "merged": lambda r, i: i.pull is not None and i.pull.merged_at is not None,
            "unmerged": lambda r, i: i.pull is not None and i.pull.merged_at is None,
            "draft": lambda r, i: i.pull is not None and i.pull.draft,
        }.get(lower)
    if key == "label":
        names = {n.strip().lower() for n in value.split(",")}
        return lambda r, i: any(n.lower() in names for n in i.labels)
    if key == "author":
        return lambda r, i: i.user.lower() == lower
    if key == "assignee":
        return lambda r, i: lower in {a.lower() for a in i.assignees}
    if key == "mentions":
        return lambda r, i: _mentioned_in(r, i, value)
    if key == "involves":
        return lambda r, i: (
            i.user.lower() == lower
            or lower in {a.lower() for a in i.assignees}
            or _mentioned_in(r, i, value)
            or any(c.user.lower() == lower for c in r.comments.values() if c.number == i.number)
        )
    if key == "commenter":
        return lambda r, i: any(
            c.user.lower() == lower for c in r.comments.values() if c.number == i.number
        )
    if key == "no":
        return {
            "assignee": lambda r, i: not i.assignees,
            "label": lambda r, i: not i.labels,
        }.get(lower)
    if key in ("created", "updated"):
        return _date_qualifier(key, value)
    if key == "in":
        return lambda r, i: True
    return None


def _date_qualifier(key: str, value: str) -> Callable[[Repo, Issue], bool] | None:
    match = re.fullmatch(r"(>=|<=|>|<)?(.+)", value)
    if match is None:
        return None
    op, raw = match.group(1) or ">=", match.group(2)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = int(moment.timestamp())
    attr = f"{key}_at"
    compare: dict[str, Callable[[int], bool]] = {
        ">=": lambda t: t >= stamp,
        ">": lambda t: t > stamp,
        "<=": lambda t: t <= stamp,
        "<": lambda t: t < stamp,
    }
    check = compare[op]
    return lambda r, i: check(getattr(i, attr))


# -- GitHub Apps: JWT-authenticated routes and installation tokens --------------------------

APP_PERMISSIONS = {"issues": "write", "pull_requests": "write", "contents": "write",
                   "metadata": "read"}  # fmt: skip


def _requesting_app(app: App, req: Request) -> int:
    return int(req.login.removeprefix("app/"))


def render_installation(app: App, inst: Installation) -> dict[str, Any]:
    account = app.model.user(inst.account)
    record = app.apps[inst.app_id]
    api = app.renderer.api
    return {
        "id": inst.id,
        "account": app.renderer.user(account),
        "app_id": inst.app_id,
        "app_slug": record.slug,
        "target_id": account.id,
        "target_type": "Organization" if account.type == "Organization" else "User",
        "repository_selection": "selected",
        "permissions": APP_PERMISSIONS if inst.permissions is None else dict(inst.permissions),
        "events": ["issue_comment", "issues", "pull_request_review_comment"],
        "access_tokens_url": f"{api}/app/installations/{inst.id}/access_tokens",
        "repositories_url": f"{api}/installation/repositories",
        "html_url": f"{app.renderer.web}/settings/installations/{inst.id}",
        "single_file_name": None,
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z",
        "suspended_at": None,
        "suspended_by": None,
    }


def get_app(app: App, req: Request) -> Reply:
    record = app.apps[_requesting_app(app, req)]
    events = ["issue_comment", "issues", "pull_request_review_comment"]
    return Reply(
        200,
        {"id": record.id, "slug": record.slug, "name": record.slug, "owner": None,
         "permissions": APP_PERMISSIONS, "events": events},
    )  # fmt: skip


def get_repo_installation(app: App, req: Request) -> Reply:
    app_id = _requesting_app(app, req)
    repo = app.model.find_repo(req.params["owner"], req.params["repo"])
    if repo is not None:
        for inst in app.installations.values():
            if inst.app_id == app_id and repo.full_name.lower() in {r.lower() for r in inst.repos}:
                return Reply(200, render_installation(app, inst))
    raise not_found()


def create_installation_token(app: App, req: Request) -> Reply:
    inst = app.installations.get(int(req.params["installation_id"]))
    if inst is None or inst.app_id != _requesting_app(app, req):
        raise not_found()
    token = "ghs_" + secrets.token_hex(18)
    app.tokens[token] = app.apps[inst.app_id].bot_login
    app.installation_tokens[token] = inst.id
    # Whole seconds, as GitHub's expires_at: the token is refused from that second on.
    expires = int(app.model.clock() + app.installation_token_seconds)
    app.token_expiry[token] = float(expires)
    granted = APP_PERMISSIONS if inst.permissions is None else dict(inst.permissions)
    return Reply(
        201,
        {"token": token, "expires_at": iso(expires), "permissions": granted,
         "repository_selection": "selected"},
    )  # fmt: skip


def list_app_installations(app: App, req: Request) -> Reply:
    app_id = _requesting_app(app, req)
    found = [render_installation(app, i) for i in app.installations.values() if i.app_id == app_id]
    return app.paginate(req, found)


def list_installation_repos(app: App, req: Request) -> Reply:
    token = req.headers.get("authorization", "").partition(" ")[2].strip()
    inst = app.installations.get(app.installation_tokens.get(token, -1))
    if inst is None:
        raise HTTPError(403, "This endpoint requires an installation access token.")
    repos = [app.model.repo(name) for name in inst.repos]
    reply = app.paginate(req, [app.renderer.repo(r) for r in repos])
    reply.data = {"total_count": len(repos), "repository_selection": "selected",
                  "repositories": reply.data}  # fmt: skip
    return reply


# -- the route table --------------------------------------------------------------------------


def _r(method: str, path: str, handler: Handler, resource: str | None = "core") -> Route:
    return Route(method, re.compile(path), handler, resource)


ROUTES: list[Route] = [
    _r("GET", "/user", get_user),
    Route("GET", re.compile("/app"), get_app, None, auth="jwt"),
    Route("GET", re.compile(_REPO + "/installation"), get_repo_installation, None, auth="jwt"),
    Route("GET", re.compile("/app/installations"), list_app_installations, None, auth="jwt"),
    Route(
        "POST",
        re.compile(r"/app/installations/(?P<installation_id>\d+)/access_tokens"),
        create_installation_token,
        None,
        auth="jwt",
    ),
    _r("GET", "/installation/repositories", list_installation_repos),
    # /rate_limit never counts against the limit, as on GitHub.
    _r("GET", "/rate_limit", get_rate_limit, None),
    _r("GET", "/search/issues", search_issues, "search"),
    _r("GET", _REPO, get_repo),
    _r("GET", _REPO + r"/collaborators/(?P<user>[^/]+)/permission", get_permission),
    _r("GET", _REPO + "/labels", list_repo_labels),
    _r("POST", _REPO + "/labels", create_repo_label),
    _r("GET", _REPO + r"/labels/(?P<name>[^/]+)", get_repo_label),
    _r("GET", _REPO + r"/git/matching-refs/(?P<ref>.*)", list_matching_refs),
    _r("GET", _REPO + "/issues", list_issues),
    _r("POST", _REPO + "/issues", create_issue),
    _r("GET", _REPO + "/issues/comments", list_repo_comments),
    _r("GET", _REPO + r"/issues/comments/(?P<comment_id>\d+)", get_comment),
    _r("PATCH", _REPO + r"/issues/comments/(?P<comment_id>\d+)", update_comment),
    _r("DELETE", _REPO + r"/issues/comments/(?P<comment_id>\d+)", delete_comment),
    _r("GET", _REPO + r"/issues/comments/(?P<comment_id>\d+)/reactions", list_reactions),
    _r("POST", _REPO + r"/issues/comments/(?P<comment_id>\d+)/reactions", create_reaction),
    _r("GET", _REPO + r"/issues/(?P<number>\d+)", get_issue),
    _r("PATCH", _REPO + r"/issues/(?P<number>\d+)", update_issue),
    _r("GET", _REPO + r"/issues/(?P<number>\d+)/comments", list_issue_comments),
    _r("POST", _REPO + r"/issues/(?P<number>\d+)/comments", create_issue_comment),
    _r("GET", _REPO + r"/issues/(?P<number>\d+)/labels", list_issue_labels),
    _r("POST", _REPO + r"/issues/(?P<number>\d+)/labels", add_issue_labels),
    _r("PUT", _REPO + r"/issues/(?P<number>\d+)/labels", set_issue_labels),
    _r("DELETE", _REPO + r"/issues/(?P<number>\d+)/labels/(?P<name>[^/]+)", remove_issue_label),
    _r("GET", _REPO + r"/issues/(?P<number>\d+)/events", list_issue_events),
    _r("POST", _REPO + r"/issues/(?P<number>\d+)/assignees", add_assignees),
    _r("DELETE", _REPO + r"/issues/(?P<number>\d+)/assignees", remove_assignees),
    _r("GET", _REPO + r"/issues/(?P<number>\d+)/reactions", list_reactions),
    _r(
        "DELETE",
        _REPO + r"/issues/(?P<number>\d+)/reactions/(?P<reaction_id>\d+)",
        delete_reaction,
    ),
    _r(
        "DELETE",
        _REPO + r"/issues/comments/(?P<comment_id>\d+)/reactions/(?P<reaction_id>\d+)",
        delete_reaction,
    ),
    _r(
        "DELETE",
        _REPO + r"/pulls/comments/(?P<review_comment_id>\d+)/reactions/(?P<reaction_id>\d+)",
        delete_reaction,
    ),
    _r("POST", _REPO + r"/issues/(?P<number>\d+)/reactions", create_reaction),
    _r("GET", _REPO + "/pulls", list_pulls),
    _r("POST", _REPO + "/pulls", create_pull),
    _r("GET", _REPO + "/pulls/comments", list_repo_review_comments),
    _r("GET", _REPO + r"/pulls/comments/(?P<review_comment_id>\d+)", get_review_comment),
    _r("GET", _REPO + r"/pulls/comments/(?P<review_comment_id>\d+)/reactions", list_reactions),
    _r("POST", _REPO + r"/pulls/comments/(?P<review_comment_id>\d+)/reactions", create_reaction),
    _r("GET", _REPO + r"/pulls/(?P<number>\d+)", get_pull),
    _r("PATCH", _REPO + r"/pulls/(?P<number>\d+)", update_pull),
    _r("GET", _REPO + r"/pulls/(?P<number>\d+)/comments", list_pull_review_comments),
    _r(
        "POST",
        _REPO + r"/pulls/(?P<number>\d+)/comments/(?P<review_comment_id>\d+)/replies",
        reply_to_review_comment,
    ),
]
