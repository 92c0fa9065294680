"""`cgr daemon` with `[webhook] listen`: a real daemon process receives signed deliveries
over real HTTP on loopback, re-reads the simulator, and reconciles by polling."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cgr_discovery.testing import app_key_pems
from runworld import REPO, Env
from schedworld import Sched
from webhookworld import SECRET, comment_payload, deliver, labeled_payload


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _state(env: Env) -> dict[str, Any]:
    path = env.database.with_name(env.database.name + ".webhooks.json")
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _webhook_config(sched: Sched, **webhook: Any) -> str:
    port = _free_port()
    secret_file = sched.env.root / "hook.secret"
    secret_file.write_text(SECRET + "\n")
    sched.config(
        webhook={"listen": f"127.0.0.1:{port}", "secret_file": str(secret_file), **webhook},
    )
    return f"http://127.0.0.1:{port}"


def _reconciled(env: Env) -> float:
    return float(_state(env).get("last_reconcile_at") or 0)


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def _ready_list_requests(env: Env) -> int:
    return sum(
        1 for r in env.sim.requests if r.method == "GET" and r.path == f"/repos/{REPO}/issues"
    )


@pytest.mark.slow
def test_a_delivery_starts_the_run_at_once_and_only_a_genuine_one(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """Polling is an hour apart here: only the webhook path can start the run in time."""
    url = _webhook_config(sched, reconcile_seconds=3600)
    metrics_port = _free_port()
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "5", "--metrics", f"127.0.0.1:{metrics_port}",
                         log=log)  # fmt: skip
    try:
        sched.wait_until(lambda: _reconciled(env) > 0, 30, "the first reconcile pass")
        # Idle between reconciles: the loop ticks (every 0.2 s) but asks GitHub nothing.
        env.sim.clear_requests()
        time.sleep(1.5)
        assert _ready_list_requests(env) == 0
        assert env.sim.requests == []  # nothing at all: reaping and heartbeats are local
        (number,) = env.sim.seed_ready_issues(REPO, 1)
        # The label event's delivery, refused unsigned, wrongly signed or too large.
        payload = labeled_payload(env, number)
        assert deliver(url, "issues", payload, signed=False)[0].status_code == 401
        assert deliver(url, "issues", payload, secret="wrong")[0].status_code == 401
        big = {**payload, "padding": "x" * 2_000_000}
        assert deliver(url, "issues", big)[0].status_code == 413
        assert httpx.get(url + "/webhook", timeout=5).status_code == 405
        assert httpx.post(url + "/elsewhere", content=b"{}", timeout=5).status_code == 404
        time.sleep(1.0)
        assert sched.runs() == []  # nothing refused started anything
        sent = time.monotonic()
        answer, delivery = deliver(url + "/webhook", "issues", payload)
        assert answer.status_code == 202
        assert answer.text == "accepted\n"
        sched.wait_until(lambda: len(sched.runs()) == 1, 20, "the run the delivery announced")
        latency = time.monotonic() - sent
        # GitHub's redeliver (same delivery id): answered, never a second run.
        again = deliver(url, "issues", payload, delivery=delivery)[0]
        assert again.status_code == 202
        assert "duplicate" in again.text
        sched.wait_until(sched.all_terminal, 60, "the run to end")
        # The same payload under a new delivery id (a replay): the API says the issue is
        # no longer ready (the run took the label), so nothing starts.
        assert deliver(url, "issues", payload)[0].status_code == 202
        # A genuine signature on a payload the API contradicts: an issue with no label.
        plain = env.sim.create_issue(REPO, "Not ready", "no label", author="alice")
        assert deliver(url, "issues", labeled_payload(env, plain))[0].status_code == 202
        # A mention by an outsider: the payload mentions the bot, screening refuses it.
        outsider, comment = env.sim.seed_outsider_mention(REPO)
        assert (
            deliver(url, "issue_comment", comment_payload(env, outsider, comment))[0].status_code
            == 202
        )
        time.sleep(2.0)
        assert len(sched.runs()) == 1
        # A collaborator's mention, edited in: an edited comment is a trigger too.
        mentioned, comment = env.sim.seed_mention(REPO, author="bob", kind="collaborator",
                                                  body="no mention yet")  # fmt: skip
        env.sim.edit_comment(REPO, comment, f"@{env.sim.bot_login} please fix this")
        edited = comment_payload(env, mentioned, comment, action="edited")
        assert deliver(url, "issue_comment", edited)[0].status_code == 202
        sched.wait_until(lambda: len(sched.runs()) == 2, 20, "the mention's run")
        assert {r.target for r in sched.runs()} == {number, mentioned}
        sched.wait_until(sched.all_terminal, 60, "the runs to end")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz") as answer:
            health = json.loads(answer.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as answer:
            text = answer.read().decode()
        status = sched.cgr("status")
    finally:
        code = sched.stop(daemon)
    assert code == 0, log.read_text()
    assert latency < 20
    hooks = health["webhooks"]
    assert hooks["healthy"] is True
    assert hooks["last_delivery"]["event"] == "issue_comment"
    assert hooks["reconcile_interval_seconds"] == 3600
    assert hooks["reconcile_lag_seconds"] >= 0
    total = "cgr_webhook_deliveries_total"
    assert _metric(text, total, event="issues", outcome="bad_signature") == 2
    assert _metric(text, total, event="issues", outcome="too_large") == 1
    assert _metric(text, total, event="issues", outcome="duplicate") == 1
    assert _metric(text, total, event="issues", outcome="accepted") == 3
    assert _metric(text, total, event="issue_comment", outcome="accepted") == 2
    assert status.returncode == 0
    assert f"webhooks    {url[7:]}: last delivery" in status.stdout
    assert "(issue_comment, accepted); reconciled" in status.stdout


@pytest.mark.slow
def test_dropped_deliveries_are_found_by_the_next_reconcile(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """A scaled-down mix: delivered, duplicated, forged (bad signature) and dropped
    deliveries; one run per genuine trigger, none from a forgery, the dropped ones found
    by reconciliation, which then polls at the shorter interval until it misses nothing."""
    url = _webhook_config(sched, reconcile_seconds=4)
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "0.1")
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "5", log=log)
    try:
        sched.wait_until(lambda: _reconciled(env) > 0, 30, "the first reconcile pass")
        delivered = env.sim.seed_ready_issues(REPO, 3)
        forged = [env.sim.create_issue(REPO, f"Forged {i}", "x", author="alice") for i in range(3)]
        for number in forged:
            # Claims to be a ready label, signed with the wrong secret: refused, 401.
            answer = deliver(url, "issues", labeled_payload(env, number), secret="guess")[0]
            assert answer.status_code == 401
        for number in delivered:
            payload = labeled_payload(env, number)
            answer, delivery = deliver(url, "issues", payload)
            assert answer.status_code == 202
            assert deliver(url, "issues", payload, delivery=delivery)[0].status_code == 202
        sched.wait_until(lambda: {r.target for r in sched.runs()} >= set(delivered), 20,
                         "the delivered triggers' runs")  # fmt: skip
        # Their passes are over (each child's end wakes the loop, which drains the hints).
        sched.wait_until(sched.all_terminal, 60, "the delivered runs to end")
        time.sleep(0.5)
        # Two more triggers whose deliveries are lost on the way (never sent). A delivery
        # re-reads its whole repository, so these come after the delivered ones' passes.
        before = _reconciled(env)
        dropped = env.sim.seed_ready_issues(REPO, 2)
        issues = delivered + dropped
        time.sleep(0.5)
        if _reconciled(env) == before:  # no reconcile pass yet: nothing found them
            assert not {r.target for r in sched.runs()} & set(dropped)
        sched.wait_until(lambda: {r.target for r in sched.runs()} == set(issues), 30,
                         "the dropped triggers' runs (reconcile)")  # fmt: skip
        sched.wait_until(sched.all_terminal, 60, "all runs to end")
        state = _state(env)
        assert state["missed_total"] == len(dropped), log.read_text()
        # Unhealthy after that pass (polling every 0.2 s), healthy again after the next
        # pass found nothing missed: back to the long interval.
        sched.wait_until(lambda: _state(env).get("healthy") is True, 20, "webhooks healthy again")
        assert _state(env)["reconcile_interval_seconds"] == 4
        text = log.read_text()
        assert "reconcile found 2 trigger(s) no webhook delivery announced" in text
        assert text.index("no webhook delivery announced") < text.index("back to every 4s")
    finally:
        code = sched.stop(daemon)
    assert code == 0, log.read_text()
    targets = [r.target for r in sched.runs()]
    assert sorted(targets) == sorted(issues)  # exactly one run per trigger
    assert not set(forged) & set(targets)


def test_a_reconcile_counts_a_job_it_left_pending_as_missed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost delivery found by a reconcile pass while every slot is busy is missed then,
    not excused because it had to wait; the pass that later starts it does not count it
    again. A job a delivery announced and a slot held up is not missed."""
    import anyio

    from cgr_cli import parse_config
    from cgr_cli.config._model import Secret
    from cgr_cli.schedule import _webhooks
    from cgr_cli.schedule._plan import PassReport
    from cgr_store import Run, RunKind, SQLiteStore

    found: list[tuple[list[str], list[str]]] = []  # each pass: (started, left pending)

    async def fake_pass(config: Any, *args: Any, report: PassReport, **kwargs: Any) -> list[Run]:
        started, pending = found.pop(0)
        report.pending.extend(f"acme/widgets#{n}" for n in pending)
        return [
            Run(id=f"r{n}", repo="acme/widgets", target=int(n), kind=RunKind.ISSUE) for n in started
        ]

    monkeypatch.setattr(_webhooks, "plan_pass", fake_pass)
    config = parse_config({
        "repositories": ["acme/widgets"], "paths": {"database": str(tmp_path / "db.sqlite3")},
        "webhook": {"listen": "127.0.0.1:0", "secret": SECRET, "reconcile_seconds": 60},
    })  # fmt: skip
    now = [0.0]
    with SQLiteStore(tmp_path / "db.sqlite3") as store:
        intake = _webhooks.WebhookIntake(config=config, store=store, bot="cgr-bot",
                                         secret=Secret(SECRET), clock=lambda: now[0])  # fmt: skip

        def reconcile(started: list[str], pending: list[str]) -> None:
            found.append((started, pending))
            now[0] += 61
            kw: Any = {"host": "h", "slots": 1, "owner": None, "report": PassReport()}
            anyio.run(lambda: intake.plan(config, store, None, **kw))  # type: ignore[arg-type]

        reconcile(["1"], ["2"])  # the catch-up: nothing missed, #2 accounted for
        assert (intake.missed_total, intake.healthy) == (0, True)
        reconcile(["2"], ["3"])  # #2 started; #3 was never announced, and has to wait
        assert (intake.missed_total, intake.healthy) == (1, False)
        reconcile(["3"], [])  # #3 started now: already counted
        assert (intake.missed_total, intake.healthy) == (1, True)
        intake.hinted.add("acme/widgets")  # a delivery announced #4; no slot for it
        found.append(([], ["4"]))
        kw: Any = {"host": "h", "slots": 0, "owner": None, "report": PassReport()}
        now[0] += 1
        anyio.run(lambda: intake.plan(config, store, None, **kw))  # type: ignore[arg-type]
        reconcile(["4"], [])
        assert (intake.missed_total, intake.healthy) == (1, True)


def test_webhook_config_errors_name_the_fix(env: Env, sched: Sched, tmp_path: Path) -> None:
    from cgr_cli import ConfigError, load_config

    sched.config(webhook={"listen": "127.0.0.1:8787"})
    with pytest.raises(
        ConfigError, match=r"webhook.listen = '127.0.0.1:8787' needs webhook.secret"
    ):
        load_config(env.config_path)
    sched.config(webhook={"listen": "nowhere", "secret": "s"})
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        load_config(env.config_path)
    sched.config(webhook={"listen": "127.0.0.1:1", "secret_file": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match=r"webhook.secret_file = .*cannot read it"):
        load_config(env.config_path)
    (tmp_path / "s").write_text("abc\n")
    sched.config(webhook={"listen": "127.0.0.1:1", "secret_file": str(tmp_path / "s")})
    config, _ = load_config(env.config_path)
    secret = config.webhook.resolved_secret()
    assert secret is not None
    assert secret.reveal() == "abc"
    assert "abc" not in sched.cgr("config", "check").stdout


def test_a_taken_webhook_port_is_a_clear_error(env: Env, sched: Sched) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sched.config(webhook={"listen": f"127.0.0.1:{port}", "secret": SECRET})
        done = sched.cgr("daemon", timeout=60)
    assert done.returncode in {1, 2}, done.stderr  # an error the user can fix
    assert f"webhook.listen = '127.0.0.1:{port}': cannot listen there" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_as_a_github_app_with_the_simulators_own_deliveries(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """The simulator signs and sends the deliveries (one dropped by its fault); cgr runs
    as a GitHub App: installation tokens for the API and git, its bot `<slug>[bot]`."""
    private, public = app_key_pems()
    pem = tmp_path / "app.pem"
    pem.write_text(private)
    bot = env.sim.register_app(4321, public, slug="cgr-app")
    env.sim.install_app(4321, [REPO])
    port = _free_port()
    sched.config(
        github={"token": None, "bot_login": None, "app_id": 4321, "private_key_file": str(pem)},
        webhook={"listen": f"127.0.0.1:{port}", "secret": SECRET, "reconcile_seconds": 3},
    )
    env.sim.add_webhook(f"http://127.0.0.1:{port}/webhook", SECRET)
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "5", log=log)
    try:
        sched.wait_until(lambda: _reconciled(env) > 0, 30, "the first reconcile pass")
        (first,) = env.sim.seed_ready_issues(REPO, 1)
        sched.wait_until(lambda: len(sched.runs()) == 1, 20, "the delivered label's run")
        # Its report's label writes (and their deliveries) come after its row ended: the
        # drop below is for the second issue's label, not one of those.
        sched.wait_until(sched.settled, 60, "the run to end and report")
        env.sim.wait_for_deliveries()
        env.sim.faults.drop_delivery(event="issues")
        (second,) = env.sim.seed_ready_issues(REPO, 1)
        sched.wait_until(lambda: len(sched.runs()) == 2, 30, "the dropped label's run (reconcile)")
        sched.wait_until(sched.all_terminal, 60, "the run to end")
        state = _state(env)
    finally:
        code = sched.stop(daemon)
    assert code == 0, log.read_text()
    assert {r.target for r in sched.runs()} == {first, second}
    assert {r.outcome for r in sched.runs()} == {"pr_opened"}, log.read_text()
    assert state["missed_total"] == 1
    dropped = [d for d in env.sim.deliveries if d.event == "issues" and d.error == "dropped"]
    assert len(dropped) == 1
    # Every other label event (the ready one, and the run's own in-progress) was answered.
    assert {d.status for d in env.sim.deliveries if d.event == "issues" and not d.error} == {202}
    authors = {c.user for c in env.sim.comments(REPO, first)}
    assert bot in authors


@pytest.mark.slow
def test_the_simulators_redeliver_call_duplicate_and_dropped(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """GitHub's "Redeliver" sends a delivery again with the same GUID: one already
    handled starts nothing (the daemon says duplicate), one that was dropped on the way
    starts its run at once (reconcile is an hour away, so only the redelivery can)."""
    url = _webhook_config(sched, reconcile_seconds=3600)
    env.sim.add_webhook(url + "/webhook", SECRET, events=["issues"])
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "0.1")
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "5", log=log)
    try:
        sched.wait_until(lambda: _reconciled(env) > 0, 30, "the first reconcile pass")
        (first,) = env.sim.seed_ready_issues(REPO, 1)
        sched.wait_until(lambda: len(sched.runs()) == 1, 20, "the delivered label's run")
        sched.wait_until(sched.settled, 60, "the run to end and report")
        env.sim.wait_for_deliveries()
        labels = [d for d in env.sim.deliveries if d.event == "issues"]
        handled = next(d for d in labels if d.payload["label"]["name"] == "ready")
        assert handled.status == 202
        again = env.sim.redeliver(handled.id)
        env.sim.wait_for_deliveries()
        assert again.guid == handled.guid
        assert again.redelivery
        assert again.status == 202
        # Recognised by its GUID: not even re-read.
        assert _state(env)["last_delivery"]["outcome"] == "duplicate"
        env.sim.faults.drop_delivery(event="issues")
        (second,) = env.sim.seed_ready_issues(REPO, 1)
        env.sim.wait_for_deliveries()
        lost = next(d for d in env.sim.deliveries if d.error == "dropped")
        time.sleep(1.0)
        assert second not in {r.target for r in sched.runs()}  # nothing announced it
        resent = env.sim.redeliver(lost.id)
        env.sim.wait_for_deliveries()
        assert resent.status == 202
        sched.wait_until(lambda: second in {r.target for r in sched.runs()}, 20,
                         "the redelivered label's run")  # fmt: skip
        sched.wait_until(sched.all_terminal, 60, "the runs to end")
    finally:
        code = sched.stop(daemon)
    assert code == 0, log.read_text()
    assert sorted(r.target for r in sched.runs()) == sorted([first, second])
