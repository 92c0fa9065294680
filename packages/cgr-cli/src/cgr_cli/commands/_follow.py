"""Following a run as it happens: its own log, the agent's activity, the cost so far, and
at the end the outcome and the pull request.

Used by ``cgr logs RUN_ID --follow`` and by ``cgr run`` on a terminal. Everything is read
from the run's files (``run.log``, the agent's stream-json ``agent.jsonl``) and the store,
so following never disturbs the run and works from any process on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cgr_cli.config._model import Config
    from cgr_store import Run


class RunFollower:
    """New readable lines of one run since the last call to ``poll``."""

    def __init__(self, config: Config, run_id: str, *, run_log: bool = True) -> None:
        from cgr_cli.ops._status_view import run_files
        from cgr_cli.ui._data import LogTail

        self.config = config
        self.run_id = run_id
        files = run_files(config, run_id)
        self._run_log = LogTail(files["run"]) if run_log else None
        self._agent = LogTail(files["agent"])
        self._cost_shown = ""

    def poll(self, run: Run | None = None) -> list[str]:
        """Lines written since the last poll; ``run`` (the store's row, when the caller has
        it) adds the cost so far when it changed."""
        from cgr_cli.ui._data import render_agent_line

        lines: list[str] = []
        if self._run_log is not None:
            lines += self._run_log.read()
        agent = [text for line in self._agent.read() for text in render_agent_line(line)]
        lines += [f"  {text}" for text in agent]
        if agent and run is not None:
            from cgr_cli.ops._status_view import cost_so_far

            cost = cost_so_far(self.config, run)
            shown = f"${cost:.2f}" if cost is not None else ""
            if shown and shown != self._cost_shown:
                self._cost_shown = shown
                lines.append(f"  … cost so far {shown}")
        return lines


def outcome_line(run: Run) -> str:
    """The run's end as one line: status, outcome, pull request, cost, error."""
    parts = [f"run {run.id} {run.status}"]
    if run.outcome:
        parts.append(f"outcome {run.outcome}")
    if run.pr_url:
        parts.append(f"pull request {run.pr_url}")
    if run.cost_usd is not None:
        parts.append(f"cost ${run.cost_usd:.2f}")
    line = ", ".join(parts)
    return f"{line}; {run.error}" if run.error else line


def follow(
    config: Config,
    run_id: str,
    write: Callable[[str], None],
    *,
    poll_seconds: float = 0.25,
    run_log: bool = True,
) -> Run:
    """Print the run's activity with ``write`` until it ends; then its outcome line.
    Returns the ended run."""
    import time

    from cgr_cli.config._store import open_config_store

    follower = RunFollower(config, run_id, run_log=run_log)
    with open_config_store(config) as store:
        while True:
            run = store.get_run(run_id)
            for line in follower.poll(run):
                write(line)
            if not run.status.is_active:
                # The last lines written as it ended, then the outcome.
                for line in follower.poll(run):
                    write(line)
                write(outcome_line(run))
                return run
            time.sleep(poll_seconds)
