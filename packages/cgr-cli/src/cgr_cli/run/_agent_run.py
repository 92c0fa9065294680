"""Running the agent for one run: supervision, live stream parsing, heartbeat, progress,
the cost ceiling, and starting fresh when a session to resume is gone."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from cgr_cli._redact import Redactor
from cgr_cli.config._model import Config
from cgr_cli.run._agent import NO_CONVERSATION, StreamState, agent_argv, agent_env
from cgr_cli.run._agent_cli import AgentCli, detect_agent_cli
from cgr_cli.run._process import checkout_process
from cgr_cli.run._workspace import Workspace


@dataclass(frozen=True, slots=True)
class AgentExit:
    """How the agent process ended (from cgr-exec's SupervisionResult)."""

    exit_code: int | None
    timed_out: bool = False
    idle: bool = False
    watchdog: str | None = None
    stopped: str | None = None


@dataclass(frozen=True, slots=True)
class AgentRun:
    state: StreamState
    exit: AgentExit
    # True when ``--resume`` was used and the CLI found the session.
    resumed: bool


@dataclass(slots=True)
class AgentRunner:
    """Runs the configured agent in ``ws.checkout`` with ``ws.prompt`` on stdin.

    ``heartbeat()`` is awaited every ``timeouts.heartbeat_seconds`` and returns True when
    the run was cancelled meanwhile (the agent is then stopped); ``progress(text)`` gets a
    one-line progress summary whenever the stream showed new tool use.
    """

    config: Config
    ws: Workspace
    log: logging.Logger
    redact: Redactor
    environ: dict[str, str]
    token: str
    heartbeat: Callable[[], Awaitable[bool]]
    progress: Callable[[str], Awaitable[None]]
    # The agent's Claude Code release, as the pipeline asked it before the claim; None:
    # ask here (once, kept for both attempts of a lost session).
    cli: AgentCli | None = None

    async def run(self, resume: str | None) -> AgentRun:
        """Run once; if ``--resume`` finds no conversation, run again without it in the
        same attempt (a lost session is cgr's problem, not the run's)."""
        if self.cli is None:
            env = agent_env(self.config.agent, self.environ, secrets=(self.token,))
            self.cli = await anyio.to_thread.run_sync(detect_agent_cli, self.config.agent.argv, env)
        self.log.info(
            "agent release: %s (%s)", self.cli.version or self.cli.reported, self.cli.support
        )
        state, ended = await self._once(resume)
        # The real CLI (2.1.197 and 2.1.332) answers a lost session with exit 1 and a result
        # line of its own (subtype error_during_execution, is_error, no turns; the message in
        # `errors` and on stderr); a CLI killed before its result prints none. Either way it
        # did no work.
        result = state.result
        failed = ended.exit_code not in (0, None) and (
            result is None or (result.is_error and not result.num_turns)
        )
        if resume and failed and self._says_no_conversation():
            self.log.info("session %s not found; starting a fresh conversation", resume)
            state, ended = await self._once(None)
            return AgentRun(state, ended, resumed=False)
        return AgentRun(state, ended, resumed=bool(resume) and state.result is not None)

    def _says_no_conversation(self) -> bool:
        for name in ("agent.stderr", "agent.jsonl"):
            path = self.ws.logs / name
            if path.exists() and NO_CONVERSATION in _tail(path):
                return True
        return False

    async def _once(self, resume: str | None) -> tuple[StreamState, AgentExit]:
        from cgr_exec import StopHandle

        agent, timeouts = self.config.agent, self.config.timeouts
        state = StreamState(
            input_usd_per_mtok=agent.input_usd_per_mtok,
            output_usd_per_mtok=agent.output_usd_per_mtok,
        )
        argv = agent_argv(agent, resume=resume, cli=self.cli)
        # The same spec as the repository's set-up and check commands (run/_process.py).
        process = checkout_process(
            self.config, self.ws.checkout, self.environ, self.token, job=self.ws.run_dir.name
        )
        self.log.info("agent: %s (cwd %s)", " ".join(argv), self.ws.checkout)
        dirty = anyio.Event()
        stop = StopHandle()

        def on_line(line: str) -> str | None:
            if state.feed(line):
                dirty.set()
            if state.result is None and state.estimated_cost_usd > agent.max_cost_usd:
                self.log.warning("estimated cost %.4f passed the ceiling", state.estimated_cost_usd)
                return "cost"  # cgr-exec ends the agent's process group with this reason
            return None

        async def beat() -> None:
            while True:
                await anyio.sleep(timeouts.heartbeat_seconds)
                if await self.heartbeat():
                    stop.stop("cancelled")

        async def report() -> None:
            nonlocal dirty
            while True:
                await dirty.wait()
                dirty = anyio.Event()
                try:
                    await self.progress(self.redact(state.progress_line()))
                except Exception:  # progress is best effort; the final report is not
                    self.log.warning("progress update failed", exc_info=True)
                await anyio.sleep(min(1.0, self.config.github.status_update_seconds))

        async with anyio.create_task_group() as tg:
            tg.start_soon(beat)
            tg.start_soon(report)
            try:
                # Its own process group, the wall clock, the idle watchdog and the output
                # patterns; SIGTERM then SIGKILL to the whole group on every early end.
                result = await process.supervise(
                    argv,
                    stdin=self.ws.prompt,
                    stdout_path=self.ws.logs / "agent.jsonl",
                    stderr_path=self.ws.logs / "agent.stderr",
                    on_stdout_line=on_line,
                    timeout=timeouts.agent_seconds,
                    idle_timeout=timeouts.agent_idle_seconds,
                    watchdog=agent.watchdog_patterns,
                    watchdog_grace=timeouts.watchdog_grace_seconds,
                    stop=stop,
                )
            finally:
                tg.cancel_scope.cancel()
                # cgr-exec copies the stream verbatim; secrets are scrubbed once it ended.
                for name in ("agent.jsonl", "agent.stderr"):
                    path = self.ws.logs / name
                    if path.exists():
                        path.write_bytes(self.redact.bytes(path.read_bytes()))
        pattern = result.watchdog_pattern
        ended = AgentExit(
            exit_code=result.returncode,
            timed_out=result.timed_out,
            idle=result.idle_timed_out,
            watchdog=f"output matched {pattern!r}" if pattern else None,
            stopped=result.stop_reason,
        )
        self.log.info("agent ended: %s (%s)", ended, result.ended_by)
        return state, ended


def _tail(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-20:])
