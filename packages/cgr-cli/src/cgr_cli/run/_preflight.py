"""The checks ``tick``, ``daemon`` and ``run`` make before they claim anything.

Without them a missing agent was found only after the claim: the issue was labelled
in-progress and got a public "internal error (SpawnError …)" comment, for a problem of
this machine. Here the agent is started once (``--version``), the workspace root is
written to, and the store is opened; any failure raises ``PreflightError`` (one line, every
problem with its fix, exit 1) before a label or a comment is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cgr_cli._errors import CgrError
from cgr_cli.config._model import Config

AGENT_TIMEOUT_SECONDS = 30.0


class PreflightError(CgrError):
    """This machine cannot run a job now; ``problems`` each say what is wrong and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("not ready to run jobs, nothing was claimed: " + "; ".join(problems))


def preflight(config: Config, *, run_agent: bool = True) -> None:
    """Raise PreflightError unless the agent runs, the workspace is writable and the store
    opens. ``run_agent=False`` only finds the agent's program: for `cgr run`, whose pipeline
    asks the agent's ``--version`` itself before the claim (once per run, see _agent_cli)."""
    agent = check_agent_runs(config) if run_agent else check_agent_found(config)
    problems = [p for p in (agent, check_workspace(config), check_store(config)) if p is not None]
    if problems:
        raise PreflightError(problems)


def check_agent_found(config: Config) -> str | None:
    argv = config.agent.argv
    if shutil.which(argv[0]) is None:
        return (
            f"the agent command {argv[0]!r} was not found on PATH; install Claude Code "
            "(npm install -g @anthropic-ai/claude-code) or set agent.command to its absolute "
            "path (systemd services get a short PATH)"
        )
    return None


def check_agent_runs(config: Config, *, timeout: float = AGENT_TIMEOUT_SECONDS) -> str | None:
    from cgr_cli.run._agent import agent_env

    argv = config.agent.argv
    program = shutil.which(argv[0])
    if program is None:
        return check_agent_found(config)
    token = config.github.resolved_token()
    env = agent_env(config.agent, os.environ, secrets=(token.reveal(),) if token else ())
    shown = " ".join([program, *argv[1:], "--version"])
    try:
        done = subprocess.run(
            [program, *argv[1:], "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"`{shown}` did not answer within {timeout:g}s; run it by hand to see why"
    except OSError as exc:
        return f"`{shown}` could not start ({exc.strerror}); fix agent.command"
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        return f"`{shown}` exited {done.returncode} ({said[0][:200]}); reinstall the agent"
    return None


def check_workspace(config: Config) -> str | None:
    root = config.workspace_root
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".cgr-preflight-"):
            pass
    except OSError as exc:
        return (
            f"the workspace root {root} is not writable ({exc.strerror}); fix "
            "paths.workspace_root or its permissions"
        )
    return None


def check_store(config: Config) -> str | None:
    from cgr_cli.config._load import check_database_file
    from cgr_store import SQLiteStore, StoreError

    if config.database_url is not None:
        return None  # PostgreSQL: opening the store right after reports a server's errors
    database = config.database
    try:
        check_database_file(database)
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        with SQLiteStore(database):
            pass
    except (CgrError, StoreError) as exc:
        return str(exc)
    except OSError as exc:
        return f"the database {database} cannot be opened ({exc.strerror}); fix paths.database"
    return None
