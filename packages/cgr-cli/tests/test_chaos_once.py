"""Issue 14's required figures, asserted (the scenario and the figures: chaosworld.py).

≥ 30 ready issues and ≥ 10 mentions in 3 repositories, concurrency 3, real `cgr tick` and
`cgr daemon` processes, 10% of every REST route and of git smart HTTP failing (5xx,
dropped before, dropped after applying), a few secondary limits, SIGKILL of ~20% of the run
processes and of the daemon 3 times. `nox -s bench` prints the same table
(bench/bench_chaos.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosworld import Plan, make_world, run_scenario

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)
def test_transient_faults_and_kills_leave_exactly_one_correct_visible_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cgr_discovery.testing import GitHubSimulator

    plan = Plan()
    with GitHubSimulator(tmp_path / "sim") as sim:
        world = make_world(sim, tmp_path, plan)
        figures = run_scenario(world, plan, log=lambda _table: None)
        with capsys.disabled():
            print("\n" + figures.table())
    assert figures.ready_issues >= 30
    assert figures.mentions >= 10
    assert len(REPOS_USED := {r for r, _ in world.ready}) == 3, REPOS_USED
    # The faults and kills really happened.
    assert sum(figures.faults_injected.values()) >= 50, figures.faults_injected
    assert any(k.startswith("git") for k in figures.faults_injected), figures.faults_injected
    assert figures.killed_daemons == 3
    assert figures.killed_runs >= 3
    assert figures.ticks >= 2
    # The required figures.
    assert figures.failed_by_fault == []
    assert figures.visible_state_errors == []
    assert figures.max_prs_per_issue <= 1
    assert figures.unreported_prs == []
    assert figures.active_runs == 0
    assert figures.leftover_processes == []
    assert figures.undelivered == 0
    assert figures.triggers_without_run == []
