"""A fleet of runner hosts on one real PostgreSQL: config, commands, daemons, a lost host.

The chaos test is issue 17's figure scaled down for CI (18 issues in 6 repos instead of 60
in 6; 3 hosts with 2 slots each as required); bench/bench_fleet.py runs the full figure
and asserts the same invariants.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetworld import FleetWorld, check_outcome, seed, wait_until
from runworld import REPO, Env
from schedworld import Sched


@pytest.fixture(scope="module")
def postgres() -> Iterator[Any]:
    from cgr_store.testing import TemporaryPostgres

    with TemporaryPostgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"f_{abs(hash(request.node.nodeid)) % 10**12}"
    url: str = postgres.create_database(name)
    yield url
    postgres.drop_database(name)


def cgr_run(env: Env, number: int, *extra: str) -> int:
    """`cgr run` as its own process: in this one it would end this process's children
    (`cgr run` reaps what its run started), the PostgreSQL server among them."""
    done = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "run", "--config", str(env.config_path),
         "--repo", REPO, "--number", str(number), *extra],
        capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.returncode


# -- configuration ------------------------------------------------------------------------


def test_a_uri_or_the_environment_selects_postgresql_and_a_path_keeps_sqlite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cgr_cli import parse_config
    from cgr_cli.config._store import database_location, is_fleet
    from cgr_cli.schedule._locks import daemon_lock_path

    monkeypatch.delenv("CGR_DATABASE_URL", raising=False)
    path = parse_config({"paths": {"database": str(tmp_path / "cgr.db"),
                                   "workspace_root": str(tmp_path / "ws")}})  # fmt: skip
    assert not is_fleet(path)
    assert daemon_lock_path(path) == Path(f"{tmp_path / 'cgr.db'}.daemon.lock")
    socket_uri = "postgresql://cgr@/cgr?host=/run/postgresql"
    uri = parse_config({"paths": {"database": socket_uri, "workspace_root": str(tmp_path / "ws")}})
    assert uri.database_url == socket_uri  # the unix-socket form is kept whole
    # No file to put the daemon's lock next to: it is host-local, in the workspace root.
    assert daemon_lock_path(uri) == tmp_path / "ws" / "cgr.daemon.lock"
    monkeypatch.setenv("CGR_DATABASE_URL", "postgresql://cgr:s3cret@db.example/cgr")
    assert path.database_url == "postgresql://cgr:s3cret@db.example/cgr"
    assert "s3cret" not in database_location(path)
    # host_id: the configured one, else the machine's name.
    assert path.host_id == socket.gethostname()
    assert parse_config({"fleet": {"host_id": "build-7"}}).host_id == "build-7"


def test_commands_work_on_postgresql(env: Env, pg_url: str) -> None:
    """`cgr run` records in PostgreSQL; `cgr status` and `cgr logs` read it from there."""
    from cgr_store import RunStatus, open_store

    env.write_config(paths={"database": pg_url})
    [number] = env.sim.seed_ready_issues(REPO, 1)
    assert cgr_run(env, number) == 0
    with open_store(pg_url) as store:
        [run] = store.recent_runs()
    assert run.status is RunStatus.SUCCEEDED
    assert not env.database.exists()  # nothing went to a SQLite file
    cli = [sys.executable, "-m", "cgr_cli"]
    status = subprocess.run([*cli, "status", "--config", str(env.config_path)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert run.id in status.stdout or "pr_opened" in status.stdout
    logs = subprocess.run([*cli, "logs", run.id, "--config", str(env.config_path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert logs.returncode == 0, logs.stderr


# -- the fleet ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_lost_host_is_taken_over_and_the_survivors_finish_the_work(
    tmp_path: Path, pg_url: str
) -> None:
    """3 daemons, 2 slots each, 18 ready issues in 6 repos. One host is SIGKILLed with all
    its children mid-work: within its lease the survivors end its running runs (visibly)
    and requeue the ones whose agent never started; every issue ends with one visible
    state, no PR twice, no active run left."""
    from cgr_discovery.testing import GitHubSimulator

    # A 5 s lease: shorter ones were lost by *surviving* hosts too on a loaded 2-core
    # machine (a heartbeat thread starved past its lease), which this test is not about.
    lease, agent_seconds = 5.0, 2.0
    with GitHubSimulator(tmp_path / "sim") as sim:
        repos = [f"acme/repo-{i}" for i in range(6)]
        issues = seed(sim, repos, 3)
        world = FleetWorld(sim=sim, root=tmp_path, database_url=pg_url, repos=repos)
        world.add_hosts(3, concurrency=2, interval=0.3, lease=lease, agent_seconds=agent_seconds)
        env = world.env(agent_seconds)
        victim = world.hosts[0]
        world.start(victim, env)
        try:
            # The first host is the first poll leader: its loss must hand the polling over.
            wait_until(lambda: "now polls GitHub" in victim.log.read_text(), 60, "a leader")
            for host in world.hosts[1:]:
                world.start(host, env)

            def victim_busy() -> bool:
                mine = [r for r in world.runs() if r.host == victim.host_id]
                return any(r.status.value == "running" for r in mine)

            wait_until(victim_busy, 60, "the first host to be running an agent")
            killed = world.kill_with_children(victim)
            killed_at = time.monotonic()
            assert len(killed) > 1  # the daemon and its children
            with world.store() as store:
                orphaned = {r.id for r in store.active_runs(host=victim.host_id)}
            assert orphaned

            def taken_over() -> bool:
                with world.store() as store:
                    return not store.active_runs(host=victim.host_id)

            wait_until(taken_over, 4 * lease, "the lost host's runs to be taken over")
            # Within the lease after its last renewal (renewed every 0.3 s), plus a pass.
            took = time.monotonic() - killed_at
            assert took <= 2 * lease, took
            total = sum(len(n) for n in issues.values())
            # `cgr status` on a survivor shows the fleet: the lost host's lease expired.
            shown = subprocess.run(
                [sys.executable, "-m", "cgr_cli", "status", "--json",
                 "--config", str(world.hosts[1].config)],
                capture_output=True, text=True, env=env, timeout=60, check=False,
            )  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            hosts = {h["host_id"]: h for h in json.loads(shown.stdout)["hosts"]}
            assert set(hosts) == {"host-0", "host-1", "host-2"}
            assert not hosts["host-0"]["live"]
            assert hosts["host-1"]["live"]
            assert hosts["host-1"]["slots"] == 2

            def settled() -> bool:
                runs = world.runs()
                done = {(r.repo, r.target) for r in runs if r.status.is_terminal}
                return len(done) >= total and not any(r.status.is_active for r in runs)

            wait_until(settled, 100, "every issue to be finished")
        finally:
            world.stop_all()
        finals = check_outcome(world, issues)
        runs = world.runs()
        with world.store() as store:
            for run_id in orphaned:
                details = [e.detail for e in store.events(run_id)]
                assert any("host-0 stopped renewing its lease" in d for d in details), details
        # Polling went on without the lost leader (most issues were not queued yet).
        assert any("now polls GitHub" in h.log.read_text() for h in world.hosts[1:])
        # The survivors did the rest.
        assert {r.host for r in runs if r.status.value == "succeeded"} - {"host-0"}
        assert finals.get("succeeded", 0) >= total - len(orphaned)
        for host in world.hosts[1:]:
            assert host.process is not None
            assert host.process.returncode == 0, host.log.read_text()


@pytest.mark.slow
@pytest.mark.slow
def test_a_lost_hosts_run_waiting_for_an_agent_slot_is_requeued_not_failed(
    tmp_path: Path, pg_url: str
) -> None:
    """One agent slot and one run ahead on the first host: it runs one agent while its
    second run, claimed and checked out, waits for the slot. The host is SIGKILLed: the
    survivor ends the run whose agent was lost (failed, visibly) and puts the waiting one,
    which never started an agent, back in the queue (`claimed` until it has its slot), then
    does it."""
    from cgr_discovery.testing import GitHubSimulator

    lease, agent_seconds = 5.0, 30.0
    with GitHubSimulator(tmp_path / "sim") as sim:
        repos = ["acme/repo-0"]
        issues = seed(sim, repos, 2)
        world = FleetWorld(sim=sim, root=tmp_path, database_url=pg_url, repos=repos)
        world.add_hosts(1, concurrency=1, runs_ahead=1, interval=0.3, lease=lease,
                        agent_seconds=agent_seconds)  # fmt: skip
        victim = world.hosts[0]
        world.start(victim, world.env(agent_seconds))
        try:

            def one_running_one_waiting() -> bool:
                statuses = sorted(r.status.value for r in world.runs())
                waiting = any("waiting for an agent slot" in p.read_text()
                              for p in victim.workspace.glob("r-*/logs/run.log"))  # fmt: skip
                return statuses == ["claimed", "running"] and waiting

            wait_until(one_running_one_waiting, 60, "one agent at work, one run waiting")
            with world.store() as store:
                running = {r.status.value: r.id for r in store.active_runs()}
            world.kill_with_children(victim)
            # The survivor: agents of 0.1 s from here (the new host's own runs).
            world.add_hosts(1, concurrency=1, interval=0.3, lease=lease, agent_seconds=0.1)
            world.start(world.hosts[1], world.env(0.1))

            def settled() -> bool:
                runs = world.runs()
                return (
                    bool(runs)
                    and not any(r.status.is_active for r in runs)
                    and any(r.status.value == "succeeded" for r in runs)
                )

            wait_until(settled, 90, "the lost host's runs taken over and done")
        finally:
            world.stop_all()
        with world.store() as store:
            lost = store.get_run(running["running"])
            requeued = store.get_run(running["claimed"])
            details = [e.detail for e in store.events(requeued.id)]
        assert lost.status.value == "failed"
        assert "its agent was lost" in (lost.error or "")
        assert any("before its agent started" in d for d in details), details
        assert requeued.status.value == "succeeded", (requeued.status, requeued.error)
        assert requeued.host == "host-1"
        assert sorted(issues["acme/repo-0"]) == sorted(r.target for r in world.runs())


def test_idle_github_requests_do_not_grow_with_the_fleet(tmp_path: Path, pg_url: str) -> None:
    """Only the poll leader asks GitHub: 3 idle hosts cost what 1 host costs."""
    from cgr_discovery.testing import GitHubSimulator

    with GitHubSimulator(tmp_path / "sim") as sim:
        repos = ["acme/one", "acme/two"]
        seed(sim, repos, 0)
        world = FleetWorld(sim=sim, root=tmp_path, database_url=pg_url, repos=repos)
        world.add_hosts(3, concurrency=2, interval=0.5, lease=5.0, agent_seconds=0.1)
        env = world.env(0.1)

        def requests_per_interval(hosts: int) -> float:
            for host in world.hosts[:hosts]:
                world.start(host, env)
            try:
                time.sleep(3.0)  # start-up and first polls
                before = len(sim.requests)
                time.sleep(5.0)
                return (len(sim.requests) - before) / (5.0 / 0.5)
            finally:
                world.stop_all()

        one = requests_per_interval(1)
        three = requests_per_interval(3)
    assert one > 0
    # A multiplied poll would be 3x; allow one interval's jitter either way.
    assert three <= one * 1.34, (one, three)


def test_a_second_daemon_with_the_same_host_id_is_refused(tmp_path: Path, pg_url: str) -> None:
    from cgr_discovery.testing import GitHubSimulator

    with GitHubSimulator(tmp_path / "sim") as sim:
        seed(sim, ["acme/one"], 0)
        world = FleetWorld(sim=sim, root=tmp_path, database_url=pg_url, repos=["acme/one"])
        world.add_hosts(2, concurrency=1, interval=0.5, lease=30.0, agent_seconds=0.1)
        twin = world.hosts[1]
        twin.config.write_text(twin.config.read_text().replace('"host-1"', '"host-0"'))
        env = world.env(0.1)
        world.start(world.hosts[0], env)
        try:

            def joined() -> bool:
                with world.store() as store:
                    return any(h.host_id == "host-0" for h in store.hosts())

            wait_until(joined, 30, "host-0 to join")
            second = subprocess.run(
                [sys.executable, "-m", "cgr_cli", "daemon", "--config", str(twin.config)],
                capture_output=True, text=True, env=env, timeout=60, check=False,
            )  # fmt: skip
        finally:
            world.stop_all()
    assert second.returncode == 4, second.stderr  # busy: another process holds it
    assert "another cgr daemon holds the lease of host 'host-0'" in second.stderr


@pytest.mark.slow
def test_webhooks_on_two_hosts_start_one_run_for_one_delivery(tmp_path: Path, pg_url: str) -> None:
    """Both hosts listen for webhooks. One delivery sent to both (a redelivery, a balancer
    retrying elsewhere) is recorded once in the shared store: the second host answers it
    as a duplicate. The host that took it, not the poll leader, re-reads the repository at
    once and queues the run; the fleet runs it once: one run, one PR."""
    from types import SimpleNamespace

    from cgr_discovery.testing import GitHubSimulator
    from webhookworld import SECRET, deliver, labeled_payload

    with GitHubSimulator(tmp_path / "sim") as sim:
        seed(sim, [REPO], 0)
        number = sim.create_issue(REPO, "Greeting", "say hello", author="alice")
        world = FleetWorld(sim=sim, root=tmp_path, database_url=pg_url, repos=[REPO])
        # A poll every 60 s: after the leader's first (empty) poll, only a delivery can
        # bring the issue in within this test.
        world.add_hosts(2, concurrency=1, interval=60.0, lease=120.0, agent_seconds=0.1)
        urls = []
        for host in world.hosts:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            with host.config.open("a") as out:
                out.write(f'[webhook]\nlisten = "127.0.0.1:{port}"\nsecret = "{SECRET}"\n')
            urls.append(f"http://127.0.0.1:{port}/webhook")
        env = world.env(0.1)
        leader, other = world.hosts
        world.start(leader, env)
        try:
            wait_until(lambda: "now polls GitHub" in leader.log.read_text(), 60, "a leader")
            world.start(other, env)
            for host in world.hosts:
                wait_until(lambda h=host: "receiving webhooks" in h.log.read_text(), 60,
                           f"{host.host_id} to listen")  # fmt: skip
            sim.add_labels(REPO, number, "ready", actor="alice")
            payload = labeled_payload(SimpleNamespace(sim=sim), number)  # type: ignore[arg-type]
            first, delivery = deliver(urls[1], "issues", payload)
            again, _ = deliver(urls[0], "issues", payload, delivery=delivery)
            assert (first.status_code, first.text) == (202, "accepted\n")
            assert (again.status_code, again.text) == (202, "duplicate delivery: already handled\n")

            def finished() -> bool:
                runs = world.runs()
                return bool(runs) and all(r.status.is_terminal for r in runs)

            wait_until(finished, 50, "the delivered issue's run to end")
            late, _ = deliver(urls[1], "issues", payload, delivery=delivery)
            assert late.text == "duplicate delivery: already handled\n"
            time.sleep(1.0)
            runs = world.runs()
        finally:
            world.stop_all()
    assert f"host {other.host_id} re-reads {REPO} (webhook)" in other.log.read_text()
    [run] = runs
    assert run.status.value == "succeeded"
    assert len(sim.pull_requests(REPO)) == 1


def test_pending_reports_are_sent_by_the_host_of_the_run_by_its_configured_host_id(
    env: Env, pg_url: str
) -> None:
    """A pending report is the run's own process's to send while it lives: its row names
    the configured fleet.host_id (not the machine's hostname). A run of another live host
    is that host's to send; once its lease is gone, any host sends it."""
    from datetime import timedelta

    import anyio

    from cgr_cli.config._load import load_config
    from cgr_cli.run._outbox import report_entries
    from cgr_cli.schedule._deliver import deliver_pending
    from cgr_cli.schedule._github import open_github
    from cgr_exec import ProcessIdentity
    from cgr_store import Run, RunKind, RunStatus, new_run_id, open_store

    env.write_config(paths={"database": pg_url}, fleet={"host_id": "host-a"})
    config, _ = load_config(env.config_path)
    assert config.host_id != socket.gethostname()
    mine_n, theirs_n = env.sim.seed_ready_issues(REPO, 2)
    me = ProcessIdentity.current()

    def ended(store: Any, number: int, host: str) -> str:
        run = store.create_run(Run(id=new_run_id(), repo=REPO, target=number,
                                   kind=RunKind.ISSUE, host=host, pid=me.pid,
                                   process_start_time=float(me.start_time)))  # fmt: skip
        store.transition(run.id, RunStatus.CLAIMED)
        store.transition(
            run.id, RunStatus.FAILED, detail="failed", outcome="failed",
            outbox=report_entries(config.labels, run_id=run.id, repo=REPO, number=number,
                                  succeeded=False, text="❌ The run failed."),
        )  # fmt: skip
        return str(run.id)

    async def deliver() -> Any:
        with open_store(pg_url) as store:
            async with open_github(config) as github:
                return await deliver_pending(store, github, host=config.host_id)

    with open_store(pg_url) as store:
        store.acquire_host_lease("host-b", timedelta(seconds=600))
        mine = ended(store, mine_n, "host-a")  # this process is alive: it is sending it
        theirs = ended(store, theirs_n, "host-b")
    sent = anyio.run(deliver)
    assert sent.delivered == []
    with open_store(pg_url) as store:
        assert len(store.pending_outbox(run_id=mine)) == 2
        assert len(store.pending_outbox(run_id=theirs)) == 2
        [b] = [h for h in store.hosts() if h.host_id == "host-b"]
        store.release_host_lease("host-b", b.epoch)  # host-b stopped: anyone sends it
    sent = anyio.run(deliver)
    assert sent.delivered == [theirs]
    assert "needs-human" in env.sim.issue(REPO, theirs_n).labels


# -- cgr doctor -------------------------------------------------------------------------


def test_doctor_checks_the_server_the_schema_and_the_clock(
    postgres: Any, pg_url: str, tmp_path: Path
) -> None:
    from cgr_cli import parse_config
    from cgr_cli.ops._doctor import CheckStatus
    from cgr_cli.ops._doctor import postgres_checks as check_postgres
    from cgr_store import SCHEMA_VERSION

    config = parse_config({"paths": {"database": pg_url}})
    database, clock = check_postgres(config, pg_url)
    assert database.status is CheckStatus.PASS, database
    assert f"schema version {SCHEMA_VERSION} of {SCHEMA_VERSION}" in database.detail
    # One machine: host and server share a clock, so the skew is within the round trip.
    assert clock.status is CheckStatus.PASS, clock
    skew, uncertainty = clock.data["skew_seconds"], clock.data["uncertainty_seconds"]
    assert abs(skew) <= uncertainty + 0.05

    from urllib.parse import urlsplit

    name = urlsplit(pg_url).path.lstrip("/")
    wrong = postgres.password_url(name, password="wrong")
    [auth] = check_postgres(config, wrong)
    assert auth.status is CheckStatus.FAIL
    assert "wrong" not in auth.detail  # the password never shows
    assert auth.fix is not None
    assert "user and password" in auth.fix

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    [down] = check_postgres(config, f"postgresql://cgr@127.0.0.1:{port}/cgr?connect_timeout=2")
    assert down.status is CheckStatus.FAIL
    assert down.fix is not None
    assert "start the PostgreSQL server" in down.fix


@pytest.mark.parametrize(
    ("offset", "status", "direction"),
    [
        (0.0, "pass", None),
        # fleet.lease_seconds = 20: a warning past 1 s (a twentieth), a failure past 5 s.
        (2.5, "warn", "ahead of"),
        (-2.5, "warn", "behind"),
        (8.0, "fail", "ahead of"),
        (-8.0, "fail", "behind"),
    ],
)
def test_doctor_judges_the_clock_skew_against_the_lease(
    pg_url: str, offset: float, status: str, direction: str | None
) -> None:
    """The real server's clock against this host's clock set ``offset`` seconds off: the
    skew is measured (within its round trip) and judged against fleet.lease_seconds."""
    from cgr_cli import parse_config
    from cgr_cli.ops._doctor import postgres_checks

    config = parse_config({"paths": {"database": pg_url}, "fleet": {"lease_seconds": 20}})
    database, clock = postgres_checks(config, pg_url, clock=lambda: time.time() + offset)
    assert database.status.value == "pass"
    assert clock.status.value == status, clock
    # Server minus host: a host clock ahead gives a negative skew.
    assert abs(clock.data["skew_seconds"] + offset) <= clock.data["uncertainty_seconds"] + 0.1
    if direction is not None:
        assert f"{direction} the server's" in clock.detail
        assert clock.fix is not None
        assert "NTP" in clock.fix
        assert "leases last 20s" in clock.detail


def test_the_clock_verdict_thresholds_count_the_uncertainty() -> None:
    """At the edges: what the measurement cannot tell (half its round trip) is not held
    against the host."""
    from cgr_cli.ops._doctor_fleet import judge_clock

    assert judge_clock(1.0, 0.0, 20.0).status == "pass"  # exactly a twentieth: not past it
    assert judge_clock(1.01, 0.0, 20.0).status == "warn"
    assert judge_clock(1.5, 0.6, 20.0).status == "pass"  # could be 0.9 s
    assert judge_clock(5.0, 0.0, 20.0).status == "warn"
    assert judge_clock(-5.01, 0.0, 20.0).status == "fail"
    assert judge_clock(5.5, 0.6, 20.0).status == "warn"  # could be 4.9 s


# -- cgr store migrate ------------------------------------------------------------------


def test_store_migrate_copies_a_sqlite_store_to_postgresql(env: Env, pg_url: str) -> None:
    """A store a real run wrote (run, events, trigger, cursors, session, outbox, cache) is
    copied whole; a second copy into the now non-empty target is refused."""
    from cgr_store import SQLiteStore, open_store

    [number] = env.sim.seed_ready_issues(REPO, 1)
    assert cgr_run(env, number) == 0
    with SQLiteStore(env.database) as source:
        expected = source.table_counts()
        [run] = source.recent_runs()
        events = source.events(run.id)
    cli = [sys.executable, "-m", "cgr_cli", "store", "migrate", "--config", str(env.config_path)]
    from cgr_cli import load_config
    from cgr_cli.schedule._locks import DaemonLock

    lock = DaemonLock(load_config(env.config_path)[0])  # as a daemon scheduling on it
    try:
        busy = subprocess.run([*cli, "--to", pg_url], capture_output=True, text=True, check=False)
    finally:
        lock.release()
    assert busy.returncode == 2
    assert f"cgr daemon (pid {os.getpid()}) is using" in busy.stderr
    done = subprocess.run([*cli, "--to", pg_url, "--json"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert counts["runs"] == 1
    assert counts == {k: v for k, v in expected.items() if k in counts}
    with open_store(pg_url) as target:
        assert target.get_run(run.id) == run
        assert target.events(run.id) == events
    again = subprocess.run([*cli, "--to", pg_url], capture_output=True, text=True, check=False)
    assert again.returncode == 2
    assert "not empty" in again.stderr or "already" in again.stderr, again.stderr
    wrong = subprocess.run([*cli, "--to", str(env.root / "other.db")],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert wrong.returncode == 2
    assert "must be a postgresql:// URI" in wrong.stderr


# -- host-local sessions ----------------------------------------------------------------


def test_a_follow_up_on_another_host_starts_fresh_and_says_so(env: Env, pg_url: str) -> None:
    """Host a opens the PR; the follow-up is run by host b (its own workspace): no
    --resume of a conversation b does not have, a fresh checkout of the branch, the full
    prompt, the same PR updated, and the status comment names the host with the session."""
    from cgr_store import open_store

    env.write_config(paths={"database": pg_url}, fleet={"host_id": "host-a"})
    number = env.sim.create_issue(REPO, "Greeting", "", author="alice", labels=["ready"])
    assert cgr_run(env, number) == 0
    [first] = env.calls()
    comment = env.sim.add_comment(REPO, number, f"@{env.sim.bot_login} also a follow-up",
                                  author="alice")  # fmt: skip
    env.scenario("followup")
    env.workspace = env.root / "ws-b"
    env.write_config(paths={"database": pg_url}, fleet={"host_id": "host-b"})
    assert cgr_run(env, number, "--comment-id", str(comment)) == 0
    second = env.calls()[-1]
    assert "--resume" not in second["argv"]
    assert second["cwd"].startswith(str(env.root / "ws-b"))
    assert second["cwd"] != first["cwd"]
    # The full prompt: the fresh session knows nothing of the earlier conversation.
    assert "This is a follow-up" not in second["stdin"]
    assert "## The issue" in second["stdin"]
    [pr] = env.sim.pull_requests(REPO)
    with open_store(pg_url) as store:
        runs = store.runs_for_target(REPO, number)
    assert [r.host for r in runs] == ["host-b", "host-a"]
    assert runs[0].pr_number == pr.number
    assert runs[0].outcome == "pr_updated"
    [status] = [c.body for c in env.sim.comments(REPO, number) if f"cgr:run={runs[0].id}" in c.body]
    assert "the earlier conversation is on runner host `host-a`" in status
    assert "fresh agent session in a fresh checkout" in status


# -- cgr tick on a fleet ----------------------------------------------------------------


@pytest.mark.slow
def test_ticks_of_two_hosts_share_the_queue(
    env: Env, sched: Sched, subreaper: None, pg_url: str
) -> None:
    """Ticks on two hosts (timer mode) join the fleet for their pass: the poll leader queues
    for the fleet, each claims up to its own slots, and every issue is done once."""
    from cgr_store import open_store

    issues = env.sim.seed_ready_issues(REPO, 4)
    configs = {}
    for host in ("host-a", "host-b"):
        env.workspace = env.root / f"ws-{host}"
        configs[host] = env.root / f"{host}.toml"
        env.config_path = configs[host]
        sched.config(paths={"database": pg_url}, fleet={"host_id": host},
                     polling={"max_concurrency": 1, "runs_ahead": 0,
                              "interval_seconds": 0.2})  # fmt: skip

    def all_done() -> bool:
        with open_store(pg_url) as store:
            done = {r.target for r in store.recent_runs(100) if r.status.is_terminal}
            return done >= set(issues) and not store.active_runs()

    started: dict[str, list[str]] = {"host-a": [], "host-b": []}
    deadline = time.monotonic() + 90
    while not all_done() and time.monotonic() < deadline:
        for host, path in configs.items():
            tick = subprocess.run(
                [sys.executable, "-m", "cgr_cli", "tick", "--json", "--config", str(path)],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert tick.returncode == 0, tick.stderr
            started[host] += json.loads(tick.stdout)["started"]
        time.sleep(0.3)
    assert all_done()
    assert started["host-a"]
    assert started["host-b"]
    with open_store(pg_url) as store:
        runs = store.recent_runs(100)
        hosts = {h.host_id: h for h in store.hosts()}
    # (A tick's children also refill their slot from the queue, so not every run is in a
    # tick's report.)
    assert set(started["host-a"]) | set(started["host-b"]) <= {r.id for r in runs}
    assert {r.host for r in runs} == {"host-a", "host-b"}
    assert set(hosts) == {"host-a", "host-b"}
    for number in issues:
        [pr_run] = [r for r in runs if r.target == number]  # one run each: no duplicate
        assert pr_run.status.value == "succeeded"
    assert len(env.sim.pull_requests(REPO)) == len(issues)


# -- fencing of a run's own writes -------------------------------------------------------


def _claimed_for(store: Any, host: str, number: int, lease: Any) -> Any:
    from cgr_store import Run, RunKind, new_run_id

    store.create_run(Run(id=new_run_id(), repo=REPO, target=number, kind=RunKind.ISSUE))
    [run] = store.claim_next(lease, limit=1, detail=f"claimed by host {host}")
    return run


def test_a_run_carries_its_claims_lease_epoch_and_a_superseded_one_does_nothing(
    env: Env, pg_url: str
) -> None:
    """`cgr run --run-id R --lease-epoch E` as a fleet host starts it: the run's writes are
    fenced under epoch E. Once host-b took host-a's runs over, a child of host-a with the
    old epoch is refused at its first write: it exits without a single GitHub write and
    leaves the run as host-b decided."""
    from datetime import timedelta

    from cgr_store import RunStatus, open_store, utcnow

    env.write_config(paths={"database": pg_url}, fleet={"host_id": "host-a"})
    good, stale = env.sim.seed_ready_issues(REPO, 2)
    with open_store(pg_url) as store:
        lease_a = store.acquire_host_lease("host-a", timedelta(seconds=60))
        ok = _claimed_for(store, "host-a", good, lease_a)
    assert ok.lease_epoch == lease_a.epoch
    assert cgr_run(env, good, "--run-id", ok.id, "--lease-epoch", str(lease_a.epoch)) == 0
    with open_store(pg_url) as store:
        done = store.get_run(ok.id)
        assert done.status is RunStatus.SUCCEEDED
        assert (done.host, done.lease_epoch) == ("host-a", lease_a.epoch)
        lost = _claimed_for(store, "host-a", stale, lease_a)
        # host-a stops renewing; host-b takes its runs over (its epoch moves on).
        lease_b = store.acquire_host_lease("host-b", timedelta(seconds=600))
        [taken] = store.take_over_runs("host-a", lease_b, now=utcnow() + timedelta(seconds=120))
        assert taken.id == lost.id
    env.sim.clear_requests()
    done_proc = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "run", "--config", str(env.config_path), "--repo", REPO,
         "--number", str(stale), "--run-id", lost.id, "--lease-epoch", str(lease_a.epoch),
         "--json"],
        capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert done_proc.returncode == 1, done_proc.stderr
    summary = json.loads(done_proc.stdout)
    assert (summary["outcome"], summary["status"]) == ("lease_lost", "lost")
    assert "epoch" in summary["error"]
    writes = [r for r in env.sim.requests if r.method != "GET"]
    assert not writes, writes
    with open_store(pg_url) as store:
        after = store.get_run(lost.id)
    # As host-b left it: its, claimed, no process of host-a's on it.
    assert (after.host, after.lease_epoch, after.status) == ("host-b", lease_b.epoch,
                                                             RunStatus.CLAIMED)  # fmt: skip
    assert after.pid is None
    no_run_id = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "run", "--config", str(env.config_path), "--repo", REPO,
         "--number", str(stale), "--lease-epoch", "1"],
        capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert no_run_id.returncode == 2
    assert "--run-id" in no_run_id.stderr


@pytest.mark.slow
def test_a_paused_host_comes_back_and_cannot_overwrite_what_another_host_decided(
    tmp_path: Path, pg_url: str
) -> None:
    """host-0's daemon and its run's child are frozen (SIGSTOP) past host-0's lease while
    the agent finishes its work; host-1 takes the run over and ends it visibly. Resumed
    (SIGCONT), the child's first write under its old epoch is refused: it pushes nothing,
    opens no PR, leaves the status comment and labels as host-1 wrote them, and exits; the
    run stays as host-1 decided; host-0's daemon rejoins under a new epoch."""
    import signal

    from cgr_discovery.testing import GitHubSimulator
    from fleetworld import descendants

    lease, agent_seconds = 3.0, 1.0
    with GitHubSimulator(tmp_path / "sim") as sim:
        issues = seed(sim, ["acme/one"], 1)
        [number] = issues["acme/one"]
        world = FleetWorld(sim=sim, root=tmp_path, database_url=pg_url, repos=["acme/one"])
        world.add_hosts(2, concurrency=1, interval=0.3, lease=lease, agent_seconds=agent_seconds)
        env = world.env(agent_seconds)
        paused, survivor = world.hosts
        world.start(paused, env)
        try:

            def running_here() -> Any:
                runs = [r for r in world.runs() if r.host == paused.host_id]
                return next((r for r in runs if r.status.value == "running" and r.pid), None)

            wait_until(running_here, 60, "host-0 to run the agent")
            world.start(survivor, env)
            wait_until(lambda: "joined the fleet" in survivor.log.read_text(), 60, "host-1")
            run = running_here()
            assert paused.process is not None
            daemon = paused.process.pid
            assert run.pid in descendants(daemon)
            frozen = [daemon, run.pid]  # not the agent: it finishes while they are frozen
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            try:

                def decided() -> bool:
                    with world.store() as store:
                        current = store.get_run(run.id)
                    return current.status.is_terminal and not store_pending(world, run.id)

                wait_until(decided, 6 * lease, "host-1 to take the run over and end it")
                time.sleep(agent_seconds + 1.0)  # the agent has surely finished by now
                with world.store() as store:
                    before = store.get_run(run.id)
                    events_before = len(store.events(run.id))
                comments_before = [c.body for c in sim.comments("acme/one", number)]
                labels_before = set(sim.issue("acme/one", number).labels)
            finally:
                for pid in reversed(frozen):
                    os.kill(pid, signal.SIGCONT)
            wait_until(lambda: run.pid not in descendants(daemon), 60, "the child to exit")
            wait_until(lambda: "lost its lease" in paused.log.read_text(), 30, "host-0 rejoins")
            time.sleep(1.0)  # a few passes of both daemons after the child's end
            with world.store() as store:
                after = store.get_run(run.id)
                events_after = store.events(run.id)
                hosts = {h.host_id: h for h in store.hosts()}
            comments_after = [c.body for c in sim.comments("acme/one", number)]
            labels_after = set(sim.issue("acme/one", number).labels)
            prs = sim.pull_requests("acme/one")
            branches = sim.branches("acme/one")
        finally:
            world.stop_all()
    # host-1's decision stands, and what it showed on GitHub is untouched.
    assert before.status.value == "failed"
    assert before.host == survivor.host_id
    assert after == before
    assert len(events_after) == events_before, [e.detail for e in events_after[events_before:]]
    assert comments_after == comments_before
    [status] = [b for b in comments_after if f"cgr:run={run.id}" in b]
    assert "host-0 stopped renewing its lease" in status
    assert labels_after == labels_before
    assert "needs-human" in labels_after
    assert "in-progress" not in labels_after
    assert prs == []  # the agent's finished work was not published
    assert not [b for b in branches if b.startswith("cgr/")], branches  # nothing pushed
    assert hosts["host-0"].epoch > run.lease_epoch  # rejoined under a new epoch
    for host in world.hosts:
        assert host.process is not None
        assert host.process.returncode == 0, host.log.read_text()


def store_pending(world: FleetWorld, run_id: str) -> bool:
    with world.store() as store:
        return bool(store.pending_outbox(run_id=run_id))
