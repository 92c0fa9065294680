"""Running the agent under supervision: its own process group, a wall clock, an idle
watchdog, output patterns, and a stop button for the caller (cost ceiling, cancel).

cgr-exec has the process-identity and group-kill primitives; the async supervisor with line
callbacks that this needs was not in cgr-exec when the pipeline was written, so it lives
here for now (see the README). It uses only anyio and the standard library.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

LineCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Supervised:
    """How the agent process ended."""

    exit_code: int | None
    timed_out: bool = False
    idle: bool = False
    watchdog: str | None = None
    stopped: str | None = None
    duration_s: float = 0.0


class Supervisor:
    """One supervised process. ``stop(reason)`` may be called from a line callback."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        stdin_path: Path,
        stdout_path: Path,
        stderr_path: Path,
        on_stdout_line: LineCallback,
        timeout: float,
        idle_timeout: float,
        patterns: Sequence[str] = (),
        grace: float = 10.0,
        redact: Callable[[str], str] = lambda s: s,
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.stdin_path = stdin_path
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.on_stdout_line = on_stdout_line
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.patterns = [re.compile(p) for p in patterns]
        self.grace = grace
        self.redact = redact
        self.pid: int | None = None
        self._stop_reason: str | None = None
        self._watchdog: str | None = None
        self._stop_event = anyio.Event()
        self._last_output = time.monotonic()
        self._pumps_open = 2
        self._pumps_finished = anyio.Event()

    def stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
            self._stop_event.set()

    def _check_patterns(self, line: str) -> None:
        for pattern in self.patterns:
            if pattern.search(line):
                if self._watchdog is None:
                    self._watchdog = f"output matched {pattern.pattern!r}"
                self._stop_event.set()
                return

    async def run(self) -> Supervised:
        started = time.monotonic()
        timed_out = idle = False
        with self.stdin_path.open("rb") as stdin:
            # start_new_session: the agent leads its own process group, so the whole tree
            # it starts (shells, test runners, language servers) can be signalled at once
            # and nothing it does can signal cgr's group.
            process = await anyio.open_process(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=stdin,
                start_new_session=True,
            )
        self.pid = process.pid
        async with process, anyio.create_task_group() as tg:
            if process.stdout is None or process.stderr is None:  # pragma: no cover
                raise RuntimeError("open_process gave no pipes")
            tg.start_soon(self._pump_stdout, process.stdout)
            tg.start_soon(self._pump_stderr, process.stderr)
            deadline = started + self.timeout
            exit_code: int | None = None
            while True:
                with anyio.move_on_after(0.2):
                    exit_code = await process.wait()
                if exit_code is not None and process.returncode is not None:
                    break
                now = time.monotonic()
                if self._stop_event.is_set():
                    break
                if now >= deadline:
                    timed_out = True
                    break
                if now - self._last_output >= self.idle_timeout:
                    idle = True
                    break
            if process.returncode is None:
                exit_code = await self._terminate(process)
            else:
                # The leader exited; children it left in its group are killed too, so no
                # grandchild outlives the run holding the workspace open.
                _killpg(process.pid, signal.SIGKILL)
            # The pumps end at EOF, which a surviving grandchild holding the pipe could
            # delay: bound the wait.
            with anyio.move_on_after(self.grace + 2):
                await self._pumps_finished.wait()
            tg.cancel_scope.cancel()
        return Supervised(
            exit_code=exit_code if exit_code is not None else process.returncode,
            timed_out=timed_out,
            idle=idle,
            watchdog=self._watchdog,
            stopped=self._stop_reason,
            duration_s=time.monotonic() - started,
        )

    def _pump_closed(self) -> None:
        self._pumps_open -= 1
        if self._pumps_open == 0:
            self._pumps_finished.set()

    async def _terminate(self, process: anyio.abc.Process) -> int | None:
        """SIGTERM to the group, ``grace`` seconds, then SIGKILL to the group."""
        _killpg(process.pid, signal.SIGTERM)
        with anyio.move_on_after(self.grace):
            await process.wait()
        _killpg(process.pid, signal.SIGKILL)
        with anyio.move_on_after(5):
            await process.wait()
        return process.returncode

    async def _pump_stdout(self, stream: anyio.abc.ByteReceiveStream) -> None:
        buffer = b""
        with self.stdout_path.open("ab") as out:
            try:
                async for chunk in stream:
                    self._last_output = time.monotonic()
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for raw in lines:
                        text = raw.decode("utf-8", errors="replace")
                        out.write(self.redact(text).encode("utf-8") + b"\n")
                        out.flush()
                        self._check_patterns(text)
                        self.on_stdout_line(text)
                if buffer:
                    text = buffer.decode("utf-8", errors="replace")
                    out.write(self.redact(text).encode("utf-8") + b"\n")
                    self._check_patterns(text)
                    self.on_stdout_line(text)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
            finally:
                self._pump_closed()

    async def _pump_stderr(self, stream: anyio.abc.ByteReceiveStream) -> None:
        buffer = b""
        with self.stderr_path.open("ab") as err:
            try:
                async for chunk in stream:
                    self._last_output = time.monotonic()
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for raw in lines:
                        text = raw.decode("utf-8", errors="replace")
                        err.write(self.redact(text).encode("utf-8") + b"\n")
                        err.flush()
                        self._check_patterns(text)
                if buffer:
                    err.write(self.redact(buffer.decode("utf-8", "replace")).encode() + b"\n")
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
            finally:
                self._pump_closed()


def _killpg(pgid: int, sig: int) -> None:
    # ESRCH: the group is already empty. EPERM: the pgid now names processes we may not
    # signal, so they are not ours either.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
