"""Metrics and /healthz over real loopback HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cgr_cli.schedule._metrics import Metrics, MetricsAddressError, parse_address, serve


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Stats:
    requests: int
    rate_limit_remaining: int | None
    rate_limit_limit: int | None


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - http://127.0.0.1
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return exc.code, exc.headers["Content-Type"], body


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_over_http() -> None:
    from cgr_store import Run, RunKind, RunStatus

    metrics = Metrics(interval=10)
    metrics.loop_tick()
    metrics.run_started(kind="issue")
    metrics.run_started(kind="issue")
    metrics.run_started(kind="pr_mention")
    start = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    run = Run(id="r-1", repo="acme/widgets", target=1, kind=RunKind.ISSUE,
              status=RunStatus.SUCCEEDED, outcome="pr_opened", started_at=start,
              ended_at=start + timedelta(seconds=95), cost_usd=0.42)  # fmt: skip
    metrics.run_finished(run)
    metrics.run_ended("failed")
    metrics.set_active_runs(2)
    metrics.set_queue_depth(5)
    metrics.set_agents_at_work(1)
    metrics.claim_latency(0.3)
    metrics.github(Stats(requests=40, rate_limit_remaining=4960, rate_limit_limit=5000))
    metrics.github(Stats(requests=55, rate_limit_remaining=4945, rate_limit_limit=5000))
    metrics.github(
        Stats(requests=3, rate_limit_remaining=4942, rate_limit_limit=5000)
    )  # new client
    with serve("127.0.0.1:0", metrics) as server:
        status, content_type, text = _get(server.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    s = _samples(text)
    assert s[("cgr_runs_started_total", (("kind", "issue"),))] == 2
    assert s[("cgr_runs_started_total", (("kind", "pr_mention"),))] == 1
    assert s[("cgr_runs_ended_total", (("outcome", "pr_opened"),))] == 1
    assert s[("cgr_runs_ended_total", (("outcome", "failed"),))] == 1
    assert s[("cgr_active_runs", ())] == 2
    assert s[("cgr_queue_depth", ())] == 5
    assert s[("cgr_agents_at_work", ())] == 1
    assert s[("cgr_claim_latency_seconds_count", ())] == 1
    assert s[("cgr_agent_duration_seconds_sum", ())] == 95
    assert s[("cgr_agent_duration_seconds_bucket", (("le", "120.0"),))] == 1
    assert s[("cgr_agent_duration_seconds_bucket", (("le", "60.0"),))] == 0
    assert s[("cgr_agent_cost_usd_sum", ())] == pytest.approx(0.42)
    assert s[("cgr_github_requests_total", ())] == 58
    assert s[("cgr_github_rate_limit_remaining", ())] == 4942
    assert s[("cgr_github_rate_limit_limit", ())] == 5000


def test_healthz_turns_503_when_the_loop_stalls() -> None:
    clock = FakeClock()
    metrics = Metrics(interval=10, stall_factor=3, clock=clock)
    with serve("127.0.0.1:0", metrics) as server:
        status, _, body = _get(server.url + "/healthz")
        assert status == 200
        assert "not ticked yet" in json.loads(body)["reason"]
        clock.now += 31
        status, content_type, body = _get(server.url + "/healthz")
        assert status == 503
        assert content_type == "application/json"
        assert "has not ticked in 31 s" in json.loads(body)["reason"]
        metrics.loop_tick()
        assert _get(server.url + "/healthz")[0] == 200
        clock.now += 29
        assert _get(server.url + "/healthz")[0] == 200
        clock.now += 2
        status, _, body = _get(server.url + "/healthz")
        assert status == 503
        details = json.loads(body)
        assert details["status"] == "stalled"
        assert details["last_tick_age_seconds"] == 31
        assert details["limit_seconds"] == 30
        assert _get(server.url + "/nothing")[0] == 404
        age = _samples(_get(server.url + "/metrics")[2])[("cgr_loop_last_tick_age_seconds", ())]
        assert age == 31


def test_two_instances_do_not_share_counters_and_close_frees_the_port() -> None:
    first, second = Metrics(), Metrics()
    first.run_started()
    with serve("127.0.0.1:0", second) as server:
        text = _get(server.url + "/metrics")[2]
        host, port = server.address
    assert ("cgr_runs_started_total", (("kind", "run"),)) not in _samples(text)
    # Closed: the same port can be bound again at once.
    with serve(f"{host}:{port}", first) as again:
        assert _get(again.url + "/metrics")[0] == 200


def test_bad_addresses() -> None:
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    assert parse_address(":9464") == ("0.0.0.0", 9464)
    for bad in ("9464", "localhost:http", "127.0.0.1:70000"):
        with pytest.raises(MetricsAddressError):
            parse_address(bad)
    with serve("127.0.0.1:0", Metrics()) as busy:
        with pytest.raises(MetricsAddressError) as caught:
            serve(f"127.0.0.1:{busy.address[1]}", Metrics())
    assert "in use" in str(caught.value)
