"""PostgresStore against a real server: URLs, typed errors, migrations, processes, forks."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from cgr_store import (
    SCHEMA_VERSION,
    AuthenticationFailed,
    DatabaseUnavailable,
    NotADatabase,
    PostgresStore,
    Run,
    RunKind,
    RunStatus,
    SchemaTooNew,
    ServerUnreachable,
    SQLiteStore,
    open_store,
    redact_url,
    utcnow,
)
from cgr_store._migrations import MIGRATIONS, postgres_statements
from cgr_store.testing import PASSWORD, TemporaryPostgres, _free_port
from workers import kill_after, race


def dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def make_run(target: int) -> Run:
    return Run(id="r-" + os.urandom(6).hex(), repo="octo/pg", target=target, kind=RunKind.ISSUE)


def test_unix_socket_and_tcp_urls_reach_the_same_database(
    postgres_server: TemporaryPostgres, pg_url: str
) -> None:
    assert "?host=/" in pg_url  # the libpq unix-socket form
    with PostgresStore(pg_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        run = store.create_run(make_run(1))
        assert store.url == pg_url
        assert repr(store) == f"PostgresStore({pg_url!r})"
    if postgres_server.port is None:
        pytest.skip("this server (pgserver) listens on its unix socket only")
    name = dbname(pg_url)
    tcp = postgres_server.url(name, tcp=True)
    with open_store(tcp) as store:
        assert isinstance(store, PostgresStore)
        assert store.get_run(run.id) == run
    with open_store(tcp.replace("postgresql://", "postgres://")) as store:
        assert isinstance(store, PostgresStore)
    with open_store(postgres_server.password_url(name)) as store:
        assert store.get_run(run.id) == run


def test_open_store_takes_a_path_for_sqlite(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "cgr.db")) as store:
        assert isinstance(store, SQLiteStore)
    with open_store(tmp_path / "other.db", busy_timeout=1.0) as store:
        assert isinstance(store, SQLiteStore)


def test_redact_url() -> None:
    assert redact_url("postgresql://cgr:s3cret@db:5432/cgr") == "postgresql://cgr:***@db:5432/cgr"
    assert redact_url("postgresql://cgr@db/cgr") == "postgresql://cgr@db/cgr"
    assert redact_url("postgresql://cgr:@/cgr?host=/d") == "postgresql://cgr:@/cgr?host=/d"
    assert redact_url("postgres://u:p%40ss@h/d?sslmode=require") == (
        "postgres://u:***@h/d?sslmode=require"
    )
    assert redact_url("postgresql:///cgr?host=/run/pg&password=s3cret&user=cgr") == (
        "postgresql:///cgr?host=/run/pg&password=***&user=cgr"
    )
    assert redact_url("host=db password=s3cret dbname=cgr") == "host=db password=*** dbname=cgr"


def test_unreachable_server_names_the_url_without_password() -> None:
    url = f"postgresql://cgr:hunter2@127.0.0.1:{_free_port()}/cgr"
    with pytest.raises(ServerUnreachable) as info:
        PostgresStore(url, connect_timeout=2)
    assert isinstance(info.value, DatabaseUnavailable)
    assert info.value.path == f"postgresql://cgr:***@127.0.0.1:{url.split(':')[3]}"
    assert "hunter2" not in str(info.value)
    assert "is it running" in str(info.value)


def test_wrong_password_is_an_authentication_failure(
    postgres_server: TemporaryPostgres, pg_url: str
) -> None:
    if postgres_server.port is None:
        pytest.skip("this server (pgserver) listens on its unix socket only")
    name = dbname(pg_url)
    url = postgres_server.password_url(name, password="not-" + PASSWORD)
    with pytest.raises(AuthenticationFailed) as info:
        PostgresStore(url)
    assert "not-" + PASSWORD not in str(info.value)
    assert ":***@127.0.0.1" in str(info.value)
    assert "check the user and password" in str(info.value)


def test_missing_database_says_to_create_it(postgres_server: TemporaryPostgres) -> None:
    with pytest.raises(DatabaseUnavailable, match="create it") as info:
        PostgresStore(postgres_server.url("no_such_database"))
    assert not isinstance(info.value, ServerUnreachable | AuthenticationFailed)


def test_a_newer_schema_is_refused_untouched(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE cgr_schema SET version = 99")
    with pytest.raises(SchemaTooNew) as info:
        PostgresStore(pg_url)
    assert (info.value.found, info.value.supported, info.value.path) == (99, SCHEMA_VERSION, pg_url)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM cgr_schema").fetchone() == (99,)


def test_another_programs_database_is_refused_untouched(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(NotADatabase, match="photos"):
        PostgresStore(pg_url)
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    assert tables == [("photos",)]


def test_both_backends_get_the_same_schema_from_one_migration_list(
    pg_url: str, tmp_path: Path
) -> None:
    for version in MIGRATIONS:
        assert len(postgres_statements(version)) == len(MIGRATIONS[version])
    assert 'TEXT COLLATE "C"' in postgres_statements(1)[0]
    assert "GENERATED BY DEFAULT AS IDENTITY" in postgres_statements(4)[0]
    PostgresStore(pg_url).close()
    SQLiteStore(tmp_path / "cgr.db").close()
    lite = sqlite3.connect(tmp_path / "cgr.db")
    sqlite_tables = {
        table: [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
        for (table,) in lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    sqlite_indexes = {
        name
        for (name,) in lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    }
    lite.close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name <> 'cgr_schema'"
            " ORDER BY table_name, ordinal_position"
        ).fetchall()
        pg_indexes = {
            name
            for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
                " AND indexname NOT LIKE '%%_pkey' AND indexname NOT LIKE '%%_key'"
            )
        }
    pg_tables: dict[str, list[str]] = {}
    for table, column in rows:
        pg_tables.setdefault(table, []).append(column)
    assert pg_tables == sqlite_tables
    assert pg_indexes == sqlite_indexes


def test_an_older_postgres_schema_is_migrated_keeping_its_data(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE cgr_schema (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " application TEXT NOT NULL, version INTEGER NOT NULL)"
        )
        conn.execute("INSERT INTO cgr_schema VALUES (1, 'cgr', 2)")
        for version in (1, 2):
            for statement in postgres_statements(version):
                conn.execute(statement.encode())
        conn.execute(
            "INSERT INTO runs (id, repo, target, kind, status, attempt, created_at, cost_usd)"
            " VALUES ('r-old', 'octo/pg', 5, 'issue', 'running', 1,"
            " '2026-11-28T00:00:00.000000Z', 0.5)"
        )
    with PostgresStore(pg_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        old = store.get_run("r-old")
        assert (old.status, old.cost_usd, old.lease_epoch) == (RunStatus.RUNNING, 0.5, None)
        assert [r.id for r in store.runs_for_target("OCTO/pg", 5)] == ["r-old"]


# Each worker opens the store itself (the first opens race to migrate an empty database),
# then races the others for the same targets, then for the queued runs.
RACE_WORKER = """
import json, random, sys, time
from datetime import timedelta
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit
from cgr_store import ActiveRunExists, Run, RunKind, RunStatus, open_store, new_run_id

url, worker, targets, barrier = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
won, claimed = [], []
with open_store(url) as store:
    lease = store.acquire_host_lease(f"host-{worker}", timedelta(minutes=5))
    (barrier / f"ready-{worker}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.005)
    order = list(range(targets))
    random.Random(worker).shuffle(order)
    for target in order:
        try:
            store.create_run(Run(id=new_run_id(), repo="octo/race", target=target,
                                 kind=RunKind.ISSUE))
            won.append(target)
        except ActiveRunExists:
            pass
    while True:
        got = store.claim_next(lease, limit=2)
        if not got:
            break
        claimed += [r.id for r in got]
print(json.dumps({"won": won, "claimed": claimed}))
"""


def test_processes_race_for_targets_and_claims_on_one_server(pg_url: str, tmp_path: Path) -> None:
    workers, targets = 8, 24
    argvs = [[sys.executable, "-c", RACE_WORKER, pg_url, str(n), str(targets), str(tmp_path)]
             for n in range(workers)]  # fmt: skip
    results = race(argvs, tmp_path, ready_within=90)
    for code, _, err in results:
        assert code == 0, err
    reports = [json.loads(out) for _, out, _ in results]
    assert sorted(t for r in reports for t in r["won"]) == list(range(targets))
    claimed = [run_id for r in reports for run_id in r["claimed"]]
    assert len(claimed) == len(set(claimed)) == targets  # every run claimed exactly once
    with PostgresStore(pg_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        active = store.active_runs()
        assert sorted(r.target for r in active) == list(range(targets))
        assert all(r.status is RunStatus.CLAIMED for r in active)
        by_host = {r.id: r.host for r in active}
        for n, report in enumerate(reports):
            assert all(by_host[run_id] == f"host-{n}" for run_id in report["claimed"])


def test_a_forked_child_gets_its_own_session(pg_store_url: str) -> None:
    store = PostgresStore(pg_store_url)
    first = store.create_run(make_run(1))
    pid = os.fork()
    if pid == 0:  # the child: a store call opens its own connection
        code = 1
        try:
            store.transition(first.id, RunStatus.CLAIMED, pid=os.getpid())
            store.create_run(make_run(2))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's next call reconnects (its idle connection was closed before the fork)
    # and sees the child's writes.
    assert store.get_run(first.id).status is RunStatus.CLAIMED
    assert len(store.active_runs()) == 2
    store.close()


def test_a_lost_connection_is_reported_then_reopened(pg_store_url: str) -> None:
    with PostgresStore(pg_store_url) as store:
        run = store.create_run(make_run(1))
        with psycopg.connect(pg_store_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'cgr' AND pid <> pg_backend_pid()"
            )
        with pytest.raises(ServerUnreachable):
            store.get_run(run.id)
        assert store.get_run(run.id) == run  # the next call connects again


def test_server_clock(pg_store_url: str) -> None:
    with PostgresStore(pg_store_url) as store:
        skew = abs((store.server_now() - utcnow()).total_seconds())
    assert skew < 5


# A host that claims runs, starts two, renews its lease with its heartbeat, and is killed.
LOST_HOST = """
import sys, time
from datetime import timedelta
from cgr_store import RunStatus, open_store

ttl = timedelta(seconds=float(sys.argv[2]))
with open_store(sys.argv[1]) as store:
    lease = store.acquire_host_lease("doomed", ttl, slots=4)
    runs = store.claim_next(lease, limit=4)
    for run in runs[:2]:
        store.transition(run.id, RunStatus.RUNNING, lease=lease, pid=4242)
    print("working", flush=True)
    while True:
        store.renew_host_lease("doomed", lease.epoch, ttl, running=2)
        for run in runs[:2]:
            store.heartbeat(run.id, lease=lease)
        time.sleep(0.1)
"""


def test_a_killed_host_is_noticed_within_its_lease_and_its_runs_taken_over(
    pg_store_url: str,
) -> None:
    ttl = 1.0
    with PostgresStore(pg_store_url) as store:
        queued = [store.create_run(make_run(n)).id for n in range(6)]
        # SIGKILL: no release, no goodbye.
        argv = [sys.executable, "-c", LOST_HOST, pg_store_url, str(ttl)]
        killed_at = kill_after(argv, "working\n", 0.3)
        survivor = store.acquire_host_lease("survivor", timedelta(minutes=1))
        while not store.expired_hosts():
            assert time.monotonic() - killed_at < ttl + 5, "the lost host was never noticed"
            time.sleep(0.05)
        noticed = time.monotonic() - killed_at
        # Within the lease timeout after its last renewal (plus this loop's polling, on a
        # loaded machine).
        assert noticed <= ttl + 1.5
        taken = store.take_over_runs("doomed", survivor)
        assert [r.id for r in taken] == queued[:4]
        for run in taken:  # requeue what never started, end what was running
            if run.status is RunStatus.CLAIMED:
                store.transition(run.id, RunStatus.QUEUED, lease=survivor, detail="host lost")
            else:
                store.transition(run.id, RunStatus.FAILED, lease=survivor, detail="host lost")
        claimed = store.claim_next(survivor, limit=10)
        assert sorted(r.id for r in claimed) == sorted(queued[2:])
        assert store.counts()[RunStatus.FAILED] == 2
        [lost] = [h for h in store.hosts() if h.host_id == "doomed"]
        assert lost.running == 0  # fenced: its epoch moved on


def test_import_needs_no_psycopg_and_the_store_says_how_to_get_it() -> None:
    script = """
import sys
sys.modules["psycopg"] = None  # as if the postgres extra were not installed
import cgr_store
from cgr_store import DatabaseUnavailable, PostgresStore, open_store
assert "psycopg" not in [m for m in sys.modules if sys.modules[m] is not None]
try:
    open_store("postgresql://cgr:secret@db.internal/cgr")
except DatabaseUnavailable as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'cgr-store[postgres]'" in done.stdout
    assert "postgresql://cgr:***@db.internal/cgr" in done.stdout
    assert "secret" not in done.stdout


# A host frozen (SIGSTOP) in the middle of a transaction that holds its lease row.
FROZEN_IN_TRANSACTION = """
import os, signal, sys
from datetime import timedelta
from cgr_store import PostgresStore

store = PostgresStore(sys.argv[1], idle_transaction_timeout=float(sys.argv[2]))
store.acquire_host_lease("frozen", timedelta(seconds=0.1))

def body(conn):
    conn.execute("SELECT epoch FROM hosts WHERE host_id = ? FOR UPDATE", ("frozen",))
    print("locked", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)

store._write(body)
"""


def test_a_host_frozen_in_a_transaction_does_not_block_the_take_over(pg_store_url: str) -> None:
    """The server ends a transaction left idle past ``idle_transaction_timeout``: a host
    frozen while it held its lease row locked releases it, and a live host's take-over
    goes through instead of waiting for it forever."""
    frozen = subprocess.Popen(
        [sys.executable, "-c", FROZEN_IN_TRANSACTION, pg_store_url, "1.0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert frozen.stdout is not None
        assert frozen.stdout.readline().strip() == "locked"
        with PostgresStore(pg_store_url) as store:
            live = store.acquire_host_lease("live", timedelta(seconds=60))
            started = time.monotonic()
            store.take_over_runs("frozen", live, now=utcnow() + timedelta(seconds=5))
            waited = time.monotonic() - started
            [fenced] = [h for h in store.hosts() if h.host_id == "frozen"]
        assert fenced.epoch == 2  # the take-over moved the frozen host's epoch on
        assert waited < 10, waited  # the server's timeout (1 s), not the frozen host, decided
    finally:
        frozen.kill()
        frozen.wait()
        if frozen.stdout is not None:
            frozen.stdout.close()
