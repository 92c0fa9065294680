"""The scripted model server on its own, over real HTTP on loopback (no CLI needed).

The CLI tests show the server is good enough for one client; these pin the protocol
details other clients (and the next scenario author) rely on.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest
from model_server import SIDE_REQUEST_REPLY, ModelServer, assistant_turns
from scenarios import api_error, bash, hang, reply, text, turn

TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def _connect(server: ModelServer) -> http.client.HTTPConnection:
    url = urlsplit(server.base_url)
    assert url.hostname is not None
    return http.client.HTTPConnection(url.hostname, url.port, timeout=10)


def _post(
    server: ModelServer, body: Mapping[str, Any], path: str = "/v1/messages?beta=true"
) -> tuple[int, Mapping[str, str], bytes]:
    connection = _connect(server)
    try:
        connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk.strip():
            continue
        fields = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def _request(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-test", "stream": True, "tools": TOOLS, "messages": messages, **extra}


USER = {"role": "user", "content": "hi"}
ASSISTANT = {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as running:
        yield running


def test_a_turn_streams_every_event_in_the_apis_order(server: ModelServer) -> None:
    long_text = "word " * 30  # longer than one delta, so it arrives in pieces
    server.scenario = [turn(text(long_text), bash("ls -la /tmp"))]

    status, headers, raw = _post(server, _request([USER]))

    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = _events(raw)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert start["role"] == "assistant"
    assert start["model"] == "claude-test"
    assert start["usage"]["input_tokens"] > 0
    blocks: dict[int, dict[str, Any]] = {}
    pieces: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_start":
            blocks[data["index"]] = data["content_block"]
            pieces[data["index"]] = ""
        elif name == "content_block_delta":
            delta = data["delta"]
            pieces[data["index"]] += delta.get("text", delta.get("partial_json", ""))
    assert [b["type"] for b in blocks.values()] == ["text", "tool_use"]
    assert pieces[0] == long_text
    assert names.count("content_block_delta") > 2
    assert blocks[1]["name"] == "Bash"
    assert blocks[1]["id"].startswith("toolu_")
    assert json.loads(pieces[1]) == {"command": "ls -la /tmp", "description": "Run a command"}
    assert names.count("content_block_stop") == 2
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] > 0
    (recorded,) = server.step_requests()
    assert recorded.usage == {
        "input_tokens": start["usage"]["input_tokens"],
        "output_tokens": delta["usage"]["output_tokens"],
    }


def test_a_text_only_turn_ends_the_turn(server: ModelServer) -> None:
    server.scenario = [reply("Done.")]

    _, _, raw = _post(server, _request([USER]))

    assert _events(raw)[-2][1]["delta"]["stop_reason"] == "end_turn"


def test_the_step_is_the_number_of_assistant_turns_in_the_request(server: ModelServer) -> None:
    # No state between requests: a fresh process resuming a session gets the next step.
    server.scenario = [reply("zero"), reply("one"), reply("two")]
    system = {"role": "system", "content": "reminder"}
    tool_result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}

    _post(server, _request([USER, system, ASSISTANT, tool_result, ASSISTANT, ASSISTANT, USER]))
    _post(server, _request([USER]))

    assert [r.step for r in server.step_requests()] == [2, 0]
    assert assistant_turns([USER, ASSISTANT, system, ASSISTANT]) == 1
    assert assistant_turns([system, USER]) == 0


def test_an_error_step_answers_with_anthropics_error_body(server: ModelServer) -> None:
    server.scenario = [api_error(429, "slow down")]

    status, headers, raw = _post(server, _request([USER]))

    assert status == 429
    assert headers["x-should-retry"] == "false"
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }


def test_requests_without_tools_are_answered_but_are_not_steps(server: ModelServer) -> None:
    server.scenario = [reply("the real step")]
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    title_request = _request([USER], tools=[], output_config={"format": {"schema": schema}})

    _, _, plain = _post(server, _request([USER], tools=[]))
    _, _, structured = _post(server, title_request)
    _, _, step = _post(server, _request([USER]))

    def reassembled(raw: bytes) -> str:
        return "".join(d["delta"]["text"] for n, d in _events(raw) if n == "content_block_delta")

    assert reassembled(plain) == SIDE_REQUEST_REPLY
    assert json.loads(reassembled(structured)) == {"title": SIDE_REQUEST_REPLY}
    assert reassembled(step) == "the real step"
    assert len(server.side_requests()) == 2
    assert [r.step for r in server.step_requests()] == [0]
    assert server.problems == []


def test_a_request_beyond_the_scenario_is_a_recorded_problem(server: ModelServer) -> None:
    server.scenario = [reply("only step")]

    status, _, raw = _post(server, _request([USER, ASSISTANT, USER]))

    assert status == 500
    assert "asked for step 2" in json.loads(raw)["error"]["message"]
    assert server.problems == ["scenario has 1 steps; the CLI asked for step 2"]


def test_head_and_unknown_paths(server: ModelServer) -> None:
    connection = _connect(server)
    try:
        connection.request("HEAD", "/")
        head = connection.getresponse()
        head.read()
    finally:
        connection.close()
    status, _, _ = _post(server, {}, path="/v1/complete")

    assert head.status == 200
    assert status == 404
    assert [(r.method, r.path, r.step) for r in server.requests] == [
        ("HEAD", "/", None),
        ("POST", "/v1/complete", None),
    ]


def test_a_hanging_step_holds_the_stream_until_the_server_stops() -> None:
    with ModelServer([hang()]) as server:
        connection = _connect(server)
        body = json.dumps(_request([USER]))
        connection.request("POST", "/v1/messages", body, {"content-type": "application/json"})
        response = connection.getresponse()
        assert response.fp.readline() == b"event: message_start\n"
        rest: list[bytes] = []
        reader = threading.Thread(target=lambda: rest.append(response.read()))
        reader.start()
        reader.join(1.5)
        assert reader.is_alive(), "the stream ended although the step hangs"
        began = time.monotonic()
        server.stop()  # what the fixture does when a test ends with the CLI still waiting
        stopped = time.monotonic() - began
        reader.join(5)
        connection.close()

    assert not reader.is_alive()
    assert stopped < 5
    assert b"message_stop" not in rest[0]


def test_records_the_raw_request_for_secret_checks(server: ModelServer) -> None:
    server.scenario = [reply("ok")]

    _post(server, _request([{"role": "user", "content": "the prompt"}]))

    (recorded,) = server.requests
    assert recorded.user_text() == "the prompt"
    assert "the prompt" in recorded.everything()
    assert "content-type: application/json" in recorded.everything().lower()
