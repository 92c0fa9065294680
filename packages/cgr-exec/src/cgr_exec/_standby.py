"""Standby children: a program started ahead of time, waiting for the arguments of its job.

A Python program spends most of its start-up importing (a few hundred milliseconds for a
program of cgr's size) before it does anything its job needs. A parent that starts one
child per job (:class:`~cgr_exec.SubprocessExecutor`) can start the next child early and
hand it its arguments when the job arrives: the job then begins with everything loaded.

The two ends talk over a Unix ``SOCK_SEQPACKET`` socket pair. The child's end is its
standard input (so nothing beyond the usual three descriptors crosses ``exec``) and
:data:`STANDBY_ENV_VAR` is set in its environment. The parent sends one message: the
arguments as JSON, with the job's log file descriptor attached (``SCM_RIGHTS``); the
child puts that descriptor on its stdout and stderr, /dev/null on its stdin, and goes on
as if it had been started with those arguments. The parent opened the log itself, so an
unwritable log fails in the parent, at once, as it does for a cold start.

A standby whose parent dies reads end-of-file and exits quietly: a killed daemon leaves
no waiting process behind.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Final

__all__ = ["FORK_SERVER", "STANDBY_ENV_VAR", "receive_job", "send_job", "standby_pair"]

STANDBY_ENV_VAR: Final = "CGR_EXEC_STANDBY"
# Arguments of a job: a command line, so well under this; a longer message is refused.
_MAX_MESSAGE: Final = 256 * 1024
# The value of STANDBY_ENV_VAR that makes the program's receive_job() a fork server.
FORK_SERVER: Final = "fork-server"


def standby_pair() -> tuple[socket.socket, socket.socket]:
    """(parent's end, child's end); the child's end becomes the child's stdin."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # The child's end must survive exec (it is dup2'd to fd 0 by Popen, which clears
    # close-on-exec there); the parent's end must not leak into any child.
    parent.set_inheritable(False)
    return parent, child


def send_job(parent_end: socket.socket, args: list[str], log_fd: int) -> None:
    """Hand ``args`` and the log descriptor to the waiting child.

    Raises OSError (``BrokenPipeError``, ``ConnectionResetError``) when the child is gone;
    the caller then starts the job cold.
    """
    data = json.dumps(args).encode()
    if len(data) > _MAX_MESSAGE:
        raise ValueError(f"standby job arguments exceed {_MAX_MESSAGE} bytes")
    socket.send_fds(parent_end, [data], [log_fd])


def receive_job() -> list[str] | None:
    """In the standby child: wait for the job; None when the parent went away.

    Returns the job's arguments once fds 0, 1 and 2 are set up for the job. Removes
    :data:`STANDBY_ENV_VAR` from the environment so the job's own children are ordinary.

    Started as a fork server (``SubprocessExecutor.keep_warm(..., fork_server=True)``),
    this call serves: it returns in each forked copy, which then waits for its job here,
    and returns None in the server itself once the executor has gone.
    """
    if os.environ.get(STANDBY_ENV_VAR) == FORK_SERVER:
        from ._fork_server import serve_forks

        if not serve_forks():
            return None
    os.environ.pop(STANDBY_ENV_VAR, None)
    fd = os.dup(0)
    try:
        end = socket.socket(fileno=fd)  # OSError when stdin is not a socket
    except OSError:
        os.close(fd)
        return None
    try:
        data, fds, _flags, _addr = socket.recv_fds(end, _MAX_MESSAGE, 1)
    except OSError:
        return None
    finally:
        end.close()
    if not data or not fds:  # end-of-file: the parent closed its end or died
        for fd in fds:
            os.close(fd)
        return None
    log_fd = fds[0]
    null = os.open(os.devnull, os.O_RDONLY)
    # fd 0 was the socket: the job reads /dev/null, as a cold-started child does.
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    for fd in {null, log_fd} - {0, 1, 2}:
        os.close(fd)
    args = json.loads(data)
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError("a standby job's arguments must be a list of strings")
    return args
