"""How cgr authenticates to GitHub: a token, or a GitHub App installation.

With ``[github] app_id`` and ``private_key_file`` cgr is the App: a JWT signed with the
key buys an installation token (one hour, renewed by ``cgr_discovery.AppAuth`` before it
lapses); git pushes with that token too. The bot login is the App's ``<slug>[bot]``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import TYPE_CHECKING

from cgr_cli._errors import ConfigError
from cgr_cli.config._model import Config, Secret, is_pattern

if TYPE_CHECKING:
    from cgr_discovery import Auth, GitHubClient


def github_auth(config: Config, *, repository: str | None = None) -> Auth:
    """The configured credential; ``repository`` finds the App's installation when
    ``installation_id`` is not set (else the first repository named in the config)."""
    from cgr_discovery import AppAuth, AuthError, TokenAuth

    g = config.github
    if g.app_mode:
        named = [r for r in config.repositories if not is_pattern(r)]
        try:
            return AppAuth(
                app_id=str(g.app_id),
                private_key=g.private_key().reveal(),
                installation_id=g.installation_id,
                repository=None if g.installation_id is not None else repository or named[0],
            )
        except (OSError, IndexError, AuthError) as exc:
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


async def credentials(config: Config, repository: str) -> tuple[Secret, str | None]:
    """The token a run uses (API and git) and, for an App, its bot login.

    A configured token is returned as it is. A GitHub App's installation token is minted
    here (valid an hour; a run keeps it, so an App's runs should end within that).
    """
    if not config.github.app_mode:
        # No GitHub client for a token: a run's start-up imports none (test_startup_imports).
        token = config.github.resolved_token()
        if token is None:
            raise ConfigError(
                "github.token is not set (set it in the configuration or $CGR_GITHUB_TOKEN)",
                key="github.token",
            )
        return token, None
    from cgr_discovery import AuthError, GitHubClient, GitHubRequestError

    auth = github_auth(config, repository=repository)
    try:
        async with GitHubClient(auth=auth, base_url=config.github.api_url) as gh:
            return Secret(await bearer(auth, gh)), await bot_login(config, auth, gh)
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
    from cgr_discovery import AppAuth

    if config.github.bot_login:
        return config.github.bot_login
    if isinstance(auth, AppAuth):
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


async def installation_repositories(gh: GitHubClient) -> list[str]:
    """Every repository the App's installation can see (``GET /installation/repositories``,
    paginated; an unchanged page is a free 304 through the client's ETag cache)."""
    names: list[str] = []
    async for repo in gh.getiter("/installation/repositories{?per_page}", {"per_page": 100},
                                 iterable_key="repositories"):  # fmt: skip
        if isinstance(repo, dict) and isinstance(repo.get("full_name"), str):
            names.append(repo["full_name"])
    return names


async def followed(config: Config, auth: Auth, gh: GitHubClient) -> list[str]:
    """The repositories to watch now: the names in the config, and for an App the
    installation's repositories its patterns match (re-read each time: installations
    gain and lose repositories)."""
    if not any(is_pattern(r) for r in config.repositories):
        return list(config.repositories)
    return match_repositories(config.repositories, await installation_repositories(gh))
