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
from dataclasses import dataclass
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
    agent = ask_agent(config, run=run_agent).message
    problems = [p for p in (agent, check_workspace(config), check_store(config)) if p is not None]
    if problems:
        raise PreflightError(problems)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentAnswer:
    """Whether the agent can be used, as ``ask_agent`` found: ``problem`` (what is wrong)
    and ``fix`` when it cannot; ``program`` is where it was found on PATH, ``output`` the
    first line it printed when it ran (``cgr doctor`` reads the release from it)."""

    program: str | None
    problem: str | None = None
    fix: str | None = None
    output: str | None = None

    @property
    def message(self) -> str | None:
        """The problem and its fix on one line, or None when the agent is usable."""
        return None if self.problem is None else f"{self.problem}; {self.fix}"


def ask_agent(
    config: Config, *, run: bool = True, timeout: float = AGENT_TIMEOUT_SECONDS
) -> AgentAnswer:
    """Find the agent's program on PATH and (``run``) start it once with ``--version``, in
    the environment a run gives it. The one place that decides whether the agent is usable
    before anything is claimed: the preflight and ``cgr doctor`` both ask here."""
    from cgr_cli.run._agent import agent_env

    argv = config.agent.argv
    program = shutil.which(argv[0])
    if program is None:
        return AgentAnswer(
            program=None,
            problem=f"the agent command {argv[0]!r} was not found on PATH",
            fix="install Claude Code (npm install -g @anthropic-ai/claude-code) or set "
            "agent.command to its absolute path (systemd services get a short PATH)",
        )
    if not run:
        return AgentAnswer(program=program)
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
        return AgentAnswer(
            program=program,
            problem=f"`{shown}` did not answer within {timeout:g}s",
            fix="run it by hand to see what it waits for",
        )
    except OSError as exc:
        return AgentAnswer(
            program=program,
            problem=f"`{shown}` could not start ({exc.strerror})",
            fix="check that agent.command names an executable program",
        )
    first = (done.stdout.strip() or done.stderr.strip()).splitlines()[:1]
    output = first[0] if first else ""
    if done.returncode != 0:
        # The last line of what it said: where a failing program puts its reason.
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        return AgentAnswer(
            program=program,
            problem=f"`{shown}` exited {done.returncode} ({said[0][:200]})",
            fix="run it by hand; reinstall the agent if it is broken",
            output=output,
        )
    return AgentAnswer(program=program, output=output)


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
