"""Subprocess-daemon strategy: a long-running async parent that runs commands as children.

Used by ``cgr daemon``: it spawns ``cgr run --run-id ...`` children, keeps at most
``limit`` of them running, knows how each ended, and drains them on shutdown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, cast

import anyio
from anyio.abc import TaskGroup

from ._confine import Confinement
from ._errors import (
    CapacityError,
    DuplicateKeyError,
    ExecutorClosedError,
    NoSuchProcessError,
    UnknownChildError,
    open_log,
)
from ._fork_client import ForkedChild, ForkServer
from ._identity import ProcessIdentity
from ._pipes import wait_exit
from ._signals import group_alive, signal_identity_group
from ._spawn import spawn
from ._standby import STANDBY_ENV_VAR, send_job, standby_pair
from ._status import ChildExit, ExitStatus

__all__ = ["ChildHandle", "SubprocessExecutor", "end_group"]

_POLL = 0.02
# A standby that died before it got a job is not replaced sooner than this: a program that
# cannot start (a broken install) must not be restarted in a loop; jobs start cold meanwhile.
_STANDBY_RETRY_SECONDS = 30.0
# How long a job waits for the standby a fork server is forking (its start-up included)
# before the server is given up and the job starts cold.
_FORK_WAIT_SECONDS = 30.0


@dataclass(slots=True)
class _WarmSpec:
    argv: tuple[str, ...]
    count: int
    env: Mapping[str, str] | None
    cwd: str | os.PathLike[str] | None
    fork_server: bool


class _SpawnedChild:
    """A child we spawned (its ``Popen``), seen through the operations a forked standby
    (:class:`~cgr_exec._fork_client.ForkedChild`) offers too."""

    __slots__ = ("popen",)

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self) -> ExitStatus:
        return ExitStatus.from_returncode(self.popen.wait())

    async def wait_exit(self) -> ExitStatus:
        return ExitStatus.from_returncode(await wait_exit(self.popen))


_Child = _SpawnedChild | ForkedChild


@dataclass(slots=True)
class _Standby:
    process: _Child
    identity: ProcessIdentity
    end: socket.socket  # the parent's end of the pair; the child's is its stdin


async def end_group(identity: ProcessIdentity, grace: float) -> None:
    """SIGTERM the group ``identity`` leads, wait up to ``grace`` seconds, then SIGKILL.

    Returns once no live process of the group is left (or right after the SIGKILL).
    """
    if not signal_identity_group(identity, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    # Grandchildren are not our children: /proc is the only place to watch them end.
    while group_alive(identity):
        if time.monotonic() >= deadline:
            signal_identity_group(identity, signal.SIGKILL)
            return
        await anyio.sleep(_POLL)


class ChildHandle:
    """One child of a :class:`SubprocessExecutor`; ``exit`` is set once it has ended."""

    __slots__ = ("_done", "_process", "argv", "exit", "identity", "key", "log_path", "started")

    def __init__(
        self,
        key: str,
        argv: tuple[str, ...],
        identity: ProcessIdentity,
        log_path: Path,
        process: _Child,
    ) -> None:
        self.key = key
        self.argv = argv
        self.identity = identity
        self.log_path = log_path
        self.started = time.monotonic()
        self.exit: ChildExit | None = None
        self._process = process
        self._done = anyio.Event()

    @property
    def pid(self) -> int:
        return self.identity.pid

    async def wait(self) -> ChildExit:
        """Wait until the child has ended and been reaped."""
        await self._done.wait()
        return cast(ChildExit, self.exit)  # set before _done

    def __repr__(self) -> str:
        state = "running" if self.exit is None else str(self.exit.status)
        return f"<ChildHandle {self.key!r} pid={self.pid} {state}>"


class SubprocessExecutor:
    """Run commands as children of a long-running async parent, at most ``limit`` at once.

    Use it as an async context manager: leaving the block shuts every child down
    gracefully (SIGTERM to its process group, ``grace`` seconds, SIGKILL) and reaps it,
    even when the block is left by an exception or cancellation.

    When all slots are taken, :meth:`start` *refuses* with :class:`CapacityError` by
    default - a poller should leave work queued rather than claim it - and *waits* for a
    free slot with ``wait=True``; :meth:`wait_slot` waits without starting anything.

    Every child runs in its own session and process group (so one ``killpg`` reaches
    everything it spawned and a terminal's Ctrl-C does not), reads /dev/null and writes
    stdout and stderr to its log file.
    """

    def __init__(self, limit: int = 3, *, grace: float = 10.0) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self.grace = grace
        self._running: dict[str, ChildHandle] = {}
        self._finished: list[ChildExit] = []
        self._reserved = 0
        self._slot_freed: anyio.Event | None = None
        self._tg: TaskGroup | None = None
        self._closed = False
        self._warm: _WarmSpec | None = None
        self._standbys: list[_Standby] = []  # oldest (most likely ready) first
        self._standby_died_at: float | None = None
        self._fork_server: ForkServer | None = None
        self.standby_starts = 0  # jobs handed to a standby (the rest started cold)

    async def __aenter__(self) -> Self:
        if self._tg is not None or self._closed:
            raise ExecutorClosedError("a SubprocessExecutor can be entered only once")
        self._slot_freed = anyio.Event()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        if tg is None:
            raise ExecutorClosedError("the executor was never entered")
        try:
            # Shielded: children must be ended and reaped even when we leave by cancellation.
            with anyio.CancelScope(shield=True):
                await self.shutdown(self.grace)
        finally:
            result = await tg.__aexit__(exc_type, exc, tb)
        return result

    # -- what is running and what has ended ---------------------------------------------

    @property
    def running(self) -> Mapping[str, ChildHandle]:
        """Children that have not ended yet, by key (a snapshot)."""
        return dict(self._running)

    @property
    def finished(self) -> list[ChildExit]:
        """Children that ended since the last :meth:`reap` (a snapshot, oldest first)."""
        return list(self._finished)

    def identities(self) -> dict[str, ProcessIdentity]:
        """Identities of the running children, by key."""
        return {key: handle.identity for key, handle in self._running.items()}

    def reap(self) -> list[ChildExit]:
        """Return and forget the children that ended since the last call (never blocks).

        Exits are collected as they happen; a long-running daemon calls this to hand them
        on (e.g. to its store) so the list does not grow without bound.
        """
        finished, self._finished = self._finished, []
        return finished

    def free_slots(self) -> int:
        return max(0, self.limit - len(self._running) - self._reserved)

    async def wait_slot(self) -> None:
        """Wait until a child may start. Raises :class:`ExecutorClosedError` on shutdown."""
        while True:
            self._check_open()
            if self.free_slots() > 0:
                return
            await cast(anyio.Event, self._slot_freed).wait()

    # -- starting and ending children ---------------------------------------------------

    async def start(
        self,
        argv: Sequence[str],
        *,
        log_path: str | os.PathLike[str],
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        key: str | None = None,
        wait: bool = False,
        confinement: Confinement | None = None,
        job: str | None = None,
        job_cgroup: bool | None = None,
    ) -> ChildHandle:
        """Start ``argv`` as a child; return its handle once it runs.

        ``env`` replaces the environment entirely (None inherits ours). The log file is
        created (0600) or appended to. ``confinement``, ``job`` and ``job_cgroup`` work as
        in :func:`supervise`. Raises :class:`CapacityError` when full (unless ``wait``),
        :class:`DuplicateKeyError`, :class:`SpawnError` (command not found, bad ``cwd``),
        :class:`LogFileError`, :class:`ConfinementError` (nothing was run),
        :class:`JobMarkerError` and :class:`ExecutorClosedError`.
        """
        tg = await self._admit(key, wait=wait)
        argv = tuple(os.fspath(a) for a in argv)
        path = Path(log_path)
        popen = self._spawn(
            argv, path, cwd, env, confinement=confinement, job=job, job_cgroup=job_cgroup
        )
        # Not reaped until _watch reaps it, so the pid still names this child.
        identity = ProcessIdentity.of(popen.pid)
        child_key = key if key is not None else str(popen.pid)
        handle = ChildHandle(child_key, argv, identity, path, _SpawnedChild(popen))
        self._running[handle.key] = handle
        tg.start_soon(self._watch, handle, name=f"cgr-exec watch {handle.key}")
        return handle

    async def _admit(self, key: str | None, *, wait: bool) -> TaskGroup:
        """Whether a child may start now (every start, cold or warm, asks here): waits for
        a slot with ``wait``; raises ExecutorClosedError, DuplicateKeyError, CapacityError."""
        if wait:
            await self.wait_slot()
        tg = self._check_open()
        if key is not None and key in self._running:
            raise DuplicateKeyError(key)
        if self.free_slots() == 0:
            raise CapacityError(self.limit, len(self._running) + self._reserved)
        return tg

    @staticmethod
    def _spawn(
        argv: tuple[str, ...],
        log_path: Path,
        cwd: str | os.PathLike[str] | None,
        env: Mapping[str, str] | None,
        *,
        confinement: Confinement | None,
        job: str | None,
        job_cgroup: bool | None,
    ) -> subprocess.Popen[bytes]:
        log_fd = open_log(log_path)
        try:
            # Popen runs in the event loop's thread: fork/exec (vfork when nothing runs
            # between them) takes well under a millisecond, and Popen reports exec
            # failures synchronously.
            return spawn(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                confinement=confinement,
                job=job,
                job_cgroup=job_cgroup,
            )
        finally:
            os.close(log_fd)  # the child has its own copy

    # -- standby children (see _standby) -------------------------------------------------

    def keep_warm(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        count: int = 1,
        fork_server: bool = False,
    ) -> None:
        """From now on keep ``count`` processes of ``argv`` started and waiting for a job
        (``count`` jobs arriving at once all skip the start-up).

        :meth:`start_warm` hands the waiting process (the *standby*) a job's arguments,
        so the job skips the program's start-up; the program must call
        :func:`cgr_exec.receive_job` when :data:`cgr_exec.STANDBY_ENV_VAR` is set (and
        then act on the arguments it returns, as if started with them). The standby is
        not a child of any slot; it is ended on :meth:`shutdown`.

        With ``fork_server`` one process of ``argv`` does the start-up once and forks
        every standby from there (``_fork_server``): each job then costs no start-up CPU
        either. The program must have no threads when it calls ``receive_job``; if the
        server cannot serve (threads, or it died) standbys are started as processes.
        """
        self._check_open()
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        self._warm = _WarmSpec(tuple(os.fspath(a) for a in argv), count, env, cwd, fork_server)
        self._refill_standby()

    async def start_warm(
        self,
        args: Sequence[str],
        *,
        log_path: str | os.PathLike[str],
        key: str | None = None,
        wait: bool = False,
    ) -> ChildHandle:
        """Start ``[*argv, *args]`` (``argv`` from :meth:`keep_warm`) as a child, like
        :meth:`start`: handed to the standby when one is waiting, else started cold.

        A new standby is started at once for the next job.
        """
        warm = self._warm
        if warm is None:
            raise ExecutorClosedError("start_warm() needs keep_warm() first")
        argv = (*warm.argv, *(os.fspath(a) for a in args))
        tg = await self._admit(key, wait=wait)
        handle = None
        await self._await_forked()
        if self._standbys:
            # Opened before the standby is taken: an unusable log fails here (LogFileError)
            # and leaves the standby waiting for the next job.
            log_fd = open_log(log_path)
            standby = self._standbys.pop(0)
            handle = self._hand_over(
                standby, argv=argv, args=args, log_path=Path(log_path), log_fd=log_fd, key=key
            )
        if handle is None:
            handle = await self.start(argv, log_path=log_path, cwd=warm.cwd, env=warm.env, key=key)
        else:
            self._running[handle.key] = handle
            tg.start_soon(self._watch, handle, name=f"cgr-exec watch {handle.key}")
            self.standby_starts += 1
        self._refill_standby()
        return handle

    def _hand_over(
        self,
        standby: _Standby,
        *,
        argv: tuple[str, ...],
        args: Sequence[str],
        log_path: Path,
        log_fd: int,
        key: str | None,
    ) -> ChildHandle | None:
        """Give the job to ``standby``; None when it is gone (the job then starts cold)."""
        try:
            if standby.process.running():
                send_job(standby.end, [os.fspath(a) for a in args], log_fd)
                return ChildHandle(
                    key if key is not None else str(standby.process.pid),
                    argv,
                    standby.identity,
                    log_path,
                    standby.process,
                )
        except OSError:
            pass  # it died between the check and the send
        finally:
            os.close(log_fd)  # the child has its own copy (or none: it is gone)
            standby.end.close()  # a sent message stays queued for the child
        self._standby_died_at = time.monotonic()
        signal_identity_group(standby.identity, signal.SIGKILL)
        standby.process.wait()
        return None

    def _refill_standby(self) -> None:
        warm = self._warm
        if warm is None or self._closed:
            return
        died = self._standby_died_at
        if died is not None and time.monotonic() - died < _STANDBY_RETRY_SECONDS:
            return
        server = self._serving(warm)
        if server is not None:
            self._collect_forked()
            while len(self._standbys) + server.pending < warm.count:
                parent_end, child_end = standby_pair()
                if not server.ask(parent_end, child_end):
                    break  # it has gone: the standbys below are processes of their own
            if server.serving:
                return
        while len(self._standbys) < warm.count and self._start_standby(warm):
            pass

    def _serving(self, warm: _WarmSpec) -> ForkServer | None:
        """The fork server (started on first use), or None when standbys are spawned."""
        if not warm.fork_server:
            return None
        if self._fork_server is None:
            try:
                self._fork_server = ForkServer.start(warm.argv, env=warm.env, cwd=warm.cwd)
            except Exception:
                warm.fork_server = False  # jobs start cold; their own start says why
                self._standby_died_at = time.monotonic()
                return None
        return self._fork_server

    async def _await_forked(self) -> None:
        """Collect the forked standbys; when none is ready but one is being forked (the
        server is still doing its start-up, as right after keep_warm), wait for it: a cold
        start would do the same start-up, begun later. A server that does not deliver in
        time is retired (asked for no more copies), and standbys are processes of their own
        from then on."""
        self._collect_forked()
        server = self._fork_server
        if self._standbys or server is None or not server.serving or not server.pending:
            return
        if await server.wait_forked(_FORK_WAIT_SECONDS):
            self._collect_forked()
        else:
            server.retire()

    def _collect_forked(self) -> None:
        """Take the standbys the fork server has forked since the last call."""
        if self._fork_server is None:
            return
        for child, end in self._fork_server.take_forked():
            try:
                identity = ProcessIdentity.of(child.pid)
            except NoSuchProcessError:
                identity = None
            # Alive after its identity was read: the identity is that very process's.
            if identity is None or not child.running():
                child.close()
                end.close()
                self._standby_died_at = time.monotonic()
                continue
            self._standbys.append(_Standby(child, identity, end))

    def _start_standby(self, warm: _WarmSpec) -> bool:
        env = {**(os.environ if warm.env is None else warm.env), STANDBY_ENV_VAR: "1"}
        parent_end, child_end = standby_pair()
        try:
            popen = spawn(
                warm.argv,
                stdin=child_end.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=warm.cwd,
                env=env,
            )
        except Exception:
            parent_end.close()
            self._standby_died_at = time.monotonic()
            return False  # jobs start cold; their own start reports what is wrong
        finally:
            child_end.close()
        identity = ProcessIdentity.of(popen.pid)
        self._standbys.append(_Standby(_SpawnedChild(popen), identity, parent_end))
        return True

    def _end_standbys(self) -> None:
        standbys, self._standbys = self._standbys, []
        for standby in standbys:
            self._end_standby(standby)

    @staticmethod
    def _end_standby(standby: _Standby) -> None:
        # It holds nothing but loaded code (no job, no files of its own): SIGKILL ends it
        # at once, even while it is still importing and not yet reading its socket.
        standby.end.close()
        signal_identity_group(standby.identity, signal.SIGKILL)
        standby.process.wait()

    async def _watch(self, handle: ChildHandle) -> None:
        status = None
        try:
            # Shielded: cancelling the owner must not cut a child's watch short. __aexit__
            # then ends every child gracefully (SIGTERM, grace, SIGKILL) and this returns.
            with anyio.CancelScope(shield=True):
                status = await handle._process.wait_exit()
        finally:
            # Also on cancellation (executor torn down abnormally): never leave a zombie.
            if status is None:
                signal_identity_group(handle.identity, signal.SIGKILL)
                status = handle._process.wait()
            handle.exit = ChildExit(
                key=handle.key,
                identity=handle.identity,
                status=status,
                duration=time.monotonic() - handle.started,
                log_path=handle.log_path,
            )
            del self._running[handle.key]
            self._finished.append(handle.exit)
            handle._done.set()
            self._notify_slot()

    def _notify_slot(self) -> None:
        if self._slot_freed is not None:
            self._slot_freed.set()
            self._slot_freed = anyio.Event()

    async def terminate(self, key: str, grace: float | None = None) -> ChildExit:
        """End one child and its process group (SIGTERM, ``grace`` s, SIGKILL); reap it."""
        handle = self._running.get(key)
        if handle is None:
            raise UnknownChildError(key)
        await end_group(handle.identity, self.grace if grace is None else grace)
        return await handle.wait()

    async def shutdown(self, grace: float | None = None) -> list[ChildExit]:
        """Start no more children; end every running one gracefully and reap them all.

        Returns how each child that was running ended.
        """
        self._closed = True
        self._notify_slot()  # wake wait_slot() callers so they see the executor is closed
        self._collect_forked()
        self._end_standbys()
        handles = list(self._running.values())
        grace = self.grace if grace is None else grace
        async with anyio.create_task_group() as tg:
            for handle in handles:
                tg.start_soon(end_group, handle.identity, grace)
        ended = [await handle.wait() for handle in handles]
        # Last: it reports the exits of the jobs it forked. Copies it forked that were
        # never collected read end-of-file on their sockets and exit.
        server, self._fork_server = self._fork_server, None
        if server is not None:
            server.close()
        return ended

    def _check_open(self) -> TaskGroup:
        if self._closed:
            raise ExecutorClosedError("the executor has been shut down; it starts no children")
        if self._tg is None:
            raise ExecutorClosedError(
                "enter the executor first: `async with SubprocessExecutor(...) as executor:`"
            )
        return self._tg
