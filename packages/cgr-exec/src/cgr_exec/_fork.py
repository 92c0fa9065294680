"""Fork strategy: run a Python callable in a detached, forked child.

Used by short-lived schedulers (``cgr tick``): the parent forks one child per job and may
exit at once; each child is a session leader that outlives the parent, writes to its own
log file and exits with the callable's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ._errors import (
    CapacityError,
    DuplicateKeyError,
    ForkUnsafeError,
    UnknownChildError,
    open_log,
)
from ._identity import ProcessIdentity, read_stat
from ._signals import group_alive, signal_identity_group
from ._status import ChildExit, ExitStatus

__all__ = ["ForkExecutor", "check_fork_safe"]

AfterFork = Callable[[], object]
"""A hook run in the child right after the fork (reopen databases, reseed RNGs, ...)."""

# Exit code of a child whose after-fork hook or callable raised (traceback is in its log).
EXIT_EXCEPTION = 1
# Exit code of a child that failed before it could run user code (log file unusable, ...).
EXIT_SETUP_FAILED = 70  # EX_SOFTWARE from sysexits.h
_POLL = 0.01


def _running_async_library() -> str | None:
    """Name of the async library whose event loop runs in this thread, if any."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    # sniffio (optional) also recognises trio and others. A library that registers with it
    # has imported it, so when it is not in sys.modules no such loop can be running.
    sniffio = sys.modules.get("sniffio")
    if sniffio is None:
        return None
    try:
        return str(sniffio.current_async_library())
    except sniffio.AsyncLibraryNotFoundError:
        return None


def check_fork_safe() -> None:
    """Raise :class:`ForkUnsafeError` unless this process may fork right now.

    Why each rule exists:

    * **Other threads.** ``fork()`` copies only the calling thread. Any lock another thread
      held at that instant (the logging module's, an allocator's, a database driver's) is
      copied *locked* with no thread left to release it, so the child can deadlock on its
      first log line. Python 3.12+ emits a DeprecationWarning for exactly this.
    * **A running event loop.** The child would inherit the loop's selector (epoll fd),
      self-pipe, signal wakeup fd and open sockets, shared with the parent: events are
      stolen by whichever process polls first, and a loop cannot be safely resumed in the
      child. Fork before starting the loop (or use the subprocess strategy).
    """
    # threading only knows the threads it started; C extensions and _thread start others.
    # The kernel's count (what Python 3.12's own fork warning looks at) sees them all.
    stat = read_stat(os.getpid())
    threads = max(threading.active_count(), stat.num_threads if stat is not None else 1)
    library = _running_async_library()
    if threads > 1:
        me = threading.current_thread()
        names = ", ".join(t.name for t in threading.enumerate() if t is not me)
        names = names or "not started through the threading module"
        raise ForkUnsafeError(
            f"refusing to fork: {threads - 1} other thread(s) are alive ({names}); locks "
            "they hold would be copied locked into the child. Fork before starting threads, "
            "or use the subprocess strategy",
            threads=threads,
            async_library=library,
        )
    if library is not None:
        raise ForkUnsafeError(
            f"refusing to fork inside a running {library} event loop: the child would share "
            "the loop's selector and file descriptors. Fork before the loop starts, or use "
            "the subprocess strategy",
            threads=threads,
            async_library=library,
        )


@dataclass(frozen=True, slots=True)
class _Child:
    key: str
    identity: ProcessIdentity
    started: float
    log_path: Path


def _redirect_stdio(log_fd: int) -> None:
    # stdin from /dev/null: a detached job must never read the parent's terminal or pipe.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # The log was opened by the parent (O_APPEND: the child and anything it spawns never
    # overwrite each other); dup2 clears O_CLOEXEC on fds 1 and 2, so grandchildren that
    # exec inherit them while the original fd does not leak into them.
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    # The parent may have replaced sys.stdout/sys.stderr with objects that do not write
    # to fds 1 and 2 (pytest's capture, a daemon's logger): rebind them to the new fds so
    # print() and tracebacks reach the log. closefd=False leaves the fds to the process.
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)


def _exit_code(result: object) -> int:
    if result is None:
        return 0
    if isinstance(result, int):
        return result & 0xFF
    print(result, file=sys.stderr)  # SystemExit("message") convention: message, exit 1
    return 1


def _child_main(fn: Callable[[], object], log_fd: int, hooks: Iterable[AfterFork]) -> NoReturn:
    """Everything the child does. Never returns: the child must not unwind into the
    parent's stack (pytest, the scheduler loop) - it leaves through ``os._exit``."""
    code = EXIT_SETUP_FAILED
    try:
        # A new session: no controlling terminal, so the child survives the parent's
        # terminal closing (SIGHUP) and Ctrl-C in it; and it leads its own process group,
        # so a reaper can end it and everything it spawned with one killpg.
        os.setsid()
        # Inherited Python handlers belong to the parent's logic (a scheduler's graceful
        # shutdown); a job must die on SIGTERM/SIGHUP, and must see SIGCHLD normally so
        # subprocess.wait() works even if the parent ignored it.
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _redirect_stdio(log_fd)
        code = EXIT_EXCEPTION
        for hook in hooks:
            hook()
        code = _exit_code(fn())
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:  # the whole point: any failure is logged, never propagated
        traceback.print_exc()
    finally:
        # os._exit skips atexit handlers and buffered-file flushing (both belong to the
        # parent's copy of the process state), so flush what the job printed ourselves.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):  # nothing left to report to
                stream.flush()
        os._exit(code)


class ForkExecutor:
    """Start Python callables in forked, detached children.

    The parent must be single-threaded with no running event loop (see
    :func:`check_fork_safe`). Children start a new session, read /dev/null, write stdout
    and stderr to their own log file, keep running if the parent exits, and exit with the
    callable's return value (None -> 0, int -> that code, an exception -> 1 with its
    traceback in the log).

    A parent that stays alive calls :meth:`reap` now and then to collect finished children
    (without it they remain zombies until the parent exits).
    """

    def __init__(self, *, limit: int | None = None, after_fork: Iterable[AfterFork] = ()) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 or None, not {limit}")
        self.limit = limit
        self._after_fork = tuple(after_fork)
        self._children: dict[str, _Child] = {}

    def identities(self) -> dict[str, ProcessIdentity]:
        """Children started and not yet reaped, by key."""
        return {key: child.identity for key, child in self._children.items()}

    def free_slots(self) -> int | None:
        """How many more children may start now (None: no limit)."""
        if self.limit is None:
            return None
        return max(0, self.limit - len(self._children))

    def start(
        self,
        fn: Callable[[], object],
        *,
        log_path: str | os.PathLike[str],
        after_fork: Iterable[AfterFork] = (),
        key: str | None = None,
    ) -> ProcessIdentity:
        """Fork a child that runs ``fn()`` and return its identity at once.

        ``after_fork`` hooks (the executor's, then these) run in the child before ``fn``.
        The log file is created (mode 0600) or appended to. Raises
        :class:`ForkUnsafeError`, :class:`CapacityError`, :class:`DuplicateKeyError` or
        :class:`LogFileError` before forking.
        """
        check_fork_safe()
        if key is not None and key in self._children:
            raise DuplicateKeyError(key)
        if self.limit is not None and len(self._children) >= self.limit:
            self.reap()
            if len(self._children) >= self.limit:
                raise CapacityError(self.limit, len(self._children))
        path = Path(log_path)
        hooks = (*self._after_fork, *after_fork)
        # Opened here, not in the child, so a bad path is the caller's error, raised now.
        log_fd = open_log(path)
        # Unflushed buffers would be copied into the child and written twice.
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None in processes started without stdio
                stream.flush()
        started = time.monotonic()
        try:
            pid = os.fork()
        except OSError:  # EAGAIN/ENOMEM: too many processes or no memory
            os.close(log_fd)
            raise
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            _child_main(fn, log_fd, hooks)
        os.close(log_fd)  # the child has its own copy
        # The child cannot have been reaped yet (only we can reap it), so its pid is
        # pinned and reading its start time now is race-free even if it already exited.
        identity = ProcessIdentity.of(pid)
        child_key = key if key is not None else str(pid)
        self._children[child_key] = _Child(child_key, identity, started, path)
        return identity

    def reap(self) -> list[ChildExit]:
        """Collect every finished child without blocking; returns how each ended.

        Only our own children are waited for, by pid: ``waitpid(-1)`` would also steal the
        exit status of children that other code (``subprocess``) is about to wait for.
        """
        finished = []
        for key, child in list(self._children.items()):
            try:
                pid, status = os.waitpid(child.identity.pid, os.WNOHANG)
            except ChildProcessError:  # someone else reaped it (e.g. SIGCHLD ignored)
                pid, status = child.identity.pid, None
            if pid == 0:
                continue
            del self._children[key]
            finished.append(
                ChildExit(
                    key=key,
                    identity=child.identity,
                    status=(
                        ExitStatus.from_wait_status(status) if status is not None else ExitStatus()
                    ),
                    duration=time.monotonic() - child.started,
                    log_path=child.log_path,
                )
            )
        return finished

    def wait(self, timeout: float | None = None) -> list[ChildExit]:
        """Block until every child has ended (or ``timeout`` seconds); reap and return them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = self.reap()
        while self._children and (deadline is None or time.monotonic() < deadline):
            time.sleep(_POLL)
            finished.extend(self.reap())
        return finished

    def terminate(self, key: str, grace: float = 10.0) -> ChildExit:
        """End one child and its process group: SIGTERM, ``grace`` seconds, SIGKILL."""
        child = self._children.get(key)
        if child is None:
            raise UnknownChildError(key)
        return self._end([child], grace)[0]

    def shutdown(self, grace: float = 10.0) -> list[ChildExit]:
        """End every running child (SIGTERM to each group, ``grace``, SIGKILL) and reap all."""
        return self._end(list(self._children.values()), grace)

    def _end(self, children: list[_Child], grace: float) -> list[ChildExit]:
        # Our children are not reaped until _collect, so each pid (and group id) is pinned:
        # the identity checks inside signal_identity_group can only find our own process.
        for child in children:
            signal_identity_group(child.identity, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(group_alive(c.identity) for c in children) and time.monotonic() < deadline:
            time.sleep(_POLL)
        for child in children:
            if group_alive(child.identity):
                signal_identity_group(child.identity, signal.SIGKILL)
        return [self._collect(child) for child in children]

    def _collect(self, child: _Child) -> ChildExit:
        try:
            _, status = os.waitpid(child.identity.pid, 0)
            exit_status = ExitStatus.from_wait_status(status)
        except ChildProcessError:
            exit_status = ExitStatus()
        del self._children[child.key]
        return ChildExit(
            key=child.key,
            identity=child.identity,
            status=exit_status,
            duration=time.monotonic() - child.started,
            log_path=child.log_path,
        )
