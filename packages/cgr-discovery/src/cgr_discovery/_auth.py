"""Credentials: a token (configured, environment, ``gh auth token``) or a GitHub App.

Every credential is held in a :class:`Secret`, so reprs, logs and exception messages never
show it. The token goes on the wire only in the ``Authorization`` header, added by the
client right before sending.
"""

from __future__ import annotations

import os
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


class Auth(Protocol):
    """Something that yields an ``Authorization`` header value for each request."""

    async def authorization(self, gh: GitHubClient) -> str: ...

    def invalidate(self) -> bool:
        """Forget a cached credential after GitHub answered 401 with it.

        Returns whether a fresh credential can be obtained (worth one more try).
        """


class TokenAuth:
    """A personal access token or any other fixed token; ``source`` says where it came from."""

    def __init__(self, token: Secret | str, *, source: str = "configuration") -> None:
        self.token = token if isinstance(token, Secret) else Secret(token)
        if not self.token.reveal().strip():
            raise AuthError(f"the GitHub token from {source} is empty")
        self.source = source

    async def authorization(self, gh: GitHubClient) -> str:
        return f"token {self.token.reveal().strip()}"

    def invalidate(self) -> bool:
        """A fixed token cannot be renewed; the 401 surfaces as :class:`AuthError`."""
        return False

    def __repr__(self) -> str:
        return f"TokenAuth(source={self.source!r}, token={self.token!r})"


class AppAuth:
    """A GitHub App installation: a JWT signed with the app's private key buys an
    installation token (valid one hour), refreshed ``refresh_margin`` seconds before it
    expires so no request goes out with a token about to lapse.

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
        self.private_key = private_key if isinstance(private_key, Secret) else Secret(private_key)
        if "PRIVATE KEY" not in self.private_key.reveal():
            raise AuthError(
                f"the private key of GitHub App {self.app_id} is not a PEM key "
                "(expected the .pem file GitHub generated)"
            )
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
        self._lock = anyio.Lock()
        self.refreshes = 0

    @property
    def expires_at(self) -> float:
        """When the current installation token expires (epoch seconds; 0 when none yet)."""
        return self._expires_at

    async def authorization(self, gh: GitHubClient) -> str:
        # One refresh at a time: concurrent polls would otherwise all mint a token.
        async with self._lock:
            # expires_at is GitHub's clock: compare with the server time the client tracks.
            now = gh.server_now().timestamp()
            if self._token is None or now >= self._expires_at - self.refresh_margin:
                await self._refresh(gh)
            token = self._token
        if token is None:  # pragma: no cover - _refresh sets it or raises
            raise AuthError(f"GitHub App {self.app_id} has no installation token")
        return f"token {token.reveal()}"

    def app_jwt(self) -> str:
        """A JWT for the App itself (the ``/app`` endpoints: who the App is, its
        installations); :class:`AuthError` when the private key does not sign."""
        return self._jwt()

    def _jwt(self) -> str:
        # Imported here, not at the top: PyJWT and cryptography take tens of milliseconds
        # to import, and only App auth needs them (every `cgr` start with a token paid it).
        import jwt
        from gidgethub import apps

        try:
            return apps.get_jwt(app_id=self.app_id, private_key=self.private_key.reveal())
        except (ValueError, TypeError, jwt.PyJWTError) as exc:  # the key does not load
            raise AuthError(
                f"cannot sign a JWT for GitHub App {self.app_id}: the private key is invalid "
                f"({type(exc).__name__})"
            ) from None  # the chained error could quote key material

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
        self.refreshes += 1

    def invalidate(self) -> bool:
        self._token = None
        self._expires_at = 0.0
        return True

    def __repr__(self) -> str:
        return (
            f"AppAuth(app_id={self.app_id!r}, installation_id={self.installation_id!r}, "
            f"repository={self.repository!r}, "
            f"private_key={self.private_key!r})"
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
