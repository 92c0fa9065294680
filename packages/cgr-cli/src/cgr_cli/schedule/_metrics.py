"""Prometheus metrics and a health endpoint for ``cgr daemon``.

A standalone component: the daemon owns one :class:`Metrics`, calls its methods as things
happen, and serves it with :func:`serve`::

    metrics = Metrics(interval=config.polling.interval_seconds)
    server = serve("127.0.0.1:9464", metrics)      # a daemon thread; port 0 picks one
    try:
        while running:
            metrics.loop_tick()                      # once per scheduling loop
            metrics.set_queue_depth(len(queued)); metrics.set_active_runs(len(children))
            metrics.set_agents_at_work(len(running))  # runs that have their agent slot
            metrics.claim_latency(seconds)           # discovery → run claimed
            metrics.run_started(kind="issue")
            metrics.run_finished(run)                # a cgr_store.Run that ended
            metrics.github(client.stats())           # after each pass (GitHubClient.stats())
    finally:
        server.close()

``GET /metrics`` is the Prometheus text format. ``GET /healthz`` answers 200 while the
loop ticks and 503 once the last tick is older than ``stall_factor * interval`` (a hung
loop: a deadlock, a blocking call without timeout). Both are JSON-free except /healthz,
which returns a small JSON body saying why.

Every metric lives in the instance's own registry, never the process-wide default one, so
two daemons in one test process (or a test next to a daemon) never share counters.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from cgr_cli._errors import CgrError

# Seconds: a claim is a few GitHub calls; an agent runs minutes to an hour.
_CLAIM_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_AGENT_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 5400, 7200)
_COST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20)


class MetricsAddressError(CgrError):
    """The metrics address is not ``HOST:PORT`` or cannot be bound."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"metrics address {address!r}: {reason}")


class _ClientStats(Protocol):
    """What :meth:`Metrics.github` reads (``cgr_discovery.ClientStats`` has it)."""

    @property
    def requests(self) -> int: ...
    @property
    def rate_limit_remaining(self) -> int | None: ...
    @property
    def rate_limit_limit(self) -> int | None: ...


class _EndedRun(Protocol):
    """What :meth:`Metrics.run_finished` reads (``cgr_store.Run`` has it)."""

    @property
    def status(self) -> str: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def ended_at(self) -> datetime | None: ...
    @property
    def cost_usd(self) -> float | None: ...


class Metrics:
    """The daemon's counters, gauges and histograms, and its loop's liveness.

    ``interval`` is the loop period in seconds; the loop counts as stalled when its last
    :meth:`loop_tick` is more than ``stall_factor * interval`` old (and, before the first
    tick, that long after construction).
    """

    def __init__(
        self,
        *,
        interval: float = 60.0,
        stall_factor: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry()
        self.interval = interval
        self.stall_factor = stall_factor
        self._clock = clock
        self._lock = threading.Lock()
        self._created = clock()
        self._last_tick: float | None = None
        self._github_last = 0
        r = self.registry
        self._started = Counter("cgr_runs_started", "Runs started", ["kind"], registry=r)
        self._ended = Counter("cgr_runs_ended", "Runs ended, by outcome", ["outcome"], registry=r)
        self._active = Gauge("cgr_active_runs", "Runs running now", registry=r)
        self._queue = Gauge("cgr_queue_depth", "Runs queued and not started", registry=r)
        self._agents = Gauge(
            "cgr_agents_at_work", "This host's runs whose agent has its slot", registry=r
        )
        self._claim = Histogram(
            "cgr_claim_latency_seconds",
            "From discovery to the run claimed on GitHub",
            buckets=_CLAIM_BUCKETS,
            registry=r,
        )
        self._agent = Histogram(
            "cgr_agent_duration_seconds",
            "Wall time of finished runs' agents",
            buckets=_AGENT_BUCKETS,
            registry=r,
        )
        self._cost = Histogram(
            "cgr_agent_cost_usd",
            "Cost of finished runs (USD); _sum is the total",
            buckets=_COST_BUCKETS,
            registry=r,
        )
        self._gh_requests = Counter("cgr_github_requests", "Requests sent to GitHub", registry=r)
        self._gh_remaining = Gauge(
            "cgr_github_rate_limit_remaining", "GitHub quota left in the window", registry=r
        )
        self._gh_limit = Gauge("cgr_github_rate_limit_limit", "GitHub quota per window", registry=r)
        self._tick_age = Gauge(
            "cgr_loop_last_tick_age_seconds", "Seconds since the loop last ticked", registry=r
        )
        self._tick_age.set_function(self._age_or_uptime)
        self._deliveries = Counter(
            "cgr_webhook_deliveries",
            "Webhook deliveries, by event and outcome (accepted, ignored, duplicate, "
            "bad_signature, malformed, too_large)",
            ["event", "outcome"],
            registry=r,
        )
        self._missed = Counter(
            "cgr_webhook_missed",
            "Triggers a reconcile poll found that no webhook delivery announced",
            registry=r,
        )
        # Set by the daemon when it receives webhooks: their details join /healthz.
        self.webhook_health: Callable[[], dict[str, Any]] | None = None

    # -- what the daemon calls -----------------------------------------------------------

    def loop_tick(self) -> None:
        """Once per scheduling loop: the loop is alive."""
        with self._lock:
            self._last_tick = self._clock()

    def run_started(self, kind: str = "run") -> None:
        self._started.labels(kind=kind).inc()

    def run_ended(
        self,
        outcome: str,
        *,
        agent_seconds: float | None = None,
        cost_usd: float | None = None,
    ) -> None:
        self._ended.labels(outcome=outcome).inc()
        if agent_seconds is not None and agent_seconds >= 0:
            self._agent.observe(agent_seconds)
        if cost_usd is not None and cost_usd >= 0:
            self._cost.observe(cost_usd)

    def run_finished(self, run: _EndedRun) -> None:
        """:meth:`run_ended` from a finished ``cgr_store.Run`` (outcome, times, cost)."""
        seconds = None
        if run.started_at is not None and run.ended_at is not None:
            seconds = (run.ended_at - run.started_at).total_seconds()
        self.run_ended(run.outcome or str(run.status), agent_seconds=seconds, cost_usd=run.cost_usd)

    def set_active_runs(self, count: int) -> None:
        self._active.set(count)

    def set_queue_depth(self, count: int) -> None:
        self._queue.set(count)

    def set_agents_at_work(self, count: int) -> None:
        self._agents.set(count)

    def claim_latency(self, seconds: float) -> None:
        self._claim.observe(max(0.0, seconds))

    def webhook_delivery(self, event: str, outcome: str) -> None:
        self._deliveries.labels(event=event, outcome=outcome).inc()

    def webhook_missed(self, count: int = 1) -> None:
        self._missed.inc(count)

    def github(self, stats: _ClientStats) -> None:
        """Record a ``GitHubClient.stats()`` snapshot; call it after each pass.

        Requests are counted by the growth of the client's counter since the previous
        snapshot; a counter that went down means a new client, counted from zero. (One
        client at a time, as the daemon has.)
        """
        with self._lock:
            last = self._github_last
            self._github_last = stats.requests
        grown = stats.requests - last if stats.requests >= last else stats.requests
        if grown > 0:
            self._gh_requests.inc(grown)
        if stats.rate_limit_remaining is not None:
            self._gh_remaining.set(stats.rate_limit_remaining)
        if stats.rate_limit_limit is not None:
            self._gh_limit.set(stats.rate_limit_limit)

    # -- health ----------------------------------------------------------------------------

    def _age_or_uptime(self) -> float:
        with self._lock:
            since = self._last_tick if self._last_tick is not None else self._created
        return max(0.0, self._clock() - since)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, details): unhealthy when the loop has not ticked in time."""
        limit = self.stall_factor * self.interval
        with self._lock:
            ticked = self._last_tick is not None
        age = self._age_or_uptime()
        healthy = age <= limit
        if healthy:
            reason = "the loop ticks" if ticked else "starting: the loop has not ticked yet"
        elif ticked:
            reason = f"stalled: the loop last ticked {age:.0f} s ago (limit {limit:.0f} s)"
        else:
            reason = f"stalled: the loop has not ticked in {age:.0f} s (limit {limit:.0f} s)"
        details: dict[str, Any] = {
            "status": "ok" if healthy else "stalled",
            "reason": reason,
            "last_tick_age_seconds": round(age, 3),
            "limit_seconds": limit,
        }
        if self.webhook_health is not None:
            details["webhooks"] = self.webhook_health()
        return healthy, details

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[::1]:PORT``."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise MetricsAddressError(address, "expected HOST:PORT, e.g. 127.0.0.1:9464")
    port = int(port_text)
    if port > 65535:
        raise MetricsAddressError(address, "the port must be at most 65535")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ":PORT" asks for every interface
    return host, port


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.server.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            healthy, details = self.server.metrics.health()
            body = json.dumps(details).encode() + b"\n"
            self._send(200 if healthy else 503, body, "application/json")
        else:
            self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every few seconds would flood the daemon's log; errors still surface.
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics


class MetricsServer:
    """A running metrics server; :meth:`close` stops it and joins its thread."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(address: str, metrics: Metrics) -> MetricsServer:
    """Serve ``metrics`` on ``address`` (``HOST:PORT``) from a daemon thread.

    The thread is a daemon thread so a crashing daemon never hangs on it; still call
    ``close()`` on the way out. Start it *after* any ``fork()``: a forked child would
    inherit the listening socket but not the thread.
    """
    host, port = parse_address(address)
    try:
        server = _Server((host, port), _Handler)
    except OSError as exc:
        raise MetricsAddressError(address, exc.strerror or str(exc)) from None
    server.metrics = metrics
    thread = threading.Thread(target=server.serve_forever, name=f"cgr-metrics-{port}", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
