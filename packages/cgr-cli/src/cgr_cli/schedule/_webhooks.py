"""``cgr daemon`` receiving GitHub webhooks, with polling kept as reconciliation.

**The server** is a small HTTP/1.1 handler on an anyio TCP listener, run as a task of the
daemon's own event loop. Why not ``http.server`` in a thread (as the metrics endpoint
does): an accepted delivery must reach the loop's state (the hint set, the wake-up) and
the store; in the loop that is a plain method call, from a thread it would need a
portal and a second store connection. Why not an HTTP framework: one POST route with a
bounded body needs none, and cgr adds no dependency for it. One request per connection
(``Connection: close``): GitHub opens a connection per delivery. Every read is bounded
(16 KiB of headers, ``webhook.max_body_bytes`` of body) and the whole exchange has a
deadline, so a slow or hostile client holds one task for seconds at most.

**A delivery** (``POST /`` or ``POST /webhook``) is verified by cgr_discovery's
``parse_webhook`` (gidgethub's sansio layer: HMAC-SHA256 over the body, constant-time
compare): a missing or wrong signature is 401 and changes nothing. Its
``X-GitHub-Delivery`` id is then recorded in the store (``TriggerKind.WEBHOOK_DELIVERY``);
a delivery id seen before (GitHub's redeliver, a proxy retrying) is answered 202 and
otherwise ignored. The answer is sent before any GitHub call is made.

**A payload is only a hint.** An event that could mean work (``issues``/``labeled`` with
the ready label, ``issue_comment`` created or edited and ``pull_request_review_comment``
created mentioning the bot) marks its repository for a re-read; the loop then runs the
ordinary scheduling pass over just the hinted repositories (``plan_pass``): the issues and
comments are read again from the API, the labeller's or author's access is checked again
by discovery's screening, processed triggers and the one-active-run rule apply as for
polling. A forged or stale payload can therefore start nothing the API does not confirm,
and a burst of deliveries for one repository costs one pass.

**Reconciliation.** GitHub never redelivers a failed delivery by itself, so the full
poll stays: every ``webhook.reconcile_seconds`` while webhooks are healthy, and every
``polling.interval_seconds`` while they are not. They are unhealthy when the last
reconcile pass started a run that no delivery announced (a delivery was lost) — until a
reconcile pass finds nothing missed. The first pass after start is a catch-up and counts
nothing as missed. Jobs a hinted pass left pending (no free slot) stay hinted, so the
pass after a child ends takes them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
import anyio.abc
import msgspec

from cgr_cli._errors import CgrError
from cgr_cli.config._model import Config, is_pattern
from cgr_cli.schedule._github import discovery_config
from cgr_cli.schedule._plan import PassReport, plan_pass

if TYPE_CHECKING:
    from cgr_cli.config._model import Secret
    from cgr_cli.schedule._github import GitHubSession
    from cgr_cli.schedule._metrics import Metrics
    from cgr_exec import ProcessIdentity
    from cgr_store import Run, Store

log = logging.getLogger("cgr.webhooks")

WEBHOOK_PATHS = frozenset({"/", "/webhook"})
MAX_HEADER_BYTES = 16 * 1024
EXCHANGE_SECONDS = 10.0
# Events whose payload can announce work, with the actions that can.
_WORK_EVENTS: dict[str, frozenset[str]] = {
    "issues": frozenset({"labeled"}),
    "issue_comment": frozenset({"created", "edited"}),
    "pull_request_review_comment": frozenset({"created"}),
}
_REASONS = {
    100: "Continue",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class WebhookListenError(CgrError):
    """``webhook.listen`` cannot be bound."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(
            f"webhook.listen = {address!r}: cannot listen there ({reason}); "
            "choose a free port or another address"
        )


def state_path(config: Config) -> Path:
    """``<db>.webhooks.json``: what the daemon last saw, for ``cgr status``."""
    return config.database.with_name(config.database.name + ".webhooks.json")


def read_state(config: Config) -> dict[str, Any] | None:
    """The daemon's webhook state file, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(state_path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(slots=True)
class _Delivery:
    """The last delivery received (for /healthz and ``cgr status``)."""

    event: str
    outcome: str
    at: float  # epoch seconds


@dataclass
class WebhookIntake:
    """Receives deliveries, keeps the hinted repositories, and plans the daemon's passes.

    ``plan`` has ``plan_pass``'s signature, so the daemon calls one or the other.
    """

    config: Config
    store: Store
    bot: str
    secret: Secret
    metrics: Metrics | None = None
    wake: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.monotonic
    address: tuple[str, int] | None = None
    hinted: set[str] = field(default_factory=set)
    healthy: bool = True
    missed_total: int = 0
    _last: _Delivery | None = None
    _last_reconcile: float | None = None  # clock() of the last full pass
    _last_reconcile_wall: float | None = None
    _reconcile_now: bool = False
    # "repo#n" left pending for want of a slot and already accounted for: announced by a
    # delivery, found by the catch-up pass, or counted as missed when a reconcile found it.
    _slot_pending: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._named = {r.lower(): r for r in self.config.repositories if not is_pattern(r)}
        self._patterns = [r.lower() for r in self.config.repositories if is_pattern(r)]
        self._dconfig = discovery_config(self.config, self.bot)

    # -- receiving -----------------------------------------------------------------------

    def receive(self, headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        """Verify, de-duplicate and note one delivery; (HTTP status, text) to answer."""
        from cgr_discovery import Secret as DiscoverySecret
        from cgr_discovery import WebhookError, find_mentions, parse_webhook
        from cgr_store import ProcessedTrigger, TriggerKind

        lowered = {k.lower(): v for k, v in headers.items()}
        name = lowered.get("x-github-event", "") or "unknown"
        try:
            event = parse_webhook(
                lowered, body, DiscoverySecret(self.secret.reveal()), self._dconfig
            )
        except (KeyError, TypeError, ValueError) as exc:
            # Signed, but its objects lack fields discovery reads (a payload GitHub's
            # schema would not produce): nothing can be taken from it.
            self._count(name, "malformed")
            log.warning("webhook delivery refused: a field is missing or odd (%r)", exc)
            return 400, "malformed delivery\n"
        except WebhookError as exc:
            malformed = "malformed" in str(exc)
            self._count(name, "malformed" if malformed else "bad_signature")
            log.warning("webhook delivery refused: %s", exc)
            return (400, "malformed delivery\n") if malformed else (401, "bad signature\n")
        if not self.store.mark_trigger_processed(
            ProcessedTrigger(
                kind=TriggerKind.WEBHOOK_DELIVERY, id=event.delivery_id, repo=event.repo or ""
            )
        ):
            self._count(event.event, "duplicate")
            return 202, "duplicate delivery: already handled\n"
        data = _payload(lowered, body)
        repo = self._follows(event.repo)
        outcome = "ignored"
        if event.event in ("installation_repositories", "installation"):
            # An installation's repositories changed, or the App was installed on (or
            # removed from) an account: the next pass re-reads the installations.
            self._reconcile_now = True
            outcome = "accepted"
        elif repo is not None and event.action in _WORK_EVENTS.get(event.event, ()):
            if event.event == "issues":
                label = str((data.get("label") or {}).get("name", ""))
                announces = label.lower() == self.config.labels.ready.lower()
            else:
                body_text = str((data.get("comment") or {}).get("body") or "")
                announces = bool(find_mentions(body_text, self.bot))
            if announces:
                self.hinted.add(repo)
                outcome = "accepted"
        self._count(event.event, outcome)
        if outcome == "accepted":
            log.info("webhook %s %s (%s): re-reading %s", event.event, event.action or "",
                     event.delivery_id, repo or "the installation")  # fmt: skip
            self.wake()
        return 202, f"{outcome}\n"

    def _follows(self, repo: str | None) -> str | None:
        """The repository as configured when cgr follows it (a name, or an App's pattern
        such as ``acme/*``: the pass that re-reads it asks the installation first)."""
        if not repo:
            return None
        named = self._named.get(repo.lower())
        if named is not None:
            return named
        return repo if any(fnmatch.fnmatchcase(repo.lower(), p) for p in self._patterns) else None

    def _count(self, event: str, outcome: str) -> None:
        self._last = _Delivery(event=event, outcome=outcome, at=time.time())
        if self.metrics is not None:
            self.metrics.webhook_delivery(event, outcome)
        self.write_state()

    # -- planning ------------------------------------------------------------------------

    def interval(self) -> float:
        """Seconds between full reconcile passes now."""
        if self.healthy:
            return self.config.webhook.reconcile_seconds
        return self.config.polling.interval_seconds

    def reconcile_due(self) -> bool:
        if self._last_reconcile is None or self._reconcile_now:
            return True
        return self.clock() - self._last_reconcile >= self.interval()

    async def plan(
        self,
        config: Config,
        store: Store,
        github: GitHubSession,
        *,
        host: str,
        slots: int,
        owner: ProcessIdentity,
        report: PassReport,
    ) -> list[Run]:
        """A full reconcile pass when one is due, else a pass over the hinted repositories
        only (nothing at all when none is hinted: an idle daemon sends no request)."""
        from cgr_store import RunStatus

        if self.reconcile_due():
            first = self._last_reconcile is None
            asked = {r.id for r in store.runs_by_status(RunStatus.QUEUED)}  # `cgr retry`
            self.hinted.clear()  # the full pass reads them too
            planned = await plan_pass(
                config, store, github, host=host, slots=slots, owner=owner, report=report
            )
            self._after_reconcile(planned, report, first=first, asked=asked)
            return planned
        if not self.hinted:
            return []
        repos = sorted(self.hinted)
        self.hinted.clear()
        narrowed = msgspec.structs.replace(config, repositories=repos)
        planned = await plan_pass(
            narrowed, store, github, host=host, slots=slots, owner=owner, report=report
        )
        for where in report.pending:
            # No free slot: keep the repository hinted; the pass after a child ends (the
            # daemon wakes then) takes the job, and the reconcile pass does not count it
            # as missed.
            self._slot_pending.add(where)
            self.hinted.add(where.rpartition("#")[0])
        if report.errors:
            self._reconcile_now = True  # GitHub trouble: let a full pass look again
        return planned

    def take_hints(self) -> list[str]:
        """The hinted repositories, now no longer hinted (a fleet host's pass reads them:
        schedule/_fleet.py)."""
        repos = sorted(self.hinted)
        self.hinted.clear()
        return repos

    def _after_reconcile(
        self, planned: list[Run], report: PassReport, *, first: bool, asked: set[str]
    ) -> None:
        # A job no delivery announced is missed whether this pass started it or left it
        # pending for want of a slot (counted now, not again when a later pass starts it).
        started = [f"{r.repo}#{r.target}" for r in planned if r.id not in asked]
        missed = [
            where
            for where in dict.fromkeys([*started, *report.pending])
            if where not in self._slot_pending
        ]
        self._slot_pending = set(report.pending)
        self._reconcile_now = bool(report.pending)  # left for want of a slot: look again
        self._last_reconcile = self.clock()
        self._last_reconcile_wall = time.time()
        if first:
            self.healthy = True
        elif missed:
            self.missed_total += len(missed)
            if self.metrics is not None:
                self.metrics.webhook_missed(len(missed))
            log.warning(
                "reconcile found %d trigger(s) no webhook delivery announced (%s); polling "
                "every %gs until a reconcile pass finds none",
                len(missed), ", ".join(missed),
                self.config.polling.interval_seconds,
            )  # fmt: skip
            self.healthy = False
        elif not self.healthy:
            log.info("reconcile found nothing missed: back to every %gs",
                     self.config.webhook.reconcile_seconds)  # fmt: skip
            self.healthy = True
        self.write_state()

    # -- health --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Webhook details for /healthz and the state file."""
        now = time.time()
        last = self._last
        return {
            "listen": None if self.address is None else f"{self.address[0]}:{self.address[1]}",
            "healthy": self.healthy,
            "last_delivery": None
            if last is None
            else {
                "event": last.event,
                "outcome": last.outcome,
                "at": last.at,
                "age_seconds": round(now - last.at, 3),
            },
            "last_reconcile_at": self._last_reconcile_wall,
            "reconcile_lag_seconds": None
            if self._last_reconcile_wall is None
            else round(now - self._last_reconcile_wall, 3),
            "reconcile_interval_seconds": self.interval(),
            "missed_total": self.missed_total,
        }

    def write_state(self) -> None:
        """Replace the state file atomically (``cgr status`` may read it at any time)."""
        path = state_path(self.config)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.health()), encoding="utf-8")
            tmp.replace(path)

    def remove_state(self) -> None:
        with contextlib.suppress(OSError):
            state_path(self.config).unlink()

    # -- serving -------------------------------------------------------------------------

    def attach(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        """Note the address ``listener`` (from :func:`bind`) is bound to."""
        # anyio's typed attributes (S610 mistakes `.extra` for Django's).
        sockname = listener.extra(anyio.abc.SocketAttribute.local_address)  # noqa: S610
        self.address = (str(sockname[0]), int(sockname[1]))
        self.write_state()

    async def serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        """Answer connections until cancelled."""
        await listener.serve(self.handle_connection)

    async def handle_connection(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(EXCHANGE_SECONDS):
                    status, text = await self._exchange(stream)
            except TimeoutError:
                status, text = 408, "request not received in time\n"
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the client went away: nobody to answer
            except Exception:
                # One bad delivery must never take the daemon's loop down with it.
                log.exception("webhook delivery failed")
                status, text = 500, "internal error\n"
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(_response(status, text))

    async def _exchange(  # noqa: PLR0911 - one answer per way a request can be wrong
        self, stream: anyio.abc.SocketStream
    ) -> tuple[int, str]:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > MAX_HEADER_BYTES:
                return 431, "headers too large\n"
            buffer += await stream.receive()
        head, _, rest = buffer.partition(b"\r\n\r\n")
        if len(head) > MAX_HEADER_BYTES:
            return 431, "headers too large\n"
        lines = head.decode("latin-1").split("\r\n")
        method, _, target = lines[0].partition(" ")
        path = target.partition(" ")[0].split("?", 1)[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        if path not in WEBHOOK_PATHS:
            return 404, "not found: GitHub deliveries go to / or /webhook\n"
        if method != "POST":
            return 405, "webhook deliveries are POST requests\n"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return 411, "send a Content-Length (GitHub does)\n"
        length_text = headers.get("content-length", "")
        if not length_text.isdigit():
            return 411, "Content-Length required\n"
        length = int(length_text)
        if length > self.config.webhook.max_body_bytes:
            # Refused before the body is read: a huge body costs nothing but this answer.
            self._count(headers.get("x-github-event", "unknown"), "too_large")
            return 413, f"body over {self.config.webhook.max_body_bytes} bytes\n"
        if headers.get("expect", "").lower() == "100-continue" and not rest:
            await stream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = rest
        while len(body) < length:
            body += await stream.receive(max(65536, length - len(body)))
        return self.receive(headers, body[:length])


def _response(status: int, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def _payload(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The (already verified) payload: JSON, or GitHub's form encoding (``payload=``)."""
    text = body.decode("utf-8", errors="replace")
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        text = (parse_qs(text).get("payload") or ["{}"])[0]
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def bind(config: Config) -> anyio.abc.Listener[anyio.abc.SocketStream]:
    """Bind ``webhook.listen``; a taken or invalid address is an error a user can fix.

    The daemon binds before it starts its task group, so this error reaches the user as
    itself rather than inside an exception group.
    """
    address = config.webhook.listen or ""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ":PORT" asks for every interface
    try:
        return await anyio.create_tcp_listener(local_host=host, local_port=int(port))
    except OSError as exc:
        raise WebhookListenError(address, exc.strerror or str(exc)) from None


def open_intake(
    config: Config, store: Store, bot: str, *, metrics: Metrics | None, wake: Callable[[], None]
) -> WebhookIntake | None:
    """The daemon's intake when ``webhook.listen`` is set, else None."""
    secret = config.webhook.resolved_secret()
    if config.webhook.listen is None or secret is None:
        return None
    return WebhookIntake(config=config, store=store, bot=bot, secret=secret, metrics=metrics,
                         wake=wake)  # fmt: skip
