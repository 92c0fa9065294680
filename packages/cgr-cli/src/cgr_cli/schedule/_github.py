"""The GitHub client the schedulers and the reaper use (the token stays inside it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cgr_cli._errors import ConfigError

if TYPE_CHECKING:
    from cgr_cli.config._model import Config
    from cgr_cli.schedule._http_cache import PersistedCache
    from cgr_discovery import Auth, DiscoveryConfig, GitHubClient, LabellerMemo, RunGitHub
    from cgr_store import Store


@dataclass(slots=True)
class GitHubSession:
    """An open client, the run-level GitHub calls over it, and the bot's login."""

    gh: GitHubClient
    ops: RunGitHub
    bot: str
    cache: PersistedCache | None = None
    auth: Auth | None = None
    # Who applied each ready label, kept for as long as this process (``labeller_memo``):
    # a ready issue waiting for a slot is not asked again on every pass.
    labellers: LabellerMemo | None = None

    def save_cache(self) -> None:
        """Keep the ETags of this pass in the store (see ``_http_cache``)."""
        if self.cache is not None:
            self.cache.save()

    async def followed(self, config: Config) -> list[str]:
        """The repositories to watch now (an App's patterns matched against its
        installation's repositories, which change)."""
        from cgr_cli.run._github_auth import followed

        if self.auth is None:
            return list(config.repositories)
        return await followed(config, self.auth, self.gh)


@contextlib.asynccontextmanager
async def open_github(config: Config, store: Store | None = None) -> AsyncIterator[GitHubSession]:
    """A GitHub client for scheduling and reaping (the token stays inside it).

    With ``store``, its ETag cache is the store's (``_http_cache``): loaded now, saved when
    the block ends without an error (and by ``save_cache`` in between).
    """
    from cgr_cli.run._github_auth import bot_login, github_auth
    from cgr_cli.schedule._http_cache import PersistedCache
    from cgr_discovery import AuthError, GitHubClient, RunGitHub

    # A token, or a GitHub App's installation (ConfigError when neither is configured).
    auth = github_auth(config)
    cache = PersistedCache(store) if store is not None else None
    async with GitHubClient(
        auth=auth,
        base_url=config.github.api_url,
        cache=True if cache is None else cache,
    ) as gh:
        try:
            bot = await bot_login(config, auth, gh)
        except AuthError as exc:
            raise ConfigError(str(exc), key="github.app_id") from None
        ops = RunGitHub(gh, min_edit_interval=0, write_budget=config.github.write_retry_seconds)
        session = GitHubSession(gh, ops, bot, cache, auth, labeller_memo(config.github.api_url))
        yield session
        session.save_cache()


_memos: dict[str, LabellerMemo] = {}


def labeller_memo(api_url: str) -> LabellerMemo:
    """This process's memo of who applied each ready label on the GitHub at ``api_url``,
    shared by every session it opens there: the daemon's passes, and the passes of a
    `cgr tick` child that takes job after job into its slot (each pass its own session). A
    forked child starts with a copy of its tick's. Its entries are checked against the
    issue's ``updated_at`` on every use (cgr-discovery ``LabellerMemo``), so an older one
    is never wrong, only unused."""
    from cgr_discovery import LabellerMemo

    return _memos.setdefault(api_url.rstrip("/"), LabellerMemo())


def discovery_config(config: Config, bot: str) -> DiscoveryConfig:
    from cgr_discovery import DiscoveryConfig, TriggerPolicy

    return DiscoveryConfig(
        login=bot,
        ready_label=config.labels.ready,
        in_progress_label=config.labels.in_progress,
        blocked_labels=frozenset(config.labels.blocked),
        mentions_first=config.priorities.mentions_first,
        newest_first=config.priorities.order == "newest",
        max_concurrent_repos=config.polling.max_concurrent_repos,
        policy=TriggerPolicy(
            allow=frozenset(config.trigger.allow_users),
            deny=frozenset(config.trigger.deny_users),
            require_write=config.trigger.require_write_access,
        ),
    )
