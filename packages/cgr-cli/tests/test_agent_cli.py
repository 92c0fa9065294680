"""The Claude Code adapter against every pinned release: its recorded stream-json.

``tests/e2e/samples/<version>/`` hold what each pinned CLI release printed for the e2e
scenarios (``nox -s e2e`` keeps them true to the live CLI). Here cgr's parser reads them
without the CLI installed: a field a newer release added must not disturb it, and the
is_error/subtype rules must give the same verdicts on every release.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cgr_cli import StreamState, judge

SAMPLES = Path(__file__).parent / "e2e" / "samples"
RELEASES = sorted(p.name for p in SAMPLES.iterdir() if p.is_dir())


def test_samples_exist_for_the_oldest_and_the_newest_pinned_release() -> None:
    assert {"2.1.197", "2.1.332"} <= set(RELEASES)


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize(
    ("sample", "ok", "fragment"),
    [
        ("success.jsonl", True, "finished"),
        ("api-error-401.jsonl", False, "API status 401"),
        ("api-error-500.jsonl", False, "API status 500"),
        ("max-turns.jsonl", False, "maximum number of turns"),
        ("permission-denied.jsonl", True, "finished"),
    ],
)
def test_stream_state_on_real_cli_output(
    release: str, sample: str, ok: bool, fragment: str
) -> None:
    """Streams recorded from the real Claude Code CLI parse as the pipeline expects:
    session id, totals, and the is_error/subtype rules."""
    text = (SAMPLES / release / sample).read_text()
    raw_result = json.loads(text.splitlines()[-1])
    state = StreamState()
    for line in text.splitlines():
        state.feed(line)
    assert state.bad_lines == 0
    assert state.session_id
    assert state.result is not None
    assert state.result.session_id == state.session_id
    assert state.result.cost_usd == raw_result["total_cost_usd"]
    assert state.result.input_tokens == raw_result["usage"]["input_tokens"]
    verdict = judge(exit_code=0 if ok else 1, result=state.result)
    assert verdict.ok is ok
    assert fragment in verdict.reason
    if sample == "success.jsonl":
        assert state.result.text == "hello.txt now says hello, world."
        assert state.tools_used == {"Write": 1, "Edit": 1, "Bash": 1}
        assert state.files_written == ["hello.txt"]
        assert state.result.num_turns == 4
        assert state.result.input_tokens > 0
    if sample == "permission-denied.jsonl":
        assert state.result.permission_denials == ["WebFetch"]
