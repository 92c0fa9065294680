"""Supervise one command: pipes, streaming lines, timeout, watchdog, stop, group kill.

This is how the runner runs the agent CLI: prompt on stdin, stream-json lines on stdout
handed to a callback as they arrive, both streams kept in files, and every way of ending
it (timeout, watchdog, caller's stop) reaching the whole process group.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, cast

import anyio
from anyio.abc import TaskGroup

from ._confine import Confinement
from ._daemon import end_group
from ._errors import StdinFileError, WatchdogPatternError, open_log
from ._held import _RELEASE, HeldStart
from ._identity import ProcessIdentity
from ._pipes import read_chunk, wait_exit, write_all
from ._signals import group_alive
from ._spawn import spawn_piped
from ._status import ExitStatus

__all__ = ["LineCallback", "NoteCallback", "StopHandle", "SupervisionResult", "supervise"]

DEFAULT_MAX_LINE_BYTES = 1024 * 1024

LineCallback = Callable[[str], "str | Awaitable[str | None] | None"]
"""Called with each stdout line (newline stripped, UTF-8 with replacement characters).
Returning a string stops the command with that string as the stop reason."""

NoteCallback = Callable[[str], None]
"""Called with a one-line note when output is skipped (a line over ``max_line_bytes``)
or no longer stored (``max_output_bytes`` reached)."""

EndedBy = Literal["exit", "timeout", "idle", "watchdog", "stopped"]


class StopHandle:
    """Lets a caller end a supervised command early, from any task in its event loop.

    Create one, pass it as ``supervise(..., stop=handle)`` and call
    ``handle.stop("cost ceiling crossed")`` when the command must end. The first reason
    wins. Not thread-safe: call it from the event loop's thread.
    """

    __slots__ = ("_listeners", "reason")

    def __init__(self) -> None:
        self.reason: str | None = None
        self._listeners: list[Callable[[], None]] = []

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def stop(self, reason: str = "stopped by caller") -> None:
        if self.reason is not None:
            return
        self.reason = reason
        for listener in self._listeners:
            listener()


@dataclass(frozen=True, slots=True)
class SupervisionResult:
    """How a supervised command ended."""

    pid: int
    identity: ProcessIdentity
    status: ExitStatus
    duration: float
    """Seconds from spawn to the leader's exit."""
    ended_by: EndedBy
    """What ended it first: its own exit, the timeout, the idle timeout, the watchdog or
    the caller's stop."""
    timed_out: bool
    idle_timed_out: bool
    """No output on stdout or stderr for ``idle_timeout`` seconds."""
    watchdog_pattern: str | None
    """The pattern (its source text) that fired, if any."""
    watchdog_line: str | None
    stop_reason: str | None
    stdout_path: Path
    stderr_path: Path
    stdout_bytes: int = 0
    """Bytes the command wrote to stdout (stored or not)."""
    stderr_bytes: int = 0
    stdout_truncated: bool = False
    """True when ``max_output_bytes`` was reached: the file holds only the first bytes."""
    stderr_truncated: bool = False
    skipped_lines: int = 0
    """Lines (stdout and stderr) over ``max_line_bytes``: neither passed to the callback
    nor searched by the watchdog."""

    @property
    def returncode(self) -> int:
        return self.status.returncode

    @property
    def exit_code(self) -> int | None:
        return self.status.code

    @property
    def signal(self) -> int | None:
        return self.status.signal


def _compile(patterns: Sequence[str | re.Pattern[str]]) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        if isinstance(pattern, re.Pattern):
            compiled.append(pattern)
            continue
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise WatchdogPatternError(pattern, str(exc)) from exc
    return compiled


class _Sink:
    """One stream's output file, written until its storage cap, then one note line."""

    __slots__ = ("cap", "fd", "name", "total", "truncated", "written")

    def __init__(self, name: str, fd: int, cap: int | None) -> None:
        self.name = name
        self.fd = fd
        self.cap = cap
        self.written = 0
        self.total = 0
        self.truncated = False

    def store(self, chunk: bytes, note: Callable[[str], None]) -> None:
        """Write ``chunk`` (blocking: a local file, at most 64 KiB at a time)."""
        self.total += len(chunk)
        if self.truncated:
            return
        if self.cap is None or self.written + len(chunk) <= self.cap:
            _write_file(self.fd, chunk)
            self.written += len(chunk)
            return
        _write_file(self.fd, chunk[: self.cap - self.written])
        self.written = self.cap
        self.truncated = True
        text = (
            f"cgr-exec: {self.name} reached max_output_bytes={self.cap}; "
            "the rest is read and parsed but not stored"
        )
        _write_file(self.fd, f"\n[{text}]\n".encode())
        note(text)


class _Run:
    """The mutable state of one supervision (private; the result is frozen)."""

    def __init__(
        self,
        identity: ProcessIdentity,
        watchdog: list[re.Pattern[str]],
        watchdog_grace: float,
        kill_grace: float,
        max_line_bytes: int,
        *,
        on_note: NoteCallback | None,
    ) -> None:
        self.identity = identity
        self.watchdog = watchdog
        self.watchdog_grace = watchdog_grace
        self.kill_grace = kill_grace
        self.max_line_bytes = max_line_bytes
        self.on_note = on_note
        self.skipped_lines = 0
        self.ended_by: EndedBy = "exit"
        self.timed_out = False
        self.idle_timed_out = False
        self.idle_timeout: float | None = None
        self.last_output = time.monotonic()
        self.watchdog_pattern: str | None = None
        self.watchdog_line: str | None = None
        self.stop_reason: str | None = None
        self.exited = False
        self.duration: float | None = None
        self.terminate = anyio.Event()
        self.tg: TaskGroup | None = None

    def request_end(self, cause: EndedBy) -> None:
        if self.terminate.is_set() or self.exited:
            return
        self.ended_by = cause
        self.terminate.set()

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.request_end("stopped")

    def check_watchdog(self, line: str) -> None:
        if self.watchdog_pattern is not None:
            return
        for pattern in self.watchdog:
            if pattern.search(line):
                self.watchdog_pattern = pattern.pattern
                self.watchdog_line = line
                cast(TaskGroup, self.tg).start_soon(self._watchdog_fire)
                return

    async def _watchdog_fire(self) -> None:
        # The grace lets the command finish on its own (e.g. print its final result)
        # after it reported trouble; only then is it ended.
        await anyio.sleep(self.watchdog_grace)
        self.request_end("watchdog")

    async def enforce(self) -> None:
        await self.terminate.wait()
        await end_group(self.identity, self.kill_grace)

    async def timer(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        self.timed_out = True
        self.request_end("timeout")

    async def idle_watch(self, seconds: float) -> None:
        # Sleep until the deadline the latest output implies; output meanwhile moves it.
        while (remaining := self.last_output + seconds - time.monotonic()) > 0:  # noqa: ASYNC110
            await anyio.sleep(remaining)
        self.idle_timed_out = True
        self.request_end("idle")

    def note(self, text: str) -> None:
        if self.on_note is not None:
            self.on_note(text)

    def _skip(self, sink: _Sink) -> None:
        self.skipped_lines += 1
        self.note(
            f"cgr-exec: a {sink.name} line over max_line_bytes={self.max_line_bytes} was skipped"
        )

    async def pump(
        self, fd: int, sink: _Sink, on_line: LineCallback | None, done: anyio.Event
    ) -> None:
        """Copy a pipe to its file and hand out complete lines (split reads reassembled).

        Memory stays bounded by ``max_line_bytes`` plus one read: a line that grows past
        the limit is dropped as soon as it does and the rest of it is discarded as it
        arrives, up to its newline; it is never held whole.
        """
        pending = bytearray()
        skipping = False  # inside a line already known to be too long
        try:
            while chunk := await read_chunk(fd):
                self.last_output = time.monotonic()
                sink.store(chunk, self.note)
                view = memoryview(chunk)
                start = 0
                while (end := chunk.find(b"\n", start)) != -1:
                    if skipping:
                        skipping = False  # the overlong line ends here
                    elif len(pending) + end - start > self.max_line_bytes:
                        self._skip(sink)
                    else:
                        pending += view[start:end]
                        await self._line(bytes(pending), on_line)
                    pending.clear()
                    start = end + 1
                if not skipping and start < len(chunk):
                    if len(pending) + len(chunk) - start > self.max_line_bytes:
                        skipping = True
                        pending.clear()
                        self._skip(sink)
                    else:
                        pending += view[start:]
            if pending and not skipping:  # last line without a trailing newline
                await self._line(bytes(pending), on_line)
        finally:
            done.set()

    async def _line(self, raw: bytes, on_line: LineCallback | None) -> None:
        line = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
        self.check_watchdog(line)
        if on_line is None:
            return
        verdict = on_line(line)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if isinstance(verdict, str):
            self.stop(verdict)

    async def feed(self, fd: int, data: bytes) -> None:
        # BrokenPipeError: the command closed its stdin or exited; it wants no more input.
        with contextlib.suppress(BrokenPipeError):
            await write_all(fd, data)


async def supervise(
    argv: Sequence[str],
    *,
    stdout_path: str | os.PathLike[str],
    stderr_path: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | str | os.PathLike[str] | None = None,
    on_stdout_line: LineCallback | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - the command's limit, not this call's
    idle_timeout: float | None = None,
    watchdog: Sequence[str | re.Pattern[str]] = (),
    watchdog_grace: float = 5.0,
    kill_grace: float = 10.0,
    stop: StopHandle | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_output_bytes: int | None = None,
    on_note: NoteCallback | None = None,
    confinement: Confinement | None = None,
    job: str | None = None,
    job_cgroup: bool | None = None,
    held: HeldStart | None = None,
) -> SupervisionResult:
    """Run ``argv`` to its end under supervision and report how it ended.

    * The command runs in a new session and process group; every way of ending it sends
      SIGTERM to the whole group, waits ``kill_grace`` seconds, then SIGKILLs the group.
      When the command exits by itself, whatever it left running in its group is ended
      the same way (it would otherwise hold our pipes open).
    * ``stdin``: bytes are written through a pipe concurrently with reading the output
      (no deadlock however large); a ``str``/path names a file to read; None is
      /dev/null. ``env`` replaces the environment (None inherits ours).
    * stdout and stderr are written to ``stdout_path`` and ``stderr_path`` (truncated
      first). Each complete stdout line is passed to ``on_stdout_line`` (sync or async);
      returning a string stops the command with that reason. ``stop.stop(reason)`` does
      the same from elsewhere.
    * ``timeout``: wall-clock seconds before the command is ended; ``idle_timeout``:
      seconds without any output (stdout or stderr) before it is ended.
    * ``watchdog``: regular expressions (strings are compiled) searched in every line
      of stdout and stderr; the first match ends the command after ``watchdog_grace``.
    * Output is bounded: a line (stdout or stderr) longer than ``max_line_bytes`` is
      skipped - never held in memory whole, not passed to the callback or the watchdog -
      and ``on_note`` is told; past ``max_output_bytes`` per stream, output is still read
      and parsed but no longer stored, and the file ends with one note line.
    * ``confinement``: applied in the child between fork and exec (Landlock, another
      user); see :class:`Confinement`.
    * ``job``: a marker (e.g. a run id) put in the child's environment as
      ``CGR_EXEC_JOB`` and, where possible (``job_cgroup``: see :func:`prepare_job`), a
      cgroup the child joins before exec, so :func:`kill_job_leftovers` finds whatever it
      leaves behind, even after this process died.
    * ``held``: the child :func:`hold` made ready for this ``argv`` (with the ``cwd``,
      ``env``, ``confinement`` and ``job`` given there, not here): released now, its
      program starts without a fork or a cgroup join on the way; its time limits count
      from here. A ``stdin`` file is read whole and written through the child's pipe.
    * If the caller is cancelled, the group is still ended and the child reaped.

    Raises :class:`SpawnError` (command not found, bad cwd), :class:`StdinFileError`,
    :class:`LogFileError`, :class:`WatchdogPatternError`, :class:`ConfinementError`
    (nothing was run) and :class:`JobMarkerError`; a callback's exception
    propagates (as itself, not in an exception group) after the command was ended and
    reaped.
    """
    patterns = _compile(watchdog)
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be at least 1, not {max_line_bytes}")
    if max_output_bytes is not None and max_output_bytes < 0:
        raise ValueError(f"max_output_bytes must be None or >= 0, not {max_output_bytes}")
    argv = tuple(os.fspath(a) for a in argv)
    if held is not None:
        _check_held(held, argv, (cwd, env, confinement, job, job_cgroup))
        cwd, env, confinement = held.cwd, held.env, held.confinement
        job, job_cgroup = held.job, held.job_cgroup
    out_path, err_path = Path(stdout_path), Path(stderr_path)
    with contextlib.ExitStack() as files:
        # Everything the caller can get wrong is checked before anything is started.
        out_fd = open_log(out_path, append=False)
        files.callback(os.close, out_fd)
        err_fd = open_log(err_path, append=False)
        files.callback(os.close, err_fd)
        waiting: subprocess.Popen[bytes] | None = None
        if held is not None:
            # Released by the first line its pipe carries; the input follows it. (When
            # nothing was held, the command is started below like any other.)
            stdin = _RELEASE + _input_bytes(stdin) if held.held else stdin
            waiting = held.take()
        started = time.monotonic()
        popen = waiting or spawn_piped(
            argv, stdin, cwd=cwd, env=env, confinement=confinement, job=job, job_cgroup=job_cgroup
        )
        # Unreaped until wait_exit below, so this reads the child's own start time.
        identity = ProcessIdentity.of(popen.pid)
        run = _Run(identity, patterns, watchdog_grace, kill_grace, max_line_bytes, on_note=on_note)
        out_sink = _Sink("stdout", out_fd, max_output_bytes)
        err_sink = _Sink("stderr", err_fd, max_output_bytes)
        run.idle_timeout = idle_timeout
        if stop is not None:
            stop._listeners.append(lambda: run.stop(stop.reason or "stopped by caller"))
        pipes = [f for f in (popen.stdin, popen.stdout, popen.stderr) if f is not None]
        for pipe in pipes:
            os.set_blocking(pipe.fileno(), False)
        try:
            await _run(
                popen,
                run,
                stdin=stdin,
                out_sink=out_sink,
                err_sink=err_sink,
                on_stdout_line=on_stdout_line,
                seconds=timeout,
                stop=stop,
            )
        finally:
            with anyio.CancelScope(shield=True):
                # Whatever happened (callback raised, caller cancelled): end the group, reap.
                if popen.returncode is None or group_alive(identity):
                    await end_group(identity, kill_grace)
                await wait_exit(popen)
            for pipe in pipes:
                pipe.close()
            if stop is not None:
                stop._listeners.clear()
    return SupervisionResult(
        pid=popen.pid,
        identity=identity,
        status=ExitStatus.from_returncode(popen.wait()),  # reaped above: returns at once
        duration=run.duration if run.duration is not None else time.monotonic() - started,
        ended_by=run.ended_by,
        timed_out=run.timed_out,
        idle_timed_out=run.idle_timed_out,
        watchdog_pattern=run.watchdog_pattern,
        watchdog_line=run.watchdog_line,
        stop_reason=run.stop_reason,
        stdout_path=out_path,
        stderr_path=err_path,
        stdout_bytes=out_sink.total,
        stderr_bytes=err_sink.total,
        stdout_truncated=out_sink.truncated,
        stderr_truncated=err_sink.truncated,
        skipped_lines=run.skipped_lines,
    )


def _write_file(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _run(
    popen: subprocess.Popen[bytes],
    run: _Run,
    *,
    stdin: bytes | str | os.PathLike[str] | None,
    out_sink: _Sink,
    err_sink: _Sink,
    on_stdout_line: LineCallback | None,
    seconds: float | None,
    stop: StopHandle | None,
) -> None:
    stdout, stderr = cast(IO[bytes], popen.stdout), cast(IO[bytes], popen.stderr)
    try:
        await _run_tasks(
            popen, run, stdout, stderr, stdin, out_sink, err_sink, on_stdout_line, seconds, stop
        )
    except BaseExceptionGroup as group:
        # Only the callback can fail in these tasks; hand its error over unwrapped.
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
            raise group.exceptions[0] from None
        raise


async def _run_tasks(  # noqa: PLR0917 - private, called once
    popen: subprocess.Popen[bytes],
    run: _Run,
    stdout: IO[bytes],
    stderr: IO[bytes],
    stdin: bytes | str | os.PathLike[str] | None,
    out_sink: _Sink,
    err_sink: _Sink,
    on_stdout_line: LineCallback | None,
    seconds: float | None,
    stop: StopHandle | None,
) -> None:
    started = time.monotonic()
    out_done, err_done = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        run.tg = tg
        tg.start_soon(run.pump, stdout.fileno(), out_sink, on_stdout_line, out_done)
        tg.start_soon(run.pump, stderr.fileno(), err_sink, None, err_done)
        if isinstance(stdin, bytes):
            tg.start_soon(_feed_and_close, run, cast(IO[bytes], popen.stdin), stdin)
        tg.start_soon(run.enforce)
        if seconds is not None:
            tg.start_soon(run.timer, seconds)
        if run.idle_timeout is not None:
            tg.start_soon(run.idle_watch, run.idle_timeout)
        if stop is not None and stop.reason is not None:
            run.stop(stop.reason)
        await wait_exit(popen)
        run.duration = time.monotonic() - started
        run.exited = True
        # Processes the command left in its group still hold the pipes' write ends.
        if group_alive(run.identity):
            await end_group(run.identity, run.kill_grace)
        # Drain what is left in the pipes; a process that escaped the group (its own
        # setsid) could hold them open forever, so this is bounded.
        with anyio.move_on_after(max(run.kill_grace, 1.0)):
            await out_done.wait()
            await err_done.wait()
        tg.cancel_scope.cancel()


def _check_held(held: HeldStart, argv: tuple[str, ...], given: tuple[object, ...]) -> None:
    if argv != held.argv:
        raise ValueError(f"supervise: argv {argv!r} is not the held start's {held.argv!r}")
    if any(value is not None for value in given):
        raise ValueError("supervise: a held start's cwd, env, confinement and job are hold()'s")


def _input_bytes(stdin: bytes | str | os.PathLike[str] | None) -> bytes:
    """``supervise``'s ``stdin`` as the bytes to write (a file read whole)."""
    if stdin is None or isinstance(stdin, bytes):
        return stdin or b""
    try:
        with open(stdin, "rb") as f:
            return f.read()
    except OSError as exc:
        raise StdinFileError(os.fspath(stdin), exc) from exc


async def _feed_and_close(run: _Run, pipe: IO[bytes], data: bytes) -> None:
    try:
        await run.feed(pipe.fileno(), data)
    finally:
        # EOF tells the command the input is complete.
        pipe.close()
