"""The GitHub client the schedulers and the reaper use (the token stays inside it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cgr_cli._errors import ConfigError

if TYPE_CHECKING:
    from cgr_cli.config._model import Config
    from cgr_discovery import DiscoveryConfig, GitHubClient, RunGitHub


@dataclass(slots=True)
class GitHubSession:
    """An open client, the run-level GitHub calls over it, and the bot's login."""

    gh: GitHubClient
    ops: RunGitHub
    bot: str


@contextlib.asynccontextmanager
async def open_github(config: Config) -> AsyncIterator[GitHubSession]:
    """A GitHub client for scheduling and reaping (the token stays inside it)."""
    from cgr_discovery import GitHubClient, RunGitHub, TokenAuth

    token = config.github.resolved_token()
    if token is None:
        raise ConfigError(
            "github.token is not set (set it in the configuration or $CGR_GITHUB_TOKEN)",
            key="github.token",
        )
    async with GitHubClient(auth=TokenAuth(token.reveal()), base_url=config.github.api_url) as gh:
        bot = config.github.bot_login or str((await gh.getitem("/user"))["login"])
        ops = RunGitHub(gh, min_edit_interval=0, write_budget=config.github.write_retry_seconds)
        yield GitHubSession(gh, ops, bot)


def discovery_config(config: Config, bot: str) -> DiscoveryConfig:
    from cgr_discovery import DiscoveryConfig, TriggerPolicy

    return DiscoveryConfig(
        login=bot,
        ready_label=config.labels.ready,
        in_progress_label=config.labels.in_progress,
        blocked_labels=frozenset(config.labels.blocked),
        mentions_first=config.priorities.mentions_first,
        newest_first=config.priorities.order == "newest",
        policy=TriggerPolicy(
            allow=frozenset(config.trigger.allow_users),
            deny=frozenset(config.trigger.deny_users),
            require_write=config.trigger.require_write_access,
        ),
    )
