"""Memory of a run whose agent floods its output: 200 MB of stream-json with one 50 MB line.

Starts a real ``cgr run`` process (simulator, real git, store, Landlock as by default) with
tests/hostile_agent.py's ``flood`` attack as the agent, polls the run process's peak
resident set (``VmHWM`` in ``/proc/<pid>/status``) until it exits, and prints it with the
size of the stored ``agent.jsonl`` (capped by ``agent.max_output_mb``, default 64). The
goal is a peak under 150 MB: the line over 1 MiB is skipped without being buffered, and
past the cap the stream is parsed but not stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cgr_discovery.testing import GitHubSimulator

REPO = "bench/flood"
HOSTILE = Path(__file__).resolve().parents[1] / "tests" / "hostile_agent.py"
FLOOD_MB, LINE_MB = 200, 50


def _hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, GitHubSimulator(Path(tmp) / "sim") as sim:
        sim.create_repo(REPO, labels=["ready"])
        number = sim.create_issue(REPO, "Talk a lot", "", labels=["ready"])
        state = Path(tmp) / "agent"
        state.mkdir()
        (state / "spec.json").write_text(json.dumps({"flood_mb": FLOOD_MB,
                                                     "long_line_mb": LINE_MB}))  # fmt: skip
        config = Path(tmp) / "config.toml"
        config.write_text(
            f'repositories = ["{REPO}"]\n'
            f'[github]\napi_url = "{sim.url}"\ntoken = "{sim.token}"\n'
            f'bot_login = "{sim.bot_login}"\n'
            f'[paths]\nworkspace_root = "{tmp}/ws"\ndatabase = "{tmp}/cgr.sqlite3"\n'
            f"[agent]\ncommand = {json.dumps([sys.executable, str(HOSTILE)])}\n"
            'env_passthrough = ["FAKE_CLAUDE_STATE", "HOSTILE"]\n'
            f'[agent.sandbox]\nread_write = ["{state}"]\n'
        )
        env = {**os.environ, "FAKE_CLAUDE_STATE": str(state), "HOSTILE": "flood"}
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "cgr_cli", "run", "--config", str(config),
             "--repo", REPO, "--number", str(number), "--json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _hwm_kib(proc.pid) or 0)
            time.sleep(0.02)
        out, err = proc.communicate()
        wall = time.perf_counter() - started
        summary = json.loads(out)
        (run_dir,) = [p for p in Path(tmp, "ws").iterdir() if p.name.startswith("r-")]
        stored = (run_dir / "logs" / "agent.jsonl").stat().st_size
        print(f"cgr-cli agent output flood: {FLOOD_MB} MB of stream-json, one {LINE_MB} MB line")
        print(f"  outcome {summary['outcome']}, wall {wall:.1f} s")
        print(f"  run process peak RSS (VmHWM): {peak / 1024:.0f} MB (goal < 150 MB)")
        print(f"  agent.jsonl stored: {stored / 1024 / 1024:.1f} MB (agent.max_output_mb = 64)")
        if proc.returncode not in (0, 1):
            print(err.decode(errors="replace")[-2000:])


if __name__ == "__main__":
    main()
