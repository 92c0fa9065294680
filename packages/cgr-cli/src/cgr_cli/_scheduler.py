"""What ``cgr tick`` and ``cgr daemon`` share: slots, locks, and turning jobs into runs.

The rules that keep work from being lost or duplicated:

- **The row comes first.** A job becomes a ``queued`` run (``create_run``) before any
  process is started for it, and the trigger that caused it (a comment) is marked
  processed in the same transaction. The store's partial unique index refuses a second
  active run on one target, so two schedulers racing for the same issue make one run.
- **Cursors never pass a job that was not taken.** Jobs beyond the free slots are left
  out of ``accepted``; ``advance_cursors`` then holds the stream cursor at the earliest of
  them, so a later pass (tick or daemon) finds them again.
- **A run always names a live owner.** A new row carries the scheduler's own process
  identity until the child it starts replaces it; if the scheduler dies in between, the
  reaper sees the owner gone and ends the run visibly.
- **One scheduler at a time.** Ticks serialise their passes on ``<db>.schedule.lock``; a
  daemon holds ``<db>.daemon.lock`` exclusively for its whole life, and a tick holds it
  shared during its pass, so a tick refuses to run while a daemon owns the store and a
  daemon waits for a tick in progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cgr_cli._config import Config
from cgr_cli._errors import CgrError, ConfigError

if TYPE_CHECKING:
    from cgr_cli._pipeline import RunRequest
    from cgr_discovery import Job, PollResult, RunGitHub
    from cgr_exec import ProcessIdentity
    from cgr_store import Run, RunStatus, SQLiteStore

# The comment streams discovery keeps a cursor for (cgr_discovery._model.STREAMS).
STREAMS: tuple[Literal["issue_comments"], Literal["review_comments"]] = (
    "issue_comments",
    "review_comments",
)


class DaemonRunningError(CgrError):
    """A daemon owns this store: ``pid`` (and its start time) holds ``lock_path``."""

    def __init__(self, lock_path: Path, pid: int | None, detail: str = "") -> None:
        self.lock_path = lock_path
        self.pid = pid
        who = f"cgr daemon (pid {pid})" if pid else "a cgr daemon"
        super().__init__(
            f"{who} owns the store ({lock_path} is locked){detail}; "
            "stop it first, or let it do the scheduling"
        )


class SchedulerBusyError(CgrError):
    """The daemon lock could not be taken within ``waited`` seconds (ticks kept it)."""

    def __init__(self, lock_path: Path, waited: float) -> None:
        self.lock_path = lock_path
        self.waited = waited
        super().__init__(
            f"{lock_path} stayed locked by running `cgr tick` passes for {waited:g}s; "
            "disable the tick timer before starting the daemon"
        )


def hostname() -> str:
    return socket.gethostname()


# -- process identities -------------------------------------------------------------------


def run_identity(run: Run) -> ProcessIdentity | None:
    """The process a run row names, or None when none is recorded."""
    from cgr_exec import ProcessIdentity

    if run.pid is None or run.process_start_time is None:
        return None
    return ProcessIdentity(run.pid, int(run.process_start_time))


def process_alive(run: Run) -> bool:
    """True if the run's recorded process is alive (identity-checked: a reused pid is dead)."""
    identity = run_identity(run)
    return identity is not None and identity.is_alive()


def waiting_for_scheduler(run: Run) -> bool:
    """A queued run with no process recorded (left by ``cgr retry``) waits for a scheduler."""
    from cgr_store import RunStatus

    return run.status is RunStatus.QUEUED and run.pid is None


def occupied(store: SQLiteStore, host: str) -> list[Run]:
    """Active runs of ``host`` that hold a slot: their process is alive."""
    return [run for run in store.active_runs(host=host) if process_alive(run)]


def free_slots(config: Config, store: SQLiteStore, host: str) -> int:
    return max(0, config.polling.max_concurrency - len(occupied(store, host)))


# -- locks ---------------------------------------------------------------------------------


def daemon_lock_path(config: Config) -> Path:
    return Path(f"{config.database}.daemon.lock")


def schedule_lock_path(config: Config) -> Path:
    return Path(f"{config.database}.schedule.lock")


def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_CLOEXEC: `cgr run` children started by the daemon must not inherit the lock (an
    # flock is held while any descriptor of the open file exists). Fork children close
    # theirs in an after-fork hook (see _tick).
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """What the daemon writes into its lock file."""

    pid: int
    start_time: int
    started_at: float
    heartbeat_at: float

    @property
    def alive(self) -> bool:
        from cgr_exec import ProcessIdentity

        return ProcessIdentity(self.pid, self.start_time).is_alive()


def _read_info(fd: int) -> DaemonInfo | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return DaemonInfo(
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            started_at=float(data["started_at"]),
            heartbeat_at=float(data["heartbeat_at"]),
        )
    except (ValueError, TypeError, KeyError):
        return None


def daemon_owner(config: Config) -> DaemonInfo | None:
    """The daemon that holds the store's lock now, or None."""
    path = daemon_lock_path(config)
    if not path.exists():
        return None
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fd)
            return info if info is not None and info.alive else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def tick_locks(config: Config, *, wait: float = 60.0) -> Iterator[list[int]]:
    """Hold the daemon lock shared and the schedule lock exclusively for one tick pass.

    Yields the descriptors so a forked child can close its copies (a child must not keep
    the daemon from starting for as long as its run lasts).
    """
    path = daemon_lock_path(config)
    fds = [_open_lock(path)]
    try:
        try:
            fcntl.flock(fds[0], fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fds[0])
            raise DaemonRunningError(path, info.pid if info else None) from None
        fds.append(_open_lock(schedule_lock_path(config)))
        _flock_wait(fds[1], fcntl.LOCK_EX, wait, schedule_lock_path(config))
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _flock_wait(fd: int, op: int, wait: float, path: Path) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise SchedulerBusyError(path, wait) from None
            time.sleep(0.05)
        else:
            return


class DaemonLock:
    """The daemon's exclusive lock on ``<db>.daemon.lock``, holding its pid and start time."""

    def __init__(self, config: Config, *, wait: float = 30.0) -> None:
        from cgr_exec import ProcessIdentity

        self.path = daemon_lock_path(config)
        self.fd = _open_lock(self.path)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                info = _read_info(self.fd)
                if info is not None and info.alive:
                    os.close(self.fd)
                    raise DaemonRunningError(self.path, info.pid) from None
                # Held shared by tick passes (each lasts seconds): wait for them.
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise SchedulerBusyError(self.path, wait) from None
                time.sleep(0.05)
        me = ProcessIdentity.current()
        self.info = DaemonInfo(me.pid, me.start_time, time.time(), time.time())
        self._write()

    def _write(self) -> None:
        data = json.dumps(
            {
                "pid": self.info.pid,
                "start_time": self.info.start_time,
                "started_at": self.info.started_at,
                "heartbeat_at": self.info.heartbeat_at,
            }
        ).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def heartbeat(self) -> None:
        self.info = DaemonInfo(
            self.info.pid, self.info.start_time, self.info.started_at, time.time()
        )
        self._write()

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = -1


# -- GitHub --------------------------------------------------------------------------------


@dataclass(slots=True)
class GitHubSession:
    gh: Any
    ops: RunGitHub
    bot: str


@contextlib.asynccontextmanager
async def open_github(config: Config) -> AsyncIterator[GitHubSession]:
    """A GitHub client for scheduling and reaping (the token stays inside it)."""
    from cgr_discovery import GitHubClient, RunGitHub, TokenAuth

    token = config.github.resolved_token()
    if token is None:
        raise ConfigError(
            "github.token is not set (set it in the configuration or $CGR_GITHUB_TOKEN)",
            key="github.token",
        )
    async with GitHubClient(auth=TokenAuth(token.reveal()), base_url=config.github.api_url) as gh:
        bot = config.github.bot_login or str((await gh.getitem("/user"))["login"])
        yield GitHubSession(gh, RunGitHub(gh, min_edit_interval=0), bot)


def discovery_config(config: Config, bot: str) -> Any:
    from cgr_discovery import DiscoveryConfig, TriggerPolicy

    return DiscoveryConfig(
        login=bot,
        ready_label=config.labels.ready,
        in_progress_label=config.labels.in_progress,
        blocked_labels=frozenset(config.labels.blocked),
        mentions_first=config.priorities.mentions_first,
        newest_first=config.priorities.order == "newest",
        policy=TriggerPolicy(
            allow=frozenset(config.trigger.allow_users),
            deny=frozenset(config.trigger.deny_users),
            require_write=config.trigger.require_write_access,
        ),
    )


# -- triggers and runs ---------------------------------------------------------------------


def trigger_key(trigger_id: str) -> tuple[Any, str] | None:
    """Discovery's ``issue_comment:<id>`` as the store's (TriggerKind, id); None for ready
    issues, which are never marked processed (see module docstring of _tick)."""
    from cgr_store import TriggerKind

    kind, _, ident = trigger_id.partition(":")
    if kind == "issue_comment":
        return TriggerKind.ISSUE_COMMENT, ident
    if kind == "review_comment":
        return TriggerKind.REVIEW_COMMENT, ident
    return None


class ProcessedInStore(Collection[str]):
    """Discovery's ``processed`` collection, answered by the store one id at a time.

    ``discover`` only asks ``trigger_id in processed``; loading every processed id of the
    store's history into memory for that would grow without bound. Iteration is empty.
    """

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def __contains__(self, item: object) -> bool:
        key = trigger_key(str(item))
        return key is not None and self.store.is_trigger_processed(*key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def processed_trigger(job: Job, run_id: str | None = None) -> Any:
    from cgr_store import ProcessedTrigger

    key = trigger_key(job.trigger_id)
    if key is None:
        return None
    return ProcessedTrigger(kind=key[0], id=key[1], repo=job.repo, run_id=run_id)


def request_for(run: Run) -> RunRequest:
    """How a child picks up a queued run (``cgr run --run-id`` takes the same fields)."""
    from cgr_cli._pipeline import RunRequest
    from cgr_store import RunKind

    comment_id: int | None = None
    if run.kind is not RunKind.ISSUE and run.trigger_id and run.trigger_id.isdigit():
        comment_id = int(run.trigger_id)
    return RunRequest(
        repo=run.repo,
        number=run.target,
        comment_id=comment_id,
        review_comment=run.kind is RunKind.REVIEW_COMMENT,
        run_id=run.id,
    )


def run_argv(config_path: Path | None, run: Run) -> list[str]:
    """``python -m cgr_cli run --run-id …``: works without the console script on PATH."""
    import sys

    request = request_for(run)
    argv = [sys.executable, "-m", "cgr_cli", "run"]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    argv += ["--repo", run.repo, "--number", str(run.target), "--run-id", run.id, "--json"]
    if request.comment_id is not None:
        argv += ["--comment-id", str(request.comment_id)]
        if request.review_comment:
            argv.append("--review-comment")
    return argv


def run_kind_for(job: Job) -> Any:
    from cgr_discovery import JobKind
    from cgr_store import RunKind

    return {
        JobKind.READY_ISSUE: RunKind.ISSUE,
        JobKind.ISSUE_MENTION: RunKind.ISSUE_MENTION,
        JobKind.PR_MENTION: RunKind.PR_MENTION,
        JobKind.REVIEW_COMMENT: RunKind.REVIEW_COMMENT,
    }.get(job.kind, RunKind.PR_MENTION if job.is_pull_request else RunKind.ISSUE_MENTION)


def last_run_on(store: SQLiteStore, repo: str, target: int, *, scan: int = 2000) -> Run | None:
    """The newest run on (repo, target) among the newest ``scan`` runs."""
    page = 200
    for offset in range(0, scan, page):
        runs = store.recent_runs(limit=page, offset=offset)
        for run in runs:
            if run.repo == repo and run.target == target:
                return run
        if len(runs) < page:
            break
    return None


# -- backoff for ready issues that keep failing before their claim -----------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """A ready issue left out of a pass: its last ``failures`` runs ended before the claim."""

    repo: str
    target: int
    failures: int
    last_ended_at: datetime
    retry_at: datetime

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "target": f"{self.repo}#{self.target}",
            "failures": self.failures,
            "retry_at": self.retry_at.isoformat(),
            "retry_in_seconds": round(max(0.0, (self.retry_at - now).total_seconds()), 3),
        }


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """``min(base * 2**(failures - 1), cap)`` seconds (no overflow for a long streak)."""
    delay = base
    for _ in range(1, failures):
        if delay >= cap:
            break
        delay *= 2
    return min(delay, cap)


def _preclaim_failure(store: SQLiteStore, run: Run) -> bool | None:
    """True: the run ended failed/cancelled/timed_out and was never claimed (it counts).
    False: it says the issue can be worked on (claimed at some point, or succeeded, or
    another terminal outcome): the streak ends here. None: still active (ignored)."""
    from cgr_store import RunStatus

    if not run.status.is_terminal:
        return None
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT):
        return False
    # A claim is a real outcome: the pipeline then owns the labels (needs-human on
    # failure) and the issue is not retried by discovery anyway. Only runs that never
    # reached the claim leave `ready` in place and loop.
    return not any(e.to_status is RunStatus.CLAIMED for e in store.events(run.id))


def preclaim_backoffs(
    config: Config,
    store: SQLiteStore,
    targets: Collection[tuple[str, int]],
    *,
    now: datetime,
    scan: int = 2000,
) -> dict[tuple[str, int], Backoff]:
    """The ready issues among ``targets`` that must wait, keyed by (repo, number).

    Only issue runs (kind ``issue``) of those targets are looked at, newest first, among the
    newest ``scan`` runs of the store, and a target stops being looked at as soon as its
    streak is known: a run that was claimed or succeeded ends it, and failures beyond the
    one that reaches the cap change nothing. So the events of at most a few runs per
    target are read, and a target without history costs one pass over ``scan`` rows.
    """
    from cgr_store import RunKind

    base = config.polling.retry_backoff_seconds
    cap = config.polling.retry_backoff_max_seconds
    # failures after which the delay no longer grows
    enough = 1
    while backoff_delay(enough, base, cap) < cap:
        enough += 1
    streak: dict[tuple[str, int], list[Run]] = {t: [] for t in targets}
    open_targets = set(streak)
    page = 200
    for offset in range(0, scan, page):
        if not open_targets:
            break
        runs = store.recent_runs(limit=page, offset=offset)
        for run in runs:
            key = (run.repo, run.target)
            if key not in open_targets or run.kind is not RunKind.ISSUE:
                continue
            counted = _preclaim_failure(store, run)
            if counted is None:
                continue
            if counted:
                streak[key].append(run)
            if not counted or len(streak[key]) >= enough:
                open_targets.discard(key)
        if len(runs) < page:
            break
    found: dict[tuple[str, int], Backoff] = {}
    for (repo, target), failed in streak.items():
        if not failed or failed[0].ended_at is None:
            continue
        last = failed[0].ended_at
        retry_at = last + timedelta(seconds=backoff_delay(len(failed), base, cap))
        if now < retry_at:
            found[(repo, target)] = Backoff(repo, target, len(failed), last, retry_at)
    return found


@dataclass(slots=True)
class PassReport:
    """One scheduling pass: what it found and did (printed by tick, logged by the daemon)."""

    free_slots: int = 0
    discovered: int = 0
    started: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    rejected: int = 0
    cancelled: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    backed_off: list[Backoff] = field(default_factory=list)

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        return {
            "free_slots": self.free_slots,
            "discovered": self.discovered,
            "started": self.started,
            "pending": self.pending,
            "busy": self.busy,
            "rejected": self.rejected,
            "cancelled": self.cancelled,
            "errors": self.errors,
            "backed_off": [b.as_dict(now) for b in self.backed_off],
        }


async def plan_pass(  # noqa: PLR0912, PLR0915 - one decision per kind of job, in one place
    config: Config,
    store: SQLiteStore,
    github: GitHubSession,
    *,
    host: str,
    slots: int,
    owner: ProcessIdentity,
    report: PassReport,
) -> list[Run]:
    """Discover and write the runs to start now (at most ``slots``), trigger marked processed
    in the same transaction, cursors advanced only past what was taken.

    Returns the queued runs; their rows name ``owner`` (the scheduler) until the caller
    records the child it starts for each.
    """
    from cgr_cli._control import cancel_target
    from cgr_discovery import JobKind, StreamCursor, advance_cursors, discover
    from cgr_store import ActiveRunExists, Cursor, Run, TriggerAlreadyProcessed, new_run_id

    report.free_slots = slots
    planned: list[Run] = []
    # Runs `cgr retry` left queued without a process come first: they were asked for.
    for run in store.runs_by_status(_queued()):
        if len(planned) >= slots:
            break
        if waiting_for_scheduler(run):
            planned.append(
                store.update_run(
                    run.id, host=host, pid=owner.pid, process_start_time=float(owner.start_time)
                )
            )
    cursors = [
        StreamCursor(repo=c.repo, stream=stream, since=c.since, etag=c.etag)
        for repo in config.repositories
        for stream in STREAMS
        if (c := store.get_cursor(repo, stream)) is not None
    ]
    result: PollResult = await discover(
        github.gh,
        config.repositories,
        discovery_config(config, github.bot),
        cursors=cursors,
        processed=ProcessedInStore(store),
    )
    report.discovered = len(result.jobs)
    report.errors += [f"{e.repo}: {e.error}" for e in result.errors]
    for rejected in result.rejected:
        trigger = processed_trigger(rejected.job)
        if trigger is not None:
            store.mark_trigger_processed(trigger)  # decided: never reported again
        report.rejected += 1
    accepted: set[str] = set()
    backoffs = preclaim_backoffs(
        config,
        store,
        {(j.repo, j.number) for j in result.jobs if j.kind is JobKind.READY_ISSUE},
        now=datetime.now(UTC),
    )
    for job in result.jobs:
        where = f"{job.repo}#{job.number}"
        backoff = backoffs.get((job.repo, job.number))
        if job.kind is JobKind.READY_ISSUE and backoff is not None:
            # Not accepted and nothing written: the issue keeps its label and a pass after
            # retry_at takes it. It holds no slot meanwhile.
            report.backed_off.append(backoff)
            continue
        if job.kind is JobKind.CANCEL:
            done = await cancel_target(
                config, store, github, job.repo, job.number, why=f"@{job.author} asked to cancel"
            )
            report.cancelled += done
            trigger = processed_trigger(job)
            if trigger is not None:
                store.mark_trigger_processed(trigger)
            accepted.add(job.trigger_id)
            continue
        if len(planned) >= slots:
            report.pending.append(where)
            continue  # not accepted: the cursor stays before it; a later pass takes it
        run = Run(
            id=new_run_id(),
            repo=job.repo,
            target=job.number,
            kind=run_kind_for(job),
            trigger_id=str(job.comment_id) if job.comment_id is not None else None,
            host=host,
            pid=owner.pid,
            process_start_time=float(owner.start_time),
        )
        if job.kind is JobKind.RETRY:
            previous = last_run_on(store, job.repo, job.number)
            if previous is not None:
                run = _retry_of(run, previous)
        try:
            planned.append(store.create_run(run, trigger=processed_trigger(job, run.id)))
            accepted.add(job.trigger_id)
        except TriggerAlreadyProcessed:
            accepted.add(job.trigger_id)  # another scheduler took it: done, not pending
        except ActiveRunExists:
            # Being worked on. A ready issue is skipped (it stays labelled in-progress);
            # a comment waits, un-accepted, until the active run has ended.
            report.busy.append(where)
    for cursor in advance_cursors(result, accepted):
        store.set_cursor(
            Cursor(repo=cursor.repo, stream=cursor.stream, since=cursor.since, etag=cursor.etag)
        )
    report.started = [r.id for r in planned]
    return planned


def _queued() -> RunStatus:
    from cgr_store import RunStatus

    return RunStatus.QUEUED


def _retry_of(run: Run, previous: Run) -> Run:
    import msgspec

    from cgr_store import RunKind

    # The same kind and triggering comment as the run retried, so the prompt carries the
    # original instruction; the retry comment itself is recorded as processed.
    trigger = previous.trigger_id if previous.kind is not RunKind.ISSUE else None
    return msgspec.structs.replace(
        run, kind=previous.kind, trigger_id=trigger, attempt=previous.attempt + 1
    )


def record_child(store: SQLiteStore, run_id: str, identity: ProcessIdentity) -> None:
    """The run's row now names the child that runs it (the child writes the same)."""
    from cgr_store import StoreError

    with contextlib.suppress(StoreError):
        store.update_run(run_id, pid=identity.pid, process_start_time=float(identity.start_time))
        # A fresh beat with the new owner: an old retried row is not mistaken for a hung run.
        store.heartbeat(run_id)
