"""A webhook delivery screened by the same trigger policy as polling, permission API included."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from discovery_support import BOT, REPO

from cgr_discovery import DiscoveryConfig, GitHubClient, JobKind, apply_policy, parse_webhook
from cgr_discovery.testing import GitHubSimulator

pytestmark = pytest.mark.anyio
SECRET = "hook-secret"


def delivery(event: str, payload: dict[str, object]) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": "abc",
        "x-hub-signature-256": signature,
    }, body


async def test_webhook_comments_screened_like_polled_ones(
    sim: GitHubSimulator, gh: GitHubClient
) -> None:
    config = DiscoveryConfig(login=BOT)
    outsider_issue, outsider_comment = sim.seed_outsider_mention(REPO, "mallory")
    sim.add_collaborator(REPO, "teamwriter", role="write")
    # Payloads as the REST API renders them (webhooks carry the same objects).
    comments = await gh.getitem(
        "/repos/{owner}/{repo}/issues/comments", {"owner": "acme", "repo": "widgets"}
    )
    issue = await gh.getitem(
        "/repos/{owner}/{repo}/issues/{n}",
        {"owner": "acme", "repo": "widgets", "n": outsider_issue},
    )
    (outsider,) = [c for c in comments if c["id"] == outsider_comment]
    writer = {**outsider, "id": 1, "user": {"login": "teamwriter", "type": "User"},
              "author_association": "CONTRIBUTOR"}  # fmt: skip
    jobs = []
    for comment in (outsider, writer):
        headers, body = delivery(
            "issue_comment",
            {"action": "created", "comment": comment, "issue": issue,
             "repository": {"full_name": REPO}},
        )  # fmt: skip
        jobs += parse_webhook(headers, body, SECRET, config).jobs
    assert [j.kind for j in jobs] == [JobKind.ISSUE_MENTION, JobKind.ISSUE_MENTION]
    allowed, rejected = await apply_policy(gh, jobs, config)
    assert [j.author for j in allowed] == ["teamwriter"]  # write access through the API
    assert [(r.job.author, r.code) for r in rejected] == [("mallory", "no_write_access")]
