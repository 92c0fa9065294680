"""Webhook deliveries from the GitHub simulator, signed as GitHub signs them.

A hook (a URL and a secret) receives a POST per event: the JSON payload, ``X-GitHub-Event``,
``X-GitHub-Delivery`` (a GUID, kept by a redelivery as on GitHub) and
``X-Hub-Signature-256`` (HMAC-SHA256 of the body with the hook's secret). Deliveries are
sent by one background thread in the order the events happened, like GitHub's, and never
retried by themselves (GitHub does not either): a failed or dropped delivery stays failed
until ``redeliver`` is called. Every attempt is in the delivery log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from cgr_discovery.testing import _git
from cgr_discovery.testing._faults import Faults
from cgr_discovery.testing._model import Model, ModelEvent, Repo
from cgr_discovery.testing._render import Renderer

# The events a hook without an explicit list receives.
EVENTS = frozenset(
    {"issues", "issue_comment", "pull_request_review_comment", "installation_repositories",
     "installation"}
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Hook:
    """A registered webhook: where deliveries go and the secret that signs them."""

    id: int
    url: str
    secret: str = field(repr=False)
    events: frozenset[str]


@dataclass(kw_only=True)
class Delivery:
    """One delivery attempt, as GitHub's "Recent Deliveries" lists it.

    ``guid`` is the ``X-GitHub-Delivery`` header (the same for a redelivery); ``status``
    the receiver's HTTP status, ``None`` while pending or when no answer came (``error``
    says why, ``"dropped"`` for an injected fault: nothing was sent).
    """

    id: int
    guid: str
    hook_id: int
    event: str
    action: str | None
    repo: str | None
    body: bytes = field(repr=False)
    redelivery: bool = False
    status: int | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


class Webhooks:
    """The hooks, the delivery log and the sender thread of one simulator."""

    def __init__(self, model: Model, renderer: Renderer, faults: Faults) -> None:
        self.model = model
        self.renderer = renderer
        self.faults = faults
        self.hooks: list[Hook] = []
        self.log: list[Delivery] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ids = 0
        model.listeners.append(self._on_event)

    # -- registration and the log ----------------------------------------------------------

    def add_hook(self, url: str, secret: str, events: frozenset[str] | None = None) -> Hook:
        unknown = (events or EVENTS) - EVENTS
        if unknown:
            raise ValueError(
                f"the simulator sends no {sorted(unknown)} events; use {sorted(EVENTS)}"
            )
        with self._lock:
            self._ids += 1
            hook = Hook(id=self._ids, url=url, secret=secret, events=events or EVENTS)
            self.hooks.append(hook)
        self._start()
        return hook

    def remove_hook(self, hook: Hook) -> None:
        with self._lock:
            self.hooks = [h for h in self.hooks if h.id != hook.id]

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self.log)

    def redeliver(self, delivery_id: int) -> Delivery:
        """Send a logged delivery again (same GUID and body), as GitHub's "Redeliver"."""
        with self._lock:
            original = next((d for d in self.log if d.id == delivery_id), None)
            if original is None:
                raise ValueError(f"no webhook delivery with id {delivery_id}")
            self._ids += 1
            again = Delivery(
                id=self._ids,
                guid=original.guid,
                hook_id=original.hook_id,
                event=original.event,
                action=original.action,
                repo=original.repo,
                body=original.body,
                redelivery=True,
            )
            self.log.append(again)
        self._queue.put(again)
        return again

    def wait(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery was attempted; False on timeout."""
        with self._lock:
            pending = [d for d in self.log if not d.done.is_set()]
        return all(d.done.wait(timeout) for d in pending)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(30)
            self._thread = None

    # -- events to deliveries ----------------------------------------------------------------

    def emit_installation_repositories(
        self,
        *,
        action: str,
        installation: dict[str, Any],
        repos: list[Repo],
        sender: str,
        event: str = "installation_repositories",
    ) -> None:
        """``installation_repositories`` (added/removed), or ``installation`` (created)."""
        self._on_event(
            ModelEvent(
                event=event,
                action=action,
                repo=repos[0],
                sender=sender,
                extra={"installation": installation, "repos": repos},
            )
        )

    def _on_event(self, event: ModelEvent) -> None:
        # Called with Model.lock held: render now, while the state is the event's state.
        with self._lock:
            hooks = [h for h in self.hooks if event.event in h.events]
        if not hooks:
            return
        body = json.dumps(self._payload(event)).encode()
        guid = str(uuid.uuid4())
        for hook in hooks:
            with self._lock:
                self._ids += 1
                delivery = Delivery(
                    id=self._ids,
                    guid=guid,
                    hook_id=hook.id,
                    event=event.event,
                    action=event.action,
                    repo=event.repo.full_name,
                    body=body,
                )
                self.log.append(delivery)
            self._queue.put(delivery)

    def _payload(self, event: ModelEvent) -> dict[str, Any]:
        r, repo = self.renderer, event.repo
        data: dict[str, Any] = {"action": event.action}
        if event.event in ("installation_repositories", "installation"):
            extra = event.extra or {}
            repos = [
                {"id": x.id, "node_id": r.repo(x)["node_id"], "name": x.name,
                 "full_name": x.full_name, "private": x.private}
                for x in extra["repos"]
            ]  # fmt: skip
            data["installation"] = extra["installation"]
            if event.event == "installation":  # the App installed on an account
                data["repositories"] = repos
                data["requester"] = None
                data["sender"] = r.user(self.model.user(event.sender))
                return data
            data["repository_selection"] = "selected"
            data["repositories_added"] = repos if event.action == "added" else []
            data["repositories_removed"] = repos if event.action == "removed" else []
            data["requester"] = None
            data["sender"] = r.user(self.model.user(event.sender))
            return data
        if event.issue is not None and event.event != "pull_request_review_comment":
            data["issue"] = r.issue(repo, event.issue)
        if event.label is not None:
            data["label"] = r.label(repo, self.model.ensure_label(repo, event.label))
        if event.comment is not None:
            data["comment"] = r.comment(repo, event.comment)
        if event.review_comment is not None and event.issue is not None:
            data["comment"] = r.review_comment(repo, event.review_comment)
            data["pull_request"] = r.pull(repo, event.issue, _git.heads(repo.git_dir))
        if event.changes is not None:
            data["changes"] = event.changes
        data["repository"] = r.repo(repo)
        data["sender"] = r.user(self.model.user(event.sender))
        return data

    # -- the sender ------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="github-simulator-webhooks", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            try:
                self._send(delivery)
            finally:
                delivery.done.set()

    def _send(self, delivery: Delivery) -> None:
        with self._lock:
            hook = next((h for h in self.hooks if h.id == delivery.hook_id), None)
        if hook is None:
            delivery.error = "hook removed"
            return
        if self.faults.take_delivery(delivery.event) is not None:
            delivery.error = "dropped"
            return
        signature = hmac.new(hook.secret.encode(), delivery.body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(  # noqa: S310 - the URL a test registered
            hook.url,
            data=delivery.body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "GitHub-Hookshot/simulator",
                "X-GitHub-Event": delivery.event,
                "X-GitHub-Delivery": delivery.guid,
                "X-GitHub-Hook-ID": str(hook.id),
                "X-Hub-Signature-256": f"sha256={signature}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                response.read()
                delivery.status = response.status
        except urllib.error.HTTPError as exc:
            delivery.status = exc.code
            exc.close()
        except OSError as exc:  # refused, reset, timed out: GitHub logs it as failed
            delivery.error = f"{type(exc).__name__}: {exc}"
