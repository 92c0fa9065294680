"""What the real CLI prints with ``--output-format stream-json --verbose``, kept as samples.

``samples/<version>/*.jsonl`` are stdout of each pinned CLI release for the scenarios
below. cgr's stream-json parser is unit-tested against them without the CLI installed
(tests/test_agent_cli.py); these tests rerun each scenario on the installed release and
fail when the live lines no longer have the shape of *that release's* samples (the same
kinds of line in the same order, the same keys, the same JSON types), with a diff of the
two shapes. So a new release's drift shows up as a failing test, never silently.

After a deliberate CLI bump (a new pin in noxfile.py), record the new release's samples
while running its whole suite, from the repository root:

    CGR_E2E_RECORD=1 .venv/bin/nox -s "e2e(claude='X.Y.Z')"

then review them (``git diff``), rerun without ``CGR_E2E_RECORD`` (the sample facts
below then run for the new release too) and commit ``samples/X.Y.Z/``.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from claude_cli import Claude, ClaudeOutput
from model_server import ModelServer, Step
from scenarios import api_error, bash, edit, reply, text, tool, turn, write

SAMPLES = Path(__file__).parent / "samples"
#: Every release with recorded samples, oldest first ("2.1.197", "2.1.332").
VERSIONS = sorted(
    (p.name for p in SAMPLES.iterdir() if p.is_dir()),
    key=lambda v: tuple(int(part) for part in v.split(".")),
)
RECORD = os.environ.get("CGR_E2E_RECORD") == "1"
PROMPT = "Create hello.txt, then show it."

SCENARIOS: dict[str, tuple[list[Step], dict[str, Any]]] = {
    "success": (
        [
            turn(text("I'll create it."), write("hello.txt", "hello\n")),
            turn(edit("hello.txt", "hello", "hello, world")),
            turn(bash("cat hello.txt", "Show the file")),
            reply("hello.txt now says hello, world."),
        ],
        {},
    ),
    "api-error-401": ([api_error(401, "invalid x-api-key")], {}),
    "api-error-500": ([turn(bash("true")), api_error(500, "Internal server error")], {}),
    "max-turns": ([turn(bash("echo one")), turn(bash("echo two"))], {"max_turns": 1}),
    "permission-denied": (
        [
            turn(tool("WebFetch", {"url": "http://127.0.0.1:9/", "prompt": "Read it."})),
            reply("No."),
        ],
        {},
    ),
}


def _type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _shape(value: object, path: str) -> Iterator[str]:
    """``path: type`` for every leaf: keys and JSON types, not values (what a parser uses).

    A list's elements are reduced to their distinct shapes in order (lists of blocks, of
    tools, of errors), numbered ``[0]``, ``[1]``... among those distinct shapes.
    """
    if isinstance(value, dict):
        if not value:
            yield f"{path}: {{}}"
        for key in sorted(value):
            yield from _shape(value[key], f"{path}.{key}")
    elif isinstance(value, list):
        distinct: list[list[str]] = []
        for item in value:
            lines = list(_shape(item, ""))
            if lines not in distinct:
                distinct.append(lines)
        if not distinct:
            yield f"{path}: []"
        for index, lines in enumerate(distinct):
            yield from (f"{path}[{index}]{line}" for line in lines)
    else:
        yield f"{path}: {_type(value)}"


def shape_lines(events: list[dict[str, Any]]) -> list[str]:
    """One header per stream line (its number, type and subtype), then its leaves."""
    lines: list[str] = []
    for number, event in enumerate(events, start=1):
        kind = "/".join(str(event[k]) for k in ("type", "subtype") if k in event)
        lines.append(f"line {number} {kind}")
        lines.extend(f"    {leaf}" for leaf in _shape(event, ""))
    return lines


def _parse(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _run(claude: Claude, server: ModelServer, repo: Path, name: str) -> ClaudeOutput:
    steps, options = SCENARIOS[name]
    server.scenario = steps
    return claude.run(PROMPT, cwd=repo, **options)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_live_output_has_the_samples_shape(
    claude: Claude, claude_version: str, model_server: ModelServer, git_repo: Path, name: str
) -> None:
    out = _run(claude, model_server, git_repo, name)
    sample = SAMPLES / claude_version / f"{name}.jsonl"
    if RECORD:
        sample.parent.mkdir(parents=True, exist_ok=True)
        sample.write_text(out.stdout)
    if not sample.is_file():
        pytest.fail(
            f"no samples recorded for Claude Code {claude_version} ({sample}); record them: "
            f"CGR_E2E_RECORD=1 .venv/bin/nox -s \"e2e(claude='{claude_version}')\"",
            pytrace=False,
        )

    recorded, live = shape_lines(_parse(sample.read_text())), shape_lines(out.events)

    if live != recorded:
        rel = sample.relative_to(SAMPLES.parent)
        diff = difflib.unified_diff(recorded, live, str(rel), "live output", lineterm="")
        pytest.fail(
            f"Claude Code {claude_version}'s stream-json no longer has the shape of {rel}:\n"
            + "\n".join(diff)
            + f"\n\n{out}",
            pytrace=False,
        )


def test_another_releases_samples_do_not_match_the_live_output(
    claude: Claude, claude_version: str, model_server: ModelServer, git_repo: Path
) -> None:
    # The control for the test above, on real output: the other pinned release's samples
    # differ from this release's live stream, so a release drifting from its own samples
    # would be caught the same way.
    others = [v for v in VERSIONS if v != claude_version]
    assert others, f"samples of one release only: {VERSIONS}"
    live = shape_lines(_run(claude, model_server, git_repo, "success").events)
    for other in others:
        recorded = shape_lines(_parse((SAMPLES / other / "success.jsonl").read_text()))
        changed = [
            line
            for line in difflib.unified_diff(recorded, live, lineterm="")
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        ]
        assert changed, f"Claude Code {claude_version}'s stream has the shape of {other}'s"


def test_the_shape_diff_names_a_new_field_and_a_changed_type() -> None:
    # The control for the test above: a changed stream is reported, line by line.
    old = [{"type": "result", "subtype": "success", "num_turns": 3, "usage": {"a": 1}}]
    new = [{"type": "result", "subtype": "success", "num_turns": "3", "usage": {"a": 1, "b": []}}]

    assert shape_lines(old) == [
        "line 1 result/success",
        "    .num_turns: int",
        "    .subtype: str",
        "    .type: str",
        "    .usage.a: int",
    ]
    diff = set(difflib.unified_diff(shape_lines(old), shape_lines(new), lineterm=""))
    assert {"-    .num_turns: int", "+    .num_turns: str", "+    .usage.b: []"} <= diff


def _lines(version: str, name: str) -> list[dict[str, Any]]:
    return _parse((SAMPLES / version / f"{name}.jsonl").read_text())


def _only(lines: list[dict[str, Any]], match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    (found,) = [line for line in lines if match(line)]
    return found


# The facts below hold for every release's samples, and through the test above for the
# live CLI: what cgr's parser relies on. Parametrised by release, they need no CLI.


@pytest.mark.parametrize("version", VERSIONS)
def test_success_sample_facts(version: str) -> None:
    lines = _lines(version, "success")
    assert [line["type"] for line in lines] == [
        "system",
        *["assistant", "assistant", "user"],  # text and tool_use are separate lines
        *["assistant", "user"],
        *["assistant", "user"],
        "assistant",
        "result",
    ]
    init = lines[0]
    assert init["subtype"] == "init"
    assert init["claude_code_version"] == version
    assert init["permissionMode"] == "acceptEdits"
    assert init["apiKeySource"] == "ANTHROPIC_API_KEY"
    session_id = init["session_id"]
    assert all(line["session_id"] == session_id for line in lines)
    # One content block per assistant line; blocks of one model message share its id.
    assistants = [line for line in lines if line["type"] == "assistant"]
    assert all(len(line["message"]["content"]) == 1 for line in assistants)
    assert assistants[0]["message"]["id"] == assistants[1]["message"]["id"]
    # The usage on assistant lines is message_start's (output_tokens 1), not the total.
    assert all(line["message"]["usage"]["output_tokens"] == 1 for line in assistants)
    bash_result = _only(
        lines, lambda x: x["type"] == "user" and "stdout" in x.get("tool_use_result", {})
    )
    assert bash_result["message"]["content"][0]["content"] == "hello, world"
    assert bash_result["tool_use_result"]["stdout"] == "hello, world"
    result = lines[-1]
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["api_error_status"] is None
    assert result["num_turns"] == 4
    assert result["result"] == "hello.txt now says hello, world."
    assert result["terminal_reason"] == "completed"
    assert result["total_cost_usd"] > 0


@pytest.mark.parametrize("version", VERSIONS)
def test_api_error_sample_facts(version: str) -> None:
    # An API error is NOT subtype "error_...": it is "success" with is_error true.
    result = _lines(version, "api-error-401")[-1]
    assert result["type"] == "result"
    assert result["subtype"] == "success"
    assert result["is_error"] is True
    assert result["api_error_status"] == 401
    assert result["result"] == "Invalid API key · Fix external API key"
    assert result["total_cost_usd"] == 0

    after_a_tool = _lines(version, "api-error-500")[-1]
    assert after_a_tool["subtype"] == "success"
    assert after_a_tool["is_error"] is True
    assert after_a_tool["api_error_status"] == 500
    assert after_a_tool["usage"]["input_tokens"] > 0  # the turn before the error counts


@pytest.mark.parametrize("version", VERSIONS)
def test_max_turns_sample_facts(version: str) -> None:
    result = _lines(version, "max-turns")[-1]
    assert result["subtype"] == "error_max_turns"
    assert result["is_error"] is True
    assert result["terminal_reason"] == "max_turns"
    assert result["errors"] == ["Reached maximum number of turns (1)"]
    # No "result" text and no api_error_status on this kind of result line.
    assert "result" not in result
    assert "api_error_status" not in result


@pytest.mark.parametrize("version", VERSIONS)
def test_permission_denied_sample_facts(version: str) -> None:
    lines = _lines(version, "permission-denied")
    refused = _only(lines, lambda x: x["type"] == "user")
    assert refused["message"]["content"][0]["is_error"] is True
    # The structured result is a plain string here, not an object as for Bash.
    assert isinstance(refused["tool_use_result"], str)
    result = lines[-1]
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    (denial,) = result["permission_denials"]
    assert denial == {
        "tool_name": "WebFetch",
        "tool_use_id": refused["message"]["content"][0]["tool_use_id"],
        "tool_input": {"url": "http://127.0.0.1:9/", "prompt": "Read it."},
    }
