from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cgr_discovery import AuthError, Secret, resolve_token


def fake_gh(tmp_path: Path, script: str) -> dict[str, str]:
    """A real `gh` executable on PATH that behaves as ``script`` says."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    gh = bindir / "gh"
    gh.write_text("#!/bin/sh\n" + script)
    gh.chmod(gh.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bindir}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path)}


def test_configured_token_wins() -> None:
    auth = resolve_token("cfg-token", env={"GH_TOKEN": "env-token"})
    assert auth.token.reveal() == "cfg-token"
    assert auth.source == "configuration"
    assert resolve_token(Secret("s"), env={}).token.reveal() == "s"


@pytest.mark.parametrize(
    ("env", "token", "source"),
    [
        ({"GH_TOKEN": "a", "GITHUB_TOKEN": "b"}, "a", "GH_TOKEN"),
        ({"GH_TOKEN": " ", "GITHUB_TOKEN": "b"}, "b", "GITHUB_TOKEN"),
    ],
)
def test_environment(env: dict[str, str], token: str, source: str) -> None:
    auth = resolve_token(None, env=env, gh_executable=None)
    assert (auth.token.reveal(), auth.source) == (token, source)


def test_enterprise_host_uses_enterprise_variables() -> None:
    env = {"GH_TOKEN": "public", "GH_ENTERPRISE_TOKEN": "ghes"}
    auth = resolve_token(None, env=env, hostname="ghe.example.com", gh_executable=None)
    assert auth.token.reveal() == "ghes"


def test_gh_cli_token(tmp_path: Path) -> None:
    env = fake_gh(
        tmp_path,
        'if [ "$1 $2 $3 $4" = "auth token --hostname github.com" ]; then\n'
        "  echo gho_fromcli; exit 0\nfi\nexit 3\n",
    )
    auth = resolve_token(None, env=env)
    assert auth.token.reveal() == "gho_fromcli"
    assert auth.source == "gh auth token"


def test_gh_not_logged_in_is_skipped(tmp_path: Path) -> None:
    env = fake_gh(tmp_path, "echo 'not logged in' >&2; exit 1\n")
    with pytest.raises(AuthError, match="gh auth token") as info:
        resolve_token(None, env=env)
    assert "GH_TOKEN" in str(info.value)
    assert "gh auth login" in str(info.value)


def test_gh_hanging_is_skipped_after_timeout(tmp_path: Path) -> None:
    env = fake_gh(tmp_path, "exec sleep 30\n")
    with pytest.raises(AuthError):
        resolve_token(None, env=env, timeout=0.5)


def test_gh_absent(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="no GitHub token"):
        resolve_token(None, env={"PATH": str(tmp_path)})
