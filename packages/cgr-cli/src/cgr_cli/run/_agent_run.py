"""Running the agent for one run: supervision, live stream parsing, heartbeat, progress,
the cost ceiling, and starting fresh when a session to resume is gone."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from cgr_cli._redact import Redactor
from cgr_cli.config._model import Config
from cgr_cli.run._agent import NO_CONVERSATION, StreamState, agent_argv, agent_env
from cgr_cli.run._agent_account import account, hand_over
from cgr_cli.run._agent_cli import AgentCli, detect_agent_cli
from cgr_cli.run._process import CheckoutProcess, checkout_process
from cgr_cli.run._safe_fs import RunFiles, redact_tree
from cgr_cli.run._sandbox import RunPaths, SandboxPlan, plan_sandbox
from cgr_cli.run._workspace import Workspace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from cgr_exec import HeldStart


@dataclass(frozen=True, slots=True)
class AgentExit:
    """How the agent process ended (from cgr-exec's SupervisionResult)."""

    exit_code: int | None
    timed_out: bool = False
    idle: bool = False
    watchdog: str | None = None
    stopped: str | None = None
    # Notes about output cgr did not keep (a line over 1 MiB, the storage cap reached).
    notes: tuple[str, ...] = ()


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
    # The sandbox, planned once per run: the set-up and check commands and every agent
    # attempt run under the same one, and planning reads directory listings (~3 ms).
    planned: SandboxPlan | None = dataclasses.field(default=None, init=False)
    # The first attempt's agent, made ready ahead by ``hold`` (cgr_exec.hold); released
    # by the attempt whose command it was made for, cancelled by ``drop_held`` otherwise.
    held: HeldStart | None = dataclasses.field(default=None, init=False)
    _holding: anyio.Event | None = dataclasses.field(default=None, init=False)

    def hold_soon(self, tg: TaskGroup, resume: str | None) -> None:
        """Make the agent of an attempt with ``resume`` ready in ``tg``, beside what the
        run does meanwhile (its wait for an agent slot) - forked, in the run's job
        cgroup, confined, as its user - so that starting it is a release: joining the
        cgroup alone waits 6-30 ms for the kernel, on the way to every agent's start.
        The attempt waits for it to be made (a failure here is the attempt's to meet
        and report: it starts the agent itself)."""
        if self.cli is None:
            return  # the agent's version is asked by the attempt itself (_once): no argv yet
        done = self._holding = anyio.Event()

        async def holding() -> None:
            try:
                argv = agent_argv(self.config.agent, resume=resume, cli=self.cli)
                process, _ = await self.confined_process()
                self.drop_held()
                self.held = await anyio.to_thread.run_sync(process.hold, argv)
            except Exception:
                self.log.debug("the agent could not be made ready ahead", exc_info=True)
            finally:
                done.set()

        tg.start_soon(holding)

    async def _take_held(self, process: CheckoutProcess, argv: Sequence[str]) -> HeldStart | None:
        """The held agent (once it is made: ``hold_soon``) if it was made for this
        ``process`` and ``argv``; one made for another command (a fresh start after a
        lost session) is ended."""
        if self._holding is not None:
            await self._holding.wait()
        held, self.held = self.held, None
        if held is not None and not process.made(held, argv):
            held.cancel()
            held = None
        return held

    def drop_held(self) -> None:
        """End a held agent no attempt used (the run ended before its agent, or began it
        another way); its program never ran."""
        held, self.held = self.held, None
        if held is not None:
            held.cancel()

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
        files = RunFiles(self.ws.root)
        for name in ("agent.stderr", "agent.jsonl"):
            try:
                if NO_CONVERSATION in _tail(files, self.ws.logs / name):
                    return True
            except OSError:
                continue
        return False

    def sandbox(self, env: dict[str, str]) -> SandboxPlan:
        """The run's sandbox (its home and temp dir created), see ``_sandbox``."""
        paths = RunPaths.of(self.config, self.ws.checkout, self.ws.run_dir)
        plan = self.planned
        if plan is None:
            from cgr_exec import probe_confinement

            plan = self.planned = plan_sandbox(self.config, paths, env, support=probe_confinement())
        for path in (paths.home, paths.tmp):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if plan.user is not None:
            # The account's own places, and the way to them (see _agent_account), each
            # time: what cgr wrote in between (a commit between attempts) is its own.
            hand_over(account(plan.user), [paths.checkout, paths.home, paths.tmp],
                      self.config.workspace_root)  # fmt: skip
        return plan

    def scrub_home(self, plan: SandboxPlan) -> None:
        """The agent CLI keeps a transcript (``~/.claude/projects/...``) with everything it
        saw: the run's secrets are redacted from every file of the agent's home. The files
        stay (``--resume`` needs them); symlinks are neither followed nor touched."""
        home = Path(plan.env["HOME"])
        changed = redact_tree(home, self.redact.bytes)
        if changed:
            self.log.info("redacted secrets in %d file(s) of the agent's home", changed)

    async def confined_process(self) -> tuple[CheckoutProcess, SandboxPlan]:
        """The spec every process in the checkout runs with, the agent's and the
        repository's set-up and check commands alike (run/_process.py): the environment
        allow-list, the run id as job marker, and the run's sandbox. Planning reads
        directory listings, so it runs off the event loop (the heartbeat keeps going)."""
        process = checkout_process(
            self.config, self.ws.checkout, self.environ, self.token, job=self.ws.run_dir.name
        )
        plan = await anyio.to_thread.run_sync(self.sandbox, process.env)
        process.env.update(plan.env)
        return dataclasses.replace(process, confinement=plan.confinement()), plan

    async def _once(self, resume: str | None) -> tuple[StreamState, AgentExit]:
        from cgr_exec import StopHandle

        agent, timeouts = self.config.agent, self.config.timeouts
        state = StreamState(
            input_usd_per_mtok=agent.input_usd_per_mtok,
            output_usd_per_mtok=agent.output_usd_per_mtok,
        )
        argv = agent_argv(agent, resume=resume, cli=self.cli)
        process, plan = await self.confined_process()
        held = await self._take_held(process, argv)
        self.log.info("agent: %s (cwd %s)", " ".join(argv), self.ws.checkout)
        self.log.info("agent sandbox: %s", plan.describe())
        dirty = anyio.Event()
        stop = StopHandle()
        notes: list[str] = []

        def on_note(text: str) -> None:
            if len(notes) < 20:
                notes.append(text)
            self.log.warning("agent output: %s", text)

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
                    held=held,
                    stdin=self.ws.prompt,
                    stdout_path=self.ws.logs / "agent.jsonl",
                    stderr_path=self.ws.logs / "agent.stderr",
                    on_stdout_line=on_line,
                    timeout=timeouts.agent_seconds,
                    idle_timeout=timeouts.agent_idle_seconds,
                    watchdog=agent.watchdog_patterns,
                    watchdog_grace=timeouts.watchdog_grace_seconds,
                    stop=stop,
                    # Past the cap the stream is parsed but no longer stored; a line over
                    # 1 MiB is skipped (never held whole); both leave a note.
                    max_output_bytes=int(agent.max_output_mb * 1024 * 1024),
                    on_note=on_note,
                    # The process spec carries the sandbox and the run id as job marker:
                    # every process the agent starts is marked (environment and, where
                    # possible, a cgroup), so what outlives the agent is ended below, and
                    # by ``cgr reap`` if this process dies first.
                )
            finally:
                if held is not None:
                    held.cancel()  # not released (supervise refused first): never ran
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._after_agent, plan)
        pattern = result.watchdog_pattern
        ended = AgentExit(
            exit_code=result.returncode,
            timed_out=result.timed_out,
            idle=result.idle_timed_out,
            watchdog=f"output matched {pattern!r}" if pattern else None,
            stopped=result.stop_reason,
            notes=tuple(notes),
        )
        self.log.info("agent ended: %s (%s)", ended, result.ended_by)
        return state, ended

    def _after_agent(self, plan: SandboxPlan) -> None:
        from cgr_exec import kill_job_leftovers

        grace = self.config.timeouts.watchdog_grace_seconds
        ended = kill_job_leftovers(self.ws.run_dir.name, grace)
        if ended:
            self.log.warning("ended %d process(es) the agent left behind", len(ended))
        # cgr-exec copies the stream verbatim; secrets are scrubbed once it ended. Opened
        # without following symlinks: the agent must not redirect cgr's writes.
        files = RunFiles(self.ws.root)
        for name in ("agent.jsonl", "agent.stderr"):
            try:
                files.rewrite(self.ws.logs / name, self.redact.bytes)
            except OSError:
                self.log.warning("could not redact logs/%s", name, exc_info=True)
        try:
            self.scrub_home(plan)
        except OSError:
            self.log.warning("could not redact the agent's home", exc_info=True)


def _tail(files: RunFiles, path: Path) -> str:
    text = files.read(path).decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-20:])
