"""cgr-exec benchmark: memory of a supervising process under 200 MB of output.

The supervised command writes 200 MiB to stdout: 150 MiB of 4 KiB lines and one single
50 MiB line in the middle (what a misbehaving agent printed in issue 13). ``supervise``
runs with the defaults cgr uses (``max_line_bytes`` 1 MiB) and a 64 MiB storage cap.
Prints the supervising process's peak RSS (ru_maxrss) before and after, the time taken,
and what was parsed, skipped and stored. Nothing is asserted. Run with ``nox -s bench``.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import anyio

from cgr_exec import supervise

MIB = 1 << 20
# 4 KiB lines: 150 MiB of them, the 50 MiB line after the first half.
PRINTER = """
import sys
w = sys.stdout.buffer.write
line = b"x" * 4095 + b"\\n"
block = line * 256  # 1 MiB
for _ in range(75):
    w(block)
w(b"y" * (50 << 20) + b"\\n")
for _ in range(75):
    w(block)
"""


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def _run(directory: Path) -> None:
    lines = 0

    def on_line(line: str) -> None:
        nonlocal lines
        lines += 1

    before = _rss_mib()
    started = time.monotonic()
    result = await supervise(
        [sys.executable, "-c", PRINTER],
        stdout_path=directory / "out",
        stderr_path=directory / "err",
        on_stdout_line=on_line,
        max_output_bytes=64 * MIB,
    )
    elapsed = time.monotonic() - started
    after = _rss_mib()
    stored = (directory / "out").stat().st_size
    print(f"output: {result.stdout_bytes / MIB:.0f} MiB in {elapsed:.1f} s")
    print(f"lines parsed: {lines}, skipped over 1 MiB: {result.skipped_lines}")
    print(f"stored: {stored / MIB:.1f} MiB (truncated: {result.stdout_truncated})")
    print(f"peak RSS of the supervising process: {before:.1f} MiB before, {after:.1f} MiB after")


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        anyio.run(_run, Path(directory))


if __name__ == "__main__":
    main()
