"""Start-up: `cgr --help`, `cgr --version` and `cgr run` up to its first store lookup.

Each figure is printed beside its bound, measured in the same run:

- ``cgr --help`` and ``cgr --version``: at most 4 x ``python -c pass``;
- ``python -m cgr_cli run --run-id R`` (what the daemon starts), from spawn to its first
  store lookup: at most 120 ms, and printed as a multiple of the bare interpreter too
  (the bound was set on a machine whose bare interpreter starts in 13 ms).

Medians of ``CGR_BENCH_REPEAT`` (default 21) runs, after one warm-up run each. The store
lookup is timed by an audit hook (``sqlite3.connect``, the store opening its database,
its first lookup following at once) installed by a ``sitecustomize`` module on
``PYTHONPATH``: the child writes the wall-clock time, the parent took it before spawning.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEAT = int(os.environ.get("CGR_BENCH_REPEAT", "21"))
RUN_BOUND_MS = 120.0
RATIO_BOUND = 4.0

_SITE = """
import os, sys, time

def _hook(event, args):
    if event == "sqlite3.connect" and "CGR_BENCH_STORE_AT" in os.environ:
        with open(os.environ.pop("CGR_BENCH_STORE_AT"), "w") as f:
            f.write(repr(time.time()))

sys.addaudithook(_hook)
"""


def _median_ms(argv: list[str], env: dict[str, str] | None = None) -> float:
    times = []
    for n in range(REPEAT + 1):
        start = time.perf_counter()
        subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False
        )
        if n:  # the first run warms the file cache
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _to_store_ms(tmp: Path) -> float:
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITE)
    config = tmp / "config.toml"
    config.write_text(
        'repositories = ["acme/widgets"]\n'
        '[github]\napi_url = "http://127.0.0.1:9"\ntoken = "ghp_bench"\nbot_login = "bot"\n'
        f'[paths]\nworkspace_root = "{tmp}/ws"\ndatabase = "{tmp}/cgr.sqlite3"\n'
        f'[agent]\ncommand = ["{sys.executable}", "-c", "pass"]\n'
    )
    argv = [sys.executable, "-m", "cgr_cli", "run", "--config", str(config),
            "--repo", "acme/widgets", "--number", "1", "--run-id", "r-bench"]  # fmt: skip
    stamp = tmp / "store-at"
    gaps = []
    for n in range(REPEAT + 1):
        env = dict(os.environ, PYTHONPATH=str(site), CGR_BENCH_STORE_AT=str(stamp))
        start = time.time()
        # Exits 2 at once (no such run): the lookup is what is timed, not the run.
        subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False
        )
        if n:
            gaps.append(float(stamp.read_text()) - start)
    return statistics.median(gaps) * 1000


def main() -> None:
    bare = _median_ms([sys.executable, "-c", "pass"])
    script = shutil.which("cgr", path=str(Path(sys.executable).parent))
    cgr = [script] if script else [sys.executable, "-m", "cgr_cli"]
    print(f"cgr-cli start-up (median of {REPEAT}; `{' '.join(cgr)}`)")
    print(f"  python -c pass: {bare:.1f} ms")
    for args in (["--help"], ["--version"]):
        ms = _median_ms([*cgr, *args])
        ok = "ok" if ms <= RATIO_BOUND * bare else "OVER"
        print(f"  cgr {args[0]}: {ms:.1f} ms = {ms / bare:.1f} x python -c pass "
              f"(bound {RATIO_BOUND:g} x = {RATIO_BOUND * bare:.1f} ms) {ok}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        ms = _to_store_ms(Path(tmp))
    ok = "ok" if ms <= RUN_BOUND_MS else "OVER"
    print(
        f"  python -m cgr_cli run: spawn -> first store lookup {ms:.1f} ms = "
        f"{ms / bare:.1f} x python -c pass (bound {RUN_BOUND_MS:g} ms) {ok}"
    )


if __name__ == "__main__":
    main()
