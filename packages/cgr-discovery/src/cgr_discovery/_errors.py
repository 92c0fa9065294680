"""The exceptions of cgr-discovery: one base class, subclasses that carry data."""

from __future__ import annotations

from datetime import datetime


class DiscoveryError(Exception):
    """Base class of every error cgr-discovery raises on purpose."""


class AuthError(DiscoveryError):
    """No usable credentials, or GitHub refused the ones given (HTTP 401)."""


class GitHubUnavailable(DiscoveryError):
    """GitHub could not be reached or kept failing (5xx, connection errors) after retries.

    ``status_code`` is the last HTTP status seen, or ``None`` when no response arrived.
    """

    def __init__(self, message: str, *, method: str, url: str, status_code: int | None) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status_code = status_code


class RateLimited(DiscoveryError):
    """A GitHub rate limit is exhausted and waiting for it exceeds the configured maximum.

    ``reset_at`` is when GitHub says the limit resets (UTC), ``secondary`` tells a secondary
    (abuse) limit from the hourly primary quota.
    """

    def __init__(self, message: str, *, reset_at: datetime, secondary: bool) -> None:
        super().__init__(message)
        self.reset_at = reset_at
        self.secondary = secondary


class GitHubRequestError(DiscoveryError):
    """GitHub answered a request with an error that retrying cannot fix (4xx).

    ``status_code`` and GitHub's ``message`` are kept so callers can tell "not found"
    from "validation failed" without parsing text; ``github_errors`` holds the messages of
    GitHub's ``errors`` list (what exactly failed validation).
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status_code: int,
        github_message: str | None,
        github_errors: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status_code = status_code
        self.github_message = github_message
        self.github_errors = github_errors


class WebhookError(DiscoveryError):
    """A webhook delivery could not be verified or parsed (bad signature, bad payload)."""
