"""The executor's side of a fork server (``_fork_server``): ask for copies, collect them,
watch them through their pidfds and take their exit statuses from the server."""

from __future__ import annotations

import os
import select
import socket
import subprocess
from collections.abc import Callable, Mapping

import anyio

from ._fork_server import MAX_MESSAGE
from ._spawn import spawn
from ._standby import FORK_SERVER, STANDBY_ENV_VAR
from ._status import ExitStatus

__all__ = ["ForkServer", "ForkedChild"]

# How long an ended copy's status is waited for before it is reported unknown (the server
# reaps and reports within milliseconds; longer means it is gone or stopped).
_STATUS_WAIT_SECONDS = 10.0


class ForkedChild:
    """A copy forked by the server: watched through its pidfd, its status reported by the
    server. The same few operations as the ``subprocess.Popen`` of a spawned child."""

    __slots__ = ("_pidfd", "_server", "pid", "status")

    def __init__(self, pid: int, pidfd: int, server: ForkServer) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._server = server
        self.status: ExitStatus | None = None  # set once it has ended

    def running(self) -> bool:
        if self.status is not None:
            return False
        if self._ended_yet(0):
            self._ended(self._server.take_status(self.pid))
            return False
        return True

    def wait(self) -> ExitStatus:
        """Block until it has ended (its status, if the server has reported it yet)."""
        if self.status is not None:
            return self.status
        self._ended_yet(None)
        return self._ended(self._server.take_status(self.pid))

    async def wait_exit(self) -> ExitStatus:
        """Wait until it has ended and the server has reaped it; its status (unknown if
        the server is gone: the copy was then re-parented and reaped by another)."""
        if self.status is not None:
            return self.status
        await anyio.wait_readable(self._pidfd)
        return self._ended(await self._server.wait_status(self.pid))

    def _ended_yet(self, timeout_ms: int | None) -> bool:
        """Whether the pidfd is readable (the process has ended), waiting up to
        ``timeout_ms`` (None: until it is). ``poll``, not ``select``: a descriptor past
        1024 is fine."""
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(timeout_ms))

    def _ended(self, status: ExitStatus | None) -> ExitStatus:
        if self.status is None:
            os.close(self._pidfd)
            self.status = status if status is not None else ExitStatus()
        return self.status

    def close(self) -> None:
        """Stop watching (the pidfd is released); the process is not touched."""
        self._ended(None)


class ForkServer:
    """The executor's end of a fork server: ask for copies, collect them and their ends.

    Every method runs in the executor's event-loop thread. The control socket is read
    without blocking (:meth:`collect`) or by one task at a time (:meth:`wait_status`).
    """

    def __init__(self, popen: subprocess.Popen[bytes], control: socket.socket) -> None:
        self.popen = popen
        self._control = control
        self._control.setblocking(False)
        self._lock = anyio.Lock()
        self._asked: list[socket.socket] = []  # standby ends sent, copies not yet reported
        self._forked: list[tuple[ForkedChild, socket.socket]] = []
        self._statuses: dict[int, ExitStatus] = {}
        self.closed = False  # it has gone (end-of-file on the control socket)
        self.retired = False  # asked for no more copies; still reports those it forked

    @classmethod
    def start(
        cls,
        argv: tuple[str, ...],
        *,
        env: Mapping[str, str] | None,
        cwd: str | os.PathLike[str] | None,
    ) -> ForkServer:
        """Start ``argv`` as a fork server (the program's :func:`~cgr_exec.receive_job`
        serves). Raises what :func:`spawn` raises."""
        env = {**(os.environ if env is None else env), STANDBY_ENV_VAR: FORK_SERVER}
        control, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        control.set_inheritable(False)
        try:
            popen = spawn(
                argv,
                stdin=server_end.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=cwd,
                env=env,
            )
        except BaseException:
            control.close()
            raise
        finally:
            server_end.close()
        return cls(popen, control)

    @property
    def pending(self) -> int:
        """Copies asked for and not yet collected."""
        return len(self._asked)

    def ask(self, parent_end: socket.socket, child_end: socket.socket) -> bool:
        """Ask for a copy whose stdin is ``child_end`` (closed here: only the copy may
        hold it, or a send to a dead copy would not fail); False when the server is gone
        (``parent_end`` is then closed too)."""
        try:
            if self.serving:
                socket.send_fds(self._control, [b"fork"], [child_end.fileno()])
                self._asked.append(parent_end)
                return True
        except OSError:  # gone, or (never in practice) its queue is full
            self._gone()
        finally:
            child_end.close()  # a descriptor in flight stays open until it is received
        parent_end.close()
        return False

    def take_forked(self) -> list[tuple[ForkedChild, socket.socket]]:
        """Copies reported since the last call, each with the executor's end of its
        standby socket (the end its job is sent on)."""
        self.collect()
        forked, self._forked = self._forked, []
        return forked

    async def wait_forked(self, within: float) -> bool:
        """Wait until a copy asked for is reported (True), the server has gone or
        ``within`` seconds have passed (False)."""
        await self._wait_for(lambda: bool(self._forked) or not self._asked, within)
        return bool(self._forked)

    def take_status(self, pid: int) -> ExitStatus | None:
        self.collect()
        return self._statuses.pop(pid, None)

    async def wait_status(self, pid: int) -> ExitStatus | None:
        """The status of ``pid`` once the server reports it; None if it never does."""
        await self._wait_for(lambda: pid in self._statuses, _STATUS_WAIT_SECONDS)
        return self.take_status(pid)

    async def _wait_for(self, done: Callable[[], bool], within: float) -> None:
        """Read the control socket until ``done()``, the server has gone or ``within``
        seconds have passed. One task waits on the socket at a time (two waiters on one
        descriptor are an error on some backends); the others find what they wait for
        after it has read."""
        with anyio.move_on_after(within):
            while True:
                self.collect()
                if done() or self.closed:
                    return
                async with self._lock:
                    self.collect()
                    if not done() and not self.closed:
                        await anyio.wait_readable(self._control.fileno())

    def collect(self) -> None:
        """Read every message waiting on the control socket, without blocking."""
        while not self.closed:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self._control, MAX_MESSAGE, 1)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self._gone()
                return
            kind, body = data[:1], data[1:]
            if kind == b"F" and fds and self._asked:
                end = self._asked.pop(0)
                self._forked.append((ForkedChild(int(body), fds[0], self), end))
            elif kind == b"X":
                pid, status = body.split()
                self._statuses[int(pid)] = ExitStatus.from_wait_status(int(status))
            elif kind == b"E" and self._asked:
                self._asked.pop(0).close()  # that fork failed: no copy for this end
            else:
                for fd in fds:
                    os.close(fd)

    @property
    def serving(self) -> bool:
        """Whether copies may be asked for."""
        return not (self.closed or self.retired)

    def retire(self) -> None:
        """Ask for no more copies (those asked for and not forked are given up); it keeps
        running, and reporting the copies it forked, until :meth:`close`."""
        self.retired = True
        for end in self._asked:
            end.close()
        self._asked = []

    def _gone(self) -> None:
        self.closed = True
        self.retire()

    def close(self) -> None:
        """End the server (its copies are ended by the executor first) and reap it."""
        self._gone()
        for child, end in self._forked:
            child.close()
            end.close()
        self._forked = []
        self._control.close()
        # It holds nothing but loaded code (its copies were ended first): SIGKILL ends
        # it at once, even a stopped or hung one.
        self.popen.kill()
        self.popen.wait()
