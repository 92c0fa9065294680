"""The agent (same OS user) cannot read the token from ``/proc/<cgr pid>/environ``.

Real processes: a token holder and a reader, both forked and, when the test runs as root,
both switched to one unprivileged user (root may read any process's environ; the
protection is against processes of cgr's own user, which is what the agent is).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgr_cli.ops._hardening import is_dumpable, make_undumpable

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")

TOKEN = "ghp_" + "Pr0cEnv1r0nT0ken0123456789abcdef"
NOBODY = 65534


def _become_user() -> None:
    if os.geteuid() == 0:
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _holder(harden: bool) -> subprocess.Popen[bytes]:
    """A process whose *initial* environment holds the token, running as the test user.

    As root it drops to the unprivileged user itself after starting (python need not be
    executable by that user); a uid change leaves a process non-dumpable, so the
    unhardened holder marks itself dumpable again, like any process that user starts.
    """
    ready_r, ready_w = os.pipe()
    code = (
        "import os, sys, time\n"
        "from cgr_cli.ops._hardening import _prctl, make_undumpable\n"
        "if os.geteuid() == 0:\n"
        f"    os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        f"{'make_undumpable()' if harden else '_prctl(4, 1)'}\n"
        "os.write(int(sys.argv[1]), b'x')\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(ready_w)],
        env={**os.environ, "GH_TOKEN": TOKEN},
        pass_fds=(ready_w,),
    )
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    return proc


def _read_environ_as_same_user(pid: int) -> str:
    """What a process of the same (unprivileged) user reads from /proc/<pid>/environ."""
    r, w = os.pipe()
    reader = os.fork()
    if reader == 0:
        try:
            os.close(r)
            _become_user()
            try:
                data = Path(f"/proc/{pid}/environ").read_bytes()
                os.write(w, b"OK " + data)
            except PermissionError:
                os.write(w, b"DENIED")
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(reader, 0)
    return b"".join(chunks).decode(errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def test_without_hardening_the_same_user_reads_the_token() -> None:
    # The threat is real: this is what the agent could do to an unhardened cgr.
    proc = _holder(harden=False)
    try:
        assert TOKEN in _read_environ_as_same_user(proc.pid)
    finally:
        _stop(proc)


def test_hardened_process_hides_its_environ_from_the_same_user() -> None:
    proc = _holder(harden=True)
    try:
        seen = _read_environ_as_same_user(proc.pid)
        assert TOKEN not in seen
        assert seen == "DENIED"
    finally:
        _stop(proc)


def test_the_mark_is_inherited_by_forks_and_dropped_on_exec() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            make_undumpable()
            grandchild = os.fork()
            if grandchild == 0:
                os.write(w, b"1" if not is_dumpable() else b"0")
                os._exit(0)
            os.waitpid(grandchild, 0)
            # After exec (git, the agent) the process is dumpable again.
            done = subprocess.run(
                [sys.executable, "-c",
                 "from cgr_cli.ops._hardening import is_dumpable; print(is_dumpable())"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            os.write(w, done.stdout.strip().encode())
        finally:
            os._exit(0)
    os.close(w)
    time.sleep(0)
    out = b""
    while chunk := os.read(r, 100):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    assert out.decode() == "1True"


def test_cgr_main_marks_its_process() -> None:
    code = (
        "import cgr_cli._main as m, cgr_cli.ops._hardening as h\n"
        "try:\n    m.main([])\nexcept SystemExit:\n    pass\n"
        "print('dumpable', h.is_dumpable())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout.strip().endswith("dumpable False")
