"""`cgr daemon --metrics`: a real daemon process serves /metrics and /healthz on loopback
while it schedules runs against the GitHub simulator."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runworld import REPO, Env
from schedworld import Sched


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - http://127.0.0.1
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return exc.code, body
    except OSError:
        return 0, ""


def _value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


@pytest.mark.slow
def test_daemon_serves_metrics_and_health(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    sched.config(polling={"max_concurrency": 2, "runs_ahead": 0})
    env.sim.seed_ready_issues(REPO, 2)
    url = f"http://127.0.0.1:{_free_port()}"
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "5", "--metrics", url[7:], log=log)
    try:
        sched.wait_until(lambda: _get(url + "/healthz")[0] == 200, 30, "the health endpoint")
        sched.wait_until(lambda: len(sched.runs()) == 2 and sched.all_terminal(), 90, "both runs")

        def counted() -> bool:
            text = _get(url + "/metrics")[1]
            # The gauges are set at the end of each pass, just after the counters.
            return (
                _value(text, "cgr_runs_ended_total", outcome="pr_opened") == 2
                and _value(text, "cgr_active_runs") == 0
            )

        sched.wait_until(counted, 30, "both runs in the metrics")
        text = _get(url + "/metrics")[1]
        status, body = _get(url + "/healthz")
    finally:
        code = sched.stop(daemon)
    assert code == 0, log.read_text()
    assert _value(text, "cgr_runs_started_total", kind="issue") == 2
    assert _value(text, "cgr_agent_duration_seconds_count") == 2
    # Each child's claim (row written at discovery → claimed on GitHub) was measured once.
    assert _value(text, "cgr_claim_latency_seconds_count") == 2
    assert (_value(text, "cgr_claim_latency_seconds_sum") or 0) > 0
    assert _value(text, "cgr_active_runs") == 0
    assert _value(text, "cgr_queue_depth") == 0
    assert _value(text, "cgr_agents_at_work") == 0
    assert (_value(text, "cgr_github_requests_total") or 0) > 0
    assert _value(text, "cgr_github_rate_limit_limit") == 5000
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    # Stopped: the port is closed with the daemon.
    assert _get(url + "/healthz")[0] == 0
