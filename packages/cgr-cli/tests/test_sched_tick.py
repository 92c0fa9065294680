"""`cgr tick` (fork mode) as a real process against the simulator."""

from __future__ import annotations

import json

import pytest

from runworld import REPO, Env
from schedworld import Sched


@pytest.mark.slow
def test_tick_forks_up_to_the_free_slots_and_a_finished_child_takes_the_rest(
    env: Env, sched: Sched, subreaper: None
) -> None:
    sched.config(polling={"max_concurrency": 2, "runs_ahead": 0})
    issues = env.sim.seed_ready_issues(REPO, 3)
    first = sched.cgr("tick", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert len(report["started"]) == 2
    assert report["pending"] == [f"{REPO}#{issues[2]}"]
    assert len(report["children"]) == 2
    # The parent returned at once: its children are still working.
    assert any(r.status.is_active for r in sched.runs())
    # No second tick: a child whose run ended took the pending issue into its own slot
    # and ran it in the same process.
    sched.wait_until(lambda: sched.all_ended(3), 60, "the third run")
    [chained] = [r for r in sched.runs() if r.target == issues[2]]
    assert chained.pid in report["children"].values()
    third = json.loads(sched.cgr("tick", "--json").stdout)
    assert third["started"] == []
    assert third["discovered"] == 0
    sched.wait_all_gone("children to be gone")
    sched.assert_consistent(issues)
    assert {r.outcome for r in sched.runs()} == {"pr_opened"}


@pytest.mark.slow
def test_a_child_taking_job_after_job_asks_who_labelled_each_issue_once(
    env: Env, sched: Sched, subreaper: None
) -> None:
    """One slot, four ready issues: the tick screens all four (who applied each label:
    the issue events) and its child takes them one after another, each next job found by
    a pass of its own. Those passes use what the tick learnt (the process's LabellerMemo,
    copied into the child by the fork) instead of asking each waiting issue again: four
    events requests in all, where asking again made 4 + 3 + 2 + 1."""
    sched.config(polling={"max_concurrency": 1, "runs_ahead": 0})
    issues = env.sim.seed_ready_issues(REPO, 4)
    env.sim.advance_clock(5)  # the labels are older than LabellerMemo.SETTLE_SECONDS
    first = sched.cgr("tick", "--json")
    assert first.returncode == 0, first.stderr
    sched.wait_until(lambda: sched.all_ended(4), 90, "four runs")
    assert {r.outcome for r in sched.runs()} == {"pr_opened"}
    asked = sorted(
        int(r.path.split("/")[-2]) for r in env.sim.requests if r.path.endswith("/events")
    )
    assert asked == sorted(issues)
    sched.wait_all_gone("children to be gone")


@pytest.mark.slow
def test_a_child_taking_job_after_job_reads_the_pending_repository_alone(
    env: Env, sched: Sched, subreaper: None
) -> None:
    """Three ready issues in one repository, one slot, a second (idle) repository: the
    tick's full pass reads both; its child's passes for its next jobs read only the
    repository whose jobs were pending (as the daemon's passes woken by a child's end)."""
    other = "acme/gadgets"
    sched.config_with(other, polling={"max_concurrency": 1, "runs_ahead": 0})
    issues = env.sim.seed_ready_issues(REPO, 3)
    first = sched.cgr("tick", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["pending"] == [f"{REPO}#{n}" for n in issues[1:]]
    sched.wait_until(lambda: sched.all_ended(3), 90, "three runs")

    assert sched.issue_lists(other) == 1  # the tick's full pass
    assert sched.issue_lists(REPO) == 3  # the full pass and one per job taken after the first
    sched.wait_all_gone("children to be gone")
    sched.assert_consistent(issues)
    assert {r.outcome for r in sched.runs()} == {"pr_opened"}


@pytest.mark.slow
def test_a_childs_next_job_comes_from_the_first_pending_repository_read_alone(
    env: Env, sched: Sched, subreaper: None
) -> None:
    """Two ready issues in each of two repositories, one slot. Each pass of the child for
    its next job reads the first repository with pending jobs only; the second is read
    once the first has none left (not by every pass while the first still has some)."""
    other = "acme/gadgets"
    sched.config_with(other, polling={"max_concurrency": 1, "runs_ahead": 0})
    issues = env.sim.seed_ready_issues(REPO, 2)
    others = env.sim.seed_ready_issues(other, 2)
    first = sched.cgr("tick", "--json")
    assert first.returncode == 0, first.stderr
    # Jobs are taken repository by repository, acme/gadgets first: it started #1 there.
    assert json.loads(first.stdout)["pending"] == [
        f"{other}#{others[1]}",
        *(f"{REPO}#{n}" for n in issues),
    ]
    sched.wait_until(lambda: sched.all_ended(4), 90, "four runs")

    # The tick read both. The pass for the second job read acme/gadgets alone (and left
    # nothing pending there); the passes for the third and fourth read REPO alone. Reading
    # every pending repository on each pass would have read REPO one more time.
    assert sched.issue_lists(other) == 2
    assert sched.issue_lists(REPO) == 3
    assert {r.outcome for r in sched.runs()} == {"pr_opened"}
    sched.wait_all_gone("children to be gone")


@pytest.mark.slow
def test_when_the_first_pending_repository_has_no_job_left_the_others_are_read(
    env: Env, sched: Sched, subreaper: None
) -> None:
    """The job the child's next pass expected in the first pending repository is gone (its
    label removed meanwhile): that pass reads the other pending repositories and takes
    their job, rather than leaving the slot empty until the next tick."""
    other = "acme/gadgets"
    sched.config_with(other, polling={"max_concurrency": 1, "runs_ahead": 0})
    env.monkeypatch.setenv("SLOW_AGENT_SECONDS", "3")  # time to change GitHub meanwhile
    others = env.sim.seed_ready_issues(other, 2)
    issues = env.sim.seed_ready_issues(REPO, 1)
    first = sched.cgr("tick", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["pending"] == [f"{other}#{others[1]}", f"{REPO}#{issues[0]}"]
    env.sim.remove_label(other, others[1], "ready")
    sched.wait_until(lambda: sched.all_ended(2), 90, "two runs")
    assert sorted((r.repo, r.target) for r in sched.runs()) == [
        (other, others[0]),
        (REPO, issues[0]),
    ]
    assert {r.outcome for r in sched.runs()} == {"pr_opened"}
    # The second run was the child's (no second tick ran).
    assert len({r.pid for r in sched.runs()}) == 1
    sched.wait_all_gone("children to be gone")


def test_tick_with_a_bad_configuration_says_what_to_fix(env: Env, sched: Sched) -> None:
    env.config_path.write_text('repositories = ["acme/widgets"]\n[polling]\nmax_concurrency = 0\n')
    done = sched.cgr("tick")
    assert done.returncode == 1
    assert "polling.max_concurrency" in done.stderr


@pytest.mark.slow
def test_a_mention_beyond_the_free_slots_is_taken_by_a_later_tick(
    env: Env, sched: Sched, subreaper: None
) -> None:
    sched.config(polling={"max_concurrency": 1, "runs_ahead": 0})
    first = json.loads(sched.cgr("tick", "--json").stdout)  # streams start at GitHub's "now"
    assert first["discovered"] == 0
    issues = [env.sim.create_issue(REPO, f"Task {n}", "details", author="alice") for n in (1, 2)]
    for number in issues:
        env.sim.add_comment(REPO, number, f"@{env.sim.bot_login} please do it", author="alice")
    second = json.loads(sched.cgr("tick", "--json").stdout)
    assert len(second["started"]) == 1
    assert len(second["pending"]) == 1
    # The cursor was held before the pending comment: the child, its first run done, finds
    # it and runs it in the slot it holds (no tick needed).
    sched.wait_until(lambda: sched.all_ended(2), 60, "the second run")
    assert len({r.pid for r in sched.runs()}) == 1
    assert json.loads(sched.cgr("tick", "--json").stdout)["started"] == []
    assert sorted(r.target for r in sched.runs()) == issues
    assert {r.kind.value for r in sched.runs()} == {"issue_mention"}
    sched.wait_all_gone("children to be gone")
    sched.assert_consistent(issues)
