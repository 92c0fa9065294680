"""Held starts: a child made ready ahead (forked, in its job cgroup, confined, as its
user) that runs its program only when ``supervise(..., held=)`` releases it.

Real children throughout: the program is ``python -c`` that notes when it began; a
held child that ran its program too early, ran it twice, or outlived a cancel shows in
those notes and in ``/proc``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from cgr_exec import (
    Confinement,
    ConfinementError,
    HeldStart,
    SpawnError,
    _held,
    cgroup_root,
    hold,
    landlock_supported,
    read_stat,
    supervise,
)
from conftest import gone, wait_until

# The held child is /bin/sh, which is dash (Debian, Ubuntu) or bash (Fedora, RHEL): every
# test runs with each of them that this machine has, as /bin/sh.
SHELLS = [name for name in ("dash", "bash") if shutil.which(name)]
pytestmark = pytest.mark.skipif(not SHELLS, reason="neither dash nor bash")
PY = sys.executable


@pytest.fixture(params=SHELLS, autouse=True)
def shell(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shell /bin/sh is, for this test."""
    path = shutil.which(request.param)
    assert path is not None
    monkeypatch.setattr(_held, "_SH", path)
    assert _held.shell_holds()
    return path


# The program: notes when it began and what it saw (environment, cgroup, its stdin), then
# tries to write outside its working directory.
NOTE = """
import json, os, sys, time
began = time.time()
data = sys.stdin.read()
try:
    with open(sys.argv[2], "w") as f:
        f.write("x")
    outside = "ok"
except OSError as exc:
    outside = type(exc).__name__
with open("/proc/self/cgroup") as f:
    cgroup = f.read().strip()
with open(sys.argv[1], "w") as f:
    json.dump({"began": began, "stdin": data, "env": dict(os.environ), "pid": os.getpid(),
               "cgroup": cgroup, "outside": outside}, f)
"""
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "ONLY_THIS": "1"}


def _argv(tmp_path: Path) -> list[str]:
    return [PY, "-c", NOTE, str(tmp_path / "work" / "note.json"), str(tmp_path / "outside")]


def _note(tmp_path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp_path / "work" / "note.json").read_text())
    return data


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def _release(held: HeldStart, tmp_path: Path, stdin: bytes | Path | None) -> object:
    async def main() -> object:
        return await supervise(
            list(held.argv),
            stdout_path=tmp_path / "out",
            stderr_path=tmp_path / "err",
            stdin=stdin,
            held=held,
            timeout=60,
        )

    return anyio.run(main)


def test_a_held_program_starts_only_when_released(tmp_path: Path, work: Path) -> None:
    held = hold(_argv(tmp_path), cwd=work, env=ENV)
    assert held.held
    assert held.popen is not None
    time.sleep(0.5)
    assert not (work / "note.json").exists(), "the program ran before its release"
    stat = read_stat(held.popen.pid)
    assert stat is not None
    assert stat.state in {"S", "R"}  # the shell, waiting on its pipe
    released = time.time()
    result = _release(held, tmp_path, b"the prompt\nsecond line\n")
    note = _note(tmp_path)
    assert result.exit_code == 0, (tmp_path / "err").read_text()  # type: ignore[attr-defined]
    assert note["began"] >= released  # type: ignore[operator]
    # The same process: exec kept the held child's pid.
    assert note["pid"] == held.popen.pid == result.pid  # type: ignore[attr-defined]
    # The program's input is what supervise was given, without the release line.
    assert note["stdin"] == "the prompt\nsecond line\n"
    # Exactly the environment given: the shell's own PWD is not passed on.
    assert note["env"] == ENV
    assert not held.held


def test_a_stdin_file_reaches_the_released_program(tmp_path: Path, work: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("from a file\n")
    held = hold(_argv(tmp_path), cwd=work, env={**ENV, "PWD": str(work)})
    result = _release(held, tmp_path, prompt)
    assert result.exit_code == 0  # type: ignore[attr-defined]
    note = _note(tmp_path)
    assert note["stdin"] == "from a file\n"
    assert note["env"] == {**ENV, "PWD": str(work)}  # a PWD the caller gave is kept


def test_cancel_ends_the_held_child_without_running_the_program(tmp_path: Path, work: Path) -> None:
    held = hold(_argv(tmp_path), cwd=work, env=ENV)
    assert held.popen is not None
    pid = held.popen.pid
    held.cancel()
    assert held.popen.returncode == 125  # the shell's `read` met the end of its input
    assert gone(pid)
    assert not (work / "note.json").exists()
    held.cancel()  # again: nothing more happens
    with pytest.raises(RuntimeError):
        _release(held, tmp_path, b"")


def test_a_held_child_ends_when_the_process_that_held_it_dies(
    tmp_path: Path, work: Path, shell: str
) -> None:
    """Nothing can release it any more: the pipe's writing end died with its holder."""
    code = (
        "import sys, time\n"
        "from cgr_exec import _held, hold\n"
        f"_held._SH = {shell!r}\n"
        f"held = hold({_argv(tmp_path)!r}, cwd={str(work)!r}, env={ENV!r})\n"
        "print(held.popen.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    pid = int(holder.stdout.readline())
    assert read_stat(pid) is not None
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    wait_until(lambda: gone(pid))
    assert not (work / "note.json").exists()


def test_under_bash_what_env_would_change_is_not_held(
    tmp_path: Path, work: Path, shell: str
) -> None:
    """Bash's own `_` and SHLVL are dropped by env(1) on the way to the program: a caller
    that gives either itself, or a program whose name env would read as an assignment,
    gets an unheld start - with exactly its environment."""
    if os.path.basename(shell) != "bash":
        pytest.skip("bash only")
    for env in ({**ENV, "SHLVL": "3"}, {**ENV, "_": "/usr/bin/x"}):
        held = hold(_argv(tmp_path), cwd=work, env=env)
        assert not held.held
        result = _release(held, tmp_path, b"")
        assert result.exit_code == 0  # type: ignore[attr-defined]
        assert _note(tmp_path)["env"] == env
    odd = work / "a=b"
    odd.symlink_to(PY)
    assert not hold([str(odd), "-c", "pass"], cwd=work, env=ENV).held


def test_what_the_shell_could_not_execute_is_started_and_reported_as_always(
    tmp_path: Path, work: Path
) -> None:
    held = hold([str(tmp_path / "no-such-program")], cwd=work, env=ENV)
    assert not held.held
    with pytest.raises(SpawnError, match="no-such-program"):
        _release(held, tmp_path, None)


def test_supervise_refuses_a_held_start_for_another_command(tmp_path: Path, work: Path) -> None:
    held = hold(_argv(tmp_path), cwd=work, env=ENV)
    try:

        async def main() -> None:
            await supervise([PY, "-c", "pass"], stdout_path=tmp_path / "o",
                            stderr_path=tmp_path / "e", held=held)  # fmt: skip

        with pytest.raises(ValueError, match="held start"):
            anyio.run(main)

        async def with_cwd() -> None:
            await supervise(list(held.argv), stdout_path=tmp_path / "o",
                            stderr_path=tmp_path / "e", held=held, cwd=work)  # fmt: skip

        with pytest.raises(ValueError, match="hold"):
            anyio.run(with_cwd)
        assert held.held  # refused before anything was taken
    finally:
        held.cancel()


needs_landlock = pytest.mark.skipif(landlock_supported() == 0, reason="no Landlock")
READ_ONLY = tuple(
    sorted(
        {sys.base_prefix, sys.base_exec_prefix, *(p for p in sys.path if p and os.path.exists(p))}
        | {f"{sys.prefix}/bin", f"{sys.prefix}/pyvenv.cfg", "/usr", "/lib", "/lib64", "/etc",
           "/bin", "/proc"}
    )
)  # fmt: skip


@needs_landlock
def test_the_released_program_runs_confined(tmp_path: Path, work: Path) -> None:
    spec = Confinement(read_only=READ_ONLY, read_write=[str(work)])
    held = hold(_argv(tmp_path), cwd=work, env=ENV, confinement=spec)
    assert held.held
    result = _release(held, tmp_path, b"")
    assert result.exit_code == 0, (tmp_path / "err").read_text()  # type: ignore[attr-defined]
    note = _note(tmp_path)
    assert note["outside"] == "PermissionError"  # Landlock: outside read_write
    assert not (tmp_path / "outside").exists()


@needs_landlock
def test_a_program_outside_the_landlock_paths_is_not_held_and_is_named(
    tmp_path: Path, work: Path
) -> None:
    program = tmp_path / "tool"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    spec = Confinement(read_only=READ_ONLY, read_write=[str(work)])
    held = hold([str(program)], cwd=work, env=ENV, confinement=spec)
    assert not held.held
    with pytest.raises(ConfinementError, match="tool"):
        _release(held, tmp_path, None)


needs_cgroups = pytest.mark.skipif(
    os.geteuid() != 0 or cgroup_root() is None, reason="job cgroups need root and cgroup v2"
)


@needs_cgroups
def test_a_held_child_is_in_its_job_cgroup_before_release(tmp_path: Path, work: Path) -> None:
    from cgr_exec import job_cgroup_path, kill_job_leftovers

    job = f"held-{os.getpid()}"
    held = hold(_argv(tmp_path), cwd=work, env=ENV, job=job, job_cgroup=True)
    try:
        assert held.popen is not None
        cgroup = job_cgroup_path(job)
        assert cgroup is not None
        assert str(held.popen.pid) in (cgroup / "cgroup.procs").read_text().split()
        _release(held, tmp_path, b"")
        note = _note(tmp_path)
        assert str(note["cgroup"]).endswith(f"/{cgroup.name}")
        assert note["env"] == {**ENV, "CGR_EXEC_JOB": job}
    finally:
        held.cancel()
        kill_job_leftovers(job, 1.0)
