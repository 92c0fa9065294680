"""Starting, stopping and sharing the simulator: threads, sockets, the command line."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from cgr_discovery.testing import GitHubSimulator, SimulatorError, SimulatorServerError
from cgr_discovery.testing._http import Reply, Route

REPO = "acme/widgets"


def _sim_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("github-simulator")]


def test_close_joins_threads_with_keep_alive_connections_open(tmp_path: Path) -> None:
    before = set(_sim_threads())
    gh = GitHubSimulator(tmp_path).start()
    client = httpx.Client(base_url=gh.url, headers={"Authorization": f"token {gh.token}"})
    try:
        assert client.get("/user").status_code == 200
        assert len(set(_sim_threads()) - before) >= 2  # the server and one connection
        gh.close()
        assert set(_sim_threads()) - before == set()
        with pytest.raises(httpx.TransportError):
            client.get("/user")
    finally:
        client.close()
    with pytest.raises(SimulatorError, match="not running"):
        _ = gh.url


def test_concurrent_requests_and_mutations(tmp_path: Path) -> None:
    with GitHubSimulator(tmp_path) as gh:
        gh.create_repo(REPO)
        gh.add_collaborator(REPO, "alice")
        number = gh.create_issue(REPO, "busy")
        errors: list[BaseException] = []

        def poll() -> None:
            try:
                with httpx.Client(
                    base_url=gh.url, headers={"Authorization": f"token {gh.token}"}
                ) as client:
                    for _ in range(20):
                        response = client.get(f"/repos/{REPO}/issues/{number}/comments")
                        assert response.status_code == 200
                        client.post(f"/repos/{REPO}/issues/{number}/labels", json=["x"])
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=poll) for _ in range(4)]
        for thread in threads:
            thread.start()
        for i in range(20):
            gh.add_comment(REPO, number, f"comment {i}", author="alice")
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(gh.comments(REPO, number)) == 20
        assert len([r for r in gh.requests if r.method == "GET"]) == 80


def test_a_crash_inside_the_simulator_fails_the_test(tmp_path: Path) -> None:
    def broken(app: object, req: object) -> Reply:
        raise RuntimeError("simulated bug")

    gh = GitHubSimulator(tmp_path).start()
    gh._app.routes = [Route("GET", re.compile("/boom"), broken, "core"), *gh._app.routes]
    with httpx.Client(base_url=gh.url, headers={"Authorization": f"token {gh.token}"}) as c:
        assert c.get("/boom").status_code == 500
    with pytest.raises(SimulatorServerError, match="simulated bug"):
        gh.close()


def test_two_simulators_side_by_side(tmp_path: Path) -> None:
    with GitHubSimulator(tmp_path / "a") as one, GitHubSimulator(tmp_path / "b") as two:
        assert one.url != two.url
        assert one.token != two.token
        with httpx.Client(headers={"Authorization": f"token {one.token}"}) as client:
            assert client.get(f"{two.url}/user").status_code == 401


def test_command_line_prints_url_and_token_and_serves(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cgr_discovery.testing", "--port", "0", "--seed", "demo",
         "--root", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: dict[str, str] = {}
        while "repo" not in lines:
            line = proc.stdout.readline()
            assert line, f"simulator exited early: {proc.stderr.read() if proc.stderr else ''}"
            key, _, value = line.strip().partition(": ")
            lines[key] = value
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", lines["url"])
        headers = {"Authorization": f"token {lines['token']}"}
        with httpx.Client(base_url=lines["url"], headers=headers) as client:
            issues = client.get("/repos/acme/widgets/issues", params={"labels": "ready"})
            assert issues.status_code == 200
            assert len(issues.json()) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_chunked_request_bodies(tmp_path: Path) -> None:
    import socket
    from collections.abc import Iterator

    with GitHubSimulator(tmp_path) as gh:
        gh.create_repo(REPO)
        number = gh.create_issue(REPO, "chunks")

        def body() -> Iterator[bytes]:
            yield b'{"body": '
            yield b'"sent in chunks"}'

        with httpx.Client(base_url=gh.url, headers={"Authorization": f"token {gh.token}"}) as c:
            created = c.post(f"/repos/{REPO}/issues/{number}/comments", content=body())
        assert created.status_code == 201
        assert created.json()["body"] == "sent in chunks"

        host, port = gh.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /user HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            )
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400")


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## GitHub simulator", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(example)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("2 [('GET', '/repos/acme/widgets/issues', 502)")


def test_a_client_resetting_its_connection_prints_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A process that exits mid keep-alive resets its connections: normal, not an error."""
    import socket
    import struct
    import time

    with GitHubSimulator(tmp_path) as gh:
        host, port = gh.url.removeprefix("http://").split("/")[0].split(":")
        for _ in range(3):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"GET /user HTTP/1.1\r\n")  # the server now waits for the rest
            time.sleep(0.1)
            # Linger 0: close() sends RST, so the server's read fails with ECONNRESET.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        time.sleep(0.3)
        # Still serving.
        answer = httpx.get(f"{gh.url}/user", headers={"Authorization": f"token {gh.token}"})
        assert answer.status_code == 200
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "ConnectionResetError" not in err
