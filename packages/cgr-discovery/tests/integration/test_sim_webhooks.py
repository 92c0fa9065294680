"""The simulator sends signed webhook deliveries (checked with cgr's own parse_webhook and
gidgethub's signature check), logs them, redelivers them, can drop one; and mints
installation tokens for a registered GitHub App whose JWT it verifies."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from discovery_support import BOT, REPO

from cgr_discovery import (
    AppAuth,
    AuthError,
    DiscoveryConfig,
    GitHubClient,
    JobKind,
    WebhookError,
    parse_webhook,
)
from cgr_discovery.testing import GitHubSimulator, app_key_pems

SECRET = "hook-secret"
CONFIG = DiscoveryConfig(login=BOT)


class Receiver:
    """A real HTTP endpoint on 127.0.0.1 that keeps every delivery and answers 202."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.received.append(
                        ({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/webhook"

    def events(self) -> list[tuple[str, str | None, str]]:
        """(event, action, delivery guid) of each delivery, verified like cgr's daemon."""
        out = []
        for headers, body in self.received:
            event = parse_webhook(headers, body, SECRET, CONFIG)
            out.append((event.event, event.action, event.delivery_id))
        return out

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_events_are_delivered_signed_and_logged(sim: GitHubSimulator, receiver: Receiver) -> None:
    hook = sim.add_webhook(receiver.url, SECRET)
    sim.add_collaborator(REPO, "alice", role="write")
    number = sim.create_issue(REPO, "Fix it", author="alice")
    sim.add_labels(REPO, number, "ready", actor="alice")
    comment = sim.add_comment(REPO, number, f"@{BOT} please fix", author="alice")
    sim.edit_comment(REPO, comment, f"@{BOT} please fix it now")
    pull, review = sim.seed_bot_pull_request(REPO)
    sim.wait_for_deliveries()
    events = receiver.events()
    assert [(e, a) for e, a, _ in events] == [
        ("issues", "labeled"),
        ("issue_comment", "created"),
        ("issue_comment", "edited"),
        ("pull_request_review_comment", "created"),
    ]
    assert len({guid for _, _, guid in events}) == 4
    headers, body = receiver.received[0]
    assert headers["x-github-hook-id"] == str(hook.id)
    assert headers["user-agent"].startswith("GitHub-Hookshot/")
    # The payloads are what cgr turns into jobs.
    jobs = [parse_webhook(h, b, SECRET, CONFIG).jobs for h, b in receiver.received]
    assert [j.kind for batch in jobs for j in batch] == [
        JobKind.READY_ISSUE,
        JobKind.ISSUE_MENTION,
        JobKind.REVIEW_COMMENT,
    ]  # fmt: skip  (an edited comment is no new trigger)
    assert jobs[3][0].comment_id == review
    assert jobs[3][0].number == pull
    edited = parse_webhook(*receiver.received[2], SECRET, CONFIG)
    assert edited.action == "edited"
    log = sim.deliveries
    assert [(d.event, d.status, d.error) for d in log] == [
        ("issues", 202, None),
        ("issue_comment", 202, None),
        ("issue_comment", 202, None),
        ("pull_request_review_comment", 202, None),
    ]
    assert log[2].payload["changes"] == {"body": {"from": f"@{BOT} please fix"}}
    # A wrong secret is caught by the receiving side's signature check.
    with pytest.raises(WebhookError, match="signature"):
        parse_webhook(headers, body, "wrong-secret", CONFIG)


def test_api_writes_are_delivered_too(sim: GitHubSimulator, receiver: Receiver) -> None:
    sim.add_webhook(receiver.url, SECRET, events=["issue_comment"])
    number = sim.create_issue(REPO, "t")
    sim.add_labels(REPO, number, "ready")  # not subscribed: no delivery
    with httpx.Client(base_url=sim.url, headers={"Authorization": f"token {sim.token}"}) as api:
        created = api.post(f"/repos/{REPO}/issues/{number}/comments", json={"body": "hi"})
        assert created.status_code == 201
    sim.wait_for_deliveries()
    (delivery,) = sim.deliveries
    assert (delivery.event, delivery.action) == ("issue_comment", "created")
    assert delivery.payload["comment"]["id"] == created.json()["id"]
    assert delivery.payload["sender"]["login"] == BOT
    with pytest.raises(ValueError, match="sends no"):
        sim.add_webhook(receiver.url, SECRET, events=["push"])


def test_dropped_delivery_then_redelivered_with_the_same_guid(
    sim: GitHubSimulator, receiver: Receiver
) -> None:
    sim.add_webhook(receiver.url, SECRET)
    fault = sim.faults.drop_delivery(event="issue_comment")
    number = sim.create_issue(REPO, "t")
    sim.add_comment(REPO, number, "lost", author=BOT)
    sim.add_comment(REPO, number, "arrives", author=BOT)
    sim.wait_for_deliveries()
    assert fault.hits == 1
    lost, arrived = sim.deliveries
    assert (lost.status, lost.error) == (None, "dropped")
    assert arrived.status == 202
    assert [b for _, b in receiver.received] == [arrived.body]  # nothing sent for the lost one
    again = sim.redeliver(lost.id)
    sim.wait_for_deliveries()
    assert (again.guid, again.redelivery, again.status) == (lost.guid, True, 202)
    assert receiver.events()[-1][2] == lost.guid
    assert len(sim.deliveries) == 3
    with pytest.raises(ValueError, match="no webhook delivery"):
        sim.redeliver(12345)


def test_unreachable_hook_is_logged_as_failed(sim: GitHubSimulator) -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sim.add_webhook(f"http://127.0.0.1:{port}/webhook", SECRET)
    sim.add_comment(REPO, sim.create_issue(REPO, "t"), "hello", author=BOT)
    sim.wait_for_deliveries()
    (delivery,) = sim.deliveries
    assert delivery.status is None
    assert "refused" in (delivery.error or "")  # logged as failed, never retried by itself


@pytest.mark.anyio
async def test_app_installation_tokens_and_installation_webhooks(
    sim: GitHubSimulator, receiver: Receiver
) -> None:
    private, public = app_key_pems()
    bot = sim.register_app(4242, public, slug="cgr-test")
    assert bot == "cgr-test[bot]"
    installation = sim.install_app(4242, [REPO])
    sim.add_webhook(receiver.url, SECRET, events=["installation_repositories"])
    auth = AppAuth(app_id=4242, private_key=private, repository=REPO)
    async with GitHubClient(auth=auth, base_url=sim.url) as gh:
        me = await gh.getitem("/repos/{owner}/{repo}", {"owner": "acme", "repo": "widgets"})
        assert me["full_name"] == REPO
        listed = await gh.getitem("/installation/repositories")
        assert [r["full_name"] for r in listed["repositories"]] == [REPO]
        # The installation's bot has write access, as GitHub gives an installed App.
        permission = await gh.getitem(
            "/repos/{owner}/{repo}/collaborators/{user}/permission",
            {"owner": "acme", "repo": "widgets", "user": bot},
        )
        assert permission["permission"] == "write"
    assert auth.installation_id == str(installation)
    minted = [r for r in sim.requests if r.path.endswith("/access_tokens")]
    assert [(r.method, r.status) for r in minted] == [("POST", 201)]

    sim.create_repo("acme/gadgets")
    sim.add_installation_repositories(installation, "acme/gadgets")
    sim.remove_installation_repositories(installation, REPO)
    sim.wait_for_deliveries()
    payloads = [d.payload for d in sim.deliveries]
    assert [(p["action"], [r["full_name"] for r in p["repositories_added"]],
             [r["full_name"] for r in p["repositories_removed"]]) for p in payloads] == [
        ("added", ["acme/gadgets"], []),
        ("removed", [], [REPO]),
    ]  # fmt: skip
    assert payloads[0]["installation"]["id"] == installation
    assert [e for e, _, _ in receiver.events()] == ["installation_repositories"] * 2


@pytest.mark.anyio
async def test_a_jwt_from_another_key_is_refused(sim: GitHubSimulator) -> None:
    _, public = app_key_pems()
    sim.register_app(77, public, slug="other")
    sim.install_app(77, [REPO], installation_id=5)
    pem, _ = app_key_pems("another key")
    async with GitHubClient(
        auth=AppAuth(app_id=77, private_key=pem, installation_id=5), base_url=sim.url
    ) as gh:
        with pytest.raises(AuthError, match="GitHub App 77"):
            await gh.getitem("/user")
    assert [r.status for r in sim.requests if r.path.endswith("/access_tokens")] == [401]
