from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from cgr_exec import (
    LogFileError,
    SpawnError,
    StdinFileError,
    StopHandle,
    SupervisionResult,
    WatchdogPatternError,
    read_stat,
    supervise,
)
from conftest import gone, our_children, wait_until

pytestmark = pytest.mark.anyio
PY = sys.executable


async def run(tmp_path: Path, code: str, **kwargs: object) -> SupervisionResult:
    return await supervise(
        [PY, "-c", code],
        stdout_path=tmp_path / "out",
        stderr_path=tmp_path / "err",
        **kwargs,  # type: ignore[arg-type]
    )


SPLIT_WRITER = """
import sys, time
w = sys.stdout.write
w('{"type": "sys'); sys.stdout.flush(); time.sleep(0.2)
w('tem"}\\nsecond line\\n'); sys.stdout.flush(); time.sleep(0.1)
w('no newline at the end'); sys.stdout.flush()
print("oops", file=sys.stderr)
sys.exit(5)
"""


async def test_lines_are_reassembled_and_streams_kept(tmp_path: Path) -> None:
    lines: list[str] = []
    result = await run(tmp_path, SPLIT_WRITER, on_stdout_line=lines.append)
    assert lines == ['{"type": "system"}', "second line", "no newline at the end"]
    assert result.exit_code == 5
    assert result.returncode == 5
    assert result.signal is None
    assert result.ended_by == "exit"
    assert not result.timed_out
    assert result.watchdog_pattern is None
    assert result.stop_reason is None
    assert 0.3 <= result.duration < 10
    assert result.identity.pid == result.pid
    assert (tmp_path / "out").read_text() == (
        '{"type": "system"}\nsecond line\nno newline at the end'
    )
    assert (tmp_path / "err").read_text() == "oops\n"


ECHO = """
import sys
for chunk in iter(lambda: sys.stdin.buffer.read1(65536), b""):
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
"""


async def test_large_stdin_is_echoed_without_deadlock(tmp_path: Path) -> None:
    # 4 MB is far above the 64 KiB pipe buffers: writing all of stdin before reading
    # stdout would block both sides forever.
    data = b"".join(b"line %06d %s\n" % (i, b"x" * 90) for i in range(40_000))
    assert len(data) > 4_000_000
    count = 0

    def on_line(line: str) -> None:
        nonlocal count
        count += 1

    with anyio.fail_after(60):
        result = await run(tmp_path, ECHO, stdin=data, on_stdout_line=on_line)
    assert result.exit_code == 0
    assert (tmp_path / "out").read_bytes() == data
    assert count == 40_000


async def test_stdin_from_a_file(tmp_path: Path) -> None:
    source = tmp_path / "prompt.txt"
    source.write_text("the prompt\n")
    result = await run(tmp_path, "import sys; print(sys.stdin.read().upper())", stdin=source)
    assert result.exit_code == 0
    assert (tmp_path / "out").read_text() == "THE PROMPT\n\n"
    with pytest.raises(StdinFileError, match="prompt-missing") as err:
        await run(tmp_path, "pass", stdin=str(tmp_path / "prompt-missing"))
    assert err.value.path == str(tmp_path / "prompt-missing")


async def test_no_stdin_reads_devnull(tmp_path: Path) -> None:
    result = await run(tmp_path, "import sys; print(repr(sys.stdin.read()))")
    assert (tmp_path / "out").read_text() == "''\n"
    assert result.exit_code == 0


FAMILY = """
import pathlib, signal, subprocess, sys, time
gc = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
child = subprocess.Popen([sys.executable, "-c", gc])
pathlib.Path({pid_file!r}).write_text(str(child.pid))
print("started", flush=True)
time.sleep(60)
"""


async def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "gc"
    started = time.monotonic()
    result = await run(tmp_path, FAMILY.format(pid_file=str(pid_file)), timeout=1.0, kill_grace=0.5)
    elapsed = time.monotonic() - started
    grandchild = int(pid_file.read_text())
    assert result.timed_out
    assert result.ended_by == "timeout"
    assert result.signal == signal.SIGTERM  # the leader obeyed SIGTERM
    assert 1.0 <= elapsed < 10
    # The grandchild ignored SIGTERM; the group SIGKILL after the grace reached it.
    wait_until(lambda: gone(grandchild), timeout=5)
    assert our_children() == []


WATCHED = """
import sys, time
sys.stdout.write("working\\nAPI rate li"); sys.stdout.flush(); time.sleep(0.2)
sys.stdout.write("mit exceeded, retrying\\n"); sys.stdout.flush()
time.sleep(60)
"""


async def test_watchdog_finds_a_pattern_split_across_reads(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await run(
        tmp_path,
        WATCHED,
        watchdog=[r"nothing-like-this", r"rate limit exceeded"],
        watchdog_grace=0.3,
    )
    assert result.ended_by == "watchdog"
    assert result.watchdog_pattern == "rate limit exceeded"
    assert result.watchdog_line == "API rate limit exceeded, retrying"
    assert result.signal == signal.SIGTERM
    assert not result.timed_out
    assert 0.5 <= time.monotonic() - started < 10


async def test_watchdog_watches_stderr_and_grace_lets_it_finish(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "print('Error: session expired', file=sys.stderr, flush=True)\n"
        "time.sleep(0.2)\n"
        "print('final result')\n"
    )
    result = await run(tmp_path, code, watchdog=[re.compile("session expired")], watchdog_grace=10)
    # The pattern was seen, but the command ended by itself within the grace.
    assert result.watchdog_pattern == "session expired"
    assert result.ended_by == "exit"
    assert result.exit_code == 0


COSTS = """
import json, time
for i in range(1000):
    print(json.dumps({"type": "progress", "cost_usd": i * 0.5}), flush=True)
    time.sleep(0.02)
"""


async def test_callback_stops_the_command(tmp_path: Path) -> None:
    seen: list[float] = []

    def on_line(line: str) -> str | None:
        cost = float(json.loads(line)["cost_usd"])
        seen.append(cost)
        return "cost ceiling of $2 crossed" if cost > 2 else None

    result = await run(tmp_path, COSTS, on_stdout_line=on_line, kill_grace=2)
    assert result.ended_by == "stopped"
    assert result.stop_reason == "cost ceiling of $2 crossed"
    assert result.signal == signal.SIGTERM
    assert 2.5 in seen
    assert len(seen) < 50


async def test_async_callback_and_stop_handle(tmp_path: Path) -> None:
    handle = StopHandle()
    lines: list[str] = []

    async def on_line(line: str) -> None:
        await anyio.lowlevel.checkpoint()
        lines.append(line)

    async def cancel_soon() -> None:
        await anyio.sleep(0.5)
        handle.stop("cancelled by a maintainer")
        handle.stop("second reason is ignored")

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_soon)
        result = await run(tmp_path, COSTS, on_stdout_line=on_line, stop=handle)
    assert result.ended_by == "stopped"
    assert result.stop_reason == "cancelled by a maintainer"
    assert handle.stopped
    assert lines


async def test_leftovers_in_the_group_are_ended_after_a_normal_exit(tmp_path: Path) -> None:
    code = (
        "import pathlib, subprocess, sys\n"
        "bg = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"pathlib.Path({str(tmp_path / 'bg')!r}).write_text(str(bg.pid))\n"
    )
    started = time.monotonic()
    result = await run(tmp_path, code, kill_grace=5)
    assert result.exit_code == 0
    assert result.ended_by == "exit"
    assert time.monotonic() - started < 5  # the background child held stdout open
    assert gone(int((tmp_path / "bg").read_text()))


async def test_callback_error_propagates_after_cleanup(tmp_path: Path) -> None:
    pids: list[int] = []

    def on_line(line: str) -> None:
        pids.append(int(line))
        raise RuntimeError("parser broke")

    code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    with pytest.raises(RuntimeError, match="parser broke"):
        await run(tmp_path, code, on_stdout_line=on_line, kill_grace=1)
    assert read_stat(pids[0]) is None  # ended and reaped
    assert our_children() == []


async def test_caller_cancellation_ends_and_reaps_the_command(tmp_path: Path) -> None:
    with anyio.move_on_after(0.5):
        await run(tmp_path, "import os, time; print(os.getpid(), flush=True); time.sleep(60)")
    pid = int((tmp_path / "out").read_text())
    assert read_stat(pid) is None
    assert our_children() == []


async def test_errors_name_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(SpawnError) as missing:
        await supervise(
            ["claude-not-installed", "-p"],
            stdout_path=tmp_path / "o",
            stderr_path=tmp_path / "e",
        )
    assert missing.value.command == "claude-not-installed"
    with pytest.raises(WatchdogPatternError) as bad:
        await run(tmp_path, "pass", watchdog=["unclosed ("])
    assert bad.value.pattern == "unclosed ("


async def test_env_and_cwd(tmp_path: Path) -> None:
    code = "import os; print(os.getcwd(), os.environ.get('AGENT_VAR'), 'PATH' in os.environ)"
    result = await run(tmp_path, code, cwd=tmp_path, env={"AGENT_VAR": "1"})
    assert result.exit_code == 0
    assert (tmp_path / "out").read_text() == f"{tmp_path} 1 False\n"
    assert os.getcwd() != str(tmp_path)


async def test_idle_timeout_ends_a_silent_command(tmp_path: Path) -> None:
    code = (
        "import time\n"
        "for i in range(5):\n"
        "    print(i, flush=True); time.sleep(0.1)\n"  # busy: output every 0.1 s
        "time.sleep(60)\n"  # then silent
    )
    started = time.monotonic()
    result = await run(tmp_path, code, idle_timeout=0.6, timeout=30)
    elapsed = time.monotonic() - started
    assert result.ended_by == "idle"
    assert result.idle_timed_out
    assert not result.timed_out
    assert (tmp_path / "out").read_text() == "0\n1\n2\n3\n4\n"
    assert 1.0 <= elapsed < 10  # 0.5 s of output kept it alive, then 0.6 s of silence


async def test_unusable_output_path_starts_nothing(tmp_path: Path) -> None:
    with pytest.raises(LogFileError) as err:
        await supervise(
            [PY, "-c", "import time; time.sleep(60)"],
            stdout_path=tmp_path / "out",
            stderr_path=tmp_path / "missing" / "err",
        )
    assert err.value.path == str(tmp_path / "missing" / "err")
    assert our_children() == []


async def test_overlong_lines_are_skipped_not_buffered(tmp_path: Path) -> None:
    lines: list[str] = []
    notes: list[str] = []
    # One 300 kB line arriving over several reads, one that is complete inside a read,
    # and an overlong last line without a newline.
    code = (
        "import sys; w = sys.stdout.write; w('first\\n' + 'x' * 300000 + '\\nshort\\n'); "
        "w('y' * 150 + '\\nz' * 3 + '\\n'); w('q' * 200)"
    )
    result = await run(
        tmp_path, code, on_stdout_line=lines.append, max_line_bytes=100, on_note=notes.append
    )
    assert result.exit_code == 0
    assert lines == ["first", "short", "z", "z", "z"]
    assert result.skipped_lines == 3
    assert notes == ["cgr-exec: a stdout line over max_line_bytes=100 was skipped"] * 3
    assert result.stdout_bytes == len((tmp_path / "out").read_bytes())  # the file is whole
    assert not result.stdout_truncated


async def test_output_past_the_cap_is_parsed_but_not_stored(tmp_path: Path) -> None:
    lines: list[str] = []
    notes: list[str] = []
    code = (
        "import sys\nfor i in range(1000): print(f'{i:099d}')\nprint('e' * 5000, file=sys.stderr)"
    )
    result = await run(
        tmp_path, code, on_stdout_line=lines.append, max_output_bytes=10_000, on_note=notes.append
    )
    assert result.exit_code == 0
    assert len(lines) == 1000  # every line still reached the callback
    assert lines[-1] == f"{999:099d}"
    assert result.stdout_bytes == 100_000
    assert result.stdout_truncated
    assert not result.stderr_truncated
    stored = (tmp_path / "out").read_bytes()
    text = (
        "cgr-exec: stdout reached max_output_bytes=10000; "
        "the rest is read and parsed but not stored"
    )
    assert stored == b"".join(f"{i:099d}\n".encode() for i in range(100)) + f"\n[{text}]\n".encode()
    assert notes == [text]
    assert (tmp_path / "err").read_text() == "e" * 5000 + "\n"


async def test_bad_output_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_line_bytes"):
        await run(tmp_path, "pass", max_line_bytes=0)
    with pytest.raises(ValueError, match="max_output_bytes"):
        await run(tmp_path, "pass", max_output_bytes=-1)


RSS_SCRIPT = """
import json, resource, sys
import anyio
from cgr_exec import supervise

PRINTER = '''
import sys
w = sys.stdout.buffer.write
block = (b"x" * 4095 + b"\\\\n") * 256
for _ in range(75):
    w(block)
w(b"y" * (50 << 20) + b"\\\\n")
for _ in range(75):
    w(block)
'''
lines = 0
def on_line(line):
    global lines
    lines += 1

async def main():
    return await supervise([sys.executable, "-c", PRINTER], stdout_path=sys.argv[1] + "/out",
                           stderr_path=sys.argv[1] + "/err", on_stdout_line=on_line,
                           max_output_bytes=64 << 20)

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = anyio.run(main)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": after - before, "lines": lines, "skipped": result.skipped_lines,
                  "total": result.stdout_bytes, "truncated": result.stdout_truncated}))
"""


@pytest.mark.slow
def test_memory_stays_bounded_with_200_mb_of_output_and_a_50_mb_line(tmp_path: Path) -> None:
    # Run in a fresh process so ru_maxrss measures supervise alone (RUSAGE_SELF: the
    # printing child's memory is not counted).
    import subprocess

    done = subprocess.run(
        [PY, "-c", RSS_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["total"] == (200 << 20) + 1  # 200 MiB and the long line's newline
    assert figures["lines"] == 150 * 256
    assert figures["skipped"] == 1
    assert figures["truncated"]
    assert (tmp_path / "out").stat().st_size < (64 << 20) + 200
    assert figures["growth_kib"] < 100 * 1024  # loosely: the 50 MB line was never held


async def test_a_command_that_never_stops_printing_still_times_out(tmp_path: Path) -> None:
    # The pipe is never empty, so reading it never has to wait: the limits must fire anyway.
    started = time.monotonic()
    result = await supervise(
        ["yes", "spam"],
        stdout_path=tmp_path / "out",
        stderr_path=tmp_path / "err",
        timeout=1.0,
        kill_grace=1.0,
        max_output_bytes=1_000_000,
    )
    assert result.timed_out
    assert time.monotonic() - started < 10
    assert result.stdout_truncated
