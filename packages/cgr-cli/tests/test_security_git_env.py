"""A checkout the agent configured must not hand cgr's GitHub token to the agent's commands.

The agent can write its checkout's ``.git/config`` and ``.gitattributes``: a clean filter
(or ``core.fsmonitor``) there runs a command of the agent's choosing inside cgr's own
``git add``. Those commands inherit git's environment, so that environment must hold no
GitHub token, under any name, and no git tracing that would print the auth header.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cgr_cli.run._git import Git, git_env

TOKEN = "ghp_" + "S3cr3tT0kenValue0123456789abcdef"


def _git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                   capture_output=True, text=True, check=True)  # fmt: skip


def test_a_clean_filter_planted_by_the_agent_sees_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cgr's own environment holds the token, as with a systemd EnvironmentFile.
    for name in ("GH_TOKEN", "GITHUB_TOKEN", "CGR_GITHUB_TOKEN"):
        monkeypatch.setenv(name, TOKEN)
    monkeypatch.setenv("MY_CI_SECRET_COPY", TOKEN)
    checkout = tmp_path / "checkout"
    _git("init", "-q", "-b", "main", str(checkout))
    leak = tmp_path / "leak.txt"
    # What the agent writes: a filter that dumps its environment on every `git add`.
    _git("config", "filter.spy.clean", f"sh -c 'env >> {leak}; cat'", cwd=checkout)
    (checkout / ".gitattributes").write_text("* filter=spy\n")
    (checkout / "a.txt").write_text("change\n")

    git = Git(token=TOKEN)
    git.run(["config", "user.name", "t"], cwd=checkout)
    git.run(["config", "user.email", "t@t"], cwd=checkout)
    assert git.commit_all(checkout, "agent work")

    seen = leak.read_text()
    assert "PATH=" in seen  # the filter really ran: the test can fail
    assert TOKEN not in seen


@pytest.mark.parametrize("with_token", [True, False])
def test_git_env_drops_token_variables_and_curl_tracing(with_token: bool) -> None:
    base = {
        "PATH": "/usr/bin",
        "GH_TOKEN": TOKEN,
        "github_token": TOKEN,
        "GH_ENTERPRISE_TOKEN": TOKEN,
        "GIT_TRACE_CURL": "1",
        "GIT_CURL_VERBOSE": "1",
        "GIT_TRACE_REDACT": "0",
    }
    env = git_env(TOKEN if with_token else None, base)
    assert env["PATH"] == "/usr/bin"
    for name in ("GH_TOKEN", "github_token", "GH_ENTERPRISE_TOKEN", "GIT_TRACE_CURL",
                 "GIT_CURL_VERBOSE"):  # fmt: skip
        assert name not in env
    assert env.get("GIT_TRACE_REDACT") != "0"
    # Only the header git needs carries the token.
    holders = [k for k, v in env.items() if TOKEN in v]
    assert holders == (["GIT_CONFIG_VALUE_0"] if with_token else [])


def _guarded_checkout(tmp_path: Path) -> tuple[Path, Git, bytes]:
    checkout = tmp_path / "checkout"
    _git("init", "-q", "-b", "main", str(checkout))
    _git("config", "user.name", "t", cwd=checkout)
    _git("config", "user.email", "t@t", cwd=checkout)
    git = Git(token=None)
    git.guard(checkout)
    return checkout, git, (checkout / ".git" / "config").read_bytes()


def test_guard_puts_cgrs_config_back_before_each_of_its_git_commands(tmp_path: Path) -> None:
    checkout, git, saved = _guarded_checkout(tmp_path)
    leak = tmp_path / "ran.txt"
    spy = f"sh -c 'echo ran >> {leak}; cat'"
    # What the agent writes after cgr set the checkout up: a filter in .git/config, the
    # attribute naming it in .git/info/attributes, a commondir whose config has a filter.
    _git("config", "filter.spy.clean", spy, cwd=checkout)
    (checkout / ".git" / "info").mkdir(exist_ok=True)
    (checkout / ".git" / "info" / "attributes").write_text("* filter=spy\n")
    other = tmp_path / "common"
    other.mkdir()
    (other / "config").write_text(f'[filter "spy"]\n\tclean = {spy}\n')
    (checkout / ".git" / "commondir").write_text(str(other) + "\n")
    (checkout / "a.txt").write_text("change\n")

    assert git.commit_all(checkout, "work")
    assert not leak.exists()  # the filter never ran in cgr's git
    assert (checkout / ".git" / "config").read_bytes() == saved
    assert not (checkout / ".git" / "info" / "attributes").exists()
    assert not (checkout / ".git" / "commondir").exists()


def test_guard_replaces_a_config_symlink_without_writing_through_it(tmp_path: Path) -> None:
    checkout, git, saved = _guarded_checkout(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("not cgr's to overwrite\n")
    config = checkout / ".git" / "config"
    config.unlink()
    config.symlink_to(victim)
    git.run(["status", "--short"], cwd=checkout)
    assert victim.read_text() == "not cgr's to overwrite\n"
    assert not config.is_symlink()
    assert config.read_bytes() == saved


def test_guard_refuses_a_git_dir_replaced_by_a_symlink(tmp_path: Path) -> None:
    from cgr_cli.run._git_guard import GitDirTamperedError

    checkout, git, _ = _guarded_checkout(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    _git("init", "-q", str(elsewhere))
    (checkout / ".git").rename(tmp_path / "moved.git")
    (checkout / ".git").symlink_to(elsewhere / ".git")
    with pytest.raises(GitDirTamperedError, match="is a symlink or a file"):
        git.run(["status"], cwd=checkout)
