"""``cgr daemon``: one long-running scheduler that starts ``cgr run`` subprocesses.

The loop, every ``polling.interval_seconds``:

- heartbeat: the daemon's lock file (pid, start time, last beat). Run rows are not
  stamped here: each ``cgr run`` child heartbeats its own row, so a child that hangs
  goes silent and the reaper's stale-heartbeat rule can end it. A tracked run found
  cancelled in the store (``cgr cancel`` from another host) has its child ended;
- reap (once per interval: a pass woken early by a child's end only refills the slot):
  this host's runs whose process is gone, over time or hung - the daemon's own
  children included (a finished child is collected first, so only a child that died
  without ending its run, or one that hangs, is ended here);
- schedule: free slots = the concurrency limit minus this host's live runs (so children
  of an earlier daemon or of ``cgr tick`` count too); discover (every repository once per
  interval; a pass woken by a child's end reads the first repository whose jobs the last
  pass left pending for want of a slot, the others only if it has too few, see
  ``_Pending``); write the runs; start
  ``python -m cgr_cli run --config … --run-id …`` for each through cgr-exec's subprocess
  strategy (own session and process group, own log file).

On SQLite, every ``polling.database_check_seconds`` (an hour) it reads the whole database
file, as opening it did; on damage it stops as on SIGTERM and exits with the error (a run
picking up its row does not check the file: that cost is per run).

At start it reconciles (one reap pass: runs of this host whose process is gone are ended
visibly). SIGTERM or SIGINT: stop claiming, give running children ``grace`` seconds to
finish, then end their process groups (the child reports "cancelled" itself; the daemon
rewrites the comment with the reason, or ends the run itself if the child could not).

Children are started with the daemon's environment (the Claude CLI inherits it the way
it would from a login shell) and never with the daemon's lock descriptor (O_CLOEXEC).
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
import msgspec

from cgr_cli.config._model import Config
from cgr_cli.schedule._fleet import Fleet, fleet_pass, join_fleet
from cgr_cli.schedule._github import GitHubSession, open_github
from cgr_cli.schedule._locks import DaemonLock
from cgr_cli.schedule._notify import Watchdog, notify
from cgr_cli.schedule._plan import PassReport, plan_first_pending, plan_pass
from cgr_cli.schedule._runs import cgr_argv, free_slots, record_child, run_args

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from cgr_cli.schedule._metrics import Metrics
    from cgr_cli.schedule._webhooks import WebhookIntake
    from cgr_exec import ChildHandle, ProcessIdentity, SubprocessExecutor
    from cgr_store import CorruptDatabase, Run, SQLiteStore, Store

    PlanPass = Callable[..., Awaitable[list[Run]]]

log = logging.getLogger("cgr.daemon")


def run_daemon(
    config: Config, config_path: Path | None, *, grace: float, metrics_address: str | None = None
) -> int:
    """Own the store and schedule until SIGTERM/SIGINT; returns the exit code.

    ``metrics_address`` (``HOST:PORT``): serve /metrics and /healthz there (_metrics).
    """
    lock = DaemonLock(config)
    try:
        return anyio.run(_main, config, config_path, lock, grace, metrics_address)
    finally:
        lock.release()


async def _main(  # noqa: PLR0915 - the daemon's life in order: start, loop, drain
    config: Config,
    config_path: Path | None,
    lock: DaemonLock,
    grace: float,
    metrics_address: str | None = None,
) -> int:
    from cgr_cli.config._store import open_config_store
    from cgr_cli.schedule._metrics import Metrics, serve
    from cgr_cli.schedule._reaper import reap
    from cgr_exec import ProcessIdentity, SubprocessExecutor
    from cgr_store import RunStatus, SQLiteStore

    host, me = config.host_id, ProcessIdentity.current()
    stop = anyio.Event()
    cancelled_since: dict[str, float] = {}
    unclaimed: set[str] = set()  # started children whose claim is not yet measured
    pending = _Pending()
    damage: CorruptDatabase | None = None
    listener = await _bind_webhooks(config)
    store = open_config_store(config)
    try:
        fleet = join_fleet(config, store)
    except BaseException:
        store.close()
        raise
    # Ready for systemd (Type=notify) once the lock and the store are held; GitHub may
    # still be down, which the daemon waits out below rather than crash-looping.
    notify("READY=1", f"STATUS=daemon {me.pid} started", f"MAINPID={me.pid}")
    watchdog = Watchdog(stale_after=2 * config.polling.interval_seconds + 900)
    metrics = Metrics(interval=config.polling.interval_seconds)
    # A thread is safe here: the daemon never forks (children are spawned subprocesses).
    server = serve(metrics_address, metrics) if metrics_address else None
    try:
        await _wait_for_github(config, watchdog)
        async with (
            open_github(config, store) as github,
            SubprocessExecutor(
                limit=config.polling.run_slots,
                grace=config.timeouts.watchdog_grace_seconds,
            ) as executor,
            anyio.create_task_group() as tg,
        ):
            # `cgr run` processes started ahead of the runs and handed a run when it comes:
            # the run skips the interpreter's start and its imports (commands/_standby.py).
            # As many as may start at once, up to 6. One process does the start-up and
            # forks each of them (cgr-exec's fork server): the imports cost a run no CPU
            # either (~0.2 s each, on a machine whose CPUs are what limits the runs), and
            # the copies share the loaded code's memory.
            executor.keep_warm(cgr_argv(), count=min(config.polling.run_slots, 6), fork_server=True)
            wake = _Wake(tg)
            tg.start_soon(_watch_signals, stop, wake)
            intake = _start_webhooks(config, store, github, metrics, wake, tg, listener)
            log.info("daemon %s started on %s (%d agents at once, %d runs)", me.pid, host,
                     config.polling.max_concurrency, config.polling.run_slots)  # fmt: skip
            try:
                reconciled = await reap(config, store, github, host=host)
                log.info("reconciled: %s", {k: v for k, v in reconciled.as_dict().items() if v})
            except Exception:
                log.exception("reconciling failed; the next pass reaps again")
            last_reap = last_file_check = time.monotonic()  # opening checked the file
            notify("STATUS=scheduling")
            while not stop.is_set():
                if isinstance(store, SQLiteStore) and _file_check_due(config, last_file_check):
                    last_file_check = time.monotonic()
                    damage = await _check_file(store)
                    if damage is not None:
                        break
                # A pass woken by a child's end only refills slots; the reap pass (store
                # scans, workspace retention) runs once per interval.
                reap_due = time.monotonic() - last_reap >= config.polling.interval_seconds
                last_reap = time.monotonic() if reap_due else last_reap
                lock.heartbeat()
                watchdog.beat()
                metrics.loop_tick()
                try:
                    await _iteration(
                        config, config_path=config_path, store=store, github=github,
                        executor=executor, host=host, me=me, wake=wake,
                        cancelled_since=cancelled_since, unclaimed=unclaimed,
                        metrics=metrics, reap_due=reap_due, intake=intake, fleet=fleet,
                        pending=pending,
                    )  # fmt: skip
                    github.save_cache()
                except Exception:
                    # A daemon outlives transient trouble (GitHub down, a locked store).
                    log.exception("scheduling pass failed; trying again next interval")
                metrics.set_active_runs(len(executor.running))
                metrics.set_queue_depth(len(store.runs_by_status(RunStatus.QUEUED)))
                metrics.set_agents_at_work(sum(
                    1 for r in store.runs_by_status(RunStatus.RUNNING) if r.host == host
                ))  # fmt: skip
                metrics.github(github.gh.stats())
                # Sleep until the interval is over, a signal arrives, or a child ends (a
                # free slot is filled at once rather than an interval later).
                with anyio.move_on_after(config.polling.interval_seconds):
                    await wake.wait()
                wake.clear()
            if damage is not None:
                log.error("the database file is damaged: the daemon stops and starts no run "
                          "on it (`cgr doctor` checks the file). %s", damage)  # fmt: skip
            log.info("stopping: no new runs; %d running get %gs to finish",
                     len(executor.running), grace)  # fmt: skip
            notify("STOPPING=1", f"STATUS=stopping; {len(executor.running)} run(s) finishing")
            await _drain(
                config, store=store, github=github, executor=executor, lock=lock, grace=grace
            )
            tg.cancel_scope.cancel()
    finally:
        watchdog.close()
        if listener is not None:
            await listener.aclose()
        if server is not None:
            server.close()
        if fleet is not None:
            fleet.leave()
        store.close()
    if damage is not None:
        raise damage
    return 0


def _file_check_due(config: Config, last: float) -> bool:
    every = config.polling.database_check_seconds
    return every > 0 and time.monotonic() - last >= every


async def _check_file(store: SQLiteStore) -> CorruptDatabase | None:
    """The SQLite file read whole, in a thread (it reads every page: ~0.3 s at 100,000
    runs, which the event loop must not wait out); the damage found, if any. Since a run
    no longer checks the file when it picks up its row (a cost per run), this is what
    finds a damaged page no query has read yet."""
    from cgr_store import CorruptDatabase

    try:
        await anyio.to_thread.run_sync(store.check_file)
    except CorruptDatabase as exc:
        return exc
    except Exception:
        log.warning("could not check the database file; trying again later", exc_info=True)
    return None


async def _wait_for_github(config: Config, watchdog: Watchdog, cap: float = 60.0) -> None:
    """Return once GitHub answers; while it is unreachable (network down at boot, an
    outage, a rate limit) try again with a doubling delay up to ``cap`` seconds. A refused
    token or a wrong URL (4xx) is raised: waiting cannot fix it."""
    from cgr_discovery import GitHubUnavailable, RateLimited

    delay = 1.0
    while True:
        try:
            async with open_github(config) as github:
                # A real request even when bot_login is set (then open_github makes none);
                # /rate_limit costs no quota.
                await github.gh.getitem("/rate_limit")
                return
        except (GitHubUnavailable, RateLimited, OSError) as exc:
            log.warning("GitHub is not reachable (%s); trying again in %gs", exc, delay)
            notify(f"STATUS=waiting for GitHub: {str(exc)[:200]}")
            watchdog.beat()
            await anyio.sleep(delay)
            delay = min(delay * 2, cap)


async def _bind_webhooks(config: Config) -> anyio.abc.Listener[anyio.abc.SocketStream] | None:
    from cgr_cli.schedule._webhooks import bind

    return await bind(config) if config.webhook.listen else None


def _start_webhooks(  # noqa: PLR0917 - the daemon's parts, each named once
    config: Config,
    store: Store,
    github: GitHubSession,
    metrics: Metrics,
    wake: _Wake,
    tg: anyio.abc.TaskGroup,
    listener: anyio.abc.Listener[anyio.abc.SocketStream] | None,
) -> WebhookIntake | None:
    """Receive deliveries in this loop when ``webhook.listen`` is set (_webhooks)."""
    from cgr_cli.schedule._webhooks import open_intake

    intake = open_intake(config, store, github.bot, metrics=metrics, wake=wake.set)
    if intake is None or listener is None:
        return None
    intake.attach(listener)
    metrics.webhook_health = intake.health
    tg.start_soon(intake.serve, listener)
    log.info("receiving webhooks on %s:%d; reconciling every %gs", *(intake.address or ("", 0)),
             config.webhook.reconcile_seconds)  # fmt: skip
    return intake


class _Wake:
    """Wakes the loop early: on a signal, or when a child ends (its slot is free)."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()  # anyio events cannot be reset

    async def wait(self) -> None:
        await self._event.wait()

    def watch(self, handle: ChildHandle) -> None:
        async def on_exit() -> None:
            await handle.wait()
            self.set()

        self._tg.start_soon(on_exit)


async def _watch_signals(stop: anyio.Event, wake: _Wake) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            stop.set()
            wake.set()
            return


async def _iteration(
    config: Config,
    *,
    config_path: Path | None,
    store: Store,
    github: GitHubSession,
    executor: SubprocessExecutor,
    host: str,
    me: ProcessIdentity,
    wake: _Wake,
    cancelled_since: dict[str, float],
    unclaimed: set[str],
    metrics: Metrics,
    reap_due: bool = True,
    intake: WebhookIntake | None = None,
    fleet: Fleet | None = None,
    pending: _Pending | None = None,
) -> None:
    from cgr_cli.run._report import Outcome
    from cgr_cli.schedule._reaper import end_run, reap
    from cgr_cli.schedule._tick import child_log_path
    from cgr_store import RunStatus

    for ended in executor.reap():
        log.info("run %s ended: %s", ended.key, ended.status, extra={"run_id": ended.key})
        metrics.run_finished(store.get_run(ended.key))
    _measure_claims(store, unclaimed, metrics)
    now = time.monotonic()
    for key in list(executor.running):
        if store.get_run(key).status is not RunStatus.CANCELLED:
            continue
        # Cancelled in the store: by `cgr cancel` (which also signals the child, which then
        # reports - leave it time to) or from another host (the child's own heartbeat
        # notices). A child still there after the grace is ended here.
        since = cancelled_since.setdefault(key, now)
        if now - since > config.timeouts.watchdog_grace_seconds + 10:
            log.info("run %s was cancelled in the store; ending its process", key)
            await executor.terminate(key)
    for key in set(cancelled_since) - set(executor.running):
        del cancelled_since[key]
    if reap_due:
        reaped = await reap(config, store, github, host=host)
        if any(reaped.as_dict().values()):
            log.info("reaped: %s", {k: v for k, v in reaped.as_dict().items() if v})
    # Discovery runs even with no free slot: `@bot cancel` (which frees one) must not wait
    # behind the work that fills them; other jobs simply stay pending.
    slots = min(executor.free_slots(), free_slots(config, store, host))
    report = PassReport()
    # PostgreSQL: the leader polls, every host claims (_fleet); SQLite: plan_pass, or with
    # webhooks a full poll only when reconciliation is due, else the hinted repos.
    plan = _plan_for(intake, pending, reap_due=reap_due)
    planned = await fleet_pass(
        fleet, store, github, running=len(executor.running), slots=slots, report=report,
        hints=intake.take_hints if intake is not None else None,
    ) if fleet is not None else await plan(
        config, store, github, host=host, slots=slots, owner=me, report=report
    )  # fmt: skip
    for run in planned:
        try:
            warm_before = executor.standby_starts
            handle = await executor.start_warm(
                run_args(config_path, run), log_path=child_log_path(config, run.id), key=run.id
            )
        except Exception as exc:
            log.exception("could not start run %s", run.id)
            await end_run(
                config, store, github, run, RunStatus.FAILED, outcome=Outcome.FAILED,
                error=f"cgr could not start the run's process: {exc}",
            )  # fmt: skip
            continue
        record_child(
            store, run.id, handle.identity, lease=fleet.lease if fleet is not None else None
        )
        wake.watch(handle)
        metrics.run_started(str(run.kind))
        unclaimed.add(run.id)
        how = "standby" if executor.standby_starts > warm_before else "cold start"
        log.info(
            "started run %s for %s#%s (pid %d, %s)", run.id, run.repo, run.target, handle.pid, how
        )
    if pending is not None:
        pending.note(report)
    if report.pending or report.errors:
        log.info("pending: %s; errors: %s", report.pending, report.errors)
    for backoff in report.backed_off:
        log.info(
            "backed off: %s#%d failed %d time(s) before its claim; tried again from %s",
            backoff.repo, backoff.target, backoff.failures, backoff.retry_at.isoformat(),
        )  # fmt: skip


def _plan_for(
    intake: WebhookIntake | None, pending: _Pending | None, *, reap_due: bool
) -> PlanPass:
    """The SQLite pass: the webhook intake's, else every repository once per interval and
    the pending ones on a pass woken by a child's end."""
    if intake is not None:
        return intake.plan
    if pending is not None and not reap_due:
        return pending.narrowed(plan_pass)
    return plan_pass


class _Pending:
    """The repositories whose jobs the last pass left pending (no free slot), in the order
    passes take jobs.

    A pass woken by a child's end has a slot to fill, and the jobs for it were seen a
    moment ago: re-reading every repository for them (three lists each) on every refill
    cost CPU and requests on a busy host (bench_scheduling: 2.2 CPU-s of the daemon's own
    over 30 runs, and 0.13 CPU-s per run less in all once narrowed). So such a pass reads
    the first of these repositories alone, afresh (nothing of the old listing is trusted:
    labels, assignees and comments are read again), and the others only when it has fewer
    jobs than free slots (a job gone meanwhile); the ones it did not read stay pending.
    Every other repository waits for the interval's full pass, as it would have with no
    child ending. (``cgr tick``'s child takes its next job the same way.)
    """

    def __init__(self) -> None:
        self.repos: list[str] | None = None  # None: no pass yet, read them all
        self._unread: list[str] = []  # pending, not read by the last narrowed pass

    def note(self, report: PassReport) -> None:
        self.repos = list(dict.fromkeys([*report.pending_repos(), *self._unread]))
        self._unread = []

    def narrowed(self, plan: PlanPass) -> PlanPass:
        if self.repos is None:
            return plan
        repos = self.repos

        async def narrowed_pass(config: Config, *args: Any, slots: int, **kwargs: Any) -> list[Run]:
            async def plan_over(polled: list[str], most: int) -> list[Run]:
                narrowed = msgspec.structs.replace(config, repositories=polled)
                return await plan(narrowed, *args, slots=most, **kwargs)

            planned, self._unread = await plan_first_pending(plan_over, repos, slots)
            return planned

        return narrowed_pass


def _measure_claims(store: Store, unclaimed: set[str], metrics: Metrics) -> None:
    """Claim latency: from the run row written at discovery to its claim on GitHub.

    The child claims (``cgr run``), so the daemon reads the claim's event from the store
    once the run has left ``queued``.
    """
    from cgr_store import RunStatus

    for key in list(unclaimed):
        run = store.get_run(key)
        if run.status is RunStatus.QUEUED:
            continue
        unclaimed.discard(key)
        claimed = next((e.at for e in store.events(key) if e.to_status is RunStatus.CLAIMED), None)
        if claimed is not None:
            metrics.claim_latency((claimed - run.created_at).total_seconds())


async def _drain(
    config: Config,
    *,
    store: Store,
    github: GitHubSession,
    executor: SubprocessExecutor,
    lock: DaemonLock,
    grace: float,
) -> None:
    from cgr_cli.schedule._control import explain_cancel, finish_cancelled

    deadline = time.monotonic() + grace
    handed_back: set[str] = set()
    while executor.running and time.monotonic() < deadline:
        lock.heartbeat()
        _hand_back_unstarted(store, executor, handed_back)
        await anyio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    why = f"the cgr daemon stopped and the run did not finish within its {grace:g}s grace period"
    for key in list(executor.running):
        log.info("ending run %s (grace period over)", key)
        await executor.terminate(key)
        if _handed_back(store, key):
            # Its agent had not begun: the SIGTERM sent it back to the queue (see
            # run/_pipeline._watch_signals), where the next scheduler takes it up.
            log.info("run %s went back to the queue", key)
            continue
        if not await explain_cancel(config, store, github, key, why=why):
            await finish_cancelled(config, store, github, key, why=why)
    for ended in executor.reap():
        log.info("run %s ended: %s", ended.key, ended.status)


def _handed_back(store: Store, run_id: str) -> bool:
    """Whether the run is back in the queue (its process handed it back)."""
    from cgr_store import RunStatus, StoreError

    try:
        return store.get_run(run_id).status is RunStatus.QUEUED
    except StoreError:
        return False


def _hand_back_unstarted(store: Store, executor: SubprocessExecutor, done: set[str]) -> None:
    """Ask each child whose run is still ``claimed`` (claiming, checking out, waiting for an
    agent slot: its agent not begun) to hand it back to the queue (SIGUSR1, see
    run/_pipeline._watch_signals): the grace is for the agents at work, and a run ahead
    that took a slot freed during it would start an agent the grace then cuts. The next
    scheduler takes them up. A child asked once is not asked again; a run that began its
    agent meanwhile goes on (the child ignores the signal then)."""
    import signal as signals

    from cgr_exec import signal_identity
    from cgr_store import RunStatus, StoreError

    for key, handle in list(executor.running.items()):
        # A child younger than this may not yet note the request (its interpreter starting,
        # cgr_cli._hand_back): asked at a later pass instead.
        if key in done or time.monotonic() - handle.started < 1.0:
            continue
        try:
            claimed = store.get_run(key).status is RunStatus.CLAIMED
        except StoreError:
            continue
        if claimed:
            done.add(key)
            log.info("run %s has not begun its agent: handing it back to the queue", key)
            signal_identity(handle.identity, signals.SIGUSR1)
