"""One run, from claim to a visible outcome on GitHub: the wiring of the three leaves.

claim → workspace → prompt → agent → commit/push → pull request → report → cleanup

Rules every step keeps:

- The run row exists (queued) before cgr touches GitHub; every later step is inside one
  ``try`` whose ``finally`` gives the run a terminal status, the issue its labels and the one
  status comment its final text, even when a step raised (``_finish``).
- The GitHub token lives in the GitHubClient (a Secret) and in git's environment, nowhere
  else: not in the agent's environment, argv, remote URLs, ``.git/config`` or any log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
import msgspec

from cgr_cli._errors import (
    BusyError,
    CgrError,
    ConfigError,
    GitError,
    RebaseConflictError,
)
from cgr_cli._redact import Redactor
from cgr_cli.config._model import Config
from cgr_cli.config._repo import RepoSettings
from cgr_cli.run._agent import StreamState, agent_env, check_can_start, judge
from cgr_cli.run._agent_account import check_reachable, take_back, uses_account
from cgr_cli.run._agent_cli import AgentCli
from cgr_cli.run._agent_gate import agent_slot
from cgr_cli.run._agent_release import release_cache_path
from cgr_cli.run._agent_run import AgentRunner
from cgr_cli.run._artifacts import cleanup, write_summary, write_uncommitted_diff
from cgr_cli.run._commands import RepoCommands
from cgr_cli.run._fence import ClaimedElsewhere, Fence, lease_for
from cgr_cli.run._git import (
    Git,
    Identity,
    branch_name,
    covers,
    mirror_fetch_due,
)
from cgr_cli.run._git import clone_url as _clone_url
from cgr_cli.run._github_auth import RunCredentials, credentials
from cgr_cli.run._host_session import host_local_session
from cgr_cli.run._outbox import attempt_recorder, deliver_run, report_entries
from cgr_cli.run._pick_up import pick_up
from cgr_cli.run._prompt import PromptInput, ReviewComment, ThreadComment, build_prompt
from cgr_cli.run._ref_files import head_branch
from cgr_cli.run._repo_file import read_repo_settings
from cgr_cli.run._report import Outcome, RunSummary, Texts, pr_section
from cgr_cli.run._requeue import RELEASED, REQUEUED, requeue, transient_reason
from cgr_cli.run._safe_fs import RunFiles, run_dir_problems
from cgr_cli.run._sandbox import refuse_impossible
from cgr_cli.run._secret_gate import PATCH_ARGS, SecretGate, known_secrets
from cgr_cli.run._together import together
from cgr_cli.run._workspace import Workspace, checkout_lock, while_unlocked

if TYPE_CHECKING:
    import anyio.abc

    from cgr_discovery import Auth, GitHubClient, RunGitHub, Thread
    from cgr_store import HostLease, OutboxEntry, Run, Store

_T = TypeVar("_T")

# How old a mirror fetch made by another run may be when a run begins (_mirror_fresh_since).
MIRROR_FRESH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What ``cgr run`` was asked to do."""

    repo: str
    number: int
    comment_id: int | None = None
    review_comment: bool = False
    run_id: str | None = None
    force: bool = False
    # The epoch of this host's lease the run was claimed under (a fleet: ``--lease-epoch``);
    # every write of the run carries it (run/_fence.py). None: one host, no lease.
    lease_epoch: int | None = None


@dataclass(slots=True)
class _Ctx:
    """The state of one run as it goes; filled in step by step."""

    config: Config
    request: RunRequest
    run_id: str
    redact: Redactor
    log: logging.Logger
    started: float
    summary: RunSummary
    ws: Workspace | None = None
    bot: str = "cgr"
    claimed: bool = False
    status: str = "failed"
    agent_text: str = ""
    signalled: str | None = None
    # Set when the run commits to its agent (it has its slot); until then a scheduler that
    # stops may hand the run back to the queue (SIGUSR1: `released`, see _watch_signals).
    agent_part_began: bool = False
    released: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    agent_cli: AgentCli | None = None  # the agent's release, asked before the claim
    # Set when GitHub failed transiently before the agent started: back to the queue.
    requeue: str | None = None
    closes: int | None = None
    # The host's settings tightened by the repository's cgr.toml (read in step 2).
    repo: RepoSettings | None = None
    mirror: _Background | None = None  # the mirror fetch, started early by _run
    # The branches that fetch made the mirror fresh for (None: all; see Git.ensure_mirror).
    mirror_fresh: tuple[str, ...] | None = None
    # Whether the run works on an issue (its own branch, from the base) rather than on a
    # pull request's branch: its early mirror fetch can be of its two branches alone.
    on_issue: bool = False
    claim: _Background | None = None  # the claim's GitHub writes, beside the checkout
    # When the run's row was written, on the clock of ``started`` (``_mirror_fresh_since``).
    row_written: float = 0.0
    gate: SecretGate = field(default_factory=lambda: SecretGate({}))
    # The token git uses, asked for at each command (a GitHub App's is renewed mid-run).
    git_token: Callable[[], str] | None = None
    # The lease the run's writes carry, and whether one was refused (run/_fence.py).
    fence: Fence | None = None
    # The run's time limit (``timeouts.run_seconds``): it stops while the run waits for an
    # agent slot (run/_agent_gate.py).
    scope: anyio.CancelScope | None = None

    @property
    def lease(self) -> HostLease | None:
        return self.fence.lease if self.fence is not None else None

    def fenced(self) -> bool:
        """True once a write under the run's lease was refused: no more effects."""
        return self.fence is not None and self.fence.lost is not None


async def execute_run(
    config: Config,
    request: RunRequest,
    *,
    environ: dict[str, str] | None = None,
    picked_up: Run | None = None,
) -> RunSummary:
    """Run ``request`` to its end and return its summary (also in ``summary.json``).

    ``picked_up``: the queued run ``request.run_id``, already taken up by this process
    (``_pick_up.pick_up``, which ``cgr run --run-id`` does before loading this module).

    Raises CgrError only for problems found before the run row exists or is picked up
    (configuration, missing token, an active run on the same target); after that, every
    failure is reported on GitHub and in the summary instead.
    """
    from cgr_cli.config._store import open_config_store
    from cgr_store import FencingError, RunKind

    # The configured token, or a GitHub App installation's (minted now, for this repository,
    # and renewed by creds.keep_fresh for as long as the run lasts).
    creds = await credentials(config, request.repo)
    environ = dict(os.environ if environ is None else environ)
    # The agent's release (asked once here, before the claim; the run keeps the answer),
    # the sandbox, and the secrets the run must never let out.
    agent_cli, secrets = await anyio.to_thread.run_sync(
        _preflight, config, creds.current(), environ
    )
    # Without SQLite's whole-file check: this process already made it (the preflight's
    # check_store, or the pick-up of a queued run), or its scheduler did before forking it.
    # It reads every page (25 ms at 13 MB, ~11k runs), and each `cgr run` paid it twice.
    store = open_config_store(config, quick_check=False)
    try:
        # A queued run (the daemon's, a tick's) is picked up before the GitHub client is
        # imported or opened: its row names this process at once, and nothing of GitHub's
        # is needed for that.
        try:
            fence, picked = _pick_up_fenced(store, config, request, picked_up)
        except FencingError as lost:
            # Another host took the run over before it started here: not ours to do.
            return lost_before_start(request, lost)
        async with _client(config, creds.current(), creds.app) as gh:
            github = _run_github(config, gh)
            bot = config.github.bot_login or creds.bot or await _whoami(gh)
            run = picked or await _create_or_pick_up(store, github, request, host=config.host_id)
            ctx = _new_ctx(config, request, run.id, creds.current(), bot, secrets=secrets)
            ctx.on_issue = run.kind in (RunKind.ISSUE, RunKind.ISSUE_MENTION)
            ctx.agent_cli = agent_cli
            ctx.row_written = ctx.started - max(0.0, time.time() - run.created_at.timestamp())
            _follow_renewals(ctx, creds)
            ctx.fence = fence = fence or Fence(store, run.id, None)
            try:
                with anyio.move_on_after(config.timeouts.run_seconds) as scope:
                    ctx.scope = scope
                    async with anyio.create_task_group() as tg:
                        await tg.start(partial(_watch_signals, ctx, scope, store=store))
                        tg.start_soon(_beat, ctx, store, scope)
                        tg.start_soon(creds.keep_fresh, gh)
                        await _run(ctx, store, github, creds.current(), environ)
                        tg.cancel_scope.cancel()  # stop watching signals
                _stopped_early(ctx, scope)
            except BaseException as group:
                # anyio wraps what the task group's body raised in an ExceptionGroup.
                exc = _unwrap(group)
                _failed(ctx, fence, exc)
                if not isinstance(exc, Exception):
                    with anyio.CancelScope(shield=True):
                        await _finish(ctx, store, github)
                    raise
            with anyio.CancelScope(shield=True):
                await _finish(ctx, store, github)
            return ctx.summary
    finally:
        store.close()


def _stopped_early(ctx: _Ctx, scope: anyio.CancelScope) -> None:
    """The outcome of a run whose scope was cancelled: a lost lease, a signal, its limit."""
    if ctx.fenced():
        _lease_lost(ctx)
    elif ctx.released:
        ctx.requeue = ctx.released
        ctx.status, ctx.summary.outcome, ctx.summary.error = "queued", Outcome.REQUEUED, None
    elif ctx.signalled:
        ctx.status, ctx.summary.outcome = "cancelled", Outcome.CANCELLED
        ctx.summary.error = f"cgr received {ctx.signalled}"
    elif scope.cancelled_caught:
        ctx.status, ctx.summary.outcome = "timed_out", Outcome.TIMED_OUT
        ctx.summary.error = "the run passed its time limit of " + (
            f"{ctx.config.timeouts.run_seconds:g}s"
        )


def _failed(ctx: _Ctx, fence: Fence, exc: BaseException) -> None:
    """The outcome of a run a step raised ``exc`` in."""
    if fence.note(exc) or ctx.fenced():
        _lease_lost(ctx)
    elif isinstance(exc, RebaseConflictError):
        ctx.status, ctx.summary.outcome = "needs_human", Outcome.CONFLICT
        ctx.summary.conflicts = exc.files
        ctx.summary.error = str(exc)
    else:
        # Any failure, including a bug in cgr, ends the run visibly.
        ctx.status, ctx.summary.outcome = "failed", Outcome.FAILED
        ctx.summary.error = _describe(exc)
        ctx.log.exception("run failed", exc_info=exc)


def _follow_renewals(ctx: _Ctx, creds: RunCredentials) -> None:
    """Every git command asks for the token as it starts: the renewed one once the first
    nears its end (a GitHub App's); the redactor and the secret gate learn each new one."""
    ctx.git_token = creds.current
    creds.on_renew += [ctx.redact.add_secret, ctx.gate.add_token]


def _client(config: Config, token: str, app: Auth | None = None) -> GitHubClient:
    """The run's client: with a fixed token, or through a GitHub App's installations
    (``app``), which renew the installation token before it lapses."""
    from cgr_discovery import GitHubClient, TokenAuth

    return GitHubClient(auth=app or TokenAuth(token), base_url=config.github.api_url)


def _run_github(config: Config, gh: GitHubClient) -> RunGitHub:
    from cgr_discovery import RunGitHub

    return RunGitHub(
        gh,
        min_edit_interval=config.github.status_update_seconds,
        write_budget=config.github.write_retry_seconds,
    )


def _preflight(
    config: Config, token: str, environ: dict[str, str]
) -> tuple[AgentCli, dict[str, str]]:
    """Refuse what cannot run (before the run row and the claim); return the agent's
    release and the secrets the run must never let out (``_secret_gate.known_secrets``)."""
    env_for_agent = agent_env(config.agent, environ, secrets=(token,))
    agent_cli = check_can_start(
        config.agent, env_for_agent, release_cache=release_cache_path(config.workspace_root)
    )
    check_sandbox(config)
    return agent_cli, known_secrets(config, token=token, agent_env=env_for_agent, environ=environ)


async def _beat(ctx: _Ctx, store: Store, scope: anyio.CancelScope) -> None:
    """The run's heartbeat, every ``timeouts.heartbeat_seconds`` for the whole run.

    Its own task, so it keeps going while git (worker threads), the checkout lock wait or
    the agent (another process) take long; what stops it is this process no longer running
    its event loop (stopped, deadlocked, blocked in a call): then the reaper, after
    ``timeouts.stale_heartbeat_seconds`` of silence, ends the run (``reap``). The agent
    runner's own beat also checks for cancellation and stops the agent.

    A fleet run's beat is fenced (run/_fence.py): refused, it ends the run here at once
    (the agent is stopped with the run's scope) and nothing more is done on GitHub.
    """
    from cgr_store import FencingError

    while True:
        try:
            await anyio.to_thread.run_sync(partial(store.heartbeat, ctx.run_id, lease=ctx.lease))
        except FencingError as exc:
            if ctx.fence is not None:
                ctx.fence.note(exc)
            ctx.log.warning("%s; stopping the run without publishing anything", exc)
            scope.cancel()
            return
        except Exception:  # a busy database now and then must not end the run
            ctx.log.warning("heartbeat failed", exc_info=True)
        await anyio.sleep(ctx.config.timeouts.heartbeat_seconds)


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _watch_signals(
    ctx: _Ctx,
    scope: anyio.CancelScope,
    *,
    store: Store,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """SIGTERM (the daemon's grace over, systemd stopping, ``cgr cancel``) or SIGINT ends the
    run as cancelled: the agent's group is ended by cgr-exec, and the run still reports.
    Except a SIGTERM to a scheduler's run (``--run-id``) that has not begun its agent's
    part, with no cancel asked (``cancel_asked``): the host is stopping (a reboot sends it
    to every process), so the run is handed back to the queue as for SIGUSR1 below - it
    had spent nothing, and the next scheduler takes it up.

    SIGUSR1 is a stopping scheduler's "hand it back": a run that has not yet begun its
    agent's part (claimed, checking out, waiting for an agent slot) goes back to the queue
    with nothing reported - the next scheduler takes it up where it is - and one that has
    goes on (the scheduler's grace is for it). The receiver is in place before the run can
    be claimed (``tg.start``): a scheduler signals only claimed runs, and SIGUSR1 would
    otherwise end the process (its default action)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread; an embedding
        # program that runs us elsewhere handles its own signals.
        task_status.started()
        await anyio.sleep_forever()
    from cgr_cli import _hand_back

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
        task_status.started()
        # Asked before this receiver was in place (the process's early handler noted it):
        # taken once, by this run (a process that runs another one afterwards starts clean).
        early = [signal.SIGUSR1] if _hand_back.asked else []
        _hand_back.asked = False
        async for signum in _then(early, signals):
            if signum == signal.SIGUSR1:
                if ctx.agent_part_began:
                    ctx.log.info("received SIGUSR1 after the agent's part began: going on")
                    continue
                ctx.released = "its scheduler stopped before the run's agent started"
                ctx.log.warning("received SIGUSR1: %s; back to the queue", ctx.released)
                scope.cancel()
                return
            if signum == signal.SIGTERM and _stopping_host(ctx, store):
                ctx.released = "cgr received SIGTERM (the host stopping) before its agent started"
                ctx.log.warning("%s; back to the queue", ctx.released)
                scope.cancel()
                return
            ctx.signalled = signal.Signals(signum).name
            ctx.log.warning("received %s; cancelling the run", ctx.signalled)
            scope.cancel()
            return


def _stopping_host(ctx: _Ctx, store: Store) -> bool:
    """Whether a SIGTERM hands the run back (see ``_watch_signals``) rather than cancels it."""
    from cgr_cli.run._requeue import cancel_asked

    if ctx.request.run_id is None or ctx.agent_part_began:
        return False
    try:
        return not cancel_asked(store, ctx.run_id)
    except Exception:  # the store unreadable: the signal's plain meaning
        return False


async def _then(first: Sequence[int], rest: AsyncIterator[int]) -> AsyncIterator[int]:
    """The items of ``first``, then those of ``rest``."""
    for item in first:
        yield item
    async for item in rest:
        yield item


def _describe(exc: BaseException) -> str:
    if isinstance(exc, GitError):
        # git's own output stays in logs/run.log: a comment gets no raw tool output.
        code = "timed out" if exc.returncode is None else f"exit code {exc.returncode}"
        return f"git {exc.command} failed ({code}); details are in the run's log"
    if isinstance(exc, CgrError):
        return str(exc)
    from cgr_discovery import DiscoveryError
    from cgr_store import StoreError

    if isinstance(exc, DiscoveryError):
        return f"a GitHub request failed ({exc})"
    if isinstance(exc, StoreError):
        return f"the run database failed ({exc})"
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "the run was interrupted"
    return f"internal error ({type(exc).__name__}: {exc})"


async def _whoami(gh: GitHubClient) -> str:
    data = await gh.getitem("/user")
    return str(data["login"])


# Handlers every run's logger gets besides run.log (`cgr run` on a terminal adds one that
# shows progress); the logger does not propagate, so this is the way in.
RUN_LOG_HANDLERS: list[logging.Handler] = []


def _new_ctx(
    config: Config,
    request: RunRequest,
    run_id: str,
    token: str,
    bot: str,
    *,
    secrets: dict[str, str] | None = None,
) -> _Ctx:
    """The run's state; ``secrets`` (see ``known_secrets``) are redacted everywhere and
    block a push that holds one."""
    root = config.workspace_root
    secrets = secrets or {}
    redact = Redactor([token, *secrets.values()], hide_paths=[root.resolve(), root])
    log = logging.getLogger(f"cgr.run.{run_id}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in RUN_LOG_HANDLERS:
        log.addHandler(handler)
    summary = RunSummary(
        run_id=run_id, repo=request.repo, number=request.number, status="running", outcome=""
    )
    gate = SecretGate(secrets)
    now = time.monotonic()
    return _Ctx(config, request, run_id, redact, log, now, summary, bot=bot, gate=gate,
                row_written=now)  # fmt: skip


async def _create_or_pick_up(
    store: Store, github: RunGitHub, request: RunRequest, *, host: str
) -> Run:
    """The run row comes first: created queued here, or an existing queued one."""
    from cgr_exec import ProcessIdentity
    from cgr_store import ActiveRunExists, Run, RunKind, new_run_id

    if request.run_id:
        return pick_up(store, request.run_id, host)
    me = ProcessIdentity.current()
    pid, start_time = me.pid, float(me.start_time)
    if request.comment_id is not None and request.review_comment:
        kind = RunKind.REVIEW_COMMENT
    elif request.comment_id is not None:
        issue = await github.get_issue(request.repo, request.number)
        kind = RunKind.PR_MENTION if "pull_request" in issue else RunKind.ISSUE_MENTION
    else:
        kind = RunKind.ISSUE
    trigger = str(request.comment_id) if request.comment_id is not None else None
    try:
        return store.create_run(
            Run(
                id=new_run_id(),
                repo=request.repo,
                target=request.number,
                kind=kind,
                trigger_id=trigger,
                host=host,
                pid=pid,
                process_start_time=start_time,
            )
        )
    except ActiveRunExists:
        raise BusyError(
            f"{request.repo}#{request.number} already has an active run; "
            "see `cgr status` or wait for it to end"
        ) from None


def _pick_up_fenced(
    store: Store, config: Config, request: RunRequest, picked_up: Run | None
) -> tuple[Fence | None, Run | None]:
    """``--run-id``: the run picked up (here, unless ``picked_up`` already) under the lease
    it was claimed with (a fleet), and that lease for the run's writes."""
    if not request.run_id:
        return None, None
    fence = Fence(store, request.run_id, lease_for(store, config.host_id, request.lease_epoch))
    if picked_up is not None:
        return fence, picked_up
    return fence, pick_up(store, request.run_id, config.host_id, lease=fence.lease)


def lost_before_start(request: RunRequest, exc: Exception) -> RunSummary:
    """The summary of a run this host lost before it began (another host took it over
    before its pick-up): nothing was done."""
    logging.getLogger("cgr.run").warning("run %s not started: %s", request.run_id, exc)
    return RunSummary(
        run_id=str(request.run_id), repo=request.repo, number=request.number,
        status="lost", outcome=Outcome.LEASE_LOST, error=str(exc),
    )  # fmt: skip


def _lease_lost(ctx: _Ctx) -> None:
    """The run's outcome once its lease was refused: another host decided it."""
    lost = ctx.fence.lost if ctx.fence is not None else None
    ctx.status, ctx.summary.outcome = "lost", Outcome.LEASE_LOST
    ctx.summary.error = f"{lost}; this host stopped the run and published nothing"
    ctx.log.warning("%s", ctx.summary.error)


class _OwnedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that closes its stream with itself (a FileHandler opened by fd)."""

    def close(self) -> None:
        try:
            self.flush()
            self.stream.close()
        finally:
            super().close()


def check_sandbox(config: Config) -> None:
    """Refuse a run (before it is claimed) whose sandbox cannot be had; ConfigError names
    ``agent.sandbox.mode``."""
    from cgr_exec import probe_confinement

    # The mode against the machine only: the paths are planned when the agent starts.
    refuse_impossible(config, probe_confinement())
    # The agent's account (user modes) exists and can reach the workspace.
    check_reachable(config)


def _open_run_log(ctx: _Ctx, ws: Workspace) -> None:
    # Opened without following symlinks below the workspace root (see _safe_fs).
    fd = RunFiles(ws.root).open(ws.logs / "run.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    handler = _OwnedStreamHandler(open(fd, "a", encoding="utf-8"))  # noqa: SIM115
    redact = ctx.redact

    class _Redacting(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return redact(super().format(record))

    handler.setFormatter(_Redacting("%(asctime)s %(levelname)s %(message)s"))
    ctx.log.addHandler(handler)


async def _timed(ctx: _Ctx, name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking ``fn`` (git, files) in a worker thread and record how long it took."""
    start = time.monotonic()
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    finally:
        ctx.timings[name] = ctx.timings.get(name, 0.0) + round(time.monotonic() - start, 3)


async def _run(
    ctx: _Ctx, store: Store, github: RunGitHub, token: str, environ: dict[str, str]
) -> None:

    config, request = ctx.config, ctx.request
    ws = Workspace.for_run(config.workspace_root, ctx.run_id, request.repo, request.number)
    ctx.ws = ws
    ws.create()
    _open_run_log(ctx, ws)
    ctx.log.info("run %s for %s#%s", ctx.run_id, request.repo, request.number)
    # The mirror fetch needs nothing from the API: it runs while the thread is read and the
    # claim written (with network latency, both take several round trips), and the checkout
    # waits for it (``_prepare_checkout``). The mirror has its own lock (``ensure_mirror``).
    url = _clone_url(config.github.api_url, request.repo)
    ctx.mirror = _Background()
    needed_since, only = _mirror_fresh_since(ctx), _early_branches(ctx, ws)

    async def early_fetch() -> None:
        # An issue's branches seldom move between its runs: when GitHub's API says they
        # are where the mirror has them, nothing is fetched (the API's answer comes on the
        # connection the run already has open, beside its read of the thread; a git fetch
        # is a new connection and a process or two on either side).
        started = time.monotonic()
        heads = await _remote_heads(ctx, github, ws, only, needed_since)
        ctx.timings["mirror"] = round(time.monotonic() - started, 3)
        fetch = partial(_new_git(ctx, token).ensure_mirror, needed_since=needed_since,
                        only=only, remote_heads=heads)  # fmt: skip
        ctx.mirror_fresh = await _timed(ctx, "mirror", fetch, url, ws.mirror)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ctx.mirror.run, early_fetch)
        await _run_steps(ctx, store, github, token, environ, ws=ws)


def _early_branches(ctx: _Ctx, ws: Workspace) -> list[str]:
    """The branches an issue's run works with, as far as they are known before its thread
    and its repository's settings are read: the mirror's default branch (the base, and
    where the repository's cgr.toml is read), the host's configured base, and every branch
    of the host's prefix for this issue (``cgr/12-*``: its slug follows the title). Fetched
    alone, the mirror's fetch downloads neither other runs' branches nor anyone else's;
    ``_prepare_checkout`` fetches every branch when the run turns out to need another
    (a pull request's, a base or prefix its repository's settings name). Nothing known
    (no mirror yet, a pull request's run): [] - every branch."""
    if not ctx.on_issue:
        return []
    default = head_branch(ws.mirror)
    if default is None:
        return []
    branching = ctx.config.branching
    wanted = [default, f"{branching.prefix.strip('/')}/{ctx.request.number}-*"]
    if branching.base not in ("default", default):
        wanted.append(branching.base)
    return wanted


REMOTE_HEADS_SECONDS = 2.0
"""How long a run waits for GitHub's API to say where its branches are before it fetches
them anyway (``_remote_heads``): the answer takes one round trip; a failing API's retries
would delay the run's checkout for nothing."""


async def _remote_heads(
    ctx: _Ctx, github: RunGitHub, ws: Workspace, only: Sequence[str], needed_since: float
) -> dict[str, str] | None:
    """Where GitHub has the branches ``only`` names (``RunGitHub.branch_heads``), when the
    mirror's fetch would be of those alone (``mirror_fetch_due``); None - the mirror
    fetches as it would without it - when the fetch will be of every branch or none, or
    when the API cannot say within ``REMOTE_HEADS_SECONDS`` (a failure here costs the run
    nothing but the fetch)."""
    if mirror_fetch_due(ws.mirror, needed_since, only) != "named":
        return None
    try:
        # Not retried for long: a fetch is as good an answer as a late one.
        with anyio.fail_after(REMOTE_HEADS_SECONDS):
            return await github.branch_heads(ctx.request.repo, only)
    except Exception as exc:
        why = "no answer in time" if isinstance(exc, TimeoutError) else _describe(exc)
        ctx.log.info("mirror: the API did not say where %s are (%s); fetching them",
                     ", ".join(only), why)  # fmt: skip
        return None


def _mirror_fresh_since(ctx: _Ctx) -> float:
    """The oldest mirror fetch (``time.monotonic()`` at its start) this run can work from,
    whichever run made it: one that began after the run's row was written - the comment or
    label that asked for the run came before that, and so did any push it speaks of - and
    at most ``MIRROR_FRESH_SECONDS`` before the run itself began (a run that waited in the
    queue starts from the repository as it is now, not as it was when it was queued).

    Runs of one repository that start within seconds of each other (a burst of issues, a
    daemon's runs ahead) so share one fetch instead of each making its own. The row's time
    is the store's wall clock (another fleet host's, perhaps): a skew between hosts moves
    it by the skew, never past the freshness bound."""
    return max(ctx.row_written, ctx.started - MIRROR_FRESH_SECONDS)


async def _run_steps(
    ctx: _Ctx, store: Store, github: RunGitHub, token: str, environ: dict[str, str], *,
    ws: Workspace,
) -> None:  # fmt: skip
    request = ctx.request
    # Every GitHub write attempt from here on (the report too) is an event of the run.
    github.on_attempt = attempt_recorder(store, ctx.run_id, ctx.log)
    texts = Texts(ctx.bot, ctx.run_id)
    try:
        thread = await github.get_thread(request.repo, request.number)
        # The thread's comments say whether this run's status comment exists (a run put
        # back in the queue made one): the claim need not read them again to find out.
        github.note_thread_comments(request.repo, request.number, ctx.run_id, thread.comments)
        claimed = _claim(ctx, store, thread)
    except Exception as exc:
        if not _requeued(ctx, exc):
            raise
        return
    if not claimed:
        return
    # The claim's GitHub writes are in flight while the checkout is prepared: they need
    # nothing of each other, and the agent starts only once both are done (_ready).
    ctx.claim = _Background()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ctx.claim.run, partial(_claim_on_github, ctx, github, texts))
        try:
            await _checkout_and_work(ctx, store, github, thread, ws=ws, token=token,
                                     environ=environ, texts=texts)  # fmt: skip
        except Exception:
            # The claim's writes end before the run does (a failure here would cancel them):
            # its report then replaces a whole claim, never one with a write in flight.
            with contextlib.suppress(Exception):  # the checkout's failure is the one told
                await ctx.claim.wait()
            raise


def _requeued(ctx: _Ctx, exc: Exception) -> bool:
    """Whether ``exc``, raised before the agent started, sends the run back to the queue
    (a GitHub or git outage: nothing is spent yet); the run's state says so if it does."""
    reason = transient_reason(exc)
    if reason is None:
        return False
    ctx.log.warning("%s; the run goes back to the queue", reason)
    ctx.requeue = reason
    ctx.status, ctx.summary.outcome, ctx.summary.error = "queued", Outcome.REQUEUED, reason
    return True


async def _checkout_and_work(
    ctx: _Ctx, store: Store, github: RunGitHub, thread: Thread, *, ws: Workspace, token: str,
    environ: dict[str, str], texts: Texts,
) -> None:  # fmt: skip
    config, request = ctx.config, ctx.request
    # The conversation (and so the checkout, --resume only works from the same cwd) this
    # run continues: its own, or the issue's when the target is cgr's PR for that issue.
    key = await _session_target(ctx, store, thread)
    # The issue cgr's PR section closes: this one, or for a follow-up on cgr's own PR the
    # issue that PR was opened for (so merging it still closes that issue).
    ctx.closes = request.number if thread.pull is None else (key if key != request.number else None)
    if key != request.number:
        ws = ctx.ws = ws.with_checkout_of(request.repo, key)
        ctx.log.info(
            "#%s is cgr's pull request for issue #%s: continuing that issue's agent session "
            "in its checkout", request.number, key,
        )  # fmt: skip
    remaining = config.timeouts.run_seconds - (time.monotonic() - ctx.started)
    async with checkout_lock(
        ws.lock,
        owner=ctx.run_id,
        wait_s=max(0.0, remaining - 1.0),
        log=lambda line: ctx.log.info("%s", line),
    ) as waited:
        if waited:
            ctx.timings["checkout_wait"] = waited
        await _work(ctx, ws, store=store, github=github, thread=thread, token=token,
                    environ=environ, texts=texts, key=key)  # fmt: skip


def _new_git(ctx: _Ctx, token: str) -> Git:
    timeouts = ctx.config.timeouts
    return Git(
        token=ctx.git_token or token,
        timeout=timeouts.git_seconds,
        network_timeout=timeouts.clone_seconds,
        log=lambda line: ctx.log.info("%s", line),
    )


class _Background:
    """A step started ahead of the step that needs it; ``wait`` raises what it raised."""

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._error: Exception | None = None

    async def run(self, step: Callable[[], Awaitable[object]]) -> None:
        try:
            await step()
        except Exception as exc:  # raised again by wait(), where the run needs the result
            self._error = exc
        finally:
            self._done.set()

    async def wait(self) -> None:
        await self._done.wait()
        if self._error is not None:
            raise self._error


async def _session_target(ctx: _Ctx, store: Store, thread: Thread) -> int:
    """The number whose agent session and checkout this run uses.

    A pull request whose head branch cgr created for issue #N continues issue #N's
    conversation. The store says which issue that was (the run that created the branch);
    only when no run row has the branch (a database started afresh) is the number read
    from the branch name ``<prefix>/<N>-...``.
    """
    from cgr_store import RunKind

    request, pull = ctx.request, thread.pull
    if pull is None:
        return int(request.number)
    head = pull.get("head") or {}
    head_repo = str((head.get("repo") or {}).get("full_name") or request.repo)
    branch = str(head.get("ref") or "")
    if not branch or head_repo.lower() != request.repo.lower():
        return int(request.number)
    issue_kinds = (RunKind.ISSUE, RunKind.ISSUE_MENTION)
    creator = await anyio.to_thread.run_sync(
        lambda: store.run_for_branch(request.repo, branch, kinds=issue_kinds)
    )
    if creator is not None and creator.target != request.number:
        return int(creator.target)
    prefix = re.escape(ctx.config.branching.prefix.strip("/"))
    found = re.fullmatch(rf"{prefix}/(\d+)-.*", branch)
    if found and int(found.group(1)) != request.number:
        return int(found.group(1))
    return int(request.number)


async def _work(
    ctx: _Ctx,
    ws: Workspace,
    *,
    store: Store,
    github: RunGitHub,
    thread: Thread,
    token: str,
    environ: dict[str, str],
    texts: Texts,
    key: int,
) -> None:
    """Steps 2-7 with the checkout locked: prepare it, run the agent, publish."""
    from cgr_store import RunStatus

    config, request = ctx.config, ctx.request
    git = _new_git(ctx, token)
    work = await _ready(ctx, ws, git, github, thread)
    if work is None:
        return  # back to the queue
    config = ctx.config  # now tightened by the repository's cgr.toml
    store.update_run(ctx.run_id, lease=ctx.lease, branch=work.branch, base_branch=work.base)

    # -- 4. prompt: written outside repo/ and given on stdin ------------------------------
    session, ctx.summary.session_elsewhere = host_local_session(
        store, store.get_agent_session(request.repo, key), config.host_id
    )
    prompt = build_prompt(
        _prompt_input(ctx, thread, work.branch, work.base, follow_up=session is not None)
    )
    RunFiles(ws.root).write(ws.prompt, prompt)  # 0600, never through a symlink

    # -- 5/6. the agent ------------------------------------------------------------------
    from cgr_store import FencingError

    async def heartbeat() -> bool:
        try:
            status = await anyio.to_thread.run_sync(
                partial(store.heartbeat, ctx.run_id, lease=ctx.lease)
            )
        except FencingError as exc:
            if ctx.fence is not None:
                ctx.fence.note(exc)
            return True  # stop the agent: the run is another host's now
        return bool(status == RunStatus.CANCELLED)

    async def progress(line: str) -> None:
        if ctx.fence is not None and ctx.lease is not None:
            # An edit after a pause must not overwrite what a host that took over wrote.
            await anyio.to_thread.run_sync(ctx.fence.check, config.timeouts.heartbeat_seconds)
        await github.update_status(request.repo, request.number, ctx.run_id,
                                   texts.working(line))  # fmt: skip

    runner = AgentRunner(
        config=config,
        ws=ws,
        log=ctx.log,
        redact=ctx.redact,
        environ=environ,
        token=token,
        heartbeat=heartbeat,
        progress=progress,
        cli=ctx.agent_cli,
    )
    # -- the repository's set-up, the agent, its checks (run/_commands.py) --------------
    settings = ctx.repo if ctx.repo is not None else RepoSettings.host_only(config)
    # Set-up and check commands run like the agent: same allow-list, job marker, sandbox.
    process, _ = await runner.confined_process()
    commands = RepoCommands(
        settings=settings,
        process=process,
        run_dir=ws.run_dir,
        log=ctx.log,
        redact=ctx.redact,
        summary=ctx.summary,
        progress=lambda line: progress(ctx.redact(line)),
        git=git,
    )

    resume = session.session_id if session else None
    try:
        async with anyio.create_task_group() as tg:
            if not settings.setup:
                # The agent made ready while the run waits for its slot (forked, in its job
                # cgroup, confined): once the slot is the run's, starting it is a release
                # (_agent_run.hold_soon). Not across set-up commands: what they leave
                # running in the job is ended after them, and a held agent is in the job.
                runner.hold_soon(tg, resume)
            draft = await _with_agent_slot(ctx, store, runner, commands, ws=ws, git=git,
                                           key=key, resume=resume, progress=progress)  # fmt: skip
    finally:
        runner.drop_held()
    if draft is None:
        return
    await _publish(ctx, ws, git, github=github, thread=thread, work=work, draft=draft)


async def _with_agent_slot(
    ctx: _Ctx, store: Store, runner: AgentRunner, commands: RepoCommands, *, ws: Workspace,
    git: Git, key: int, resume: str | None, progress: Callable[[str], Awaitable[None]],
) -> bool | None:  # fmt: skip
    """The run's agent part, holding one of the host's agent slots (run/_agent_gate.py);
    the claim and checkout before and the publishing after happen beside other runs'
    agents."""
    from cgr_store import RunStatus

    async with agent_slot(
        ctx.config, log=ctx.log, waiting=progress, time_limit=ctx.scope
    ) as waited:
        if waited:
            ctx.timings["agent_wait"] = waited
        # Committed to the agent from here: a SIGUSR1 no longer hands the run back (set
        # before the transition, which a cancellation could not stop half-way).
        ctx.agent_part_began = True
        # `running` from here: the run has its agent slot. Until now it was `claimed`: one
        # that ends before (a lost host's, taken over by the fleet) goes back to the queue,
        # and its `started_at` (the reaper's clock for a run's time limit) starts now.
        await anyio.to_thread.run_sync(
            partial(store.transition, ctx.run_id, RunStatus.RUNNING, detail="agent slot taken",
                    lease=ctx.lease)
        )  # fmt: skip
        return await _agent_part(
            ctx, store, runner, commands, ws=ws, git=git, key=key, resume=resume
        )


async def _agent_part(
    ctx: _Ctx,
    store: Store,
    runner: AgentRunner,
    commands: RepoCommands,
    *,
    ws: Workspace,
    git: Git,
    key: int,
    resume: str | None,
) -> bool | None:
    """The repository's set-up commands, the agent, its checks (and the agent again while
    they fail): whether to open the pull request as a draft, or None when there is nothing
    to publish (the run's outcome is set)."""
    config = ctx.config
    failed_setup = await _timed_async(ctx, "setup", commands.setup())
    if failed_setup is not None:
        ctx.summary.error = (
            f"the repository's set-up command `{failed_setup.command}` failed "
            f"({failed_setup.verdict()}), so the agent was not started"
        )
        return None
    if not await _attempt(ctx, store, runner, ws, git, key=key, resume=resume):
        return None

    async def again(prompt_text: str, attempt: int) -> bool:
        _next_attempt_files(ws, prompt_text, attempt)
        spent = ctx.summary.cost_usd or 0.0
        left = config.agent.max_cost_usd - spent
        if left <= 0:
            ctx.summary.error = f"the cost ceiling of ${config.agent.max_cost_usd:.2f} was "
            ctx.summary.error += "reached before the agent could fix the failing checks"
            await _timed(ctx, "diff", write_uncommitted_diff, git, ws.checkout, ws, ctx.redact)
            return False
        # The ceiling is for the whole run: this attempt may spend what is left.
        runner.config = msgspec.structs.replace(
            config, agent=msgspec.structs.replace(config.agent, max_cost_usd=left)
        )
        return await _attempt(
            ctx, store, runner, ws, git, key=key, resume=ctx.summary.agent_session_id
        )

    draft = False
    if commands.settings.check:
        task_prompt = ws.prompt.read_text(encoding="utf-8")
        passed = await _timed_async(ctx, "checks", commands.check_loop(task_prompt, again))
        if passed is None:
            return None
        if not passed:
            if config.commands.on_failure == "no_pr":
                ctx.summary.error = (
                    "the repository's checks still failed after "
                    f"{ctx.summary.agent_attempts} agent attempt(s), and this repository "
                    "opens no pull request with failing checks (commands.on_failure)"
                )
                await _timed(ctx, "diff", write_uncommitted_diff, git, ws.checkout, ws, ctx.redact)
                return None
            draft = True
    return draft


async def _attempt(
    ctx: _Ctx,
    store: Store,
    runner: AgentRunner,
    ws: Workspace,
    git: Git,
    *,
    key: int,
    resume: str | None,
) -> bool:
    """One run of the agent; True when it finished its work. Otherwise the run's outcome
    is set (failed, timed out, cancelled) and what it left is kept in ``git.diff``."""
    from cgr_store import AgentSession

    config, request = runner.config, ctx.request
    before = ctx.summary.figures() if ctx.summary.agent_attempts else None
    ctx.summary.agent_attempts += 1
    started = time.monotonic()
    agent_run = await runner.run(resume)
    ctx.timings["agent"] = round(ctx.timings.get("agent", 0.0) + time.monotonic() - started, 3)
    state, result = agent_run.state, agent_run.exit
    ctx.summary.resumed_session = ctx.summary.resumed_session or agent_run.resumed
    problems = run_dir_problems(ws.run_dir)
    if ctx.fence is not None:
        ctx.fence.check()  # the agent may have ended after the run was taken over
    if state.session_id:
        # Under the conversation's key, and under the PR's own number too (when they
        # differ) so that anything keyed by the PR finds the same conversation.
        for target in dict.fromkeys((key, request.number)):
            store.set_agent_session(
                AgentSession(
                    repo=request.repo,
                    target=target,
                    session_id=state.session_id,
                    run_id=ctx.run_id,
                )
            )
    _record_figures(ctx, state)
    if before is not None:  # a fix attempt: the run's figures are the sum of its attempts
        ctx.summary.add_figures(before)
    ctx.agent_text = state.result.text if state.result else state.last_text
    verdict = judge(
        exit_code=result.exit_code,
        result=state.result,
        timed_out=result.timed_out,
        watchdog=result.watchdog
        or (f"no output for {config.timeouts.agent_idle_seconds:g}s" if result.idle else None),
        # Crossed while running (the agent was stopped), or only visible in the final
        # total: either way the ceiling was crossed and the work is not published.
        cost_exceeded=result.stopped == "cost"
        or (ctx.summary.cost_usd or 0.0) > ctx.config.agent.max_cost_usd,
        max_cost_usd=ctx.config.agent.max_cost_usd,
    )
    if result.stopped == "cancelled":
        ctx.status, ctx.summary.outcome = "cancelled", Outcome.CANCELLED
        ctx.summary.error = "cancelled while the agent was working"
        return False
    if problems:
        # Only an unconfined agent (agent.sandbox.mode = "off") can touch the run directory;
        # one that did is hostile: nothing is published, nothing written through its links.
        ctx.status, ctx.summary.outcome = "failed", Outcome.FAILED
        ctx.summary.error = (
            "the agent tampered with the run directory (" + "; ".join(problems) + "); "
            "cgr wrote nothing through it and published nothing"
        )
        return False
    if not verdict.ok:
        # Half-done work is never pushed; what the agent left is kept in git.diff.
        ctx.status = verdict.status
        ctx.summary.outcome = Outcome.TIMED_OUT if verdict.status == "timed_out" else "failed"
        ctx.summary.error = verdict.reason
        await _timed(ctx, "diff", write_uncommitted_diff, git, ws.checkout, ws, ctx.redact)
        return False
    return True


def _next_attempt_files(ws: Workspace, prompt_text: str, attempt: int) -> None:
    """Keep the previous attempt's prompt and agent logs under numbered names, and write
    the next prompt where the agent reads it."""
    previous = attempt - 1
    for path in (ws.prompt, ws.logs / "agent.jsonl", ws.logs / "agent.stderr"):
        if path.exists():
            path.rename(path.with_name(f"{path.stem}.attempt-{previous}{path.suffix}"))
    ws.prompt.write_text(prompt_text, encoding="utf-8")
    os.chmod(ws.prompt, 0o600)


async def _timed_async(ctx: _Ctx, name: str, work: Awaitable[_T]) -> _T:
    start = time.monotonic()
    try:
        return await work
    finally:
        ctx.timings[name] = ctx.timings.get(name, 0.0) + round(time.monotonic() - start, 3)


@dataclass(frozen=True, slots=True)
class _Work:
    branch: str
    base: str
    start_sha: str
    # The remote sha before cgr's own rebase: the only case where a (leased) force push
    # is allowed.
    lease: str | None
    existing_pr: dict[str, Any] | None


def _claim(ctx: _Ctx, store: Store, thread: Thread) -> bool:
    """Step 1, in the store: whether the run goes on (not for a closed or blocked issue
    without --force), and queued → claimed. ``_claim_on_github`` follows."""
    from cgr_exec import ProcessIdentity
    from cgr_store import IllegalTransition, RunStatus

    request, labels = ctx.request, ctx.config.labels
    issue = thread.issue
    blocked = sorted({lb["name"] for lb in issue.get("labels", [])} & set(labels.blocked))
    if not request.force and (issue.get("state") != "open" or blocked):
        why = "is closed" if issue.get("state") != "open" else f"is labelled {blocked[0]!r}"
        ctx.status, ctx.summary.outcome = "failed", Outcome.SKIPPED
        ctx.summary.error = f"skipped: {request.repo}#{request.number} {why} (use --force)"
        return False
    status = store.get_run(ctx.run_id).status
    if status is RunStatus.CLAIMED and ctx.lease is not None:
        if ctx.fence is not None:  # claimed by our fleet host (claim_next): still ours?
            ctx.fence.check()
    elif status is not RunStatus.QUEUED:
        raise ClaimedElsewhere(ctx.run_id, status.value)
    else:
        # The claim names this process (atomically with it): from here on the reaper judges
        # the run by the process that does it, whatever a scheduler records afterwards.
        me = ProcessIdentity.current()
        try:
            store.transition(ctx.run_id, RunStatus.CLAIMED, detail="claiming on GitHub",
                             lease=ctx.lease, pid=me.pid,
                             process_start_time=float(me.start_time))  # fmt: skip
        except IllegalTransition as exc:  # claimed (or ended) by another since the read
            raise ClaimedElsewhere(ctx.run_id, exc.from_status) from None
    ctx.claimed = True
    return True


async def _claim_on_github(ctx: _Ctx, github: RunGitHub, texts: Texts) -> None:
    """Step 1, on GitHub: labels, assignee, reaction, status comment."""
    request, labels = ctx.request, ctx.config.labels
    repo, number = request.repo, request.number
    if request.comment_id is not None and request.review_comment:
        react = partial(github.react, repo, "eyes", review_comment_id=request.comment_id)
    elif request.comment_id is not None:
        react = partial(github.react, repo, "eyes", comment_id=request.comment_id)
    else:
        react = partial(github.react, repo, "eyes", number=number)
    # Independent writes, so at once: one round trip of latency instead of five.
    await together(
        partial(github.add_labels, repo, number, labels.in_progress),
        partial(github.remove_label, repo, number, labels.ready),
        partial(github.assign, repo, number, ctx.bot),
        react,
        partial(github.update_status, repo, number, ctx.run_id, texts.working()),
    )


async def _ready(
    ctx: _Ctx, ws: Workspace, git: Git, github: RunGitHub, thread: Thread
) -> _Work | None:
    """The checkout prepared and the claim's GitHub writes done (``ctx.claim``, in flight
    since the claim): the work to do, or None when an outage sent the run back to the
    queue (nothing is spent before the agent starts).

    A claim that fails while the checkout is still being made is noticed when the checkout
    is done (local work: a clone from the mirror)."""
    try:
        work = await _prepare_checkout(ctx, ws, git, github, thread)
        if ctx.claim is not None:
            await ctx.claim.wait()
    except Exception as exc:
        if not _requeued(ctx, exc):
            raise
        return None
    return work


async def _prepare_checkout(
    ctx: _Ctx, ws: Workspace, git: Git, github: RunGitHub, thread: Thread
) -> _Work:
    """Steps 2-3: mirror, fresh clone, and the branch to work on."""
    config, request = ctx.config, ctx.request
    url = _clone_url(config.github.api_url, request.repo)
    if ctx.mirror is not None:
        await ctx.mirror.wait()  # started by _run
    if ctx.mirror is None or ctx.timings.get("checkout_wait"):
        # After a wait for the checkout, fetch again: the run that held it has pushed since
        # (to the branch this run continues) and the early fetch predates that.
        fetch = partial(git.ensure_mirror, needed_since=time.monotonic())
        ctx.mirror_fresh = await _timed(ctx, "mirror", fetch, url, ws.mirror)
    config = await _apply_repo_file(ctx, git, ws, thread)
    if not _fetched_for(ctx, config, ws, thread):
        # The early fetch was of the issue's branches alone, and this run needs another:
        # every branch, as fresh as the early fetch would have been.
        fetch = partial(git.ensure_mirror, needed_since=_mirror_fresh_since(ctx))
        ctx.mirror_fresh = await _timed(ctx, "mirror", fetch, url, ws.mirror)
    await _timed(ctx, "workspace", ws.fresh_checkout)
    await _clone(ctx, config, git, ws, url)
    repo_dir = ws.checkout
    # What the clone saw of origin, read once: the default branch, whether cgr's branch
    # exists, and the sha each checkout starts from (no rev-parse after it).
    refs = await _timed(ctx, "git", git.remote_refs, repo_dir)
    base = config.branching.base
    if base == "default":
        base = refs.default or await _timed(ctx, "git", git.default_branch, repo_dir)
    lease: str | None = None
    existing_pr: dict[str, Any] | None = None
    if thread.pull is not None:
        pull = thread.pull
        head_repo = ((pull.get("head") or {}).get("repo") or {}).get("full_name")
        if head_repo and head_repo.lower() != request.repo.lower():
            raise CgrError(
                f"pull request #{request.number} comes from the fork {head_repo}; "
                "cgr can only push to branches of this repository"
            )
        branch = str(pull["head"]["ref"])
        base = str((pull.get("base") or {}).get("ref") or base)
        existing_pr = pull
        # A pull request's branch belongs to its author: cgr adds commits on top and never
        # rewrites it (no rebase, no force).
        await _timed(ctx, "git", git.checkout_new, repo_dir, branch, f"origin/{branch}")
        start_sha = refs.heads.get(branch)
    else:
        title = str(thread.issue.get("title") or "")
        branch = branch_name(config.branching.prefix, request.number, title)
        remote = refs.heads.get(branch)
        ctx.summary.branch, ctx.summary.base_branch = branch, base
        if remote:
            # cgr's own branch from an earlier run: bring it up to date with the base.
            await _timed(ctx, "git", git.checkout_new, repo_dir, branch, f"origin/{branch}")
            await _timed(ctx, "rebase", git.rebase, repo_dir, f"origin/{base}")
            start_sha = await _timed(ctx, "git", git.head, repo_dir)
            if start_sha != remote:
                lease = remote
            existing_pr = await github.find_pull_request(request.repo, branch, state="open")
        else:
            await _timed(ctx, "git", git.checkout_new, repo_dir, branch, f"origin/{base}")
            start_sha = refs.heads.get(base)
    ctx.summary.branch, ctx.summary.base_branch = branch, base
    if start_sha is None:  # not among the refs read above: ask git where HEAD is
        start_sha = await _timed(ctx, "git", git.head, repo_dir)
    # Set up: from now on confined processes write here, and cgr's git puts its own
    # configuration back before each command (run/_git_guard.py).
    git.guard(repo_dir)
    return _Work(branch, base, start_sha, lease, existing_pr)


def _fetched_for(ctx: _Ctx, config: Config, ws: Workspace, thread: Thread) -> bool:
    """Whether the mirror is fresh for every branch this run works with: the base (the
    default branch, or the one its settings name) and its own (a pull request's head)."""
    fresh = ctx.mirror_fresh
    if fresh is None:
        return True
    if thread.pull is not None:
        return False
    base = config.branching.base
    if base == "default":
        base = head_branch(ws.mirror) or ""
    title = str(thread.issue.get("title") or "")
    branch = branch_name(config.branching.prefix, ctx.request.number, title)
    return bool(base) and covers(fresh, base) and covers(fresh, branch)


async def _clone(ctx: _Ctx, config: Config, git: Git, ws: Workspace, url: str) -> None:
    identity = Identity(config.git_identity.name, config.git_identity.email)
    # Hard links share the mirror's object files (one inode) with the checkout, where a
    # confined agent may write (and chmod a file its uid owns; chown of the checkout in
    # user mode would change them too): every later run clones from that mirror. Only an
    # unconfined agent, which could write the mirror anyway, gets the cheaper clone.
    hardlinks = config.agent.sandbox.mode == "off"
    await _timed(
        ctx,
        "clone",
        lambda: git.clone(
            url, ws.checkout, mirror=ws.mirror, identity=identity, hardlinks=hardlinks
        ),
    )
    if uses_account(config):  # the agent's account will own it (see _agent_account)
        git.trust(ws.checkout)


async def _apply_repo_file(ctx: _Ctx, git: Git, ws: Workspace, thread: Thread) -> Config:
    """Step 2b: the repository's cgr.toml from the just-fetched mirror's default branch
    (never from the branch worked on), merged into the host's settings (tighten only)."""
    from cgr_cli.run._repo_file import blocked_by_repo

    try:
        settings = await _timed(ctx, "repo_file", read_repo_settings, git, ws.mirror, ctx.config)
    except ConfigError as exc:
        raise ConfigError(
            f"the repository's settings file is invalid: {exc}; fix it on the default "
            "branch, then retry",
            key=exc.key,
            source=exc.source,
        ) from None
    ctx.repo, ctx.config = settings, settings.config
    ctx.summary.repo_file, ctx.summary.repo_notes = settings.source, list(settings.notes)
    if settings.source:
        ctx.log.info("repository settings: %s", settings.source)
    for note in settings.notes:
        ctx.log.warning("%s", note)
    blocked = blocked_by_repo(thread.issue, ctx.config, settings)
    if blocked and not ctx.request.force:
        raise CgrError(
            f"{ctx.request.repo}#{ctx.request.number} is labelled {blocked!r}, which "
            f"{settings.source} blocks (labels.blocked); remove the label or use --force"
        )
    return ctx.config


async def _publish(
    ctx: _Ctx,
    ws: Workspace,
    git: Git,
    *,
    github: RunGitHub,
    thread: Thread,
    work: _Work,
    draft: bool = False,
) -> None:
    """Step 7: commit leftovers, push (never a plain force), verify, open or update the PR."""
    request, repo_dir = ctx.request, ws.checkout
    title = str(thread.issue.get("title") or f"#{request.number}")
    message = f"cgr: {title} (#{request.number})\n\ncgr run {ctx.run_id}"
    await _timed(ctx, "commit", git.commit_all, repo_dir, message)
    # HEAD and the number of new commits from one rev-list (HEAD comes first).
    new = await _timed(ctx, "git", git.new_commits, repo_dir, work.start_sha)
    diff = await _timed(ctx, "diff", git.diff, repo_dir, work.start_sha)
    files = RunFiles(ws.root)
    await _timed(ctx, "diff", files.write, ws.artifacts / "git.diff", ctx.redact(diff))
    if not new:
        ctx.status, ctx.summary.outcome = "needs_human", Outcome.NO_CHANGES
        return
    head = new[0]
    # The secret gate: every new commit (the agent's own and their messages, and cgr's
    # commit of the leftovers) as it would be pushed.
    patch = await _timed(
        ctx,
        "gate",
        # By sha, not HEAD: what is read here is what gets pushed (git.publish takes it).
        lambda: git.run([*PATCH_ARGS, f"{work.start_sha}..{head}"], cwd=repo_dir, log_output=False),
    )
    findings = ctx.gate.scan_patch(patch.stdout)
    if findings:
        ctx.log.warning("secret gate: %d finding(s); nothing is pushed", len(findings))
        for finding in findings:
            ctx.log.warning("secret gate: %s", finding)
        ctx.status, ctx.summary.outcome = "needs_human", Outcome.SECRET_BLOCKED
        ctx.summary.secret_findings = [str(f) for f in findings[:20]]
        ctx.summary.error = (
            "the secret gate blocked the push: "
            + "; ".join(str(f) for f in findings[:3])
            + (f" and {len(findings) - 3} more" if len(findings) > 3 else "")
        )
        return
    ctx.summary.commits = len(new)
    ctx.summary.changed_files = await _timed(
        ctx, "git", git.changed_files, repo_dir, work.start_sha
    )
    url = _clone_url(ctx.config.github.api_url, request.repo)
    await _fence_check(ctx)  # no push for a run another host took over
    pushed = await _timed(
        ctx,
        "push",
        lambda: git.publish(
            repo_dir,
            url,
            work.branch,
            commit=head,
            workdir=ws.run_dir / "publish.git",
            mirror=ws.mirror,
            lease=work.lease,
        ),
    )
    if pushed != head:
        raise GitError("push", 0, f"the remote branch is at {pushed}, expected {head}")
    ctx.summary.pushed = True
    closes = ctx.closes
    # The gate for text: everything in the PR body is redacted before it is sent.
    section = ctx.redact(pr_section(ctx.summary, ctx.redact(ctx.agent_text), closes=closes))
    await _fence_check(ctx)  # nor a pull request
    if work.existing_pr is not None:
        number = int(work.existing_pr["number"])
        pr = await github.update_pull_request(request.repo, number, section=section)
        ctx.summary.outcome = Outcome.PR_UPDATED
    else:
        from cgr_discovery import splice_owned_section

        pr = await github.create_pull_request(
            request.repo,
            head=work.branch,
            base=work.base,
            title=title,
            body=splice_owned_section("", section),
            draft=draft,
            # The checkout looked for an open pull request of an existing branch, and a new
            # branch has none: one round trip fewer. One opened meanwhile (by a person, or
            # an earlier attempt of this run) is found through GitHub's 422 "already exists".
            look_first=False,
        )
        ctx.summary.draft = draft
        ctx.summary.outcome = Outcome.PR_OPENED
    ctx.summary.pr_number = int(pr["number"])
    ctx.summary.pr_url = str(pr.get("html_url") or pr.get("url") or "")
    ctx.status = "succeeded"


async def _fence_check(ctx: _Ctx) -> None:
    """A fenced write right before an effect (free without a lease: one host)."""
    if ctx.fence is not None and ctx.lease is not None:
        await anyio.to_thread.run_sync(ctx.fence.check)


def _prompt_input(
    ctx: _Ctx, thread: Thread, branch: str, base: str, *, follow_up: bool
) -> PromptInput:
    from cgr_discovery import Decision, TriggerPolicy, find_status_run_id

    trigger_cfg = ctx.config.trigger
    policy = TriggerPolicy(
        allow=frozenset(trigger_cfg.allow_users),
        deny=frozenset(trigger_cfg.deny_users),
        require_write=trigger_cfg.require_write_access,
    )

    def trusted(c: dict[str, Any]) -> bool:
        user = c.get("user") or {}
        decision = policy.decide(
            author=str(user.get("login") or ""),
            association=str(c.get("author_association") or ""),
            is_bot=user.get("type") == "Bot",
            self_login=ctx.bot,
        )
        return decision == Decision.ALLOW and not find_status_run_id(c.get("body"))

    def as_comment(c: dict[str, Any]) -> ThreadComment:
        return ThreadComment(str((c.get("user") or {}).get("login")), str(c.get("body") or ""))

    request = ctx.request
    comments = [c for c in thread.comments if trusted(c)]
    trigger = None
    if request.comment_id is not None and not request.review_comment:
        found = [c for c in comments if c.get("id") == request.comment_id]
        if found:
            trigger = as_comment(found[0])
            comments = [c for c in comments if c.get("id") != request.comment_id]
    review = None
    if request.review_comment and request.comment_id is not None:
        for rc in thread.review_comments:
            if rc.get("id") == request.comment_id:
                review = ReviewComment(
                    author=str((rc.get("user") or {}).get("login")),
                    body=str(rc.get("body") or ""),
                    path=str(rc.get("path") or ""),
                    line=rc.get("line") or rc.get("original_line"),
                    diff_hunk=str(rc.get("diff_hunk") or ""),
                )
    issue = thread.issue
    return PromptInput(
        repo=request.repo,
        number=request.number,
        is_pull_request=thread.pull is not None,
        title=str(issue.get("title") or ""),
        body=str(issue.get("body") or ""),
        comments=[as_comment(c) for c in comments],
        trigger=trigger,
        review_comment=review,
        branch=branch,
        base_branch=base,
        follow_up=follow_up,
        **_repo_prompt(ctx.repo),
    )


def _repo_prompt(settings: RepoSettings | None) -> dict[str, Any]:
    if settings is None:
        return {}
    from cgr_cli.config._repo import command_text

    return {
        "guidance": settings.instructions,
        "guidance_source": settings.instructions_source or "",
        "setup": [command_text(c) for c in settings.setup],
        "checks": [command_text(c) for c in settings.check],
    }


def _record_figures(ctx: _Ctx, state: StreamState) -> None:
    s = ctx.summary
    s.agent_session_id = state.session_id
    if state.result is not None:
        r = state.result
        s.cost_usd = r.cost_usd if r.cost_usd is not None else state.estimated_cost_usd
        s.input_tokens, s.output_tokens = r.input_tokens, r.output_tokens
        s.cache_creation_tokens, s.cache_read_tokens = r.cache_creation_tokens, r.cache_read_tokens
        s.turns = r.num_turns
        s.permission_denials = list(r.permission_denials)
    else:
        # No result line (killed): the estimate from the assistant messages seen so far.
        s.cost_usd = round(state.estimated_cost_usd, 6)


async def _finish(ctx: _Ctx, store: Store, github: RunGitHub) -> None:
    """Terminal status with its report (labels, final comment) in the outbox, then the
    report sent, summary, cleanup: each step on its own, so one failing (GitHub down) does
    not keep the others from happening; an unsent report stays pending for a later pass."""
    s = ctx.summary
    s.duration_s = round(time.monotonic() - ctx.started, 3)
    s.timings = dict(ctx.timings)
    s.status = ctx.status
    if not s.outcome:
        s.outcome = Outcome.FAILED
    if s.error:
        s.error = ctx.redact(s.error)

    report = _final_report(ctx) if ctx.claimed and ctx.requeue is None else []
    if not ctx.fenced():
        _record_end(ctx, store, report)
    if ctx.fenced():
        # Another host decided the run (and reported it), found before the end or by the
        # end's own write: nothing of ours goes to the store or to GitHub; the local
        # summary and logs say what happened here.
        if s.outcome != Outcome.LEASE_LOST:
            _lease_lost(ctx)
        s.status = ctx.status
    elif report:
        try:
            await deliver_run(store, github, ctx.run_id, log=ctx.log)
        except Exception:
            ctx.log.exception("delivering the report failed; a later pass sends it")
    if ctx.ws is not None:
        if not isinstance(ctx.fence and ctx.fence.lost, ClaimedElsewhere):
            await _close_workspace(ctx, ctx.ws)
        for handler in list(ctx.log.handlers):
            handler.close()
            ctx.log.removeHandler(handler)


async def _close_workspace(ctx: _Ctx, ws: Workspace) -> None:
    """The summary written, the checkout given back and cleaned up (its policy); not for a
    process that stopped because another claimed its run: the directory is that one's."""
    config, s = ctx.config, ctx.summary
    try:
        write_summary(ws, s, ctx.redact)
        policy = config.cleanup.policy

        def close() -> None:
            if uses_account(config):  # the agent's account reaches none of it now
                take_back([ws.checkout, ws.run_dir / "tmp"], config.workspace_root)
            cleanup(ws, policy)

        done = await anyio.to_thread.run_sync(while_unlocked, ws.lock, close)
        if not done:
            ctx.log.info("cleanup skipped: another run works in the checkout now")
    except Exception:
        ctx.log.exception("artifacts/cleanup failed")


def _final_report(ctx: _Ctx) -> list[OutboxEntry]:
    """Labels and the final comment, as outbox entries: recorded with the terminal status
    (one transaction), sent at once, and sent by a later pass if GitHub is down."""
    if ctx.fenced():
        return []
    s, request = ctx.summary, ctx.request
    text = ctx.redact(Texts(ctx.bot, ctx.run_id).final(s, ctx.redact(ctx.agent_text)))
    succeeded = s.exit_code == 0 and s.outcome != Outcome.NO_CHANGES
    return report_entries(ctx.config.labels, run_id=ctx.run_id, repo=request.repo,
                          number=request.number, succeeded=succeeded, text=text)  # fmt: skip


def _record_end(ctx: _Ctx, store: Store, report: list[OutboxEntry]) -> None:
    """The run back to the queue, or its terminal status with its report; never raises."""
    try:
        if ctx.requeue is not None:
            prefix = RELEASED if ctx.released else REQUEUED
            requeue(store, ctx.run_id, ctx.requeue, lease=ctx.lease, prefix=prefix)
        else:
            _end(ctx, store, report)
    except Exception as exc:
        if ctx.fence is not None and ctx.fence.note(exc):
            # Taken over meanwhile: the other host's decision and report stand.
            ctx.log.warning("%s; the run's end was not recorded here", exc)
            return
        ctx.log.exception("recording the end of the run failed")
        for entry in report:  # the run may have been ended elsewhere: still report it
            try:
                store.put_outbox(ctx.run_id, entry)
            except Exception:
                ctx.log.exception("recording the report failed")


def _end(ctx: _Ctx, store: Store, report: list[OutboxEntry]) -> None:
    """The terminal status, with the report to send in the same transaction."""
    from cgr_store import RunStatus

    s = ctx.summary
    store.transition(
        ctx.run_id,
        RunStatus(s.status),
        detail=s.outcome + (f": {s.error}" if s.error else ""),
        outbox=report,
        lease=ctx.lease,
        outcome=s.outcome,
        error=s.error,
        pr_number=s.pr_number,
        pr_url=s.pr_url,
        agent_session_id=s.agent_session_id,
        cost_usd=s.cost_usd,
        input_tokens=s.input_tokens,
        output_tokens=s.output_tokens,
        turns=s.turns,
    )


def run_sync(
    config: Config,
    request: RunRequest,
    *,
    own_process: bool = False,
    picked_up: Run | None = None,
) -> RunSummary:
    """``execute_run`` from synchronous code (``cgr run``, a ``tick`` child).

    ``own_process``: this process exists for this run (the ``cgr run`` command, a forked
    tick child). It then becomes a child subreaper, so whatever the agent starts and
    detaches (``setsid``, a double fork) is re-parented here instead of to init, and when
    the run has ended every descendant still alive is ended (SIGTERM, then SIGKILL). An
    embedding program (a test calling ``execute_run``) keeps its own processes: there only
    the run's job marker (see ``AgentRunner``) finds leftovers.
    """
    if own_process:
        from cgr_exec import become_subreaper

        try:
            become_subreaper()
        except OSError:  # pragma: no cover - Linux >= 3.4 always allows it
            logging.getLogger("cgr.run").warning("could not become a subreaper", exc_info=True)
    try:
        return anyio.run(lambda: execute_run(config, request, picked_up=picked_up))
    finally:
        if own_process:
            from cgr_exec import kill_descendants

            kill_descendants(config.timeouts.watchdog_grace_seconds)
