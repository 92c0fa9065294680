"""End-to-end tests with the real Claude Code CLI: fixtures and the collection gate.

Run them with ``nox -s e2e``: one session per pinned CLI release installs it from npm and
names its binary in ``CGR_E2E_CLAUDE``. Fixtures:

- ``claude_binary``: that path; the test *fails* (never skips) when it is not set.
- ``claude_version``: what that binary's ``--version`` says ("2.1.332"), which picks the
  recorded samples (``samples/<version>/``) and the version-specific expectations.
- ``model_server``: a running ``ModelServer``; assign ``model_server.scenario``. After the
  test it fails if the CLI asked for more steps than the scenario has.
- ``claude``: a ``Claude`` bound to the binary, the server and a scratch HOME.
- ``git_repo``: a fresh git repository with one commit, the CLI's working directory.

The package's plain test session (``nox -s test-cli``) runs ``pytest packages/cgr-cli/tests``
without the CLI installed. There these tests are left out of collection, and the summary
says so; named directly (``pytest .../tests/e2e``) without the variable, they fail.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from claude_cli import ENV_VAR, Claude
from model_server import ModelServer

HERE = Path(__file__).parent.resolve()
RUN_THEM = "run `nox -s e2e`: it installs each pinned Claude Code CLI and sets " + ENV_VAR


def _named_on_command_line(config: pytest.Config) -> bool:
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # Collected when the CLI is available or when someone asks for these tests by path
    # (then a missing CLI is a failure, see claude_binary); a run over the whole package
    # leaves them out, because that session does not install the CLI.
    if os.environ.get(ENV_VAR) or _named_on_command_line(config):
        return None
    if collection_path.name.startswith("test_") and collection_path.suffix == ".py":
        config.stash[_LEFT_OUT] = True
        return True
    return None


_LEFT_OUT = pytest.StashKey[bool]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if terminalreporter.config.stash.get(_LEFT_OUT, False):
        terminalreporter.write_line(f"e2e tests in {HERE} were not run: {RUN_THEM}")


@pytest.fixture(scope="session")
def claude_binary() -> Path:
    value = os.environ.get(ENV_VAR)
    if not value:
        pytest.fail(f"{ENV_VAR} is not set; {RUN_THEM}", pytrace=False)
    binary = Path(value)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"{ENV_VAR}={value} is not an executable file; {RUN_THEM}", pytrace=False)
    return binary


@pytest.fixture(scope="session")
def claude_version(claude_binary: Path) -> str:
    done = subprocess.run(
        [claude_binary, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    # "2.1.332 (Claude Code)"; anything else means the binary is not what nox installed.
    match = re.fullmatch(r"(\d+\.\d+\.\d+) \(Claude Code\)", done.stdout.strip())
    if done.returncode != 0 or match is None:
        pytest.fail(
            f"{claude_binary} --version exited {done.returncode} with {done.stdout!r} "
            f"{done.stderr!r}; {RUN_THEM}",
            pytrace=False,
        )
    return match.group(1)


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server
        problems = server.problems
    if problems:
        pytest.fail(
            "the scripted model server saw requests the scenario did not expect:\n- "
            + "\n- ".join(problems),
            pytrace=False,
        )


@pytest.fixture
def claude(
    claude_binary: Path, claude_version: str, model_server: ModelServer, tmp_path: Path
) -> Iterator[Claude]:
    home = tmp_path / "home"
    home.mkdir()
    cli = Claude(claude_binary, claude_version, model_server, home)
    try:
        yield cli
    finally:
        cli.cleanup()


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (repo / "README.md").write_text("# scratch repository\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "initial"], check=True)
    return repo
