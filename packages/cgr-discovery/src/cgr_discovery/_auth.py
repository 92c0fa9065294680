"""Credentials: a token (configured, environment, ``gh auth token``) or a GitHub App.

Every credential is held in a :class:`Secret`, so reprs, logs and exception messages never
show it. The token goes on the wire only in the ``Authorization`` header, added by the
client right before sending.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._errors import AuthError, GitHubRequestError
from ._secret import Secret

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime


class GitHubClient(Protocol):
    """What an :class:`Auth` needs of the client (``_client.GitHubClient`` is one).

    A protocol rather than an import of ``_client``: the client imports this module for
    :class:`Auth`, and the two would otherwise import each other.
    """

    def server_now(self) -> datetime: ...

    async def getitem(
        self, url: str, url_vars: Mapping[str, str] = ..., *, jwt: str | None = None
    ) -> Any: ...

    async def post(
        self, url: str, url_vars: Mapping[str, str] = ..., *, data: Any, jwt: str | None = None
    ) -> Any: ...

    def getiter(
        self,
        url: str,
        url_vars: Mapping[str, Any] = ...,
        *,
        jwt: str | None = None,
        oauth_token: str | None = None,
        iterable_key: str | None = ...,
    ) -> Any: ...


class Auth(Protocol):
    """Something that yields an ``Authorization`` header value for each request.

    ``url`` is the request's URL: a GitHub App installed on several accounts
    (:class:`AppInstallations`) answers with the token of the installation that holds
    the repository the URL names.
    """

    async def authorization(self, gh: GitHubClient, url: str = "") -> str: ...

    def invalidate(self, url: str = "") -> bool:
        """Forget a cached credential after GitHub answered 401 with it (to ``url``).

        Returns whether a fresh credential can be obtained (worth one more try).
        """


class TokenAuth:
    """A personal access token or any other fixed token; ``source`` says where it came from."""

    def __init__(self, token: Secret | str, *, source: str = "configuration") -> None:
        self.token = token if isinstance(token, Secret) else Secret(token)
        if not self.token.reveal().strip():
            raise AuthError(f"the GitHub token from {source} is empty")
        self.source = source

    async def authorization(self, gh: GitHubClient, url: str = "") -> str:
        return f"token {self.token.reveal().strip()}"

    def invalidate(self, url: str = "") -> bool:
        """A fixed token cannot be renewed; the 401 surfaces as :class:`AuthError`."""
        return False

    def __repr__(self) -> str:
        return f"TokenAuth(source={self.source!r}, token={self.token!r})"


def _pem_key(app_id: str, private_key: Secret | str) -> Secret:
    """The App's private key as a Secret; AuthError when it is not a PEM key."""
    key = private_key if isinstance(private_key, Secret) else Secret(private_key)
    if "PRIVATE KEY" not in key.reveal():
        raise AuthError(
            f"the private key of GitHub App {app_id} is not a PEM key "
            "(expected the .pem file GitHub generated)"
        )
    return key


class AppAuth:
    """A GitHub App installation: a JWT signed with the app's private key buys an
    installation token (valid one hour), refreshed ``refresh_margin`` seconds before it
    expires so no request goes out with a token about to lapse (or half its lifetime
    before, when GitHub granted less than twice the margin).

    Give ``installation_id``, or ``repository`` (``owner/name``) to look the installation
    up once through ``GET /repos/{owner}/{repo}/installation``. The JWT comes from
    :func:`gidgethub.apps.get_jwt` (PyJWT with ``cryptography`` for RS256); requests that
    carry it set their own ``Authorization`` header, so they do not come back here.
    """

    def __init__(
        self,
        *,
        app_id: int | str,
        private_key: Secret | str,
        installation_id: int | str | None = None,
        repository: str | None = None,
        refresh_margin: float = 300.0,
    ) -> None:
        self.app_id = str(app_id)
        self.private_key = _pem_key(self.app_id, private_key)
        if installation_id is None and repository is None:
            raise AuthError(
                f"GitHub App {self.app_id} needs an installation id or a repository "
                "to find its installation"
            )
        self.installation_id = None if installation_id is None else str(installation_id)
        self.repository = repository
        self.refresh_margin = refresh_margin
        self._token: Secret | None = None
        self._expires_at = 0.0
        self._margin = refresh_margin
        self._lock = anyio.Lock()
        self.refreshes = 0

    @property
    def expires_at(self) -> float:
        """When the current installation token expires (epoch seconds; 0 when none yet)."""
        return self._expires_at

    @property
    def renew_at(self) -> float:
        """When the current token is renewed (GitHub's clock, epoch seconds; 0: now)."""
        return self._expires_at - self._margin if self._token is not None else 0.0

    async def authorization(self, gh: GitHubClient, url: str = "") -> str:
        return f"token {(await self.token(gh)).reveal()}"

    async def token(self, gh: GitHubClient) -> Secret:
        """The installation token, minted first when there is none or it is due."""
        # One refresh at a time: concurrent polls would otherwise all mint a token.
        async with self._lock:
            # expires_at is GitHub's clock: compare with the server time the client tracks.
            if self._token is None or gh.server_now().timestamp() >= self.renew_at:
                await self._refresh(gh)
            token = self._token
        if token is None:  # pragma: no cover - _refresh sets it or raises
            raise AuthError(f"GitHub App {self.app_id} has no installation token")
        return token

    def app_jwt(self) -> str:
        """A JWT for the App itself (the ``/app`` endpoints: who the App is, its
        installations); :class:`AuthError` when the private key does not sign."""
        return self._jwt()

    def _jwt(self) -> str:
        return _app_jwt(self.app_id, self.private_key)

    async def _find_installation(self, gh: GitHubClient) -> str:
        owner, _, name = (self.repository or "").partition("/")
        app_jwt = self._jwt()
        try:
            data = await gh.getitem(
                "/repos/{owner}/{repo}/installation",
                {"owner": owner, "repo": name},
                jwt=app_jwt,
            )
        except GitHubRequestError as exc:
            raise AuthError(
                f"GitHub App {self.app_id} is not installed on {self.repository} "
                f"(GitHub answered {exc.status_code}); install it or set the installation id"
            ) from exc
        return str(data["id"])

    async def _refresh(self, gh: GitHubClient) -> None:
        if self.installation_id is None:
            self.installation_id = await self._find_installation(gh)
        app_jwt = self._jwt()
        try:
            data = await gh.post(
                "/app/installations/{id}/access_tokens",
                {"id": self.installation_id},
                data=b"",
                jwt=app_jwt,
            )
        except (AuthError, GitHubRequestError) as exc:
            raise AuthError(
                f"GitHub refused a token for GitHub App {self.app_id}, installation "
                f"{self.installation_id}: check the app id, private key and installation id"
            ) from exc
        token = data.get("token") if isinstance(data, dict) else None
        expires = data.get("expires_at") if isinstance(data, dict) else None
        if not isinstance(token, str) or not isinstance(expires, str):
            raise AuthError("GitHub's installation token response had no token or expires_at")
        self._token = Secret(token)
        self._expires_at = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        # A token GitHub grants for less than twice the margin (an Enterprise setting, a
        # test) is renewed half-way instead of on every request.
        lifetime = self._expires_at - gh.server_now().timestamp()
        self._margin = min(self.refresh_margin, max(lifetime, 0.0) / 2)
        self.refreshes += 1

    def invalidate(self, url: str = "") -> bool:
        self._token = None
        self._expires_at = 0.0
        return True

    def __repr__(self) -> str:
        return (
            f"AppAuth(app_id={self.app_id!r}, installation_id={self.installation_id!r}, "
            f"repository={self.repository!r}, "
            f"private_key={self.private_key!r})"
        )


def _app_jwt(app_id: str, private_key: Secret) -> str:
    """A JWT for GitHub App ``app_id``; :class:`AuthError` when the key does not sign."""
    # Imported here, not at the top: PyJWT and cryptography take tens of milliseconds
    # to import, and only App auth needs them (every `cgr` start with a token paid it).
    import jwt
    from gidgethub import apps

    try:
        return apps.get_jwt(app_id=app_id, private_key=private_key.reveal())
    except (ValueError, TypeError, jwt.PyJWTError) as exc:  # the key does not load
        raise AuthError(
            f"cannot sign a JWT for GitHub App {app_id}: the private key is invalid "
            f"({type(exc).__name__})"
        ) from None  # the chained error could quote key material


_REPO_IN_URL = re.compile(r"/repos/([^/?#]+)/([^/?#]+)")


def repository_of(url: str) -> str | None:
    """``owner/name`` of the repository a REST or git URL names (``/repos/o/r/...``)."""
    found = _REPO_IN_URL.search(url)
    return None if found is None else f"{found.group(1)}/{found.group(2)}".lower()


class AppInstallations:
    """A GitHub App on every account that installed it: one :class:`AppAuth` (so one
    installation token, renewed before it expires) per installation, and each request
    sent with the token of the installation that holds the repository its URL names.

    GitHub scopes an installation token to the repositories of its installation: an App
    installed on ``acme`` and on ``globex`` needs ``acme``'s token for ``acme/*`` and
    ``globex``'s for ``globex/*``. The installations come from ``GET /app/installations``
    (the App's JWT); a repository's installation from the repository lists read by
    :meth:`repositories`, else from ``GET /repos/{owner}/{repo}/installation`` (one JWT
    request, remembered). ``installation_id`` restricts the App to that one installation.
    A request that names no repository (``/user``, ``/rate_limit``) uses the first
    installation.
    """

    def __init__(
        self,
        *,
        app_id: int | str,
        private_key: Secret | str,
        installation_id: int | str | None = None,
        refresh_margin: float = 300.0,
    ) -> None:
        self.app_id = str(app_id)
        self.private_key = _pem_key(self.app_id, private_key)
        self.installation_id = None if installation_id is None else str(installation_id)
        self.refresh_margin = refresh_margin
        self._auths: dict[str, AppAuth] = {}
        self._owners: dict[str, str] = {}  # installation id -> account login
        self._where: dict[str, str] = {}  # "owner/name" (lower case) -> installation id
        self._listed = False
        self._lock = anyio.Lock()

    def app_jwt(self) -> str:
        """A JWT for the App itself (``/app`` endpoints); :class:`AuthError` when the
        private key does not sign."""
        return _app_jwt(self.app_id, self.private_key)

    def installation(self, installation_id: str) -> AppAuth:
        """The :class:`AppAuth` of one installation (made on first use)."""
        auth = self._auths.get(installation_id)
        if auth is None:
            auth = self._auths[installation_id] = AppAuth(
                app_id=self.app_id,
                private_key=self.private_key,
                installation_id=installation_id,
                refresh_margin=self.refresh_margin,
            )
        return auth

    async def installations(self, gh: GitHubClient) -> list[dict[str, Any]]:
        """The App's installations (``GET /app/installations``; only ``installation_id``
        when it is set). :class:`AuthError` when the JWT is refused or the configured
        installation is not one of the App's."""
        app_jwt = self.app_jwt()
        found: list[dict[str, Any]] = []
        try:
            async for item in gh.getiter("/app/installations{?per_page}", {"per_page": 100},
                                         jwt=app_jwt):  # fmt: skip
                if isinstance(item, dict) and "id" in item:
                    found.append(item)
        except GitHubRequestError as exc:
            raise AuthError(
                f"GitHub refused to list the installations of GitHub App {self.app_id} "
                f"(GitHub answered {exc.status_code}): check the app id and private key"
            ) from exc
        if self.installation_id is not None:
            found = [i for i in found if str(i["id"]) == self.installation_id]
            if not found:
                raise AuthError(
                    f"installation {self.installation_id} is not an installation of GitHub "
                    f"App {self.app_id}: check github.installation_id, or remove it to use "
                    "every installation"
                )
        self._owners = {
            str(item["id"]): str((item.get("account") or {}).get("login") or "") for item in found
        }
        self._listed = True
        return found

    async def installation_ids(self, gh: GitHubClient) -> list[str]:
        """Every installation cgr uses (listed once, then remembered)."""
        if self.installation_id is not None:
            return [self.installation_id]
        if not self._listed:
            await self.installations(gh)
        return list(self._owners)

    async def repositories(self, gh: GitHubClient) -> list[str]:
        """Every repository of every installation (``GET /installation/repositories`` with
        each installation's token; an unchanged page is a free 304), remembered as the
        installation of each repository. The installations are listed again first: the
        App may have been installed on another account since."""
        names: list[str] = []
        where: dict[str, str] = {}
        if self.installation_id is None:
            await self.installations(gh)
        for ident in await self.installation_ids(gh):
            token = await self.installation(ident).token(gh)
            async for repo in gh.getiter("/installation/repositories{?per_page}",
                                         {"per_page": 100}, oauth_token=token.reveal(),
                                         iterable_key="repositories"):  # fmt: skip
                if isinstance(repo, dict) and isinstance(repo.get("full_name"), str):
                    names.append(repo["full_name"])
                    where.setdefault(repo["full_name"].lower(), ident)
        self._where.update(where)
        return names

    async def for_repository(self, gh: GitHubClient, repository: str | None) -> AppAuth:
        """The installation that holds ``repository`` (``owner/name``; None: the first)."""
        if self.installation_id is not None:
            return self.installation(self.installation_id)
        if repository is None:
            ids = await self.installation_ids(gh)
            if not ids:
                raise AuthError(f"GitHub App {self.app_id} is not installed anywhere")
            return self.installation(ids[0])
        key = repository.lower()
        ident = self._where.get(key)
        if ident is None:
            # One lookup per repository at a time: a burst of requests for a repository
            # the App was just installed on asks GitHub once.
            async with self._lock:
                ident = self._where.get(key) or await self._find(gh, repository)
                self._where[key] = ident
        return self.installation(ident)

    async def _find(self, gh: GitHubClient, repository: str) -> str:
        owner, _, name = repository.partition("/")
        try:
            data = await gh.getitem(
                "/repos/{owner}/{repo}/installation",
                {"owner": owner, "repo": name},
                jwt=self.app_jwt(),
            )
        except GitHubRequestError as exc:
            raise AuthError(
                f"GitHub App {self.app_id} is not installed on {repository} "
                f"(GitHub answered {exc.status_code}); install it there"
            ) from exc
        return str(data["id"])

    async def token_for(self, gh: GitHubClient, repository: str) -> Secret:
        """The installation token for ``repository`` (for git), renewed when due."""
        return await (await self.for_repository(gh, repository)).token(gh)

    async def authorization(self, gh: GitHubClient, url: str = "") -> str:
        auth = await self.for_repository(gh, repository_of(url))
        return await auth.authorization(gh)

    def invalidate(self, url: str = "") -> bool:
        repository = repository_of(url)
        ident = self.installation_id or (self._where.get(repository) if repository else None)
        for key, auth in self._auths.items():
            if ident is None or key == ident:
                auth.invalidate()
        return True

    def __repr__(self) -> str:
        return (
            f"AppInstallations(app_id={self.app_id!r}, installation_id={self.installation_id!r}, "
            f"installations={sorted(self._auths)!r}, private_key={self.private_key!r})"
        )


def resolve_token(
    configured: Secret | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    hostname: str = "github.com",
    gh_executable: str | None = "gh",
    timeout: float = 10.0,
) -> TokenAuth:
    """The first token found: ``configured``, then the environment, then ``gh auth token``.

    Environment: ``GH_TOKEN`` then ``GITHUB_TOKEN``; for a GitHub Enterprise Server
    ``hostname``, ``GH_ENTERPRISE_TOKEN`` then ``GITHUB_ENTERPRISE_TOKEN`` first (the gh
    CLI's own rule). The gh CLI is asked only when it is installed (``gh_executable``
    found on PATH; ``None`` skips it); a gh that is not logged in, fails or hangs past
    ``timeout`` is skipped. Raises :class:`AuthError` naming every place looked at.

    Blocking (it may run ``gh``): call it at start-up, or through
    ``anyio.to_thread.run_sync`` from async code.
    """
    if (
        configured is not None
        and (configured.reveal() if isinstance(configured, Secret) else configured).strip()
    ):
        return TokenAuth(configured, source="configuration")
    environ = os.environ if env is None else env
    names = ["GH_TOKEN", "GITHUB_TOKEN"]
    if hostname.lower() not in ("github.com", "api.github.com"):
        names = ["GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"]
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return TokenAuth(value, source=name)
    tried = ["the configuration", *names]
    if gh_executable is not None:
        tried.append("`gh auth token`")
        token = _gh_auth_token(gh_executable, hostname, timeout, environ)
        if token is not None:
            return TokenAuth(token, source="gh auth token")
    raise AuthError(
        "no GitHub token found; looked in "
        + ", ".join(tried)
        + ". Set one of these or run `gh auth login`"
    )


def _gh_auth_token(
    executable: str, hostname: str, timeout: float, env: Mapping[str, str]
) -> str | None:
    path = shutil.which(executable, path=env.get("PATH", os.defpath))
    if path is None:
        return None
    try:
        # The token arrives on stdout (never argv); the child inherits only the environment
        # it needs to find its own config.
        completed = subprocess.run(
            [path, "auth", "token", "--hostname", hostname],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (subprocess.TimeoutExpired, OSError):
        return None
    token = completed.stdout.strip()
    if completed.returncode != 0 or not token or any(c.isspace() for c in token):
        return None
    return token
