"""``GitHubSimulator``: the public face of the simulator, its helpers and its seeds."""

from __future__ import annotations

import copy
import secrets
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from cgr_discovery.testing import _git
from cgr_discovery.testing._errors import (
    SimulatorError,
    SimulatorServerError,
    UnknownItemError,
)
from cgr_discovery.testing._faults import Faults, RequestRecord
from cgr_discovery.testing._http import (
    App,
    AppRecord,
    HTTPError,
    Installation,
    start_server,
    stop_server,
)
from cgr_discovery.testing._model import (
    ROLES,
    Comment,
    Issue,
    Model,
    Reaction,
    Repo,
    ReviewComment,
    Role,
    User,
    UserType,
)
from cgr_discovery.testing._routes import (
    ROUTES,
    add_review_comment_locked,
    open_pull,
    render_installation,
)
from cgr_discovery.testing._webhooks import Delivery, Hook, Webhooks

DEFAULT_BOT = "cgr-bot"


def _author(model: Model, login: str) -> _git.Author:
    user = model.user(login)
    return _git.Author(
        name=user.name or user.login,
        email=f"{user.id}+{user.login}@users.noreply.github.com",
        epoch=model.now(),
    )


class GitHubSimulator:
    """A stand-in for GitHub on 127.0.0.1: REST API v3 plus git smart HTTP.

    ``with GitHubSimulator(tmp_path) as gh:`` starts the server; ``gh.url`` is the API
    base URL, ``gh.token`` the bot account's token, ``gh.git_url("o", "r")`` a clone URL.
    Bare repositories live under ``root``. Everything the helpers do happens under the
    same lock the request handlers take, so a test may mutate state while a client polls.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        bot_login: str = DEFAULT_BOT,
        token: str | None = None,
        port: int = 0,
    ) -> None:
        self.root = Path(root)
        self.port = port
        self.model = Model()
        self.bot_login = bot_login
        self._token = token or "ghp_" + secrets.token_hex(18)
        self._tokens: dict[str, str] = {}
        self._app = App(
            model=self.model,
            git_root=self.root / "git",
            tokens=self._tokens,
            routes=ROUTES,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._webhooks = Webhooks(self.model, self._app.renderer, self._app.faults)
        self.add_user(bot_login)
        self._tokens[self._token] = bot_login

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise SimulatorError("the GitHub simulator is already running")
        (self.root / "git").mkdir(parents=True, exist_ok=True)
        self._server, self._thread = start_server(self._app, self.port)
        return self

    def close(self) -> None:
        """Stop the server, close every connection and join its threads.

        Raises ``SimulatorServerError`` if a request crashed inside the simulator.
        """
        self._webhooks.close()
        if self._server is not None and self._thread is not None:
            stop_server(self._server, self._thread)
            self._server = self._thread = None
        if self._app.crashes:
            crashes, self._app.crashes = self._app.crashes, []
            raise SimulatorServerError(crashes)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except SimulatorServerError:
            if exc is None:
                raise

    def __repr__(self) -> str:
        # Never the token.
        state = self.url if self._server is not None else "stopped"
        return f"<GitHubSimulator {state} root={str(self.root)!r}>"

    # -- addresses and credentials -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:40123`` (no trailing slash)."""
        if self._server is None:
            raise SimulatorError("the GitHub simulator is not running; call start() first")
        return self._app.renderer.api

    @property
    def token(self) -> str:
        """The bot account's token (``Authorization: token …`` or ``Bearer …``)."""
        return self._token

    def git_url(self, owner: str, repo: str) -> str:
        """The smart-HTTP clone URL of a repository (the token is not in it)."""
        return f"{self.url}/{owner}/{repo}.git"

    def token_for(self, login: str) -> str:
        """A token that authenticates as ``login`` (created on first use)."""
        with self.model.lock:
            user = self.model.user(login)
            for token, owner in self._tokens.items():
                if owner == user.login:
                    return token
            token = "ghp_" + secrets.token_hex(18)
            self._tokens[token] = user.login
            return token

    # -- webhooks ------------------------------------------------------------------------------

    def add_webhook(self, url: str, secret: str, *, events: Iterable[str] | None = None) -> Hook:
        """Send signed deliveries of this simulator's events to ``url`` (all repositories).

        Events: ``issues`` (labeled), ``issue_comment`` (created, edited),
        ``pull_request_review_comment`` (created), ``installation_repositories`` (added,
        removed); all of them unless ``events`` names some. Deliveries are sent in the
        background in order; see ``deliveries``, ``wait_for_deliveries``, ``redeliver``
        and ``faults.drop_delivery``.
        """
        return self._webhooks.add_hook(url, secret, frozenset(events) if events else None)

    def remove_webhook(self, hook: Hook) -> None:
        self._webhooks.remove_hook(hook)

    @property
    def deliveries(self) -> list[Delivery]:
        """The delivery log, oldest first (redeliveries included)."""
        return self._webhooks.deliveries()

    def wait_for_deliveries(self, timeout: float = 10.0) -> None:
        """Block until every delivery so far was attempted (sent, failed or dropped)."""
        if not self._webhooks.wait(timeout):
            raise SimulatorError(f"webhook deliveries still pending after {timeout} s")

    def redeliver(self, delivery_id: int) -> Delivery:
        """Send a logged delivery again, same ``X-GitHub-Delivery`` GUID and body."""
        return self._webhooks.redeliver(delivery_id)

    # -- GitHub Apps -----------------------------------------------------------------------------

    def register_app(self, app_id: int, public_key_pem: str | bytes, *, slug: str) -> str:
        """Know a GitHub App: JWTs it signs (RS256, ``iss`` = ``app_id``) are checked
        against ``public_key_pem``. Returns its bot login, ``<slug>[bot]``."""
        pem = public_key_pem.decode() if isinstance(public_key_pem, bytes) else public_key_pem
        record = AppRecord(id=app_id, slug=slug, public_key=pem)
        with self.model.lock:
            self._app.apps[app_id] = record
        self.add_bot(record.bot_login)
        return record.bot_login

    def install_app(
        self,
        app_id: int,
        repos: Iterable[str],
        *,
        installation_id: int | None = None,
        permissions: Mapping[str, str] | None = None,
        notify: bool = True,
    ) -> int:
        """Install a registered App on ``repos`` (one owner); returns the installation id.

        An App may be installed on several owners (one call each). Its bot gets write
        access to them; ``POST /app/installations/{id}/access_tokens`` with the App's JWT
        mints installation tokens (``ghs_…``, valid ``installation_token_seconds``), which
        reach only this installation's repositories (a write elsewhere is 403, as on
        GitHub); ``GET /app/installations`` lists the installations. ``permissions``
        replaces what the installation grants (default: all cgr needs). An ``installation``
        (``created``) webhook is sent unless ``notify=False``.
        """
        with self.model.lock:
            record = self._app.apps.get(app_id)
            if record is None:
                raise SimulatorError(f"no GitHub App {app_id}; call register_app() first")
            names = [self.model.repo(name).full_name for name in repos]
            if not names:
                raise SimulatorError("install_app needs at least one repository")
            ident = installation_id or self.model.new_id()
            self._app.installations[ident] = Installation(
                id=ident,
                app_id=app_id,
                account=names[0].split("/")[0],
                repos=[],
                permissions=None if permissions is None else dict(permissions),
            )
        self.add_installation_repositories(ident, *names, notify=False)
        if notify:
            with self.model.lock:
                inst = self._app.installations[ident]
                installed = [self.model.repo(name) for name in names]
                self._webhooks.emit_installation_repositories(
                    action="created",
                    installation=render_installation(self._app, inst),
                    repos=installed,
                    sender=installed[0].owner,
                    event="installation",
                )
        return ident

    @property
    def installation_token_seconds(self) -> float:
        """How long a new installation token is valid (3600 s, as on GitHub); an expired
        one is answered 401 Bad credentials, by the API and by git."""
        return self._app.installation_token_seconds

    @installation_token_seconds.setter
    def installation_token_seconds(self, seconds: float) -> None:
        self._app.installation_token_seconds = seconds

    def add_installation_repositories(
        self, installation_id: int, *repos: str, notify: bool = True
    ) -> None:
        """Add repositories to an installation (an ``installation_repositories`` "added"
        webhook unless ``notify=False``)."""
        self._change_installation(installation_id, repos, "added", notify)

    def remove_installation_repositories(self, installation_id: int, *repos: str) -> None:
        self._change_installation(installation_id, repos, "removed", True)

    def _change_installation(
        self, installation_id: int, repos: Iterable[str], action: str, notify: bool
    ) -> None:
        with self.model.lock:
            inst = self._app.installations.get(installation_id)
            if inst is None:
                raise SimulatorError(f"no installation {installation_id}")
            record = self._app.apps[inst.app_id]
            changed = [self.model.repo(name) for name in repos]
            for r in changed:
                if action == "added":
                    if r.full_name not in inst.repos:
                        inst.repos.append(r.full_name)
                    r.collaborators[record.bot_login] = "write"
                else:
                    inst.repos = [n for n in inst.repos if n != r.full_name]
                    r.collaborators.pop(record.bot_login, None)
            if notify and changed:
                self._webhooks.emit_installation_repositories(
                    action=action,
                    installation=render_installation(self._app, inst),
                    repos=changed,
                    sender=changed[0].owner,
                )

    # -- faults, rate limit, request log -------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """Fault injection: latency, error, secondary_rate_limit, drop_connection,
        drop_after_apply."""
        return self._app.faults

    def exhaust_rate_limit(self, *, resource: str = "core", reset_in: int = 60) -> None:
        """Use up the primary rate limit; it resets ``reset_in`` seconds from now."""
        self._app.rate_limits.exhaust(resource, self.model.now(), reset_in)

    def set_rate_limit(self, limit: int, *, resource: str = "core") -> None:
        """Change the primary rate limit of ``resource`` (5000 core, 30 search by default)."""
        self._app.rate_limits.set_limit(resource, limit)

    def reset_rate_limit(self) -> None:
        self._app.rate_limits.reset()

    def rate_limit(self, resource: str = "core") -> dict[str, int]:
        """``limit``, ``remaining``, ``reset`` and ``used`` of one resource right now."""
        return self._app.rate_limits.snapshot(resource, self.model.now())

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request served so far, oldest first (a copy)."""
        with self._app.log_lock:
            return list(self._app.log)

    def clear_requests(self) -> None:
        with self._app.log_lock:
            self._app.log.clear()

    def advance_clock(self, seconds: float) -> None:
        """Move the simulator's clock forward (timestamps have one-second resolution)."""
        with self.model.lock:
            self.model.clock_offset += seconds

    # -- users and repositories -----------------------------------------------------------------

    def add_user(self, login: str, *, type: UserType = "User", name: str | None = None) -> str:
        """Create an account; returns its login. An existing login is left as it is."""
        with self.model.lock:
            existing = self.model.find_user(login)
            if existing is not None:
                return existing.login
            self.model.users[login.lower()] = User(
                login=login,
                id=self.model.new_id(),
                type=type,
                name=name,
                created_at=self.model.now(),
            )
            return login

    def add_bot(self, login: str) -> str:
        """Another bot account (``type: "Bot"``), e.g. ``dependabot[bot]``."""
        return self.add_user(login, type="Bot")

    def add_org_member(self, org: str, login: str) -> None:
        """Make ``login`` a member of ``org``: its author_association becomes MEMBER."""
        with self.model.lock:
            self.model.user(login)
            self.model.org_members.setdefault(org.lower(), set()).add(login.lower())

    def create_repo(
        self,
        full_name: str,
        *,
        default_branch: str = "main",
        private: bool = False,
        description: str | None = None,
        bot_role: Role | None = "write",
        labels: Iterable[str] = (),
    ) -> str:
        """Create ``owner/name`` with a bare git repository and one initial commit.

        The owner account is created as an organisation if it does not exist; the bot
        gets ``bot_role`` on it (cgr needs write access to push and label).
        """
        owner, sep, name = full_name.partition("/")
        if not sep or not owner or not name or "/" in name:
            raise SimulatorError(f"repository name {full_name!r} must look like 'owner/name'")
        with self.model.lock:
            if self.model.find_repo(owner, name) is not None:
                raise SimulatorError(f"repository {full_name!r} already exists")
            owner = self.add_user(owner, type="Organization")
            git_dir = self.root / "git" / owner.lower() / f"{name.lower()}.git"
            _git.init_bare(
                git_dir,
                default_branch,
                _author(self.model, self.bot_login),
                f"# {name}\n\nA repository served by the cgr GitHub simulator.\n",
            )
            now = self.model.now()
            repo = Repo(
                owner=owner,
                name=name,
                id=self.model.new_id(),
                default_branch=default_branch,
                private=private,
                description=description,
                git_dir=git_dir,
                created_at=now,
                pushed_at=now,
                updated_at=now,
            )
            self.model.repos[(owner.lower(), name.lower())] = repo
            if bot_role is not None:
                self.add_collaborator(full_name, self.bot_login, role=bot_role)
            for label in labels:
                self.model.ensure_label(repo, label)
            return repo.full_name

    def add_collaborator(self, repo: str, login: str, *, role: Role = "write") -> str:
        """Give ``login`` (created if new) ``role`` on ``repo``."""
        if role not in ROLES:
            raise SimulatorError(f"role {role!r} is not one of {', '.join(ROLES)}")
        with self.model.lock:
            login = self.add_user(login)
            self.model.repo(repo).collaborators[login] = role
            return login

    def git_dir(self, repo: str) -> Path:
        """The bare repository on disk behind ``repo``."""
        with self.model.lock:
            return self.model.repo(repo).git_dir

    def branches(self, repo: str) -> dict[str, str]:
        """Every branch of ``repo`` and its head sha, read from git."""
        return _git.heads(self.git_dir(repo))

    # -- acting as a person -----------------------------------------------------------------------

    def create_issue(
        self,
        repo: str,
        title: str,
        body: str | None = "",
        *,
        author: str | None = None,
        labels: Iterable[str] = (),
        assignees: Iterable[str] = (),
    ) -> int:
        """Open an issue as ``author`` (the bot by default); returns its number."""
        with self.model.lock:
            issue = self.model.create_issue(
                self.model.repo(repo),
                title=title,
                body=body,
                author=author or self.bot_login,
                labels=list(labels),
                assignees=list(assignees),
            )
            return issue.number

    def add_comment(self, repo: str, number: int, body: str, *, author: str) -> int:
        """Comment on an issue or pull request as ``author``; returns the comment id."""
        with self.model.lock:
            r = self.model.repo(repo)
            return self.model.add_comment(
                r, self.model.issue(r, number), author=author, body=body
            ).id

    def edit_comment(self, repo: str, comment_id: int, body: str) -> None:
        """Edit an issue comment (bumps the comment's ``updated_at``)."""
        with self.model.lock:
            r = self.model.repo(repo)
            self.model.edit_comment(r, self._comment(r, comment_id), body)

    def add_labels(self, repo: str, number: int, *labels: str, actor: str | None = None) -> None:
        """Label an issue as ``actor`` (the repository's owner, an admin, by default);
        each new label is a ``labeled`` event in the issue events API."""
        with self.model.lock:
            r = self.model.repo(repo)
            issue = self.model.issue(r, number)
            for label in labels:
                self.model.add_label(r, issue, label, actor=actor or r.owner)

    def remove_label(self, repo: str, number: int, label: str, *, actor: str | None = None) -> None:
        with self.model.lock:
            r = self.model.repo(repo)
            self.model.remove_label(r, self.model.issue(r, number), label, actor=actor or r.owner)

    def assign(self, repo: str, number: int, *logins: str) -> None:
        with self.model.lock:
            r = self.model.repo(repo)
            issue = self.model.issue(r, number)
            for login in logins:
                if not self.model.add_assignee(r, issue, login):
                    raise SimulatorError(f"{login!r} has no access to {repo!r} to be assigned")

    def close_issue(self, repo: str, number: int, *, actor: str | None = None) -> None:
        with self.model.lock:
            issue = self.model.issue(self.model.repo(repo), number)
            self.model.set_state(issue, "closed", actor=actor or self.bot_login, reason=None)

    def reopen_issue(self, repo: str, number: int, *, actor: str | None = None) -> None:
        with self.model.lock:
            issue = self.model.issue(self.model.repo(repo), number)
            self.model.set_state(issue, "open", actor=actor or self.bot_login, reason=None)

    def edit_issue(
        self, repo: str, number: int, *, title: str | None = None, body: str | None = None
    ) -> None:
        with self.model.lock:
            issue = self.model.issue(self.model.repo(repo), number)
            if title is not None:
                issue.title = title
            if body is not None:
                issue.body = body
            issue.updated_at = self.model.now()

    def add_reaction(
        self,
        repo: str,
        *,
        user: str,
        content: str,
        number: int | None = None,
        comment_id: int | None = None,
        review_comment_id: int | None = None,
    ) -> None:
        """React as ``user`` to an issue/PR, an issue comment or a review comment."""
        with self.model.lock:
            r = self.model.repo(repo)
            target: Issue | Comment | ReviewComment
            if number is not None:
                target = self.model.issue(r, number)
            elif comment_id is not None:
                target = self._comment(r, comment_id)
            elif review_comment_id is not None:
                target = self._review_comment(r, review_comment_id)
            else:
                raise SimulatorError("add_reaction needs number, comment_id or review_comment_id")
            self.model.add_reaction(target, user=user, content=content)

    def commit(
        self,
        repo: str,
        branch: str,
        files: Mapping[str, str | bytes],
        *,
        message: str = "Change files",
        author: str | None = None,
        start_point: str | None = None,
    ) -> str:
        """Commit ``files`` on ``branch`` server-side (a new branch starts at ``start_point``,
        the default branch unless given); returns the new head sha."""
        with self.model.lock:
            r = self.model.repo(repo)
            encoded = {p: c.encode() if isinstance(c, str) else c for p, c in files.items()}
            sha = _git.commit_files(
                r.git_dir,
                branch,
                encoded,
                message,
                _author(self.model, author or self.bot_login),
                start_point=start_point or r.default_branch,
            )
            r.pushed_at = self.model.now()
            return sha

    def create_pull_request(
        self,
        repo: str,
        head: str,
        title: str,
        body: str | None = "",
        *,
        author: str | None = None,
        base: str | None = None,
        draft: bool = False,
    ) -> int:
        """Open a pull request from branch ``head``, with the same checks as the API."""
        with self.model.lock:
            r = self.model.repo(repo)
            try:
                issue = open_pull(
                    self._app, r, author=author or self.bot_login, head=head,
                    base=base or r.default_branch, title=title, body=body, draft=draft,
                )  # fmt: skip
            except HTTPError as exc:
                raise SimulatorError(f"cannot open pull request: {exc.payload}") from None
            return issue.number

    def merge_pull_request(self, repo: str, number: int, *, actor: str | None = None) -> str:
        """Merge a pull request (a merge commit on the base branch); returns its sha."""
        with self.model.lock:
            r = self.model.repo(repo)
            issue = self.model.issue(r, number)
            if issue.pull is None or issue.state != "open":
                raise SimulatorError(f"#{number} in {repo!r} is not an open pull request")
            pull = issue.pull
            heads = _git.heads(r.git_dir)
            author = _author(self.model, actor or self.bot_login)
            tree = _git.run_git(
                r.git_dir, "merge-tree", "--write-tree", heads[pull.base_ref], heads[pull.head_ref],
            )  # fmt: skip
            sha = _git.run_git(
                r.git_dir, "commit-tree", tree.splitlines()[0], "-p", heads[pull.base_ref],
                "-p", heads[pull.head_ref], "-m", f"Merge pull request #{number}",
                env=_git._commit_env(author),
            )  # fmt: skip
            _git.run_git(r.git_dir, "update-ref", f"refs/heads/{pull.base_ref}", sha)
            now = self.model.now()
            pull.head_sha = heads[pull.head_ref]
            pull.merged_at = now
            pull.merge_commit_sha = sha
            pull.merged_by = self.model.user(actor or self.bot_login).login
            self.model.set_state(issue, "closed", actor=actor or self.bot_login, reason=None)
            return sha

    def add_review_comment(
        self,
        repo: str,
        number: int,
        body: str,
        *,
        author: str,
        path: str,
        line: int = 1,
        in_reply_to: int | None = None,
    ) -> int:
        """A review comment on line ``line`` of ``path`` in PR ``number``; returns its id."""
        with self.model.lock:
            r = self.model.repo(repo)
            issue = self.model.issue(r, number)
            if issue.pull is None:
                raise UnknownItemError("pull request", repo, number)
            return add_review_comment_locked(
                self.model, r, issue, author=author, body=body, path=path, line=line,
                in_reply_to=in_reply_to,
            ).id  # fmt: skip

    # -- reading state -----------------------------------------------------------------------------

    def issue(self, repo: str, number: int) -> Issue:
        """A snapshot (deep copy) of an issue or pull request."""
        with self.model.lock:
            return copy.deepcopy(self.model.issue(self.model.repo(repo), number))

    def comments(self, repo: str, number: int) -> list[Comment]:
        """Snapshots of the issue comments on ``number``, oldest first."""
        with self.model.lock:
            r = self.model.repo(repo)
            self.model.issue(r, number)
            return [copy.deepcopy(c) for c in r.comments.values() if c.number == number]

    def review_comments(self, repo: str, number: int) -> list[ReviewComment]:
        with self.model.lock:
            r = self.model.repo(repo)
            return [copy.deepcopy(c) for c in r.review_comments.values() if c.number == number]

    def reactions(
        self,
        repo: str,
        *,
        number: int | None = None,
        comment_id: int | None = None,
        review_comment_id: int | None = None,
    ) -> list[Reaction]:
        with self.model.lock:
            r = self.model.repo(repo)
            if number is not None:
                return copy.deepcopy(self.model.issue(r, number).reactions)
            if comment_id is not None:
                return copy.deepcopy(self._comment(r, comment_id).reactions)
            if review_comment_id is not None:
                return copy.deepcopy(self._review_comment(r, review_comment_id).reactions)
            raise SimulatorError("reactions needs number, comment_id or review_comment_id")

    def pull_requests(self, repo: str) -> list[Issue]:
        with self.model.lock:
            r = self.model.repo(repo)
            return [copy.deepcopy(i) for i in r.issues.values() if i.pull is not None]

    def _comment(self, repo: Repo, comment_id: int) -> Comment:
        try:
            return repo.comments[comment_id]
        except KeyError:
            raise UnknownItemError("issue comment", repo.full_name, comment_id) from None

    def _review_comment(self, repo: Repo, comment_id: int) -> ReviewComment:
        try:
            return repo.review_comments[comment_id]
        except KeyError:
            raise UnknownItemError("review comment", repo.full_name, comment_id) from None

    # -- seeds -------------------------------------------------------------------------------

    def seed_ready_issues(
        self, repo: str, n: int, *, label: str = "ready", author: str = "alice"
    ) -> list[int]:
        """``n`` open issues labelled ``label`` by a collaborator with write access."""
        self.add_collaborator(repo, author, role="write")
        return [
            self.create_issue(
                repo,
                f"Ready issue {i + 1}",
                f"Please fix problem number {i + 1}.",
                author=author,
                labels=[label],
            )
            for i in range(n)
        ]

    def seed_mention(
        self,
        repo: str,
        *,
        author: str,
        kind: Literal["collaborator", "outsider", "bot"],
        body: str | None = None,
        number: int | None = None,
    ) -> tuple[int, int]:
        """A comment by ``author`` that @mentions the bot; returns (issue number, comment id).

        ``kind`` decides who ``author`` is: a write collaborator, an outsider with no
        access, or another bot account (``type: "Bot"``). A new issue is opened unless
        ``number`` names one.
        """
        if kind == "collaborator":
            self.add_collaborator(repo, author, role="write")
        elif kind == "bot":
            self.add_bot(author)
        else:
            self.add_user(author)
        if number is None:
            number = self.create_issue(
                repo, f"Question from {author}", "Something is wrong.", author=author
            )
        comment_id = self.add_comment(
            repo, number, body or f"@{self.bot_login} please take a look at this.", author=author
        )
        return number, comment_id

    def seed_collaborator_mention(self, repo: str, author: str = "bob") -> tuple[int, int]:
        return self.seed_mention(repo, author=author, kind="collaborator")

    def seed_outsider_mention(self, repo: str, author: str = "mallory") -> tuple[int, int]:
        return self.seed_mention(repo, author=author, kind="outsider")

    def seed_bot_mention(self, repo: str, author: str = "helper-app[bot]") -> tuple[int, int]:
        return self.seed_mention(repo, author=author, kind="bot")

    def seed_bot_pull_request(
        self,
        repo: str,
        *,
        branch: str = "cgr/issue-1",
        reviewer: str = "carol",
        review_body: str | None = None,
    ) -> tuple[int, int]:
        """A PR by the bot with one changed file and a review comment on it by a
        write collaborator mentioning the bot; returns (PR number, review comment id)."""
        self.add_collaborator(repo, reviewer, role="write")
        self.commit(
            repo,
            branch,
            {"src/app.py": "def main():\n    return 'hello'\n\n\nprint(main())\n"},
            message="Add app",
        )
        number = self.create_pull_request(
            repo, branch, "Add app", "Closes nothing; made by cgr.", author=self.bot_login
        )
        comment_id = self.add_review_comment(
            repo,
            number,
            review_body or f"@{self.bot_login} please return 'world' instead.",
            author=reviewer,
            path="src/app.py",
            line=2,
        )
        return number, comment_id

    def seed_demo(self) -> str:
        """The scenario behind ``cgr demo`` and ``--seed demo``: returns the repository."""
        repo = self.create_repo(
            "acme/widgets", labels=("ready", "in-progress", "cgr:done", "cgr:failed")
        )
        self.add_collaborator(repo, "alice", role="admin")
        self.seed_ready_issues(repo, 2)
        self.seed_collaborator_mention(repo)
        self.seed_outsider_mention(repo)
        self.seed_bot_mention(repo)
        self.seed_bot_pull_request(repo)
        return repo
