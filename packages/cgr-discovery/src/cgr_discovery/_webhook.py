"""Webhook deliveries turned into the same jobs polling finds.

Verification and decoding are gidgethub's (:class:`gidgethub.sansio.Event` checks
``X-Hub-Signature-256`` with a constant-time comparison); this module only maps the
events cgr cares about onto :class:`Job`. Run the result through :func:`apply_policy`
before accepting it, exactly as polling does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gidgethub import BadRequest, ValidationFailure, sansio

from ._errors import WebhookError
from ._jobs import comment_job, ready_issue_job
from ._model import DiscoveryConfig, Job
from ._secret import Secret


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookEvent:
    """A verified delivery: its event name, action, delivery id and the candidate jobs
    (not yet screened by the trigger policy)."""

    event: str
    action: str | None
    delivery_id: str
    repo: str | None
    jobs: tuple[Job, ...]


def parse_webhook(
    headers: Mapping[str, str], body: bytes, secret: Secret | str | None, config: DiscoveryConfig
) -> WebhookEvent:
    """Verify and decode one delivery; raise :class:`WebhookError` if it is not genuine.

    Jobs come from ``issues`` (``labeled`` with the ready label), ``issue_comment``
    (``created``) and ``pull_request_review_comment`` (``created``) events. Edited
    comments are ignored: a person fixing a typo must not start a second run. With
    ``secret=None`` the signature is not checked (only for local testing).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    key = secret.reveal() if isinstance(secret, Secret) else secret
    if key is not None and "x-hub-signature-256" not in lowered:
        raise WebhookError(
            "webhook delivery has no X-Hub-Signature-256 header; is the secret set on GitHub?"
        )
    try:
        event = sansio.Event.from_http(lowered, body, secret=key)
    except ValidationFailure as exc:
        raise WebhookError(
            f"webhook signature does not match the configured secret: {exc}"
        ) from None
    except (BadRequest, KeyError, ValueError) as exc:
        raise WebhookError(f"webhook delivery is malformed: {type(exc).__name__}: {exc}") from None
    data = event.data if isinstance(event.data, dict) else {}
    action = data.get("action") if isinstance(data.get("action"), str) else None
    repository = data.get("repository") or {}
    repo = repository.get("full_name") if isinstance(repository, dict) else None
    jobs: list[Job] = []
    if isinstance(repo, str):
        job: Job | None = None
        if event.event == "issues" and action == "labeled":
            label = (data.get("label") or {}).get("name", "")
            if str(label).lower() == config.ready_label.lower():
                job = ready_issue_job(data.get("issue") or {}, repo, config)
        elif event.event == "issue_comment" and action == "created":
            comment = dict(data.get("comment") or {})
            issue = data.get("issue") or {}
            # Payload comments carry html_url; make PR detection not depend on it alone.
            if "pull_request" in issue and "/pull/" not in str(comment.get("html_url", "")):
                comment["html_url"] = str(issue.get("html_url", "")) + "#issuecomment"
            job = comment_job(comment, repo, "issue_comments", config)
        elif event.event == "pull_request_review_comment" and action == "created":
            job = comment_job(data.get("comment") or {}, repo, "review_comments", config)
        if job is not None:
            jobs.append(job)
    return WebhookEvent(
        event=event.event,
        action=action,
        delivery_id=event.delivery_id,
        repo=repo if isinstance(repo, str) else None,
        jobs=tuple(jobs),
    )
