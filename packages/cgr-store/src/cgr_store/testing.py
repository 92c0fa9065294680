"""A throwaway PostgreSQL server for tests and benchmarks: ``TemporaryPostgres``.

It uses the machine's server binaries when there are any (``/usr/lib/postgresql/*/bin``,
``pg_config --bindir``, ``initdb`` on PATH, or ``$CGR_TEST_PG_BINDIR``), otherwise the
``pgserver`` wheel from PyPI if it is installed (it ships PostgreSQL in the wheel), so a
test run needs only Python and pip. ``$CGR_TEST_PG=pgserver`` forces the wheel.

The server is a child of this process, in a temporary directory, listening on a unix socket
there and on a free TCP port of 127.0.0.1 only. It runs without fsync: it is for tests,
whose data is thrown away. PostgreSQL refuses to run as root, so when this process is root
the server runs as the unprivileged user ``nobody``, owning only its directory.

    with TemporaryPostgres() as server:
        url = server.create_database()          # a fresh, empty database
        store = PostgresStore(url)

Not part of cgr at run time: nothing outside tests and benchmarks imports this module.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["PostgresUnavailable", "TemporaryPostgres", "find_server_binaries"]

SUPERUSER = "postgres"
PASSWORD_USER = "cgr_pw"  # noqa: S105 - a throwaway test server's role
"""A role that must log in with a password over TCP (for authentication tests)."""
PASSWORD = "cgr-test-password"  # noqa: S105 - a throwaway test server's password


class PostgresUnavailable(RuntimeError):
    """Neither server binaries nor the pgserver wheel are available."""


def find_server_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``postgres`` of this machine, if any."""
    candidates: list[str] = []
    if os.environ.get("CGR_TEST_PG_BINDIR"):
        candidates.append(os.environ["CGR_TEST_PG_BINDIR"])

    def major(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else 0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=30
        )
        if done.returncode == 0:
            candidates.append(done.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TemporaryPostgres:
    """A PostgreSQL server in a temporary directory, stopped and removed on ``stop()``.

    ``durable``: keep PostgreSQL's fsync on commit (for benchmarks that compare with a
    store that fsyncs); tests leave it off, which makes creating databases quick.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self._durable = durable
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pgserver: Any = None
        self._names = itertools.count(1)
        self.port: int | None = None
        self.socket_dir: Path | None = None
        self.kind = ""
        """``binaries`` (this machine's server) or ``pgserver`` (the wheel)."""

    # -- lifetime -----------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        binaries = None if os.environ.get("CGR_TEST_PG") == "pgserver" else find_server_binaries()
        if binaries is not None:
            self._start_binaries(binaries)
        else:
            self._start_pgserver()
        self._admin("SELECT 1")
        if self.port is not None:
            self._admin(f"CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        return self

    def _start_binaries(self, bindir: Path) -> None:
        self.kind = "binaries"
        self._dir = Path(tempfile.mkdtemp(prefix="cgr-pg-"))
        data = self._dir / "data"
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            # PostgreSQL will not run as root. nobody owns the directory and nothing else.
            nobody = pwd.getpwnam("nobody")
            os.chown(self._dir, nobody.pw_uid, nobody.pw_gid)
            run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        init = subprocess.run(
            [
                str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                "--no-locale", "-E", "UTF8", "--no-sync",
            ],
            capture_output=True, text=True, check=False, timeout=120, **run_as,
        )  # fmt: skip
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()}")
        # The unix socket is trusted (the admin connection); TCP asks the password user for
        # its password, so authentication failures can be tested; others are trusted.
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        self.port = _free_port()
        self.socket_dir = self._dir
        log = (self._dir / "server.log").open("wb")
        if run_as:
            os.chown(self._dir / "server.log", run_as["user"], run_as["group"])
        # Throwaway data: no fsync, so creating a database per test is quick.
        fast = [] if self._durable else [
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            [
                str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                "-k", str(self._dir), "-c", "listen_addresses=127.0.0.1",
                "-c", "max_connections=200", *fast,
            ],
            stdout=log, stderr=subprocess.STDOUT, **run_as,
        )  # fmt: skip
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise PostgresUnavailable(f"postgres exited: {self.log_tail()}")
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(
                        f"postgres did not start: {self.log_tail()}"
                    ) from None
                time.sleep(0.05)
            else:
                return

    def _start_pgserver(self) -> None:
        # pgserver's import and start-up warn about the environment (e.g. platformdirs:
        # "XDG_RUNTIME_DIR is not set"), which strict test runs turn into errors.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import pgserver  # type: ignore[import-not-found,unused-ignore]
            except ImportError:
                raise PostgresUnavailable(
                    "no PostgreSQL server binaries on this machine and no pgserver wheel: "
                    "install PostgreSQL, or `pip install pgserver`"
                ) from None
            self.kind = "pgserver"
            self._dir = Path(tempfile.mkdtemp(prefix="cgr-pgserver-"))
            self._pgserver = pgserver.get_server(self._dir / "data", cleanup_mode="stop")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory. Idempotent."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGINT)  # "fast" shutdown
                try:
                    self._process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self._pgserver is not None:
            self._pgserver.cleanup()
            self._pgserver = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log_tail(self, lines: int = 20) -> str:
        if self._dir is None or not (self._dir / "server.log").exists():
            return ""
        return "\n".join((self._dir / "server.log").read_text().splitlines()[-lines:])

    # -- URLs and databases -------------------------------------------------------------
    def url(self, database: str = "postgres", *, tcp: bool = False) -> str:
        """The URL of ``database`` as the superuser: over the unix socket (the libpq
        ``?host=/dir`` form) or, with ``tcp``, over 127.0.0.1."""
        if self._pgserver is not None:
            return str(self._pgserver.get_uri(database))
        if tcp:
            return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    def password_url(self, database: str, password: str = PASSWORD) -> str:
        """``database`` over TCP as a user that must give its password."""
        if self.port is None:
            raise PostgresUnavailable("this server listens on no TCP port")
        return f"postgresql://{PASSWORD_USER}:{password}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.encode())

    def _server_version(self) -> int:
        import psycopg

        with psycopg.connect(self.url("postgres")) as conn:
            return int(conn.info.server_version)

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template`` (which must have no open
        connections); returns its URL (unix socket). A copy of a template that already has
        cgr's schema is several times quicker than migrating an empty database."""
        name = name or f"cgr_test_{os.getpid()}_{next(self._names)}"
        sql = f'CREATE DATABASE "{name}"'
        if template is not None:
            sql += f' TEMPLATE "{template}"'
            if self._server_version() >= 150000:
                # Copying the files beats WAL-logging every page for a small database.
                sql += " STRATEGY FILE_COPY"
        self._admin(sql)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any session still connected to it."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
