"""How cgr authenticates to GitHub: a token, or a GitHub App's installations.

With ``[github] app_id`` and ``private_key_file`` cgr is the App: a JWT signed with the
key buys an installation token per installation (GitHub scopes a token to the
repositories of its installation, so an App installed on two accounts has two);
``cgr_discovery.AppInstallations`` sends each request with the token of its repository's
installation and renews each token before it lapses. git pushes with that token too:
a run's :class:`RunCredentials` keeps it fresh for as long as the run lasts. The bot
login is the App's ``<slug>[bot]``.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from cgr_cli._errors import ConfigError
from cgr_cli.config._model import Config, Secret, is_pattern

if TYPE_CHECKING:
    from cgr_discovery import AppInstallations, Auth, GitHubClient

log = logging.getLogger("cgr.auth")


def github_auth(config: Config) -> Auth:
    """The configured credential: a token, or the GitHub App's installations (all of
    them, or only ``github.installation_id``)."""
    from cgr_discovery import AppInstallations, AuthError, TokenAuth

    g = config.github
    if g.app_mode:
        try:
            return AppInstallations(
                app_id=str(g.app_id),
                private_key=g.private_key().reveal(),
                installation_id=g.installation_id,
            )
        except (OSError, AuthError) as exc:
            raise ConfigError(
                f"github.app_id = {g.app_id}: {exc}", key="github.private_key_file"
            ) from None
    token = g.resolved_token()
    if token is None:
        raise ConfigError(
            "github.token is not set (set it in the configuration or $CGR_GITHUB_TOKEN, "
            "or configure a GitHub App: github.app_id and github.private_key_file)",
            key="github.token",
        )
    return TokenAuth(token.reveal())


@dataclass(slots=True)
class RunCredentials:
    """The token one run uses (API and git) and, for an App, its bot login.

    A configured token never changes. A GitHub App's installation token lives an hour
    and a run may last longer: :meth:`keep_fresh` (a task of the run) renews it before it
    expires, so ``current()`` — read by every git command as it starts — is always a
    valid token; ``on_renew`` hears each new one (the run's redactor learns it).
    """

    token: Secret
    repository: str
    bot: str | None = None
    app: AppInstallations | None = None
    on_renew: list[Callable[[str], None]] = field(default_factory=list)

    def current(self) -> str:
        return self.token.reveal()

    async def keep_fresh(self, gh: GitHubClient) -> None:
        """Renew the App's token for this repository when due, until cancelled (a
        configured token: return at once). A failed renewal is retried; the old token
        stays in use meanwhile (GitHub may still accept it)."""
        from cgr_discovery import DiscoveryError

        if self.app is None:
            return
        while True:
            auth = await self.app.for_repository(gh, self.repository)
            wait = auth.renew_at - gh.server_now().timestamp()
            await anyio.sleep(min(max(wait, 0.05), 300.0))
            try:
                fresh = (await self.app.token_for(gh, self.repository)).reveal()
            except DiscoveryError as exc:
                log.warning("renewing the GitHub App token failed (%s); retrying", exc)
                await anyio.sleep(5.0)
                continue
            if fresh != self.token.reveal():
                self.token = Secret(fresh)
                for hook in self.on_renew:
                    hook(fresh)


async def credentials(config: Config, repository: str) -> RunCredentials:
    """The credentials a run uses.

    A configured token is returned as it is. A GitHub App's installation token for
    ``repository``'s installation is minted here; the run's client sends requests with
    ``app`` (renewing as needed) and ``keep_fresh`` renews the token git uses.
    """
    if not config.github.app_mode:
        # No GitHub client for a token: a run's start-up imports none (test_startup_imports).
        token = config.github.resolved_token()
        if token is None:
            raise ConfigError(
                "github.token is not set (set it in the configuration or $CGR_GITHUB_TOKEN)",
                key="github.token",
            )
        return RunCredentials(token=token, repository=repository)
    from cgr_discovery import AppInstallations, AuthError, GitHubClient, GitHubRequestError

    auth = github_auth(config)
    if not isinstance(auth, AppInstallations):  # pragma: no cover - app_mode makes one
        raise TypeError(f"expected a GitHub App's credentials, got {auth!r}")
    try:
        async with GitHubClient(auth=auth, base_url=config.github.api_url) as gh:
            token = Secret((await auth.token_for(gh, repository)).reveal())
            return RunCredentials(
                token=token, repository=repository, bot=await bot_login(config, auth, gh), app=auth
            )
    except (AuthError, GitHubRequestError) as exc:
        raise ConfigError(
            f"GitHub App {config.github.app_id}: {exc}", key="github.app_id"
        ) from None


def file_secrets(config: Config) -> dict[str, str]:
    """Secrets the configuration names by file, which the secret gate cannot see among its
    ``Secret`` values: the GitHub App's private key (whole, and each line of its base64
    body) and the webhook secret from ``webhook.secret_file``."""
    found: dict[str, str] = {}
    if config.github.app_mode:
        try:
            key = config.github.private_key().reveal()
        except OSError:
            key = ""
        if key.strip():
            found["the GitHub App's private key"] = key.strip()
        lines = [line for line in key.splitlines() if line and not line.startswith("-----")]
        for index, line in enumerate(lines):
            found[f"the GitHub App's private key (line {index + 2})"] = line
    if config.webhook.secret_file:
        try:
            secret = config.webhook.resolved_secret()
        except OSError:
            secret = None
        if secret is not None:
            found["the webhook secret"] = secret.reveal()
    return found


async def bearer(auth: Auth, gh: GitHubClient) -> str:
    """The token itself (for git's ``http.extraHeader`` and the redactor)."""
    return (await auth.authorization(gh)).partition(" ")[2]


async def bot_login(config: Config, auth: Auth, gh: GitHubClient) -> str:
    """``github.bot_login``, else ``<slug>[bot]`` for an App, else the token's user."""
    from cgr_discovery import AppInstallations

    if config.github.bot_login:
        return config.github.bot_login
    if isinstance(auth, AppInstallations):
        app = await gh.getitem("/app", jwt=auth.app_jwt())
        return f"{app['slug']}[bot]"
    return str((await gh.getitem("/user"))["login"])


def match_repositories(patterns: Iterable[str], available: Iterable[str]) -> list[str]:
    """The configured names and the ``available`` repositories a pattern matches
    (case-insensitive, as GitHub names are), in configuration order, each once."""
    out: dict[str, str] = {}
    names = list(available)
    for pattern in patterns:
        if not is_pattern(pattern):
            out.setdefault(pattern.lower(), pattern)
            continue
        for name in names:
            if fnmatch.fnmatchcase(name.lower(), pattern.lower()):
                out.setdefault(name.lower(), name)
    return list(out.values())


async def installation_repositories(auth: Auth, gh: GitHubClient) -> list[str]:
    """Every repository the App's installations can see (``GET /installation/repositories``
    with each installation's token, paginated; an unchanged page is a free 304 through the
    client's ETag cache). None for a token (it has no installation)."""
    from cgr_discovery import AppInstallations

    return await auth.repositories(gh) if isinstance(auth, AppInstallations) else []


async def followed(config: Config, auth: Auth, gh: GitHubClient) -> list[str]:
    """The repositories to watch now: the names in the config, and for an App the
    installations' repositories its patterns match (re-read each time: installations
    gain and lose repositories)."""
    if not any(is_pattern(r) for r in config.repositories):
        return list(config.repositories)
    return match_repositories(config.repositories, await installation_repositories(auth, gh))
