"""A scripted Anthropic Messages API server on 127.0.0.1 for driving the real Claude Code CLI.

The real CLI is pointed at this server with ``ANTHROPIC_BASE_URL``. A test chooses a
*scenario*: the list of steps the "model" takes, each an assistant turn (text and tool
calls such as Write, Edit or Bash), an API error, or a stream that never finishes.

The step to answer is derived from the request alone: it is the number of assistant turns
already in the request's ``messages``. The server keeps no conversation state, so a second
CLI process that resumes the session (``--resume``) continues the scenario where the first
process stopped, exactly as a stateless real API would.

Only the standard library is used (``http.server`` in a daemon thread): the CLI's tests must
not depend on an async framework's version, and one request at a time is all the CLI makes.
"""

from __future__ import annotations

import http.server
import itertools
import json
import socketserver
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

__all__ = [
    "ERROR_TYPES",
    "SIDE_REQUEST_REPLY",
    "ApiError",
    "Hang",
    "ModelServer",
    "RecordedRequest",
    "Step",
    "Text",
    "ToolUse",
    "Turn",
    "assistant_turns",
    "turn_events",
]

#: What a request that is not part of the conversation (title generation, topic detection:
#: any request that offers the model no tools) is answered with. It never advances a step.
SIDE_REQUEST_REPLY: Final = "Scripted session"

# Anthropic's error ``type`` for each HTTP status, as documented for the Messages API.
ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Text:
    """A text content block of an assistant turn."""

    text: str


@dataclass(frozen=True)
class ToolUse:
    """A ``tool_use`` content block: the model asks the CLI to run tool ``name``."""

    name: str
    input: Mapping[str, Any]
    # Filled in by the server when empty: ids only need to be unique within a conversation.
    id: str = ""


Block: TypeAlias = Text | ToolUse


@dataclass(frozen=True)
class Turn:
    """One assistant message. It stops with ``tool_use`` when it holds a tool call."""

    blocks: tuple[Block, ...]

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.blocks) else "end_turn"


@dataclass(frozen=True)
class ApiError:
    """Answer the step with an HTTP error carrying Anthropic's JSON error body."""

    status: int
    message: str = "scripted error"

    @property
    def type(self) -> str:
        return ERROR_TYPES.get(self.status, "api_error")


@dataclass(frozen=True)
class Hang:
    """Start the stream (``message_start``), then hold it open until the server stops.

    It lets a test signal the CLI while a request is in flight.
    """


Step: TypeAlias = Turn | ApiError | Hang


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request exactly as the server received it."""

    method: str
    path: str
    headers: Mapping[str, str]
    raw_body: bytes
    #: Scenario step this request was answered with; None for HEAD, side requests, 404s.
    step: int | None
    #: The usage the server reported for it (``input_tokens``, ``output_tokens``), if any.
    usage: Mapping[str, int] | None = None

    @property
    def body(self) -> dict[str, Any]:
        if not self.raw_body:
            return {}
        parsed = json.loads(self.raw_body)
        assert isinstance(parsed, dict)
        return parsed

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages", [])
        assert isinstance(messages, list)
        return messages

    def everything(self) -> str:
        """Headers and body as one string, for "this secret never left" assertions."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"{self.method} {self.path}\n{head}\n\n{self.raw_body.decode('utf-8', 'replace')}"

    def tool_results(self) -> list[dict[str, Any]]:
        """The ``tool_result`` blocks of the last user message (what the tools returned)."""
        for message in reversed(self.messages):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if not isinstance(content, list):
                return []
            return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        return []

    def user_text(self) -> str:
        """All text the user side of the conversation holds (prompt, reminders, results)."""
        parts: list[str] = []
        for message in self.messages:
            if message.get("role") == "user":
                parts.append(_flatten_text(message.get("content")))
        return "\n".join(parts)


def _flatten_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_flatten_text(item) for item in content)
    if isinstance(content, dict):
        if "text" in content:
            return str(content["text"])
        if "content" in content:
            return _flatten_text(content["content"])
    return ""


def assistant_turns(messages: Sequence[Mapping[str, Any]]) -> int:
    """How many assistant turns a conversation already holds: the next step's index.

    Consecutive assistant entries count once: a client may split one model message into
    one entry per content block; ``role: "system"`` entries and user entries don't count.
    """
    turns = 0
    previous: object = None
    for message in messages:
        role = message.get("role")
        if role == "assistant" and previous != "assistant":
            turns += 1
        if role in ("assistant", "user"):
            previous = role
    return turns


def _side_reply(output_config: object) -> str:
    """Plain text, or a JSON object when the request asks for one (title generation does:
    ``output_config.format`` is a ``json_schema`` with string properties)."""
    schema: object = None
    if isinstance(output_config, dict) and isinstance(output_config.get("format"), dict):
        schema = output_config["format"].get("schema")
    if not (isinstance(schema, dict) and isinstance(schema.get("properties"), dict)):
        return SIDE_REQUEST_REPLY
    values = {
        name: SIDE_REQUEST_REPLY if spec.get("type") == "string" else None
        for name, spec in schema["properties"].items()
        if isinstance(spec, dict)
    }
    return json.dumps(values)


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _input_tokens(raw_body: bytes) -> int:
    # A deterministic stand-in for a tokenizer: about four bytes per token, like English.
    return max(1, len(raw_body) // 4)


def _output_tokens(turn: Turn) -> int:
    size = 0
    for block in turn.blocks:
        size += len(block.text) if isinstance(block, Text) else len(json.dumps(block.input))
    return max(1, size // 4)


def turn_events(
    turn: Turn, *, model: str, message_id: str, input_tokens: int, tool_ids: Iterator[str]
) -> Iterator[bytes]:
    """The server-sent events of one streamed assistant message, in the API's order."""
    yield _sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        },
    )
    yield _sse("ping", {"type": "ping"})
    for index, block in enumerate(turn.blocks):
        if isinstance(block, Text):
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": chunk} for chunk in _chunks(block.text)]
        else:
            start = {"type": "tool_use", "id": block.id or next(tool_ids), "name": block.name}
            start["input"] = {}
            encoded = json.dumps(block.input)
            deltas = [{"type": "input_json_delta", "partial_json": c} for c in _chunks(encoded)]
            if not deltas:
                deltas = [{"type": "input_json_delta", "partial_json": ""}]
        yield _sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
        for delta in deltas:
            yield _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": turn.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": _output_tokens(turn)},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


def _chunks(text: str, size: int = 40) -> list[str]:
    # Several deltas per block, as the real API sends, so the client must reassemble them.
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass
class _State:
    scenario: list[Step]
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[RecordedRequest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    changed: threading.Condition = field(init=False)
    stopping: threading.Event = field(default_factory=threading.Event)
    message_ids: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer
    # HTTP/1.1 so clients may keep the connection alive; streamed bodies are delimited by
    # closing the connection (no Content-Length), which every HTTP/1.1 client accepts.
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every request to stderr; the recorded requests say more.
        pass

    def do_HEAD(self) -> None:
        # The CLI probes the server before its first request: 2.1.197 with HEAD /, 2.1.332
        # with HEAD /api/hello (only when non-essential traffic is on). Any path is fine.
        self._record(b"", step=None)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._record(b"", step=None)
        self._send_json(404, _error_body(404, f"scripted model server: no GET {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        if path != "/v1/messages":
            self._record(raw, step=None)
            self._send_json(404, _error_body(404, f"scripted model server: no POST {path}"))
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._problem(f"request body is not JSON: {raw[:200]!r}")
            self._send_json(400, _error_body(400, "body is not JSON"))
            return
        model = str(body.get("model", "claude-sonnet-4-5"))
        if not body.get("tools"):
            # Title generation and similar helpers: answer, but they are not a model step.
            reply = Text(_side_reply(body.get("output_config")))
            self._stream(Turn((reply,)), raw, model=model, step=None)
            return
        step = assistant_turns(body.get("messages", []))
        scenario = self.server.state.scenario
        if step >= len(scenario):
            message = f"scenario has {len(scenario)} steps; the CLI asked for step {step + 1}"
            self._record(raw, step=step)
            self._problem(message)
            self._send_json(500, _error_body(500, f"scripted model server: {message}"))
            return
        action = scenario[step]
        if isinstance(action, ApiError):
            self._record(raw, step=step)
            self._send_json(action.status, _error_body(action.status, action.message))
        elif isinstance(action, Hang):
            self._hang(raw, model=model, step=step)
        else:
            self._stream(action, raw, model=model, step=step)

    def _stream(self, turn: Turn, raw: bytes, *, model: str, step: int | None) -> None:
        state = self.server.state
        number = next(state.message_ids)
        input_tokens = _input_tokens(raw)
        usage = {"input_tokens": input_tokens, "output_tokens": _output_tokens(turn)}
        self._record(raw, step=step, usage=usage)
        self._start_stream()
        tool_ids = (f"toolu_scripted_{number:04d}_{i}" for i in itertools.count())
        for event in turn_events(
            turn,
            model=model,
            message_id=f"msg_scripted_{number:04d}",
            input_tokens=input_tokens,
            tool_ids=tool_ids,
        ):
            self.wfile.write(event)
        self.wfile.flush()

    def _hang(self, raw: bytes, *, model: str, step: int) -> None:
        self._record(raw, step=step)
        self._start_stream()
        first = next(
            turn_events(
                Turn(()),
                model=model,
                message_id="msg_scripted_hang",
                input_tokens=_input_tokens(raw),
                tool_ids=iter(()),
            )
        )
        self.wfile.write(first)
        self.wfile.flush()
        # Keep the stream open, with pings so the client's idle timeout never fires,
        # until the server stops or the client goes away (a write then raises).
        while not self.server.state.stopping.wait(1.0):
            try:
                self.wfile.write(_sse("ping", {"type": "ping"}))
                self.wfile.flush()
            except OSError:
                return

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("request-id", "req_scripted")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send_json(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_scripted")
        # Tell the SDK not to retry, in case a test leaves CLAUDE_CODE_MAX_RETRIES unset.
        self.send_header("x-should-retry", "false")
        self.end_headers()
        self.wfile.write(data)

    def _record(
        self, raw: bytes, *, step: int | None, usage: Mapping[str, int] | None = None
    ) -> None:
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=dict(self.headers.items()),
            raw_body=raw,
            step=step,
            usage=usage,
        )
        state = self.server.state
        with state.changed:
            state.requests.append(request)
            state.changed.notify_all()

    def _problem(self, message: str) -> None:
        with self.server.state.lock:
            self.server.state.problems.append(message)


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }


class _HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    # Daemon handler threads, not joined on close: a thread waiting on a keep-alive
    # connection ends only when its client goes away, and the test must not wait for a
    # client it may have failed to kill. Held streams (Hang) poll `stopping` and end
    # within a second of stop().
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)


class ModelServer:
    """The scripted server. Use as a context manager; ``base_url`` goes to the CLI.

    ``requests`` are every request received, in order; ``problems`` lists what the CLI
    asked for that the scenario did not foresee (a test fixture fails on any).
    """

    def __init__(self, scenario: Sequence[Step] = ()) -> None:
        self._state = _State(list(scenario))
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ModelServer:
        self._server = _HTTPServer(self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="scripted-model-server",
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._state.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def scenario(self) -> list[Step]:
        return self._state.scenario

    @scenario.setter
    def scenario(self, steps: Sequence[Step]) -> None:
        with self._state.lock:
            self._state.scenario = list(steps)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def problems(self) -> list[str]:
        with self._state.lock:
            return list(self._state.problems)

    def side_requests(self) -> list[RecordedRequest]:
        """Messages requests without tools (title generation): answered, never a step."""
        return [
            r
            for r in self.requests
            if r.method == "POST" and r.step is None and r.raw_body and not r.body.get("tools")
        ]

    def step_requests(self) -> list[RecordedRequest]:
        """The requests that were answered with a scenario step, in order."""
        return [r for r in self.requests if r.step is not None]

    def wait_for_step(self, step: int, timeout: float = 30.0) -> RecordedRequest:
        """Block until a request for scenario step ``step`` (0-based) has arrived."""
        deadline = time.monotonic() + timeout
        with self._state.changed:
            while True:
                for request in self._state.requests:
                    if request.step == step:
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no request for scenario step {step} in {timeout} s")
                self._state.changed.wait(remaining)
