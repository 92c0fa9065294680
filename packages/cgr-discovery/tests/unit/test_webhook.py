from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from cgr_discovery import DiscoveryConfig, JobKind, Secret, WebhookError, parse_webhook

SECRET = "whsec-test"
CONFIG = DiscoveryConfig(login="bot")
REPO = {"full_name": "o/r"}


def deliver(
    event: str, payload: dict[str, Any], secret: str = SECRET
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "d-1",
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    return headers, body


def comment(
    body: str, *, login: str = "alice", kind: str = "User", pr: bool = False
) -> dict[str, Any]:
    where = "pull" if pr else "issues"
    return {
        "id": 77,
        "body": body,
        "user": {"login": login, "type": kind},
        "author_association": "OWNER",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "html_url": f"https://github.com/o/r/{where}/5#issuecomment-77",
        "issue_url": "https://api.github.com/repos/o/r/issues/5",
        "pull_request_url": "https://api.github.com/repos/o/r/pulls/5",
    }


def issue(labels: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "number": 5,
        "title": "T",
        "body": "B",
        "state": "open",
        "labels": [{"name": n} for n in labels],
        "assignees": [],
        "user": {"login": "alice", "type": "User"},
        "author_association": "NONE",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "html_url": "https://github.com/o/r/issues/5",
        **extra,
    }


def test_issue_comment_mention_becomes_job() -> None:
    headers, body = deliver(
        "issue_comment",
        {
            "action": "created",
            "comment": comment("@bot fix it"),
            "issue": issue([]),
            "repository": REPO,
        },
    )
    event = parse_webhook(headers, body, Secret(SECRET), CONFIG)
    assert (event.event, event.action, event.delivery_id, event.repo) == (
        "issue_comment",
        "created",
        "d-1",
        "o/r",
    )
    (job,) = event.jobs
    assert job.kind is JobKind.ISSUE_MENTION
    assert job.trigger_id == "issue_comment:77"
    assert job.instruction == "fix it"


def test_pr_comment_and_commands_and_review_comments() -> None:
    pr_issue = issue([], pull_request={"url": "x"}, html_url="https://github.com/o/r/pull/5")
    c = comment("@bot cancel")
    headers, body = deliver(
        "issue_comment", {"action": "created", "comment": c, "issue": pr_issue, "repository": REPO}
    )
    (job,) = parse_webhook(headers, body, SECRET, CONFIG).jobs
    assert job.kind is JobKind.CANCEL
    assert job.is_pull_request
    headers, body = deliver(
        "pull_request_review_comment",
        {"action": "created", "comment": comment("@bot rename this", pr=True), "repository": REPO},
    )
    (job,) = parse_webhook(headers, body, SECRET, CONFIG).jobs
    assert job.kind is JobKind.REVIEW_COMMENT
    assert job.trigger_id == "review_comment:77"


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("issue_comment", {"action": "edited", "comment": comment("@bot x"), "issue": issue([])}),
        (
            "issue_comment",
            {"action": "created", "comment": comment("no mention"), "issue": issue([])},
        ),
        (
            "issue_comment",
            {"action": "created", "comment": comment("@bot x", login="bot"), "issue": issue([])},
        ),
        (
            "issue_comment",
            {"action": "created", "comment": comment("@bot x", kind="Bot"), "issue": issue([])},
        ),
        ("issues", {"action": "labeled", "label": {"name": "bug"}, "issue": issue(["bug"])}),
        (
            "issues",
            {"action": "labeled", "label": {"name": "ready"}, "issue": issue(["ready", "blocked"])},
        ),
        ("issues", {"action": "opened", "issue": issue(["ready"])}),
        ("ping", {"zen": "Keep it logically awesome."}),
    ],
)
def test_events_that_make_no_job(event: str, payload: dict[str, Any]) -> None:
    headers, body = deliver(event, {**payload, "repository": REPO})
    assert parse_webhook(headers, body, SECRET, CONFIG).jobs == ()


def test_ready_label_event() -> None:
    headers, body = deliver(
        "issues",
        {
            "action": "labeled",
            "label": {"name": "Ready"},
            "issue": issue(["Ready"]),
            "repository": REPO,
        },
    )
    (job,) = parse_webhook(headers, body, SECRET, CONFIG).jobs
    assert job.kind is JobKind.READY_ISSUE
    assert job.trigger_id == "ready:o/r#5"


def test_bad_signature_and_missing_signature() -> None:
    headers, body = deliver("ping", {"zen": "z"}, secret="wrong")
    with pytest.raises(WebhookError, match="signature does not match"):
        parse_webhook(headers, body, SECRET, CONFIG)
    del headers["X-Hub-Signature-256"]
    with pytest.raises(WebhookError, match="no X-Hub-Signature-256"):
        parse_webhook(headers, body, SECRET, CONFIG)
    tampered_headers, _ = deliver("ping", {"zen": "z"})
    with pytest.raises(WebhookError):
        parse_webhook(tampered_headers, b'{"zen": "changed"}', SECRET, CONFIG)


def test_malformed_delivery() -> None:
    headers, body = deliver("ping", {"zen": "z"})
    headers["Content-Type"] = "text/plain"
    with pytest.raises(WebhookError, match="malformed"):
        parse_webhook(headers, body, SECRET, CONFIG)
