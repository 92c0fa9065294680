"""Issue 14's chaos figures: transient GitHub and git faults, SIGKILLed runs and daemons.

The scenario of tests/test_chaos_once.py (tests/chaosworld.py): 30 ready issues and 10
@mentions in 3 repositories, concurrency 3, real `cgr tick` then `cgr daemon` processes,
10% of every REST route and of git smart HTTP failing (500/502/503, dropped before, dropped
after applying), a few secondary rate limits, ~20% of the run processes and the daemon
3 times SIGKILLed. Prints the table of figures the test asserts. ``CGR_BENCH_SEED`` picks
another random sequence.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cgr_discovery.testing import GitHubSimulator
from chaosworld import Plan, make_world, run_scenario


def main() -> int:
    plan = Plan(seed=int(os.environ.get("CGR_BENCH_SEED", "14")))
    with tempfile.TemporaryDirectory(prefix="cgr-chaos-") as tmp:
        root = Path(tmp)
        with GitHubSimulator(root / "sim") as sim:
            world = make_world(sim, root, plan)
            print(f"chaos (seed {plan.seed}):")
            figures = run_scenario(world, plan)
    bad = (
        figures.failed_by_fault
        + figures.visible_state_errors
        + figures.unreported_prs
        + figures.leftover_processes
        + figures.triggers_without_run
    )
    for line in bad:
        print("  problem:", line)
    return 1 if bad or figures.undelivered or figures.active_runs else 0


if __name__ == "__main__":
    raise SystemExit(main())
