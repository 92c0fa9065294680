"""Constants shared by the integration tests (a plain module: tests/ is not a package)."""

from __future__ import annotations

from collections.abc import Callable

from cgr_discovery import GitHubClient, RetryPolicy

REPO = "acme/widgets"
BOT = "cgr-bot"

# Real waits would make fault tests take minutes: every wait is scaled down a thousandfold
# (a 60 s secondary-limit wait takes 60 ms) but still goes through the same code path.
FAST = RetryPolicy(scale=0.001, backoff_base=1.0, attempts=4)

ClientFactory = Callable[..., GitHubClient]
