"""cgr-discovery: finding work on GitHub and the GitHub calls a run makes.

Cursors in, jobs and new cursors out: this package stores nothing and runs no processes.
"""

from __future__ import annotations

from ._auth import AppAuth, AppInstallations, Auth, TokenAuth, resolve_token
from ._cache import CacheBackend, ETagCache, LRUCache, PersistentCache
from ._client import USER_AGENT, ClientStats, GitHubClient
from ._discover import advance_cursors, discover, order_jobs
from ._errors import (
    AuthError,
    DiscoveryError,
    GitHubRequestError,
    GitHubUnavailable,
    RateLimited,
    WebhookError,
)
from ._jobs import LabellerMemo, apply_policy
from ._markers import (
    find_post_key,
    find_status_run_id,
    post_marker,
    splice_owned_section,
    status_marker,
)
from ._mentions import Mention, find_mentions
from ._model import (
    DiscoveryConfig,
    Job,
    JobKind,
    PollResult,
    Rejected,
    RepoError,
    Skipped,
    StreamCursor,
    StreamPoll,
)
from ._ops import RunGitHub, Thread
from ._policy import Decision, TriggerPolicy, is_bot_user
from ._retry import RetryPolicy
from ._secret import Secret
from ._steps import AttemptHook, WriteAttempt, WriteOutcome
from ._version import __version__ as __version__
from ._webhook import WebhookEvent, parse_webhook

__all__ = [
    "USER_AGENT",
    "AppAuth",
    "AppInstallations",
    "AttemptHook",
    "Auth",
    "AuthError",
    "CacheBackend",
    "ClientStats",
    "Decision",
    "DiscoveryConfig",
    "DiscoveryError",
    "ETagCache",
    "GitHubClient",
    "GitHubRequestError",
    "GitHubUnavailable",
    "Job",
    "JobKind",
    "LRUCache",
    "LabellerMemo",
    "Mention",
    "PersistentCache",
    "PollResult",
    "RateLimited",
    "Rejected",
    "RepoError",
    "RetryPolicy",
    "RunGitHub",
    "Secret",
    "Skipped",
    "StreamCursor",
    "StreamPoll",
    "Thread",
    "TokenAuth",
    "TriggerPolicy",
    "WebhookError",
    "WebhookEvent",
    "WriteAttempt",
    "WriteOutcome",
    "advance_cursors",
    "apply_policy",
    "discover",
    "find_mentions",
    "find_post_key",
    "find_status_run_id",
    "is_bot_user",
    "order_jobs",
    "parse_webhook",
    "post_marker",
    "resolve_token",
    "splice_owned_section",
    "status_marker",
]
