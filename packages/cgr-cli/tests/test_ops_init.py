"""``cgr init``: the written file passes ``cgr config check``; no silent overwrite."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cgr_cli import load_config, main
from cgr_cli.config._init import BadRepositoryError, InitPaths, ask_repositories, parse_repositories


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("CGR_CONFIG", raising=False)
    return tmp_path


def test_user_config_passes_config_check(xdg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "acme/widgets", "acme/gadgets,acme/widgets"]) == 0
    written = xdg / "config" / "cgr" / "config.toml"
    out = capsys.readouterr().out
    assert f"Wrote {written}" in out
    assert f"cgr doctor --config {written}" in out
    assert "export CGR_GITHUB_TOKEN" in out
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    text = written.read_text()
    assert text.count("\n# ") > 20  # commented, not a bare dump

    # The real command, as a user would run it, on the file just written.
    assert main(["config", "check", "--config", str(written)]) == 0
    assert 'repositories = ["acme/widgets", "acme/gadgets"]' in capsys.readouterr().out
    config, found = load_config(written)
    assert found == written
    assert config.workspace_root == xdg / "data" / "cgr" / "workspaces"
    assert config.database == xdg / "data" / "cgr" / "cgr.sqlite3"
    # Found without --config too: it is where cgr looks by default.
    assert load_config(None)[1] == written


def test_refuses_to_overwrite_without_force(xdg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = xdg / "config" / "cgr" / "config.toml"
    target.parent.mkdir(parents=True)
    target.write_text("repositories = ['keep/me']\n")
    assert main(["init", "acme/widgets"]) == 1
    err = capsys.readouterr().err
    assert str(target) in err
    assert "--force" in err
    assert target.read_text() == "repositories = ['keep/me']\n"
    assert main(["init", "acme/widgets", "--force"]) == 0
    assert load_config(target)[0].repositories == ["acme/widgets"]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".config-")]


def test_system_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "etc" / "cgr" / "config.toml"
    assert main(["init", "--system", "--config", str(target), "acme/widgets"]) == 0
    config, _ = load_config(target)
    assert config.workspace_root == Path("/var/lib/cgr/workspaces")
    assert config.database == Path("/var/lib/cgr/cgr.sqlite3")
    out = capsys.readouterr().out
    assert "cgr.env" in out
    assert "sudo cgr systemd --install" in out
    assert InitPaths.for_system().config == Path("/etc/cgr/config.toml")


def test_bad_repository_is_refused(xdg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "not-a-repo"]) == 1
    assert "'not-a-repo' is not a repository name; expected 'OWNER/NAME'" in capsys.readouterr().err
    assert not (xdg / "config" / "cgr" / "config.toml").exists()
    with pytest.raises(BadRepositoryError) as caught:
        parse_repositories(["a/b c"])
    assert caught.value.name == "c"


def test_asks_again_after_a_bad_answer() -> None:
    answers = iter(["oops", "acme/widgets, acme/gadgets"])
    said: list[str] = []
    assert ask_repositories(lambda _: next(answers), said.append) == [
        "acme/widgets",
        "acme/gadgets",
    ]
    assert "'oops' is not a repository name" in said[0]


def test_interactive_on_a_terminal(xdg: Path) -> None:
    """stdin a real pseudo-terminal: cgr asks for the repositories."""
    import pty

    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg / "config"),
           "XDG_DATA_HOME": str(xdg / "data")}  # fmt: skip
    leader, follower = pty.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "cgr_cli", "init"],
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        os.close(follower)
        os.write(leader, b"acme/widgets\n")
        out, err = child.communicate(timeout=60)
    finally:
        os.close(leader)
    assert child.returncode == 0, err
    assert b"Next steps" in out
    config, _ = load_config(xdg / "config" / "cgr" / "config.toml")
    assert config.repositories == ["acme/widgets"]


def test_not_a_terminal_and_no_repositories_writes_an_empty_list(
    xdg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["init"]) == 0
    assert "no repositories yet" in capsys.readouterr().out
    assert load_config(xdg / "config" / "cgr" / "config.toml")[0].repositories == []
