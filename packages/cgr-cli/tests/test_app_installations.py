"""cgr as a GitHub App installed on several accounts, and with installation tokens that
expire while a run goes on: real `cgr` processes and real git against the simulator,
which records which installation's token made each call and refuses expired tokens."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from cgr_cli import main
from cgr_discovery.testing import app_key_pems
from runworld import REPO, Env
from schedworld import Sched

APP_ID = 4321
OTHER = "globex/gears"
LABELS = ["ready", "in-progress", "needs-human", "cgr-done"]


def _register(env: Env) -> tuple[Path, str]:
    """The test App on the simulator; its private key file and its bot login."""
    private, public = app_key_pems()
    pem = env.root / "app.pem"
    pem.write_text(private)
    return pem, env.sim.register_app(APP_ID, public, slug="cgr-app")


def _app_config(sched: Sched, pem: Path, *, repositories: str | None = None, **github: Any) -> None:
    env = sched.env
    sched.config(github={"token": None, "bot_login": None, "app_id": APP_ID,
                         "private_key_file": str(pem), **github})  # fmt: skip
    if repositories is not None:
        lines = env.config_path.read_text().splitlines()
        lines[0] = f"repositories = {repositories}"
        env.config_path.write_text("\n".join(lines) + "\n")


def _touches(record: Any, repo: str) -> bool:
    """A REST call on ``repo`` or a git request to it (installation lookups aside)."""
    lookup = f"/repos/{repo}/installation"
    return record.path.startswith((f"/repos/{repo}/", f"/{repo}.git/")) and record.path != lookup


@pytest.mark.slow
def test_two_installations_on_two_owners_each_run_with_its_own_token(
    env: Env, sched: Sched, subreaper: None
) -> None:
    """No installation id: cgr lists the App's installations, follows the repositories of
    both, and every call on a repository carries its own installation's token."""
    pem, bot = _register(env)
    env.sim.create_repo(OTHER, labels=LABELS, private=True, bot_role=None)
    acme = env.sim.install_app(APP_ID, [REPO])
    globex = env.sim.install_app(APP_ID, [OTHER])
    _app_config(sched, pem, repositories='"installation"')
    (first,) = env.sim.seed_ready_issues(REPO, 1)
    (second,) = env.sim.seed_ready_issues(OTHER, 1)
    env.sim.clear_requests()
    done = sched.cgr("tick")
    assert done.returncode == 0, done.stderr
    sched.wait_until(
        lambda: len(sched.runs()) == 2 and sched.all_terminal(), 60, "both runs to end"
    )
    assert {(r.repo, r.target, r.outcome) for r in sched.runs()} == {
        (REPO, first, "pr_opened"),
        (OTHER, second, "pr_opened"),
    }
    assert bot in {c.user for c in env.sim.comments(OTHER, second)}
    assert [p.user for p in env.sim.pull_requests(OTHER)] == [bot]
    requests = env.sim.requests
    for repo, installation in ((REPO, acme), (OTHER, globex)):
        made = [r for r in requests if _touches(r, repo)]
        assert {r.installation for r in made} == {installation}, (repo, made[:3])
        pushes = [r for r in made if r.path.endswith("/git-receive-pack")]
        assert pushes
        assert {r.status for r in pushes} == {200}
    assert not [r for r in requests if r.status == 401]


@pytest.mark.slow
def test_a_run_longer_than_its_token_still_pushes_and_reports(env: Env, sched: Sched) -> None:
    """Installation tokens live 3 s here and the agent works 5 s: the token the run
    started with is refused by then (401), so the push, the pull request and the report
    go through only because the run renewed its token before it lapsed."""
    pem, bot = _register(env)
    env.sim.install_app(APP_ID, [REPO])
    env.sim.installation_token_seconds = 3
    _app_config(sched, pem)
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "5")
    (number,) = env.sim.seed_ready_issues(REPO, 1)
    env.sim.clear_requests()
    assert env.run(number) == 0
    (run,) = sched.runs()
    assert run.outcome == "pr_opened", run
    (pull,) = env.sim.pull_requests(REPO)
    assert pull.user == bot
    assert bot in {c.user for c in env.sim.comments(REPO, number)}
    requests = env.sim.requests
    minted = [r for r in requests if r.path.endswith("/access_tokens")]
    assert len(minted) >= 3  # the first token, then renewals while the agent worked
    assert not [r for r in requests if r.status == 401], [r for r in requests if r.status == 401]
    pushes = [r for r in requests if r.path.endswith("/git-receive-pack")]
    assert pushes
    assert {r.status for r in pushes} == {200}


def _doctor(config: Path) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["doctor", "--config", str(config), "--json", "--min-free-gib", "0.01"])
    return code, json.loads(out.getvalue())


def _checks(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["name"] == name]


def test_doctor_passes_a_good_app_and_names_a_missing_permission(env: Env, sched: Sched) -> None:
    pem, bot = _register(env)
    env.sim.create_repo(OTHER, labels=LABELS, bot_role=None)
    acme = env.sim.install_app(APP_ID, [REPO])
    _app_config(sched, pem, repositories='"installation"')
    _, report = _doctor(env.config_path)
    (app,) = _checks(report, "github app")
    assert app["status"] == "pass"
    assert app["data"]["bot_login"] == bot
    assert "the key signs" in app["detail"]
    (installation,) = _checks(report, "installation")
    assert installation["status"] == "pass", installation
    assert installation["data"]["id"] == acme
    assert "issues, pull requests and contents: write; metadata: read" in installation["detail"]
    (repos,) = _checks(report, "repositories")
    assert repos["status"] == "pass"
    assert repos["data"]["repositories"] == [REPO]
    # The labels were read with the installation's token (the fixture's repository has
    # no `blocked` label).
    assert _checks(report, f"labels {REPO}")[0]["detail"] == f"{REPO}: missing blocked"

    # A second account installed it without granting contents: write.
    globex = env.sim.install_app(APP_ID, [OTHER],
                                 permissions={"issues": "write", "pull_requests": "write",
                                              "contents": "read", "metadata": "read"})  # fmt: skip
    code, report = _doctor(env.config_path)
    assert code != 0
    verdicts = {c["data"]["id"]: c for c in _checks(report, "installation")}
    assert verdicts[acme]["status"] == "pass"
    bad = verdicts[globex]
    assert bad["status"] == "fail"
    assert "globex" in bad["detail"]
    assert "missing contents: write" in bad["detail"]
    assert "Permissions & events: grant contents: write" in bad["fix"]
    assert "globex's installation" in bad["fix"]
    assert sorted(_checks(report, "repositories")[0]["data"]["repositories"]) == sorted(
        [REPO, OTHER]
    )

    # Kept to an installation that is not the App's: said, with what to change.
    _app_config(sched, pem, repositories='"installation"', installation_id=999)
    code, report = _doctor(env.config_path)
    assert code != 0
    (wrong,) = _checks(report, "installation")
    assert wrong["status"] == "fail"
    assert "installation 999 is not an installation of GitHub App 4321" in wrong["detail"]
    assert "github.installation_id" in wrong["detail"]
    assert _checks(report, "repositories")[0]["status"] == "skip"


@pytest.mark.slow
def test_the_daemon_follows_a_new_installation_and_outlives_its_tokens(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    """A daemon as the App, with 3 s tokens and reconcile an hour away: the App installed
    on a second account (an `installation` delivery) is followed at once, and its ready
    issue runs; the daemon's own calls over many token lifetimes never meet a 401."""
    pem, bot = _register(env)
    env.sim.install_app(APP_ID, [REPO])
    env.sim.installation_token_seconds = 3
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    sched.config(github={"token": None, "bot_login": None, "app_id": APP_ID,
                         "private_key_file": str(pem)},
                 webhook={"listen": f"127.0.0.1:{port}", "secret": "s3cret",
                          "reconcile_seconds": 3600})  # fmt: skip
    lines = env.config_path.read_text().splitlines()
    env.config_path.write_text("\n".join(['repositories = "installation"', *lines[1:]]) + "\n")
    env.sim.add_webhook(f"http://127.0.0.1:{port}/webhook", "s3cret")
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "0.1")
    log = tmp_path / "daemon.log"
    daemon = sched.start("daemon", "--grace", "5", log=log)
    state = env.database.with_name(env.database.name + ".webhooks.json")
    try:
        sched.wait_until(lambda: state.is_file() and json.loads(state.read_text()).get(
            "last_reconcile_at"), 30, "the first reconcile pass")  # fmt: skip
        (first,) = env.sim.seed_ready_issues(REPO, 1)
        sched.wait_until(lambda: len(sched.runs()) == 1 and sched.all_terminal(), 60, "acme's run")
        env.sim.create_repo(OTHER, labels=LABELS, private=True, bot_role=None)
        (second,) = env.sim.seed_ready_issues(OTHER, 1)
        env.sim.wait_for_deliveries()
        time.sleep(4)  # longer than a token: the daemon renews as it goes
        assert {r.repo for r in sched.runs()} == {REPO}  # not installed there yet
        env.sim.install_app(APP_ID, [OTHER])
        sched.wait_until(
            lambda: len(sched.runs()) == 2 and sched.all_terminal(), 60, "globex's run"
        )
    finally:
        code = sched.stop(daemon)
    assert code == 0, log.read_text()
    assert {(r.repo, r.target, r.outcome) for r in sched.runs()} == {
        (REPO, first, "pr_opened"),
        (OTHER, second, "pr_opened"),
    }
    installs = [d for d in env.sim.deliveries if d.event == "installation"]
    assert [(d.action, d.status) for d in installs] == [("created", 202)]
    assert bot in {c.user for c in env.sim.comments(OTHER, second)}
    assert not [r for r in env.sim.requests if r.status == 401]
