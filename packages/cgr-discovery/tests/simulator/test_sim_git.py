"""Real git over smart HTTP through the simulator, token only in the environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from cgr_discovery.testing import GitHubSimulator

REPO = "acme/widgets"


def _git_env(tmp_path: Path, header: str | None) -> dict[str, str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Tester",
        "GIT_AUTHOR_EMAIL": "tester@example.invalid",
        "GIT_COMMITTER_NAME": "Tester",
        "GIT_COMMITTER_EMAIL": "tester@example.invalid",
    }
    if header is not None:
        # The token reaches git only through the environment: never argv or .git/config.
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": header,
            }
        )
    return env


def _git(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"git {args} failed: {proc.stderr}"
    return proc.stdout.strip()


def test_clone_push_and_open_pull_request_with_token_from_env(
    gh: GitHubSimulator, api: httpx.Client, tmp_path: Path
) -> None:
    env = _git_env(tmp_path, f"Authorization: Bearer {gh.token}")
    work = tmp_path / "work"
    _git(env, "clone", "--quiet", gh.git_url("acme", "widgets"), str(work))
    assert (work / "README.md").is_file()

    _git(env, "switch", "--quiet", "-c", "cgr/feature", cwd=work)
    (work / "small.txt").write_text("hello\n")
    # More than 1 MiB of incompressible data makes git send a chunked request body.
    (work / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    _git(env, "add", ".", cwd=work)
    _git(env, "commit", "--quiet", "-m", "Add files", cwd=work)
    _git(env, "push", "--quiet", "origin", "cgr/feature", cwd=work)
    head = _git(env, "rev-parse", "HEAD", cwd=work)

    assert gh.branches(REPO)["cgr/feature"] == head
    assert gh.token not in (work / ".git" / "config").read_text()

    created = api.post(
        "/repos/acme/widgets/pulls",
        json={"title": "Feature", "head": "cgr/feature", "base": "main", "body": "Adds files"},
    )
    assert created.status_code == 201, created.text
    pull = created.json()
    assert pull["head"]["sha"] == head
    assert pull["head"]["ref"] == "cgr/feature"
    assert pull["commits"] == 1
    assert pull["changed_files"] == 2

    # A second push moves the PR's head and bumps its updated_at.
    gh.advance_clock(5)
    (work / "small.txt").write_text("hello again\n")
    _git(env, "commit", "--quiet", "-am", "More", cwd=work)
    _git(env, "push", "--quiet", "origin", "cgr/feature", cwd=work)
    new_head = _git(env, "rev-parse", "HEAD", cwd=work)
    listed = api.get("/repos/acme/widgets/pulls", params={"head": "acme:cgr/feature"}).json()
    assert [p["head"]["sha"] for p in listed] == [new_head]
    assert listed[0]["updated_at"] > pull["updated_at"]

    # Fetch (protocol v2 through the Git-Protocol header) sees the pushed branch.
    _git(env, "fetch", "--quiet", "origin", cwd=work)
    assert _git(env, "rev-parse", "origin/cgr/feature", cwd=work) == new_head
    git_requests = [r for r in gh.requests if ".git/" in r.path]
    assert git_requests
    assert all(r.resource is None and not r.counted for r in git_requests)


def test_basic_auth_header_as_git_sends_it(gh: GitHubSimulator, tmp_path: Path) -> None:
    import base64

    basic = base64.b64encode(f"x-access-token:{gh.token}".encode()).decode()
    env = _git_env(tmp_path, f"AUTHORIZATION: basic {basic}")
    _git(env, "clone", "--quiet", gh.git_url("acme", "widgets"), str(tmp_path / "c"))


@pytest.mark.parametrize("header", [None, "Authorization: Bearer wrong-token"])
def test_clone_without_valid_token_is_refused(
    gh: GitHubSimulator, tmp_path: Path, header: str | None
) -> None:
    env = _git_env(tmp_path, header)
    proc = subprocess.run(
        ["git", "clone", gh.git_url("acme", "widgets"), str(tmp_path / "c")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert gh.requests[-1].status == 401


def test_push_needs_write_access(gh: GitHubSimulator, tmp_path: Path) -> None:
    gh.add_collaborator(REPO, "reader", role="read")
    env = _git_env(tmp_path, f"Authorization: token {gh.token_for('reader')}")
    work = tmp_path / "w"
    _git(env, "clone", "--quiet", gh.git_url("acme", "widgets"), str(work))
    (work / "f").write_text("x")
    _git(env, "add", ".", cwd=work)
    _git(env, "commit", "--quiet", "-m", "x", cwd=work)
    proc = subprocess.run(
        ["git", "push", "origin", "HEAD:refs/heads/nope"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "nope" not in gh.branches(REPO)


def test_clone_url_without_dot_git(gh: GitHubSimulator, tmp_path: Path) -> None:
    env = _git_env(tmp_path, f"Authorization: token {gh.token}")
    url = gh.git_url("acme", "widgets").removesuffix(".git")
    _git(env, "clone", "--quiet", url, str(tmp_path / "c"))
    assert (tmp_path / "c" / "README.md").is_file()


def test_clone_of_missing_repository_is_404(gh: GitHubSimulator, tmp_path: Path) -> None:
    env = _git_env(tmp_path, f"Authorization: token {gh.token}")
    proc = subprocess.run(
        ["git", "clone", gh.git_url("acme", "nothing"), str(tmp_path / "c")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert gh.requests[-1].status == 404


def test_git_protocol_header_reaches_http_backend(
    gh: GitHubSimulator, raw_api: httpx.Client
) -> None:
    url = "/acme/widgets.git/info/refs?service=git-upload-pack"
    v2 = raw_api.get(url, headers={"Git-Protocol": "version=2"})
    assert v2.status_code == 200
    assert v2.headers["content-type"] == "application/x-git-upload-pack-advertisement"
    assert b"version 2" in v2.content
    v0 = raw_api.get(url)
    assert b"version 2" not in v0.content
    assert gh.branches(REPO)["main"].encode() in v0.content


def test_push_lands_but_the_answer_is_dropped(gh: GitHubSimulator, tmp_path: Path) -> None:
    env = _git_env(tmp_path, f"Authorization: Bearer {gh.token}")
    work = tmp_path / "w"
    _git(env, "clone", "--quiet", gh.git_url("acme", "widgets"), str(work))
    _git(env, "switch", "--quiet", "-c", "cgr/lost", cwd=work)
    (work / "f.txt").write_text("landed\n")
    _git(env, "add", ".", cwd=work)
    _git(env, "commit", "--quiet", "-m", "Lost answer", cwd=work)
    head = _git(env, "rev-parse", "HEAD", cwd=work)
    fault = gh.faults.drop_after_apply(method="POST", path=r"/git-receive-pack$")
    proc = subprocess.run(
        ["git", "push", "origin", "cgr/lost"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # git reports a failure, yet the branch is on the server: a retry must check first.
    assert proc.returncode != 0, proc.stderr
    assert fault.hits == 1
    assert gh.branches(REPO)["cgr/lost"] == head
    (record,) = [r for r in gh.requests if r.fault is not None]
    assert record.path.endswith("/git-receive-pack")
    assert (record.status, record.fault, record.applied_status) == (None, "drop_after", 200)
    remote = _git(env, "ls-remote", "origin", "refs/heads/cgr/lost", cwd=work)
    assert remote.split()[0] == head
