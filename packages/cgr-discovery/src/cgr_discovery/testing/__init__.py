"""A GitHub simulator for tests and ``cgr demo``: REST API v3 and git smart HTTP on 127.0.0.1.

>>> with GitHubSimulator(tmp_path) as gh:          # doctest: +SKIP
...     repo = gh.create_repo("acme/widgets")
...     gh.seed_ready_issues(repo, 3)
...     client_under_test(base_url=gh.url, token=gh.token)

Standard library only (but ``app_key_pems``: ``cryptography``, on first use). See the
package README's "GitHub simulator" section.
"""

from __future__ import annotations

from cgr_discovery.testing._app_keys import app_key_pems
from cgr_discovery.testing._errors import (
    SimulatorError,
    SimulatorGitError,
    SimulatorServerError,
    UnknownItemError,
    UnknownRepositoryError,
    UnknownUserError,
)
from cgr_discovery.testing._faults import Fault, Faults, RequestRecord
from cgr_discovery.testing._model import Comment, Issue, PullData, Reaction, ReviewComment
from cgr_discovery.testing._simulator import GitHubSimulator
from cgr_discovery.testing._webhooks import Delivery, Hook

__all__ = [
    "Comment",
    "Delivery",
    "Fault",
    "Faults",
    "GitHubSimulator",
    "Hook",
    "Issue",
    "PullData",
    "Reaction",
    "RequestRecord",
    "ReviewComment",
    "SimulatorError",
    "SimulatorGitError",
    "SimulatorServerError",
    "UnknownItemError",
    "UnknownRepositoryError",
    "UnknownUserError",
    "app_key_pems",
]
