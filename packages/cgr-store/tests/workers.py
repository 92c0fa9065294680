"""Worker processes for the store's process tests (SQLite and PostgreSQL alike): a race
started at a file barrier, and a worker SIGKILLed in the middle of its writes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest


def race(
    argvs: list[list[str]], barrier: Path, *, ready_within: float
) -> list[tuple[int, str, str]]:
    """Start one process per argv; each touches ``barrier/ready-<n>`` and waits for
    ``barrier/go``. Once all are ready (within ``ready_within`` seconds, or the test fails)
    touch ``go`` so they start at once; return each one's exit code, stdout and stderr."""
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]
    try:
        deadline = time.monotonic() + ready_within
        while len(list(barrier.glob("ready-*"))) < len(procs):
            for p in procs:
                if p.poll() is not None:
                    pytest.fail(f"a worker died before the barrier: {p.communicate()[1]}")
            assert time.monotonic() < deadline, "workers did not get ready"
            time.sleep(0.01)
        (barrier / "go").touch()
        results = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()  # reap and close the pipes, also when the test failed
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, results, strict=True)]


def kill_after(argv: list[str], line: str, delay: float) -> float:
    """Start ``argv``, wait until it prints ``line``, SIGKILL it ``delay`` seconds later
    (no clean-up of its own can run) and reap it; the monotonic time of the kill."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == line, proc.stderr and proc.stderr.read()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return killed_at
