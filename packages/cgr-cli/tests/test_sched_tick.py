"""`cgr tick` (fork mode) as a real process against the simulator."""

from __future__ import annotations

import json

import pytest

from runworld import REPO, Env
from schedworld import (
    all_terminal,
    assert_consistent,
    cgr,
    no_processes_left,
    runs,
    sched_config,
    wait_until,
)


@pytest.mark.slow
def test_tick_forks_up_to_the_free_slots_and_a_finished_child_takes_the_rest(
    env: Env, subreaper: None
) -> None:
    sched_config(env, polling={"max_concurrency": 2})
    issues = env.sim.seed_ready_issues(REPO, 3)
    first = cgr(env, "tick", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert len(report["started"]) == 2
    assert report["pending"] == [f"{REPO}#{issues[2]}"]
    assert len(report["children"]) == 2
    # The parent returned at once: its children are still working.
    assert any(r.status.is_active for r in runs(env))
    # No second tick: a child whose run ended took the pending issue into its own slot
    # and ran it in the same process.
    wait_until(lambda: all_terminal(env) and len(runs(env)) == 3, 60, "the third run")
    [chained] = [r for r in runs(env) if r.target == issues[2]]
    assert chained.pid in report["children"].values()
    third = json.loads(cgr(env, "tick", "--json").stdout)
    assert third["started"] == []
    assert third["discovered"] == 0
    wait_until(lambda: not list(no_processes_left(env)), 20, "children to be gone")
    assert_consistent(env, issues)
    assert {r.outcome for r in runs(env)} == {"pr_opened"}


def test_tick_with_a_bad_configuration_says_what_to_fix(env: Env) -> None:
    env.config_path.write_text('repositories = ["acme/widgets"]\n[polling]\nmax_concurrency = 0\n')
    done = cgr(env, "tick")
    assert done.returncode == 1
    assert "polling.max_concurrency" in done.stderr


@pytest.mark.slow
def test_a_mention_beyond_the_free_slots_is_taken_by_a_later_tick(
    env: Env, subreaper: None
) -> None:
    sched_config(env, polling={"max_concurrency": 1})
    first = json.loads(cgr(env, "tick", "--json").stdout)  # streams start at GitHub's "now"
    assert first["discovered"] == 0
    issues = [env.sim.create_issue(REPO, f"Task {n}", "details", author="alice") for n in (1, 2)]
    for number in issues:
        env.sim.add_comment(REPO, number, f"@{env.sim.bot_login} please do it", author="alice")
    second = json.loads(cgr(env, "tick", "--json").stdout)
    assert len(second["started"]) == 1
    assert len(second["pending"]) == 1
    # The cursor was held before the pending comment: the child, its first run done, finds
    # it and runs it in the slot it holds (no tick needed).
    wait_until(lambda: all_terminal(env) and len(runs(env)) == 2, 60, "the second run")
    assert len({r.pid for r in runs(env)}) == 1
    assert json.loads(cgr(env, "tick", "--json").stdout)["started"] == []
    assert sorted(r.target for r in runs(env)) == issues
    assert {r.kind.value for r in runs(env)} == {"issue_mention"}
    wait_until(lambda: not list(no_processes_left(env)), 20, "children to be gone")
    assert_consistent(env, issues)
