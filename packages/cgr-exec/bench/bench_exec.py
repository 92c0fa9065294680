"""cgr-exec benchmark: start latency and throughput of both strategies, parent memory.

* latency: from the start request to the child running user code (the child records
  CLOCK_MONOTONIC, which is system-wide on Linux, so parent and child clocks compare);
* throughput: N trivial jobs at concurrency 3 - fork (a Python callable), subprocess with
  a Python child, subprocess with ``true``;
* standby: the latency of a Python child that imports a little (asyncio, http.client,
  email, json) before its job, started cold, handed to a standby and handed to a standby
  forked by a fork server (``SubprocessExecutor.keep_warm``/``start_warm``; the next job
  arrives after the standby's start-up, as in a daemon whose runs last longer than an
  interpreter's start), with the CPU each job cost (start-up included);
* slot hand-over: two processes take turns on one ``SlotGate`` slot, each waiting in
  ``acquire()`` (a 30 s poll, so only the FIFO's wake-up can hand it over quickly): from
  a holder's ``release()`` to the other's ``acquire()`` returning;
* held start: a program started with a job marker (and its cgroup, where this process
  can make one), from the start request to the program's first line: started by
  ``supervise`` as usual, or made ready ahead by ``hold`` and released by ``supervise``;
  each start 0.2 s after the last (as a run's agent starts, seconds apart);
* peak RSS (ru_maxrss) of the parent.

Prints figures only; nothing is asserted. Run with ``nox -s bench``.
"""

from __future__ import annotations

import functools
import itertools
import os
import resource
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import anyio

from cgr_exec import ForkExecutor, SubprocessExecutor

LATENCY_RUNS = 200
FORK_JOBS = 1000
TRUE_JOBS = 1000
# A Python child costs 10-50 ms of CPU to start (more with many .pth files in site-packages);
# CGR_BENCH_PYTHON_JOBS=300 keeps the run short on a slow or busy machine.
PYTHON_JOBS = int(os.environ.get("CGR_BENCH_PYTHON_JOBS", "1000"))
CONCURRENCY = 3
PY_STAMP = "import time; print(time.monotonic_ns())"
STANDBY_RUNS = 50
# A program with some start-up of its own, which can also wait as a standby.
PY_IMPORTING = """
import asyncio, email.parser, http.client, json, os, sys, time
if os.environ.get("CGR_EXEC_STANDBY"):
    from cgr_exec import receive_job
    if receive_job() is None:
        sys.exit(0)
print(time.monotonic_ns())
"""


HANDOVERS = 200
# Takes the slot, holds it 2 ms, notes the release and gives it back, then lets the other
# process (waiting meanwhile) take it before trying again: a turn each.
PY_SLOT_TURNS = """
import anyio, sys, time
from cgr_exec import SlotGate

async def main(directory, turns, out):
    gate = SlotGate(directory, 1)
    with open(out, "w") as log:
        for _ in range(turns):
            held = await gate.acquire(poll_interval=30)
            log.write(f"acq {time.monotonic_ns()}\\n")
            time.sleep(0.002)
            log.write(f"rel {time.monotonic_ns()}\\n")
            held.release()
            await anyio.sleep(0.01)

anyio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
"""


def _ms(values_ns: list[int]) -> str:
    ms = sorted(v / 1e6 for v in values_ns)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return f"median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms   (n={len(ms)})"


def _stamp(fd: int) -> None:
    os.write(fd, struct.pack("q", time.monotonic_ns()))


def fork_latency(tmp: Path) -> list[int]:
    executor = ForkExecutor()
    read_end, write_end = os.pipe()
    samples = []
    try:
        for i in range(LATENCY_RUNS):
            started = time.monotonic_ns()
            executor.start(
                functools.partial(_stamp, write_end), log_path=tmp / f"fl{i}.log", key=str(i)
            )
            (child_ns,) = struct.unpack("q", os.read(read_end, 8))
            samples.append(child_ns - started)
            executor.wait()
    finally:
        os.close(read_end)
        os.close(write_end)
    return samples


def fork_throughput(tmp: Path, jobs: int) -> float:
    executor = ForkExecutor(limit=CONCURRENCY)
    log = tmp / "ft.log"
    started = time.monotonic()
    done = 0
    for i in range(jobs):
        while executor.free_slots() == 0:
            done += len(executor.reap())
            time.sleep(0.0005)
        executor.start(_noop, log_path=log, key=str(i))
    done += len(executor.wait())
    assert done == jobs
    return time.monotonic() - started


def _noop() -> None:
    return None


async def subprocess_latency(tmp: Path) -> list[int]:
    samples = []
    async with SubprocessExecutor(limit=1) as executor:
        for i in range(LATENCY_RUNS):
            log = tmp / f"sl{i}.log"
            started = time.monotonic_ns()
            handle = await executor.start([sys.executable, "-c", PY_STAMP], log_path=log)
            await handle.wait()
            samples.append(int(log.read_text()) - started)
    return samples


def _children_cpu() -> float:
    """CPU seconds of every descendant reaped so far (a fork server's copies count once
    the server is reaped: it waited for them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def standby_latency(tmp: Path, *, mode: str) -> tuple[list[int], float]:
    """Latencies of STANDBY_RUNS jobs of the importing child, and CPU seconds per job
    (its start-up included, wherever it ran)."""
    samples = []
    argv = [sys.executable, "-c", PY_IMPORTING]
    warm = mode != "cold"
    cpu_before = _children_cpu()
    async with SubprocessExecutor(limit=1) as executor:
        if warm:
            executor.keep_warm(argv, fork_server=mode == "fork server")
        for i in range(STANDBY_RUNS):
            log = tmp / f"sb{i}-{mode}.log"
            await anyio.sleep(0.3)  # the next job comes after the standby's start-up
            started = time.monotonic_ns()
            if warm:
                handle = await executor.start_warm([], log_path=log)
            else:
                handle = await executor.start(argv, log_path=log)
            await handle.wait()
            samples.append(int(log.read_text()) - started)
        assert not warm or executor.standby_starts == STANDBY_RUNS
    return samples, (_children_cpu() - cpu_before) / STANDBY_RUNS


async def subprocess_throughput(tmp: Path, argv: list[str], jobs: int) -> float:
    started = time.monotonic()
    async with SubprocessExecutor(limit=CONCURRENCY) as executor:
        for _ in range(jobs):
            await executor.start(argv, log_path=tmp / "st.log", wait=True)
        while executor.running:
            await next(iter(executor.running.values())).wait()
        assert len(executor.reap()) == jobs
    return time.monotonic() - started


def slot_handover(tmp: Path) -> list[int]:
    """Release -> the other process's acquire, ns, for each turn that changed hands."""
    import subprocess

    logs = [tmp / f"turns-{n}.log" for n in (0, 1)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PY_SLOT_TURNS, str(tmp / "slots"), str(HANDOVERS // 2), str(log)]
        )
        for log in logs
    ]
    for proc in procs:
        proc.wait(timeout=300)
    events = sorted(
        (int(t), kind, n)
        for n, log in enumerate(logs)
        for kind, t in (line.split() for line in log.read_text().splitlines())
    )
    return [
        t_next - t
        for (t, kind, n), (t_next, kind_next, n_next) in itertools.pairwise(events)
        if kind == "rel" and kind_next == "acq" and n_next != n
    ]


HELD_RUNS = 40
# bash notes the wall clock (a builtin: no process of its own) as its first act.
BASH_STAMP = ["/bin/bash", "-c", 'echo "${EPOCHREALTIME/,/.}"']


async def held_start_latency(tmp: Path, *, held: bool) -> list[int]:
    """Start request -> the program's first line, ns (wall clock on both sides)."""
    import anyio.to_thread

    from cgr_exec import cgroup_root, hold, kill_job_leftovers, supervise

    cgroup = True if os.geteuid() == 0 and cgroup_root() is not None else None
    samples = []
    for i in range(HELD_RUNS):
        job = f"bench-held-{os.getpid()}-{i}"
        out = tmp / f"held{i}.out"
        ready = None
        if held:
            ready = await anyio.to_thread.run_sync(
                functools.partial(hold, BASH_STAMP, job=job, job_cgroup=cgroup)
            )
        await anyio.sleep(0.2)
        started = time.time_ns()
        if ready is not None:
            await supervise(BASH_STAMP, stdout_path=out, stderr_path=tmp / "held.err", held=ready)
        else:
            await supervise(BASH_STAMP, stdout_path=out, stderr_path=tmp / "held.err", job=job,
                            job_cgroup=cgroup)  # fmt: skip
        samples.append(int(float(out.read_text()) * 1e9) - started)
        kill_job_leftovers(job, 1.0)
    return samples


def main() -> None:
    print(f"cgr-exec benchmark on {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        # Fork first: forking is refused inside an event loop (and with other threads).
        print(f"fork start latency            {_ms(fork_latency(tmp))}")
        seconds = fork_throughput(tmp, FORK_JOBS)
        print(
            f"fork throughput               {FORK_JOBS} jobs, concurrency {CONCURRENCY}: "
            f"{seconds:6.2f} s = {FORK_JOBS / seconds:7.1f} jobs/s"
        )
        latency = anyio.run(subprocess_latency, tmp)
        print(f"subprocess start latency (py) {_ms(latency)}")
        for mode in ("cold", "standby", "fork server"):
            samples, cpu = anyio.run(functools.partial(standby_latency, tmp, mode=mode))
            print(f"importing child, {mode:11s} {_ms(samples)}   CPU {cpu * 1000:5.1f} ms/job")
        for label, argv, jobs in (
            ("subprocess throughput (true)", ["true"], TRUE_JOBS),
            ("subprocess throughput (py)  ", [sys.executable, "-c", "pass"], PYTHON_JOBS),
        ):
            seconds = anyio.run(subprocess_throughput, tmp, argv, jobs)
            print(
                f"{label}  {jobs} jobs, concurrency {CONCURRENCY}: "
                f"{seconds:6.2f} s = {jobs / seconds:7.1f} jobs/s"
            )
        print(f"slot hand-over (SlotGate)     {_ms(slot_handover(tmp))}")
        for held in (False, True):
            samples = anyio.run(functools.partial(held_start_latency, tmp, held=held))
            label = "held, released" if held else "started        "
            print(f"job start, {label}    {_ms(samples)}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"parent peak RSS (ru_maxrss)   {peak / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
