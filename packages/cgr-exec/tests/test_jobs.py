"""Every process of a job ends with it: subreaper while the job lives, markers after a crash.

The "job process" is a real Python subprocess (so marking *it* a subreaper does not change
this test process); its command double-forks a ``setsid``'d watcher with ``cwd /`` that
sleeps in a loop - out of reach of any process-group kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from cgr_exec import (
    JOB_ENV_VAR,
    JobMarkerError,
    SubprocessExecutor,
    cgroup_root,
    job_cgroup_path,
    kill_job_leftovers,
    read_stat,
)
from conftest import gone, wait_until

PY = sys.executable

# argv: pid file, "clear-env" or "keep-env", "exit" or "stay"
ESCAPER = """
import os, sys, time
pid_file, env_mode, after = sys.argv[1:4]
LOOP = '''
import os, sys, time
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(0.1)
'''
if os.fork() == 0:
    os.setsid()  # out of the job's process group and session
    if os.fork() == 0:  # double fork: its parent exits at once, so it is an orphan
        os.chdir("/")
        env = {} if env_mode == "clear-env" else dict(os.environ)  # env -i
        os.execve(sys.executable, [sys.executable, "-c", LOOP, pid_file], env)
    os._exit(0)
os.wait()
if after == "stay":
    while True:
        time.sleep(0.1)
"""

JOB = """
import json, os, sys, time
import anyio
from cgr_exec import become_subreaper, kill_descendants, read_stat, supervise

pid_file, escaper, marker, cgroup, after, subreaper = sys.argv[1:7]
if subreaper == "1":
    become_subreaper()

def wait_file():
    while not os.path.exists(pid_file):
        time.sleep(0.02)
    return int(open(pid_file).read())

async def main():
    return await supervise(
        [sys.executable, "-c", escaper, pid_file,
         "clear-env" if cgroup == "1" else "keep-env", after],
        stdout_path=pid_file + ".out", stderr_path=pid_file + ".err",
        job=marker or None, job_cgroup=cgroup == "1" if marker else None, kill_grace=1,
    )

if after == "stay":  # the crash test: report the watcher, then wait to be SIGKILLed
    async def crash_main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(main)
            await anyio.to_thread.run_sync(wait_file)
            print("ready", flush=True)
    anyio.run(crash_main)
else:
    result = anyio.run(main)
    watcher = wait_file()
    stat = read_stat(watcher)
    with open(f"/proc/{watcher}/environ", "rb") as f:
        environ = f.read().split(b"\\0")
    with open(f"/proc/{watcher}/cgroup") as f:
        cgroup_line = f.read().strip()
    with open("/proc/self/cgroup") as f:
        my_cgroup = f.read().strip()
    killed = kill_descendants(grace=2)
    print(json.dumps({"me": os.getpid(), "watcher": watcher, "ppid": stat.ppid,
                      "sid": stat.sid, "killed": [i.pid for i in killed],
                      "exit": result.exit_code, "command": result.pid,
                      "environ": [e.decode(errors="replace") for e in environ if e],
                      "cgroup": cgroup_line, "my_cgroup": my_cgroup}))
"""


def run_job(tmp_path: Path, *, subreaper: bool) -> dict[str, Any]:
    # No job marker and no job cgroup (the marker argument is empty): only the subreaper
    # can find the watcher once the supervised command's process group is gone.
    done = subprocess.run(
        [PY, "-c", JOB, str(tmp_path / "watcher.pid"), ESCAPER, "", "0", "exit",
         "1" if subreaper else "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_subreaper_catches_a_double_forked_setsid_watcher(tmp_path: Path) -> None:
    result = run_job(tmp_path, subreaper=True)
    watcher = result["watcher"]
    assert isinstance(watcher, int)
    assert result["exit"] == 0  # the command itself ended normally
    assert result["ppid"] == result["me"]  # re-parented to the job process, not to init
    # Its own session: the group kill that ends the supervised command cannot reach it.
    assert result["sid"] != result["command"]
    # Nothing else could have found it: no job marker in its environment, and it stayed
    # in the job process's own cgroup (no per-job cgroup to kill).
    assert not any(e.startswith(f"{JOB_ENV_VAR}=") for e in result["environ"])
    assert result["cgroup"] == result["my_cgroup"]
    assert watcher in result["killed"]
    assert gone(watcher)


def test_without_subreaper_the_watcher_escapes_to_init(tmp_path: Path) -> None:
    # The control: the same job without the subreaper cannot find its watcher.
    result = run_job(tmp_path, subreaper=False)
    watcher = result["watcher"]
    assert isinstance(watcher, int)
    try:
        assert result["ppid"] != result["me"]
        assert watcher not in result["killed"]
        assert not gone(watcher)
    finally:
        os.kill(watcher, signal.SIGKILL)


def cgroup_usable() -> bool:
    return os.geteuid() == 0 and cgroup_root() is not None


@pytest.fixture
def marker() -> Iterator[str]:
    value = f"test-{uuid.uuid4().hex[:12]}"
    yield value
    kill_job_leftovers(value, grace=0.5)  # whatever happened, leave nothing behind


@pytest.mark.parametrize(
    "mode",
    [
        "env",
        pytest.param(
            "cgroup",
            marks=pytest.mark.skipif(not cgroup_usable(), reason="needs root and cgroup v2"),
        ),
    ],
)
def test_leftovers_of_a_killed_job_are_found_by_another_process(
    tmp_path: Path, marker: str, mode: str
) -> None:
    pid_file = tmp_path / "watcher.pid"
    # In cgroup mode the watcher execs with an empty environment (env -i): the env
    # marker is gone, only the cgroup can find it.
    job = subprocess.Popen(
        [PY, "-c", JOB, str(pid_file), ESCAPER, marker, "1" if mode == "cgroup" else "0",
         "stay", "1"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert job.stdout is not None
        assert job.stdout.readline() == b"ready\n"
    finally:
        job.send_signal(signal.SIGKILL)  # the crash: no cleanup code of the job runs
        job.wait()
        if job.stdout is not None:
            job.stdout.close()
    watcher = int(pid_file.read_text())
    assert not gone(watcher)  # it outlived the job
    environ = Path(f"/proc/{watcher}/environ").read_bytes()
    assert (f"{JOB_ENV_VAR}={marker}".encode() in environ) == (mode == "env")
    if mode == "cgroup":
        cgroup = job_cgroup_path(marker)
        assert cgroup is not None
        assert str(watcher) in (cgroup / "cgroup.procs").read_text().split()

    reaper = subprocess.run(
        [PY, "-c", "import sys; from cgr_exec import kill_job_leftovers as k; "
         "print(sorted(i.pid for i in k(sys.argv[1], grace=2)))", marker],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert reaper.returncode == 0, reaper.stderr
    killed = json.loads(reaper.stdout)
    assert watcher in killed
    assert len(killed) == 2  # the watcher and the command the job supervised
    wait_until(lambda: gone(watcher), timeout=5)
    assert job_cgroup_path(marker) is None  # the cgroup was removed


def test_kill_job_leftovers_spares_other_jobs(marker: str) -> None:
    other = f"{marker}-other"
    procs = [
        subprocess.Popen(["sleep", "60"], env={**os.environ, JOB_ENV_VAR: m})
        for m in (marker, other)
    ]
    try:
        wait_until(lambda: all(read_stat(p.pid) is not None for p in procs))
        # exec must have happened for environ to show the marker
        wait_until(
            lambda: all(b"sleep" in Path(f"/proc/{p.pid}/cmdline").read_bytes() for p in procs)
        )
        killed = kill_job_leftovers(marker, grace=2)
        assert [i.pid for i in killed] == [procs[0].pid]
        assert procs[0].wait(timeout=5) == -signal.SIGTERM
        assert procs[1].poll() is None
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_bad_markers_are_refused() -> None:
    for bad in ("", "../etc", "a b", "x" * 101, ".."):
        with pytest.raises(JobMarkerError, match="job marker"):
            kill_job_leftovers(bad)


@pytest.mark.anyio
async def test_executor_children_carry_the_marker(tmp_path: Path, marker: str) -> None:
    code = f"import os; print(os.environ[{JOB_ENV_VAR!r}])"
    async with SubprocessExecutor(limit=1) as executor:
        handle = await executor.start(
            [PY, "-c", code], log_path=tmp_path / "log", job=marker, job_cgroup=False
        )
        assert (await handle.wait()).status.code == 0
    assert (tmp_path / "log").read_text().strip() == marker


def test_job_marker_in_supervise_env_keeps_the_rest(tmp_path: Path, marker: str) -> None:
    from cgr_exec import supervise

    async def main() -> None:
        await supervise(
            [PY, "-c", f"import os; print(os.environ['KEEP'], os.environ[{JOB_ENV_VAR!r}])"],
            stdout_path=tmp_path / "out",
            stderr_path=tmp_path / "err",
            env={"KEEP": "kept"},
            job=marker,
            job_cgroup=False,
        )

    anyio.run(main)
    assert (tmp_path / "out").read_text().split() == ["kept", marker]


@pytest.mark.skipif(not cgroup_usable(), reason="needs root and cgroup v2")
def test_child_switched_to_another_user_still_joins_the_job_cgroup(
    tmp_path: Path, marker: str
) -> None:
    # The child writes cgroup.procs after Popen made it nobody; the file was opened by us
    # as root, and the kernel checks the opener's credentials.
    from cgr_exec import Confinement, supervise

    async def main() -> None:
        await supervise(
            ["/bin/sh", "-c", "id -u; cat /proc/self/cgroup"],
            stdout_path=tmp_path / "out",
            stderr_path=tmp_path / "err",
            cwd="/",
            confinement=Confinement(landlock=False, user=65534),
            job=marker,
            job_cgroup=True,
        )

    anyio.run(main)
    out = (tmp_path / "out").read_text()
    assert out.split()[0] == "65534", (tmp_path / "err").read_text()
    assert f"0::/cgr-exec-job-{marker}" in out or f"/cgr-exec-job-{marker}\n" in out
