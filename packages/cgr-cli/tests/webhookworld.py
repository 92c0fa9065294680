"""Signed webhook deliveries built by the tests, posted over real HTTP to a real daemon.

Payloads are the simulator's own REST objects (the issue, the comment) wrapped the way
GitHub wraps them; the signature is HMAC-SHA256 of the exact body bytes with the hook's
secret, as GitHub computes it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

import httpx

from runworld import REPO, Env

SECRET = "hook-secret-for-tests"


def rest(env: Env, path: str) -> Any:
    response = httpx.get(
        env.sim.url + path, headers={"Authorization": f"token {env.sim.token}"}, timeout=10
    )
    response.raise_for_status()
    return response.json()


def labeled_payload(env: Env, number: int, label: str = "ready") -> dict[str, Any]:
    return {
        "action": "labeled",
        "label": {"name": label},
        "issue": rest(env, f"/repos/{REPO}/issues/{number}"),
        "repository": {"full_name": REPO},
        "sender": {"login": "alice", "type": "User"},
    }


def comment_payload(
    env: Env, number: int, comment_id: int, action: str = "created"
) -> dict[str, Any]:
    return {
        "action": action,
        "comment": rest(env, f"/repos/{REPO}/issues/comments/{comment_id}"),
        "issue": rest(env, f"/repos/{REPO}/issues/{number}"),
        "repository": {"full_name": REPO},
        "sender": {"login": "alice", "type": "User"},
    }


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(
    url: str,
    event: str,
    payload: dict[str, Any],
    *,
    delivery: str | None = None,
    secret: str | None = SECRET,
    signed: bool = True,
) -> tuple[httpx.Response, str]:
    """POST one delivery; returns the response and the delivery id used."""
    body = json.dumps(payload).encode()
    delivery = delivery or str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
    }
    if signed:
        headers["X-Hub-Signature-256"] = signature(body, secret or "")
    return httpx.post(url, content=body, headers=headers, timeout=10), delivery
