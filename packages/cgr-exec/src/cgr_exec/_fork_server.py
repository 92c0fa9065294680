"""A fork server: one process does the program's start-up once and forks every standby.

A standby (``_standby``) saves a job the wait for its program's start-up, not the work:
each standby still starts an interpreter and imports everything (a few hundred
milliseconds of CPU for a program of cgr's size), once per job. On a machine whose CPUs
are the limit, that is time the jobs themselves do not get. With a fork server the
executor starts the program once more, as the *server*; it does the start-up, then (in
:func:`~cgr_exec.receive_job`) forks a copy of itself whenever the executor asks for a
standby. The copy shares the loaded code copy-on-write and goes on as a standby: it
waits for its job on its own socket exactly as a spawned standby does.

Process lifetimes. A forked standby is the server's child, not the executor's, so:

* the server reaps it and reports its exit status (the raw wait status) to the executor;
* the executor watches it through a pidfd (``pidfd_open`` in the server right after the
  fork, passed over the control socket): a pidfd names that very process, so neither
  side ever acts on a reused pid, and it becomes readable when the process ends;
* each copy calls ``setsid()`` before the server reports it, so the executor's
  process-group signals (``end_group``) reach it as they reach a spawned child.

The server is single-threaded (it refuses to serve otherwise: a fork of a threaded
process may inherit a lock held by a thread that does not exist in the copy). When the
executor's end of the control socket closes (it shut down, or it was killed) the server
exits; its standbys read end-of-file on their own sockets and exit too. Jobs already
running carry on, re-parented to init like the children of a killed executor.

Messages on the control socket (``SOCK_SEQPACKET``, so each is whole):
executor -> server ``fork`` with the standby's socket end attached; server -> executor
``F<pid>`` with the copy's pidfd attached, ``X<pid> <wait status>`` when it has ended and
been reaped, ``E<errno>`` when a fork failed. This module is the server's side, run in
the program; ``_fork_client`` is the executor's.
"""

from __future__ import annotations

import os
import select
import socket
import threading

__all__ = ["MAX_MESSAGE", "serve_forks"]

# The longest message either side sends ("F<pid>", "X<pid> <status>"): a bound to read with.
MAX_MESSAGE = 64


def serve_forks() -> bool:
    """Be the fork server on the control socket that is fd 0.

    Returns True in each forked copy (fd 0 is then its standby socket, in a session of
    its own: go on as a standby) and False in the server once the executor has gone.
    """
    control = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if threading.active_count() > 1:
        # A forked copy would have only this thread, and any lock another thread held at
        # the fork would stay held for ever in it. Closing the control socket tells the
        # executor, which then starts its standbys as separate processes.
        control.close()
        return False
    copies: dict[int, int] = {}  # pidfd -> pid, for every copy not yet reaped
    poller = select.poll()
    poller.register(control, select.POLLIN)
    try:
        while True:
            for fd, _events in poller.poll():
                if fd != control.fileno():
                    _report_end(control, copies, poller, fd)
                    continue
                data, fds, _flags, _addr = socket.recv_fds(control, MAX_MESSAGE, 1)
                if not data:
                    return False  # the executor has gone
                if not fds:
                    continue
                if _fork_copy(control, copies, poller, fds[0]):
                    return True
    except OSError:
        return False  # the executor's end is gone (EPIPE on a report)
    finally:
        # In a copy: the server's descriptors are not its business. In the server: closed
        # on the way out (the copies live on, re-parented to init).
        for pidfd in copies:
            os.close(pidfd)
        control.close()


def _fork_copy(
    control: socket.socket, copies: dict[int, int], poller: select.poll, standby_end: int
) -> bool:
    """Fork one copy whose stdin is ``standby_end``; True in the copy."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(standby_end)
        os.close(ready_r)
        os.close(ready_w)
        control.send(b"E%d" % (exc.errno or 0))
        return False
    if pid == 0:
        try:
            # A session (and process group) of its own before the executor hears of it,
            # so a group signal sent the moment it is reported reaches it.
            os.setsid()
            os.dup2(standby_end, 0)
            for fd in (standby_end, ready_r, ready_w):
                os.close(fd)
        except BaseException:
            os._exit(70)  # EX_SOFTWARE: never run a copy half set up
        return True
    os.close(standby_end)
    os.close(ready_w)
    try:
        os.read(ready_r, 1)  # end-of-file once the copy has its session (or has died)
    finally:
        os.close(ready_r)
    # The copy is ours and unreaped, so its pid cannot be reused before this opens.
    pidfd = os.pidfd_open(pid)
    copies[pidfd] = pid
    poller.register(pidfd, select.POLLIN)
    socket.send_fds(control, [b"F%d" % pid], [pidfd])
    return False


def _report_end(
    control: socket.socket, copies: dict[int, int], poller: select.poll, pidfd: int
) -> None:
    pid = copies.pop(pidfd)
    poller.unregister(pidfd)
    os.close(pidfd)
    _pid, status = os.waitpid(pid, 0)
    control.send(b"X%d %d" % (pid, status))
