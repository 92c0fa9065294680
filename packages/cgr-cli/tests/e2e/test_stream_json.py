"""What the real CLI prints with ``--output-format stream-json --verbose``, kept as samples.

``samples/*.jsonl`` are stdout of the pinned CLI for the scenarios below. cgr's stream-json
parser can be unit-tested against them without the CLI installed; these tests rerun each
scenario and fail when the live lines no longer have the samples' shape (the same kinds
of line in the same order, the same keys, the same JSON types), so the samples cannot
drift from the pinned version. After a deliberate CLI bump, rewrite them with
``CGR_E2E_RECORD=1 nox -s e2e -- <path to this file>`` and review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from claude_cli import Claude, ClaudeOutput
from model_server import ModelServer, Step
from scenarios import api_error, bash, edit, reply, text, tool, turn, write

SAMPLES = Path(__file__).parent / "samples"
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


def shape(value: object) -> object:
    """Keys and JSON types, not values: what a parser depends on."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        # Element shapes in order, duplicates dropped: lists of blocks, tools, errors.
        shapes: list[object] = []
        for item in value:
            if shape(item) not in shapes:
                shapes.append(shape(item))
        return shapes
    return type(value).__name__


def _run(claude: Claude, server: ModelServer, repo: Path, name: str) -> ClaudeOutput:
    steps, options = SCENARIOS[name]
    server.scenario = steps
    return claude.run(PROMPT, cwd=repo, **options)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_live_output_has_the_samples_shape(
    claude: Claude, model_server: ModelServer, git_repo: Path, name: str
) -> None:
    out = _run(claude, model_server, git_repo, name)
    sample = SAMPLES / f"{name}.jsonl"
    if RECORD:
        SAMPLES.mkdir(exist_ok=True)
        sample.write_text(out.stdout)
    recorded = [json.loads(line) for line in sample.read_text().splitlines() if line]

    assert [shape(e) for e in out.events] == [shape(e) for e in recorded], out


def _lines(name: str) -> list[dict[str, Any]]:
    text = (SAMPLES / f"{name}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def _only(lines: list[dict[str, Any]], match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    (found,) = [line for line in lines if match(line)]
    return found


# The facts below hold for the samples, and through the test above for the live CLI.


def test_success_sample_facts() -> None:
    lines = _lines("success")
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
    assert init["claude_code_version"] == "2.1.197"
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


def test_api_error_sample_facts() -> None:
    # An API error is NOT subtype "error_...": it is "success" with is_error true.
    result = _lines("api-error-401")[-1]
    assert result["type"] == "result"
    assert result["subtype"] == "success"
    assert result["is_error"] is True
    assert result["api_error_status"] == 401
    assert result["result"] == "Invalid API key · Fix external API key"
    assert result["total_cost_usd"] == 0

    after_a_tool = _lines("api-error-500")[-1]
    assert after_a_tool["subtype"] == "success"
    assert after_a_tool["is_error"] is True
    assert after_a_tool["api_error_status"] == 500
    assert after_a_tool["usage"]["input_tokens"] > 0  # the turn before the error counts


def test_max_turns_sample_facts() -> None:
    result = _lines("max-turns")[-1]
    assert result["subtype"] == "error_max_turns"
    assert result["is_error"] is True
    assert result["terminal_reason"] == "max_turns"
    assert result["errors"] == ["Reached maximum number of turns (1)"]
    # No "result" text and no api_error_status on this kind of result line.
    assert "result" not in result
    assert "api_error_status" not in result


def test_permission_denied_sample_facts() -> None:
    lines = _lines("permission-denied")
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
