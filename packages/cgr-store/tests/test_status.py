from __future__ import annotations

import pytest

from cgr_store import ALLOWED_TRANSITIONS, RunStatus, can_transition

ACTIVE = {RunStatus.QUEUED, RunStatus.CLAIMED, RunStatus.RUNNING}
TERMINAL = set(RunStatus) - ACTIVE


def test_active_and_terminal_partition_the_statuses() -> None:
    assert {s for s in RunStatus if s.is_active} == ACTIVE
    assert {s for s in RunStatus if s.is_terminal} == TERMINAL
    assert RunStatus("needs_human") is RunStatus.NEEDS_HUMAN
    assert str(RunStatus.TIMED_OUT) == "timed_out"


def test_every_status_has_a_row() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(RunStatus)


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_terminal_statuses_are_final(status: RunStatus) -> None:
    assert ALLOWED_TRANSITIONS[status] == frozenset()


def test_the_happy_path_and_the_early_exits() -> None:
    assert can_transition(RunStatus.QUEUED, RunStatus.CLAIMED)
    assert can_transition(RunStatus.CLAIMED, RunStatus.RUNNING)
    assert can_transition(RunStatus.RUNNING, RunStatus.SUCCEEDED)
    for early in (RunStatus.QUEUED, RunStatus.CLAIMED):
        for end in TERMINAL - {RunStatus.SUCCEEDED}:
            assert can_transition(early, end), (early, end)
    # Only a run that ran can have succeeded; nothing skips or goes back except a released
    # claim, and no status moves to itself.
    assert not can_transition(RunStatus.QUEUED, RunStatus.SUCCEEDED)
    assert not can_transition(RunStatus.CLAIMED, RunStatus.SUCCEEDED)
    assert not can_transition(RunStatus.QUEUED, RunStatus.RUNNING)
    assert not can_transition(RunStatus.RUNNING, RunStatus.QUEUED)
    assert not can_transition(RunStatus.RUNNING, RunStatus.CLAIMED)
    assert can_transition(RunStatus.CLAIMED, RunStatus.QUEUED)
    for status in RunStatus:
        assert not can_transition(status, status)
