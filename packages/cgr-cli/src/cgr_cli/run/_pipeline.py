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

import logging
import os
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from cgr_cli._errors import CgrError, ConfigError, GitError, RebaseConflictError, RunNotFoundError
from cgr_cli._redact import Redactor
from cgr_cli.config._model import Config
from cgr_cli.run._agent import StreamState, agent_env, check_can_start, judge
from cgr_cli.run._agent_cli import AgentCli
from cgr_cli.run._agent_run import AgentRunner
from cgr_cli.run._artifacts import cleanup, write_summary, write_uncommitted_diff
from cgr_cli.run._git import Git, Identity, branch_name
from cgr_cli.run._prompt import PromptInput, ReviewComment, ThreadComment, build_prompt
from cgr_cli.run._report import Outcome, RunSummary, Texts, pr_section
from cgr_cli.run._safe_fs import RunFiles, run_dir_problems
from cgr_cli.run._sandbox import refuse_impossible
from cgr_cli.run._secret_gate import PATCH_ARGS, SecretGate, known_secrets
from cgr_cli.run._workspace import Workspace, checkout_lock, while_unlocked

if TYPE_CHECKING:
    from cgr_discovery import GitHubClient, RunGitHub, Thread
    from cgr_store import Run, Store


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What ``cgr run`` was asked to do."""

    repo: str
    number: int
    comment_id: int | None = None
    review_comment: bool = False
    run_id: str | None = None
    force: bool = False


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
    timings: dict[str, float] = field(default_factory=dict)
    agent_cli: AgentCli | None = None  # the agent's release, asked before the claim
    gate: SecretGate = field(default_factory=lambda: SecretGate({}))


def _hostname() -> str:
    return socket.gethostname()


async def execute_run(
    config: Config,
    request: RunRequest,
    *,
    environ: dict[str, str] | None = None,
) -> RunSummary:
    """Run ``request`` to its end and return its summary (also in ``summary.json``).

    Raises CgrError only for problems found before the run row exists or is picked up
    (configuration, missing token, an active run on the same target); after that, every
    failure is reported on GitHub and in the summary instead.
    """
    from cgr_discovery import GitHubClient, RunGitHub, TokenAuth
    from cgr_store import SQLiteStore

    token = config.github.resolved_token()
    if token is None:
        raise ConfigError(
            "github.token is not set (set it in the configuration or $CGR_GITHUB_TOKEN)",
            key="github.token",
        )
    environ = dict(os.environ if environ is None else environ)
    # The agent's release (asked once here, before the claim; the run keeps the answer),
    # the sandbox, and the secrets the run must never let out.
    agent_cli, secrets = await anyio.to_thread.run_sync(_preflight, config, token.reveal(), environ)
    config.database.parent.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(config.database)
    try:
        async with GitHubClient(
            auth=TokenAuth(token.reveal()), base_url=config.github.api_url
        ) as gh:
            github = RunGitHub(gh, min_edit_interval=config.github.status_update_seconds)
            bot = config.github.bot_login or await _whoami(gh)
            run = await _create_or_pick_up(store, github, request)
            ctx = _new_ctx(config, request, run.id, token.reveal(), bot, secrets=secrets)
            ctx.agent_cli = agent_cli
            try:
                with anyio.move_on_after(config.timeouts.run_seconds) as scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_watch_signals, ctx, scope)
                        tg.start_soon(_beat, ctx, store)
                        await _run(ctx, store, github, token.reveal(), environ)
                        tg.cancel_scope.cancel()  # stop watching signals
                if ctx.signalled:
                    ctx.status, ctx.summary.outcome = "cancelled", Outcome.CANCELLED
                    ctx.summary.error = f"cgr received {ctx.signalled}"
                elif scope.cancelled_caught:
                    ctx.status, ctx.summary.outcome = "timed_out", Outcome.TIMED_OUT
                    ctx.summary.error = "the run passed its time limit of " + (
                        f"{config.timeouts.run_seconds:g}s"
                    )
            except BaseException as group:
                # anyio wraps what the task group's body raised in an ExceptionGroup.
                exc = _unwrap(group)
                if isinstance(exc, RebaseConflictError):
                    ctx.status, ctx.summary.outcome = "needs_human", Outcome.CONFLICT
                    ctx.summary.conflicts = exc.files
                    ctx.summary.error = str(exc)
                else:
                    # Any failure, including a bug in cgr, ends the run visibly.
                    ctx.status, ctx.summary.outcome = "failed", Outcome.FAILED
                    ctx.summary.error = _describe(exc)
                    ctx.log.exception("run failed", exc_info=exc)
                if not isinstance(exc, Exception):
                    with anyio.CancelScope(shield=True):
                        await _finish(ctx, store, github)
                    raise
            with anyio.CancelScope(shield=True):
                await _finish(ctx, store, github)
            return ctx.summary
    finally:
        store.close()


def _preflight(
    config: Config, token: str, environ: dict[str, str]
) -> tuple[AgentCli, dict[str, str]]:
    """Refuse what cannot run (before the run row and the claim); return the agent's
    release and the secrets the run must never let out (``_secret_gate.known_secrets``)."""
    env_for_agent = agent_env(config.agent, environ, secrets=(token,))
    agent_cli = check_can_start(config.agent, env_for_agent)
    check_sandbox(config)
    return agent_cli, known_secrets(config, token=token, agent_env=env_for_agent, environ=environ)


async def _beat(ctx: _Ctx, store: Store) -> None:
    """The run's heartbeat, every ``timeouts.heartbeat_seconds`` for the whole run.

    Its own task, so it keeps going while git (worker threads), the checkout lock wait or
    the agent (another process) take long; what stops it is this process no longer running
    its event loop (stopped, deadlocked, blocked in a call): then the reaper, after
    ``timeouts.stale_heartbeat_seconds`` of silence, ends the run (``reap``). The agent
    runner's own beat also checks for cancellation and stops the agent.
    """
    while True:
        try:
            await anyio.to_thread.run_sync(store.heartbeat, ctx.run_id)
        except Exception:  # a busy database now and then must not end the run
            ctx.log.warning("heartbeat failed", exc_info=True)
        await anyio.sleep(ctx.config.timeouts.heartbeat_seconds)


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _watch_signals(ctx: _Ctx, scope: anyio.CancelScope) -> None:
    """SIGTERM (the daemon draining, systemd stopping) or SIGINT ends the run as
    cancelled: the agent's group is ended by cgr-exec, and the run still reports."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread; an embedding
        # program that runs us elsewhere handles its own signals.
        await anyio.sleep_forever()
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            ctx.signalled = signal.Signals(signum).name
            ctx.log.warning("received %s; cancelling the run", ctx.signalled)
            scope.cancel()
            return


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
    summary = RunSummary(
        run_id=run_id, repo=request.repo, number=request.number, status="running", outcome=""
    )
    gate = SecretGate(secrets)
    return _Ctx(config, request, run_id, redact, log, time.monotonic(), summary, bot=bot, gate=gate)


async def _create_or_pick_up(store: Store, github: RunGitHub, request: RunRequest) -> Run:
    """The run row comes first: created queued here, or an existing queued one."""
    from cgr_exec import ProcessIdentity
    from cgr_store import ActiveRunExists, Run, RunKind, RunNotFound, RunStatus, new_run_id

    me = ProcessIdentity.current()
    host, pid, start_time = _hostname(), me.pid, float(me.start_time)
    if request.run_id:
        try:
            run = store.get_run(request.run_id)
        except RunNotFound:
            raise RunNotFoundError(request.run_id, "no such run") from None
        if run.status != RunStatus.QUEUED:
            raise RunNotFoundError(request.run_id, f"is {run.status}, not queued")
        run = store.update_run(run.id, host=host, pid=pid, process_start_time=start_time)
        store.heartbeat(run.id)  # the reaper judges silence from here on, not from created_at
        return run
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
        raise CgrError(
            f"{request.repo}#{request.number} already has an active run; "
            "see `cgr status` or wait for it to end"
        ) from None


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

    thread = await github.get_thread(request.repo, request.number)
    texts = Texts(ctx.bot, ctx.run_id)
    if not await _claim(ctx, store, github, thread, texts):
        return
    # The conversation (and so the checkout, --resume only works from the same cwd) this
    # run continues: its own, or the issue's when the target is cgr's PR for that issue.
    key = await _session_target(ctx, store, thread)
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
    from cgr_store import AgentSession, RunStatus

    config, request = ctx.config, ctx.request
    git = Git(
        token=token,
        timeout=config.timeouts.git_seconds,
        network_timeout=config.timeouts.clone_seconds,
        log=lambda line: ctx.log.info("%s", line),
    )
    work = await _prepare_checkout(ctx, ws, git, github, thread)
    store.update_run(ctx.run_id, branch=work.branch, base_branch=work.base)

    # -- 4. prompt: written outside repo/ and given on stdin ------------------------------
    session = store.get_agent_session(request.repo, key)
    prompt = build_prompt(
        _prompt_input(ctx, thread, work.branch, work.base, follow_up=session is not None)
    )
    RunFiles(ws.root).write(ws.prompt, prompt)  # 0600, never through a symlink

    # -- 5/6. the agent ------------------------------------------------------------------
    async def heartbeat() -> bool:
        status = await anyio.to_thread.run_sync(store.heartbeat, ctx.run_id)
        return bool(status == RunStatus.CANCELLED)

    async def progress(line: str) -> None:
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
    started = time.monotonic()
    agent_run = await runner.run(session.session_id if session else None)
    ctx.timings["agent"] = round(time.monotonic() - started, 3)
    state, result = agent_run.state, agent_run.exit
    ctx.summary.resumed_session = agent_run.resumed
    problems = run_dir_problems(ws.run_dir)
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
        or (ctx.summary.cost_usd or 0.0) > config.agent.max_cost_usd,
        max_cost_usd=config.agent.max_cost_usd,
    )
    if result.stopped == "cancelled":
        ctx.status, ctx.summary.outcome = "cancelled", Outcome.CANCELLED
        ctx.summary.error = "cancelled while the agent was working"
        return
    if problems:
        # Only an unconfined agent (agent.sandbox.mode = "off") can touch the run directory;
        # one that did is hostile: nothing is published, nothing written through its links.
        ctx.status, ctx.summary.outcome = "failed", Outcome.FAILED
        ctx.summary.error = (
            "the agent tampered with the run directory (" + "; ".join(problems) + "); "
            "cgr wrote nothing through it and published nothing"
        )
        return
    if not verdict.ok:
        # Half-done work is never pushed; what the agent left is kept in git.diff.
        ctx.status = verdict.status
        ctx.summary.outcome = Outcome.TIMED_OUT if verdict.status == "timed_out" else "failed"
        ctx.summary.error = verdict.reason
        await _timed(ctx, "diff", write_uncommitted_diff, git, ws.checkout, ws, ctx.redact)
        return
    await _publish(ctx, ws, git, github=github, thread=thread, work=work)


@dataclass(frozen=True, slots=True)
class _Work:
    branch: str
    base: str
    start_sha: str
    # The remote sha before cgr's own rebase: the only case where a (leased) force push
    # is allowed.
    lease: str | None
    existing_pr: dict[str, Any] | None


async def _claim(ctx: _Ctx, store: Store, github: RunGitHub, thread: Thread, texts: Texts) -> bool:
    """Step 1: labels, assignee, reaction, status comment; queued → claimed → running."""
    from cgr_store import RunStatus

    request, labels = ctx.request, ctx.config.labels
    issue = thread.issue
    blocked = sorted({lb["name"] for lb in issue.get("labels", [])} & set(labels.blocked))
    if not request.force and (issue.get("state") != "open" or blocked):
        why = "is closed" if issue.get("state") != "open" else f"is labelled {blocked[0]!r}"
        ctx.status, ctx.summary.outcome = "failed", Outcome.SKIPPED
        ctx.summary.error = f"skipped: {request.repo}#{request.number} {why} (use --force)"
        return False
    store.transition(ctx.run_id, RunStatus.CLAIMED, detail="claiming on GitHub")
    ctx.claimed = True
    await github.add_labels(request.repo, request.number, labels.in_progress)
    await github.remove_label(request.repo, request.number, labels.ready)
    await github.assign(request.repo, request.number, ctx.bot)
    if request.comment_id is not None and request.review_comment:
        await github.react(request.repo, "eyes", review_comment_id=request.comment_id)
    elif request.comment_id is not None:
        await github.react(request.repo, "eyes", comment_id=request.comment_id)
    else:
        await github.react(request.repo, "eyes", number=request.number)
    await github.update_status(request.repo, request.number, ctx.run_id, texts.working())
    store.transition(ctx.run_id, RunStatus.RUNNING, detail="claimed")
    return True


async def _prepare_checkout(
    ctx: _Ctx, ws: Workspace, git: Git, github: RunGitHub, thread: Thread
) -> _Work:
    """Steps 2-3: mirror, fresh clone, and the branch to work on."""
    config, request = ctx.config, ctx.request
    url = _clone_url(config.github.api_url, request.repo)
    await _timed(ctx, "mirror", git.ensure_mirror, url, ws.mirror)
    await _timed(ctx, "workspace", ws.fresh_checkout)
    identity = Identity(config.git_identity.name, config.git_identity.email)
    await _timed(
        ctx, "clone", lambda: git.clone(url, ws.checkout, mirror=ws.mirror, identity=identity)
    )
    repo_dir = ws.checkout
    base = config.branching.base
    if base == "default":
        base = await _timed(ctx, "git", git.default_branch, repo_dir)
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
    else:
        title = str(thread.issue.get("title") or "")
        branch = branch_name(config.branching.prefix, request.number, title)
        remote = await _timed(ctx, "git", _local_remote_sha, git, repo_dir, branch)
        ctx.summary.branch, ctx.summary.base_branch = branch, base
        if remote:
            # cgr's own branch from an earlier run: bring it up to date with the base.
            await _timed(ctx, "git", git.checkout_new, repo_dir, branch, f"origin/{branch}")
            await _timed(ctx, "rebase", git.rebase, repo_dir, f"origin/{base}")
            if await _timed(ctx, "git", git.head, repo_dir) != remote:
                lease = remote
            existing_pr = await github.find_pull_request(request.repo, branch, state="open")
        else:
            await _timed(ctx, "git", git.checkout_new, repo_dir, branch, f"origin/{base}")
    ctx.summary.branch, ctx.summary.base_branch = branch, base
    start_sha = await _timed(ctx, "git", git.head, repo_dir)
    return _Work(branch, base, start_sha, lease, existing_pr)


async def _publish(
    ctx: _Ctx, ws: Workspace, git: Git, *, github: RunGitHub, thread: Thread, work: _Work
) -> None:
    """Step 7: commit leftovers, push (never a plain force), verify, open or update the PR."""
    request, repo_dir = ctx.request, ws.checkout
    title = str(thread.issue.get("title") or f"#{request.number}")
    message = f"cgr: {title} (#{request.number})\n\ncgr run {ctx.run_id}"
    await _timed(ctx, "commit", git.commit_all, repo_dir, message)
    head = await _timed(ctx, "git", git.head, repo_dir)
    diff = await _timed(ctx, "diff", git.diff, repo_dir, work.start_sha)
    files = RunFiles(ws.root)
    await _timed(ctx, "diff", files.write, ws.artifacts / "git.diff", ctx.redact(diff))
    if head == work.start_sha:
        ctx.status, ctx.summary.outcome = "needs_human", Outcome.NO_CHANGES
        return
    # The secret gate: every new commit (the agent's own and their messages, and cgr's
    # commit of the leftovers) as it would be pushed.
    patch = await _timed(
        ctx, "gate", lambda: git.run([*PATCH_ARGS, f"{work.start_sha}..HEAD"], cwd=repo_dir)
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
    ctx.summary.commits = await _timed(ctx, "git", git.commit_count, repo_dir, work.start_sha)
    ctx.summary.changed_files = await _timed(
        ctx, "git", git.changed_files, repo_dir, work.start_sha
    )
    url = _clone_url(ctx.config.github.api_url, request.repo)
    pushed = await _timed(
        ctx,
        "push",
        lambda: git.publish(
            repo_dir,
            url,
            work.branch,
            workdir=ws.run_dir / "publish.git",
            mirror=ws.mirror,
            lease=work.lease,
        ),
    )
    if pushed != head:
        raise GitError("push", 0, f"the remote branch is at {pushed}, expected {head}")
    closes = None if thread.pull is not None else request.number
    # The gate for text: everything in the PR body is redacted before it is sent.
    section = ctx.redact(pr_section(ctx.summary, ctx.redact(ctx.agent_text), closes=closes))
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
        )
        ctx.summary.outcome = Outcome.PR_OPENED
    ctx.summary.pr_number = int(pr["number"])
    ctx.summary.pr_url = str(pr.get("html_url") or pr.get("url") or "")
    ctx.status = "succeeded"


def _local_remote_sha(git: Git, repo: Path, branch: str) -> str | None:
    done = git.run(["rev-parse", "--verify", "-q", f"refs/remotes/origin/{branch}"],
                   cwd=repo, check=False)  # fmt: skip
    return done.stdout.strip() or None


def _clone_url(api_url: str, repo: str) -> str:
    """``https://github.com/o/r.git`` for api.github.com, ``https://host/o/r.git`` for
    GitHub Enterprise (``https://host/api/v3``) and the simulator (``http://127.0.0.1:N``)."""
    base = api_url.rstrip("/")
    if base == "https://api.github.com":
        base = "https://github.com"
    base = base.removesuffix("/api/v3")
    return f"{base}/{repo}.git"


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
    )


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
    """Labels, final comment, terminal status, summary, cleanup: each step on its own, so
    one failing (GitHub down) does not keep the others from happening."""
    from cgr_store import RunStatus

    config, request, s = ctx.config, ctx.request, ctx.summary
    s.duration_s = round(time.monotonic() - ctx.started, 3)
    s.timings = dict(ctx.timings)
    s.status = ctx.status
    if not s.outcome:
        s.outcome = Outcome.FAILED
    if s.error:
        s.error = ctx.redact(s.error)
    labels = config.labels

    async def step(name: str, coro: Awaitable[object]) -> None:
        try:
            await coro
        except Exception:
            ctx.log.exception("finishing step %r failed", name)

    if ctx.claimed:
        await step("label in-progress", github.remove_label(request.repo, request.number,
                                                            labels.in_progress))  # fmt: skip
        if s.exit_code != 0 or s.outcome == Outcome.NO_CHANGES:
            await step(
                "label needs-human",
                github.add_labels(request.repo, request.number, labels.needs_human),
            )
        elif labels.done:
            await step("label done", github.add_labels(request.repo, request.number, labels.done))
        text = ctx.redact(Texts(ctx.bot, ctx.run_id).final(s, ctx.redact(ctx.agent_text)))
        await step(
            "status comment",
            github.update_status(request.repo, request.number, ctx.run_id, text, final=True),
        )
    try:
        store.transition(
            ctx.run_id,
            RunStatus(s.status),
            detail=s.outcome + (f": {s.error}" if s.error else ""),
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
    except Exception:
        ctx.log.exception("recording the end of the run failed")
    if ctx.ws is not None:
        try:
            write_summary(ctx.ws, s, ctx.redact)
            ws, policy = ctx.ws, config.cleanup.policy
            done = await anyio.to_thread.run_sync(
                while_unlocked, ws.lock, lambda: cleanup(ws, policy)
            )
            if not done:
                ctx.log.info("cleanup skipped: another run works in the checkout now")
        except Exception:
            ctx.log.exception("artifacts/cleanup failed")
        for handler in list(ctx.log.handlers):
            handler.close()
            ctx.log.removeHandler(handler)


def run_sync(config: Config, request: RunRequest, *, own_process: bool = False) -> RunSummary:
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
        return anyio.run(lambda: execute_run(config, request))
    finally:
        if own_process:
            from cgr_exec import kill_descendants

            kill_descendants(config.timeouts.watchdog_grace_seconds)
