"""What the scheduling and webhook benchmarks share: this process as the subreaper of the
`cgr tick` / `cgr daemon` children it starts, and their configuration (the simulator, a
real SQLite file, an agent that notes when it started and becomes the scripted agent).

Not a benchmark itself (nox runs bench_*.py only).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# The tests' helpers (schedworld), as bench_chaos.py and bench_fleet.py use them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cgr_discovery.testing import GitHubSimulator
from schedworld import children_of, set_subreaper
from schedworld import reap_exited as reap

FAKE = Path(__file__).resolve().parents[1] / "tests" / "fake_claude.py"

__all__ = ["FAKE", "children_of", "reap", "subreaper", "write_config"]


def subreaper() -> None:
    """A tick's children outlive it: as their subreaper this process inherits them, and
    ``reap`` collects them, so none is left a zombie while the bench runs."""
    set_subreaper(True)


def write_config(
    tmp: Path,
    sim: GitHubSimulator,
    repos: list[str],
    *,
    agent: str,
    interval: float,
    concurrency: int,
    extra: str = "",
    command: list[str] | None = None,
) -> Path:
    """``tmp/config.toml`` for ``repos`` on ``sim``, the agent the Python code ``agent``
    (which may write its start under $BENCH_STARTS), plus ``extra`` TOML; the agent's
    variables set in this process's environment, which cgr passes through. ``command``:
    the agent's command line instead of ``python -c agent``."""
    config = tmp / "config.toml"
    # $CGR_BENCH_RUNS_AHEAD: polling.runs_ahead (unset: cgr's default, max_concurrency).
    runs_ahead = os.environ.get("CGR_BENCH_RUNS_AHEAD")
    ahead = f"runs_ahead = {int(runs_ahead)}\n" if runs_ahead else ""
    config.write_text(
        f"repositories = {json.dumps(repos)}\n"
        f"[github]\napi_url = {json.dumps(sim.url)}\ntoken = {json.dumps(sim.token)}\n"
        f"bot_login = {json.dumps(sim.bot_login)}\nstatus_update_seconds = 0.0\n"
        f"[paths]\nworkspace_root = {json.dumps(str(tmp / 'ws'))}\n"
        f"database = {json.dumps(str(tmp / 'cgr.sqlite3'))}\n"
        f"[agent]\ncommand = {json.dumps(command or [sys.executable, '-c', agent])}\n"
        'env_passthrough = ["FAKE_CLAUDE_SCENARIO", "FAKE_CLAUDE_STATE", "BENCH_STARTS"]\n'
        f"[polling]\ninterval_seconds = {interval}\nmax_concurrency = {concurrency}\n"
        + ahead
        + '[cleanup]\npolicy = "delete"\n'
        # Landlock lets the agent write only its checkout, home and temp dir: the two
        # directories the bench's agent writes, and the scripted agent it runs, are granted.
        f"[agent.sandbox]\nread_write = {json.dumps([str(tmp / 'starts'), str(tmp / 'agent')])}\n"
        f"read_only = {json.dumps([str(FAKE.parent)])}\n" + extra
    )
    os.environ.update(
        FAKE_CLAUDE_STATE=str(tmp / "agent"),
        FAKE_CLAUDE_SCENARIO="success",
        BENCH_STARTS=str(tmp / "starts"),
    )
    for name in ("starts", "agent"):
        (tmp / name).mkdir(exist_ok=True)
    return config
