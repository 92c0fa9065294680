"""Standby children: a job handed to a process started ahead of time (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from cgr_exec import (
    STANDBY_ENV_VAR,
    ExecutorClosedError,
    ExitStatus,
    LogFileError,
    SubprocessExecutor,
)
from conftest import gone, our_children

pytestmark = pytest.mark.anyio
PY = sys.executable

# A program that can be a standby: it notes when it was started (its "start-up" done),
# then, started as a standby, waits for its job; either way it prints its arguments, pid
# and environment marker, and exits with the code its first argument names.
PROGRAM = """
import os, sys, time
started = time.time()
if os.environ.get("CGR_EXEC_STANDBY"):
    from cgr_exec import receive_job
    args = receive_job()
    if args is None:
        sys.exit(0)
else:
    args = sys.argv[1:]
stdin = sys.stdin.read()
print("args", args, "pid", os.getpid(), "marker", os.environ.get("CGR_EXEC_STANDBY"),
      "stdin", repr(stdin), "started", started, flush=True)
print("to stderr", file=sys.stderr, flush=True)
sys.exit(int(args[0]))
"""


def program(tmp_path: Path) -> list[str]:
    path = tmp_path / "program.py"
    path.write_text(PROGRAM)
    return [PY, str(path)]


async def wait_standby(executor: SubprocessExecutor) -> int:
    (standby,) = executor._standbys
    return standby.process.pid


async def test_a_job_is_handed_to_the_standby_started_before_it(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=2) as executor:
        executor.keep_warm(program(tmp_path))
        standby_pid = await wait_standby(executor)
        await anyio.sleep(0.5)  # the standby finishes its start-up before the job exists
        asked = time.time()
        handle = await executor.start_warm(["3", "x y"], log_path=tmp_path / "job.log", key="j")
        assert handle.pid == standby_pid
        assert handle.argv == (*program(tmp_path), "3", "x y")
        done = await handle.wait()
        assert done.status == ExitStatus(code=3)
        assert executor.standby_starts == 1
        # The next standby is already there for the next job.
        (following,) = executor._standbys
        assert following.process.pid != standby_pid
    log = (tmp_path / "job.log").read_text()
    assert f"args ['3', 'x y'] pid {standby_pid} marker None stdin ''" in log
    assert "to stderr" in log
    started = float(log.split("started ")[1].split()[0])
    assert started < asked  # its start-up was done before the job was asked for


async def test_each_job_gets_a_fresh_standby(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=1) as executor:
        executor.keep_warm(program(tmp_path))
        pids = []
        for n in range(3):
            handle = await executor.start_warm(["0"], log_path=tmp_path / f"{n}.log", wait=True)
            pids.append(handle.pid)
            assert (await handle.wait()).status == ExitStatus(code=0)
        assert executor.standby_starts == 3
        assert len(set(pids)) == 3


async def test_several_standbys_serve_jobs_arriving_together(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=3) as executor:
        executor.keep_warm(program(tmp_path), count=2)
        ready = {standby.process.pid for standby in executor._standbys}
        assert len(ready) == 2
        first = await executor.start_warm(["0"], log_path=tmp_path / "1.log")
        second = await executor.start_warm(["0"], log_path=tmp_path / "2.log")
        assert {first.pid, second.pid} == ready
        assert executor.standby_starts == 2
        assert len(executor._standbys) == 2  # both replaced at once
        for handle in (first, second):
            assert (await handle.wait()).status == ExitStatus(code=0)
        with pytest.raises(ValueError, match="count must be at least 1"):
            executor.keep_warm(program(tmp_path), count=0)


async def test_a_dead_standby_means_a_cold_start_and_no_restart_loop(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=2) as executor:
        executor.keep_warm(program(tmp_path))
        (standby,) = executor._standbys
        os.kill(standby.process.pid, signal.SIGKILL)
        # A zombie now, not yet reaped (no event says a process died: /proc is polled).
        while not gone(standby.process.pid):  # noqa: ASYNC110
            await anyio.sleep(0.01)
        handle = await executor.start_warm(["0"], log_path=tmp_path / "job.log")
        assert handle.pid != standby.process.pid
        assert (await handle.wait()).status == ExitStatus(code=0)
        assert executor.standby_starts == 0
        # The dead one was reaped, and no new standby is started at once after a death.
        assert gone(standby.process.pid)
        assert executor._standbys == []
    # Cold: started with the arguments on its command line, no standby marker.
    assert "args ['0']" in (tmp_path / "job.log").read_text()


async def test_an_unusable_log_fails_before_the_standby_is_spent(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=2) as executor:
        executor.keep_warm(program(tmp_path))
        standbys = list(executor._standbys)
        with pytest.raises(LogFileError):
            await executor.start_warm(["0"], log_path=tmp_path / "no" / "such" / "x.log")
        assert executor._standbys == standbys
        assert executor.running == {}


async def test_shutdown_ends_the_standby(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=1) as executor:
        executor.keep_warm(program(tmp_path))
        pid = await wait_standby(executor)
    assert gone(pid)
    assert pid not in our_children()
    with pytest.raises(ExecutorClosedError):
        executor.keep_warm(program(tmp_path))


def test_a_killed_parent_leaves_no_standby_waiting(tmp_path: Path) -> None:
    # The parent (a whole process, SIGKILLed: no shutdown ran) held the other end of the
    # standby's socket; the kernel closes it, the standby reads end-of-file and exits.
    with subprocess.Popen(
        [PY, "-c", f"""
import anyio, sys, time
from cgr_exec import SubprocessExecutor
async def main():
    async with SubprocessExecutor() as executor:
        executor.keep_warm({program(tmp_path)!r})
        print(executor._standbys[0].process.pid, flush=True)
        await anyio.sleep(60)
anyio.run(main)
"""],
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:  # fmt: skip
        assert parent.stdout is not None
        standby_pid = int(parent.stdout.readline())
        time.sleep(0.5)  # let it reach its wait
        parent.kill()
    deadline = time.monotonic() + 10
    while not gone(standby_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(standby_pid)


def test_receive_job_outside_a_standby_env_marker_is_cleared(tmp_path: Path) -> None:
    # The marker must not reach the job's own children: they are ordinary programs.
    assert STANDBY_ENV_VAR == "CGR_EXEC_STANDBY"
    out = subprocess.run(
        [PY, "-c", "from cgr_exec import receive_job; print(receive_job())"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, STANDBY_ENV_VAR: "1"},
        check=False,
    )
    # /dev/null is not a socket: no job, and the program is told so (None), not hung.
    assert out.stdout.strip() == "None", out.stderr
