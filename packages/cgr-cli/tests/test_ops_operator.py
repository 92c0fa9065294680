"""The operator's side of cgr: configuration values refused before they do harm,
`config check`, help and completion, `status` on a terminal, journald logs, following a
run, and the hints that fit how cgr was installed."""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgr_cli import ConfigError
from cgr_cli.config._load import load_config, parse_config
from cgr_cli.config._validate import ref_problem, repository_problem
from runworld import REPO, Env

BAD_VALUES = [
    ("[timeouts]\nrun_seconds = inf", "timeouts.run_seconds", "finite"),
    ("[timeouts]\nrun_seconds = nan", "timeouts.run_seconds", "> 0"),
    ("[timeouts]\nrun_seconds = 1e308", "timeouts.run_seconds", "at most 30 days"),
    ("[polling]\ninterval_seconds = 1e12", "polling.interval_seconds", "at most"),
    ("[agent]\nmax_cost_usd = 1e300", "agent.max_cost_usd", "at most"),
    ("[polling]\nmax_concurrency = 100000", "polling.max_concurrency", "at most 1024"),
    ("[polling]\nmax_concurrent_repos = 5000", "polling.max_concurrent_repos", "at most 1024"),
    ("[cleanup]\nretention_days = 1e9", "cleanup.retention_days", "at most 3650"),
    ("repositories = ['../x']", "repositories[0]", "not a GitHub account name"),
    ("repositories = ['-rf/x']", "repositories[0]", "not a GitHub account name"),
    ("repositories = ['a/..']", "repositories[0]", "not a GitHub repository name"),
    ("repositories = ['a/-x']", "repositories[0]", "not a GitHub repository name"),
    ("repositories = ['bad--owner/x']", "repositories[0]", "single hyphens"),
    ("[branching]\nprefix = '../../x'", "branching.prefix", "contains '..'"),
    ("[branching]\nprefix = 'a b'", "branching.prefix", "space"),
    ("[branching]\nprefix = 'x.lock'", "branching.prefix", ".lock"),
    ("[branching]\nbase = '--upload-pack=sh'", "branching.base", "option"),
    ("[branching]\nbase = 'main~1'", "branching.base", "~"),
    ("[github]\napi_url = 'file:///etc/passwd'", "github.api_url", "http:// or https://"),
    ("[github]\napi_url = 'ftp://example.com'", "github.api_url", "http:// or https://"),
    ("[github]\nbot_login = '-bot'", "github.bot_login", "not a GitHub login"),
    ("[trigger]\nallow_users = ['../x']", "trigger.allow_users[0]", "not a GitHub login"),
    ("[paths]\ndatabase = '--db'", "paths.database", "may not start with '-'"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BAD_VALUES)
def test_bad_values_are_refused_with_key_and_reason(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_credentials_in_the_api_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"github": {"api_url": "https://x:ghp_secret@example.com"}})
    assert "ghp_secret" not in str(caught.value)
    assert "credentials in the URL" in str(caught.value)


def test_good_values_pass() -> None:
    config = parse_config({
        "repositories": ["octo-org/hello.world", "a/b_c-d", "A1/x"],
        "branching": {"prefix": "bots/cgr", "base": "release/1.x"},
        "github": {"api_url": "http://127.0.0.1:8080/api/v3", "bot_login": "cgr-bot[bot]"},
        "timeouts": {"run_seconds": 86400.0},
    })  # fmt: skip
    assert config.branching.base == "release/1.x"


NAMES = ["cgr", "bots/cgr", "a/b/c", "../x", "x/../y", ".hidden", "a/.b", "x.lock", "a.lock/b",
         "a b", "a~b", "a^b", "a:b", "a?b", "a*b", "a[b", "a\\b", "a//b", "/a", "a/", "a.",
         "a@{b", "a@b", "-x", "--upload-pack=sh", "release/1.x", "ünïcode"]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_branch_rules_agree_with_git_check_ref_format(name: str) -> None:
    git = subprocess.run(["git", "check-ref-format", "--branch", name],
                         capture_output=True, check=False)  # fmt: skip
    ours = ref_problem(name) is None
    # cgr is stricter in two ways: a leading "-" is an option to other git commands, and
    # "@" (which `--branch` expands to the current branch) is refused outright.
    expected = git.returncode == 0 and not name.startswith("-")
    assert ours == expected, (name, ref_problem(name), git.stderr)


def test_repository_rules() -> None:
    assert repository_problem("octo/hello") is None
    assert repository_problem("a-b/c.d_e") is None
    for bad in ("a", "a/b/c", "-a/b", "a-/b", "a/.", "a/..", "/b", "a/", "a" * 40 + "/b"):
        assert repository_problem(bad) is not None, bad


def _check(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CGR_GITHUB_TOKEN", "CGR_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "cgr_cli", "config", "check", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False, env={**environ, **env},
    )  # fmt: skip


def test_config_check_says_where_the_token_comes_from(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("repositories = ['a/b']\n")
    from_env = _check(path, CGR_GITHUB_TOKEN="ghp_" + "e" * 36)
    assert from_env.returncode == 0
    assert 'token = "***"  # from $CGR_GITHUB_TOKEN' in from_env.stdout
    assert "eeee" not in from_env.stdout
    unset = _check(path)
    assert "# token is not set: set github.token here or $CGR_GITHUB_TOKEN" in unset.stdout
    path.write_text("repositories = ['a/b']\n[github]\ntoken = 'ghp_" + "f" * 36 + "'\n")
    both = _check(path, CGR_GITHUB_TOKEN="ghp_" + "e" * 36)
    assert "# from the configuration file ($CGR_GITHUB_TOKEN is set too, and ignored)" in (
        both.stdout
    )


def test_config_check_fails_without_repositories_or_without_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[agent]\nmax_turns = 3\n")
    done = _check(path)
    assert done.returncode == 1
    assert "names no repository" in done.stderr
    none = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "config", "check"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "empty"), "CGR_CONFIG": ""},
    )  # fmt: skip
    assert none.returncode == 1
    assert "no configuration file" in none.stderr


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{parser.prog} {name}".removeprefix("cgr "), sub))
                found += _subparsers(sub)
    return found


def test_every_subcommand_has_a_description_on_its_own_help() -> None:
    from cgr_cli._main import _parser

    subcommands = _subparsers(_parser())
    assert len(subcommands) >= 15
    missing = [name for name, sub in subcommands if not (sub.description or "").strip()]
    assert missing == []
    for name, sub in subcommands:
        for action in sub._actions:
            if action.help is None and not isinstance(action, argparse._SubParsersAction):
                pytest.fail(f"{name} {action.option_strings or action.dest} has no help")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_is_generated_from_the_parser(shell: str) -> None:
    done = subprocess.run([sys.executable, "-m", "cgr_cli", "completion", shell],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    script = done.stdout
    for word in ("tick", "daemon", "completion", "--follow", "--metrics"):
        assert word in script, word
    program = shutil.which(shell)
    if program is not None:  # the shell that will read it parses it
        syntax = subprocess.run([program, "-n"], input=script, capture_output=True, text=True,
                                timeout=60, check=False)  # fmt: skip
        assert syntax.returncode == 0, syntax.stderr
    if shell == "bash":
        assert program is not None
        # Completing `cgr ti` offers tick, through the generated function.
        probe = script + '\nCOMP_WORDS=(cgr ti); COMP_CWORD=1; _shtab_cgr; echo "${COMPREPLY[*]}"\n'
        answer = subprocess.run([program, "-c", probe], capture_output=True, text=True,
                                timeout=60, check=False)  # fmt: skip
        assert answer.stdout.split() == ["tick"], answer.stderr


def test_completion_costs_nothing_at_run_time() -> None:
    code = "import sys; from cgr_cli._main import main; main([]); print('shtab' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_status_fits_the_terminal_without_cutting_words() -> None:
    from cgr_cli.ops._status_view import render_status

    error = ("the agent exited 1: Invalid API key · Please run /login to sign in again, "
             "then retry the run with cgr retry")  # fmt: skip
    data = {
        "config": {"file": "/etc/cgr/config.toml", "repositories": ["acme/widgets"],
                   "database": "/var/lib/cgr/cgr.sqlite3", "workspace_root": "/var/lib/cgr/ws",
                   "max_concurrency": 2, "interval_seconds": 60},
        "daemon": None,
        "slots": {"limit": 4, "used": 0, "free": 4, "agents": 2},
        "active": [],
        "recent": [{"id": "r-20261128-110000-000-cccccc", "target": "acme/gadgets#3",
                    "status": "failed", "outcome": "failed", "ended_at": None,
                    "pr_url": None, "cost_usd": 0.0, "error": error}],
        "counts": {},
    }  # fmt: skip
    text = render_status(data, width=80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), [len(line) for line in lines]
    assert all(line == line.rstrip() for line in lines)
    # Every word of the error is there, whole, in order.
    assert error in " ".join(text.split())
    for narrow in (60, 100):
        other = render_status(data, width=narrow).splitlines()
        assert all(len(line) <= narrow for line in other if line.startswith("    ")), narrow
        assert error in " ".join(" ".join(other).split())
    assert render_status(data).count(error) == 1  # no width: one whole line


def test_journald_gets_priorities_and_no_timestamps(tmp_path: Path) -> None:
    out = tmp_path / "journal"
    out.write_text("")
    info = out.stat()
    code = (
        "import logging; from cgr_cli.ops._logging import configure_logging\n"
        "configure_logging('text')\n"
        "log = logging.getLogger('cgr.test')\n"
        "log.info('hello'); log.warning('careful'); log.error('broken')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('with a traceback')\n"
    )
    env = {**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
    with out.open("w") as stderr:
        subprocess.run([sys.executable, "-c", code], stderr=stderr, env=env, timeout=60,
                       check=True)  # fmt: skip
    lines = out.read_text().splitlines()
    assert lines[:3] == ["<6>INFO cgr.test hello", "<4>WARNING cgr.test careful",
                         "<3>ERROR cgr.test broken"]  # fmt: skip
    assert all(line.startswith("<3>") for line in lines[3:])  # the traceback too
    # Not the journal's stream (a redirect): timestamps, no prefixes.
    plain = tmp_path / "plain"
    with plain.open("w") as stderr:
        subprocess.run([sys.executable, "-c", code], stderr=stderr, env=env, timeout=60,
                       check=True)  # fmt: skip
    first = plain.read_text().splitlines()[0]
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO cgr.test hello$", first)


def test_init_writes_an_env_file_template_for_the_units(tmp_path: Path) -> None:
    config = tmp_path / "cfg" / "config.toml"
    done = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "init", "acme/widgets", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    env_file = config.parent / "cgr.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "CGR_GITHUB_TOKEN=" in env_file.read_text()
    assert str(env_file) in done.stdout
    # A second init (--force) leaves the secrets file alone.
    env_file.write_text("CGR_GITHUB_TOKEN=ghp_kept\n")
    subprocess.run(
        [sys.executable, "-m", "cgr_cli", "init", "acme/widgets", "--config", str(config),
         "--force"], capture_output=True, timeout=60, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert env_file.read_text() == "CGR_GITHUB_TOKEN=ghp_kept\n"
    # The units read it.
    units = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "systemd", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f"EnvironmentFile=-{env_file}" in units


def test_the_ui_hint_fits_pipx(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['textual'] = None\n"
            "from cgr_cli._main import main; sys.exit(main(['ui']))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1
    assert "pipx inject cgr-cli 'textual>=8.2'" in done.stderr
    assert "pip install 'cgr-cli[ui]'" in done.stderr


def test_logs_follow_shows_the_agent_and_ends_with_the_outcome(env: Env) -> None:
    number = env.sim.create_issue(REPO, "Add a greeting", "", author="alice", labels=["ready"])
    env.scenario("success")
    assert env.run(number) == 0
    with env.store() as store:
        (run,) = store.recent_runs(limit=5)
    followed = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "logs", run.id, "--follow",
         "--config", str(env.config_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert followed.returncode == 0, followed.stderr
    out = followed.stdout
    assert f"run {run.id} for {REPO}#{number}" in out  # the run's own log
    assert "  ▶ session " in out  # the agent, readable
    assert re.search(r"^  tool \w+: ", out, flags=re.M)
    assert "  ■ result: success" in out
    assert "… cost so far $" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"run {run.id} succeeded, outcome pr_opened, pull request http")
    assert run.pr_url is not None
    assert run.pr_url in last
    transcript = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "logs", run.id, "--agent",
         "--config", str(env.config_path)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert transcript.startswith("  ▶ session ")
    assert "cloning" not in transcript  # the agent only
    assert transcript.strip().splitlines()[-1] == last


def test_run_on_a_terminal_prints_progress(env: Env) -> None:
    number = env.sim.create_issue(REPO, "Add a greeting", "", author="alice", labels=["ready"])
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "cgr_cli", "run", "--repo", REPO, "--number", str(number),
         "--config", str(env.config_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower,
    ) as proc:  # fmt: skip
        # The test keeps its own copy of the terminal's far end open until the end: Linux
        # may drop what is still buffered once every copy of it is closed.
        assert proc.stdout is not None
        out = b""
        seen = b""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ready = select.select([leader, proc.stdout], [], [], 0.2)[0]
            if leader in ready:
                seen += os.read(leader, 65536)
            if proc.stdout in ready:
                out += proc.stdout.read1(65536)
            if not ready and proc.poll() is not None:
                break
        out += proc.stdout.read()
        proc.wait(timeout=30)
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert "cgr: run " in text
    assert "▶ session " in text
    assert re.search(r"tool \w+: ", text)
    assert "■ result: success" in text
    # stdout keeps the one summary line: progress never goes there.
    assert len(out.decode().strip().splitlines()) == 1
