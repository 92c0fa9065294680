"""`cgr daemon` under systemd's eyes: started while GitHub is down it waits (no crash, no
restart loop) and schedules once GitHub is up; it tells systemd READY=1, pings WATCHDOG=1
and says STOPPING=1 over a real unix datagram socket ($NOTIFY_SOCKET), as Type=notify
with WatchdogSec expects."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from runworld import REPO, Env
from schedworld import Sched


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Notifications:
    """The receiving end of $NOTIFY_SOCKET: what systemd would read."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def collect(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            self.messages += data.decode().split("\n")

    def close(self) -> None:
        self.sock.close()


def test_daemon_waits_for_github_then_schedules_and_notifies_systemd(
    env: Env, sched: Sched, subreaper: None, tmp_path: Path
) -> None:
    from cgr_discovery.testing import GitHubSimulator

    port = _free_port()
    token = "ghp_" + "d" * 36
    sched.config(github={"api_url": f"http://127.0.0.1:{port}", "token": token})
    notify_path = tmp_path / "notify.sock"
    notes = Notifications(notify_path)
    log = tmp_path / "daemon.log"
    environ = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "cgr_cli", "daemon", "--grace", "5",
             "--config", str(env.config_path)],
            stdout=out, stderr=subprocess.STDOUT, env=environ,
        )  # fmt: skip
    try:
        # Ready for systemd at once (lock and store held), although GitHub is unreachable.
        sched.wait_until(lambda: "READY=1" in notes.collect(), 30, "READY=1")
        sched.wait_until(lambda: "GitHub is not reachable" in log.read_text(), 60, "the retry")
        assert daemon.poll() is None, log.read_text()  # waiting, not crashed
        assert any(m.startswith("STATUS=waiting for GitHub") for m in notes.collect())
        with GitHubSimulator(tmp_path / "sim2", token=token, port=port,
                             bot_login=env.sim.bot_login) as sim:  # fmt: skip
            sim.create_repo(REPO, labels=["ready", "in-progress", "needs-human", "cgr-done"])
            sim.add_collaborator(REPO, "alice", role="write")
            [number] = sim.seed_ready_issues(REPO, 1)
            sched.wait_until(
                lambda: any(r.status.value == "succeeded" for r in sched.runs()), 120,
                "the run GitHub's return let the daemon start",
            )  # fmt: skip
            assert sim.pull_requests(REPO)
            # The final report (labels, status comment) is sent right after the terminal
            # status is stored with it (the outbox): it follows the row, it does not lead it.
            sched.wait_until(
                lambda: "in-progress" not in sim.issue(REPO, number).labels, 30,
                "the run's final report",
            )  # fmt: skip
            # The watchdog is pinged every WATCHDOG_USEC/2 while the loop is alive.
            time.sleep(1.5)
            assert notes.collect().count("WATCHDOG=1") >= 2
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=60) == 0, log.read_text()
        assert "STOPPING=1" in notes.collect()
        assert "Traceback" not in log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        notes.close()


def test_notify_abstract_socket_watchdog_pid_and_no_systemd(tmp_path: Path) -> None:
    name = f"cgr-test-{os.getpid()}-{time.monotonic_ns()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)  # the abstract namespace, which systemd writes as "@name"
    receiver.settimeout(10)
    code = (
        "from cgr_cli.schedule._notify import notify, watchdog_interval\n"
        "print(notify('READY=1', 'STATUS=x'), watchdog_interval())"
    )
    base = {k: v for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}  # fmt: skip

    def run(**env: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", code], env={**base, **env},
                              capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        return done.stdout.split()

    try:
        assert run(NOTIFY_SOCKET=f"@{name}", WATCHDOG_USEC="4000000") == ["True", "2.0"]
        assert receiver.recv(4096) == b"READY=1\nSTATUS=x"
        # WATCHDOG_PID names another process: the watchdog is not this one's to ping.
        assert run(NOTIFY_SOCKET=f"@{name}", WATCHDOG_USEC="4000000", WATCHDOG_PID="1")[1] == (
            "None"
        )
        receiver.recv(4096)
        # Outside systemd: nothing to tell, nothing fails.
        assert run() == ["False", "None"]
        assert run(NOTIFY_SOCKET=str(tmp_path / "gone.sock")) == ["False", "None"]
    finally:
        receiver.close()
