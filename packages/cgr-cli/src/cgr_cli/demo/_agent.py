"""The scripted agent behind ``cgr demo``: ``python -m cgr_cli.demo._agent``.

It stands in for ``claude -p --output-format stream-json --verbose`` so the demo needs no
network and no API key, and it speaks the same protocol cgr reads from the real CLI (see
``_agent``): the prompt on stdin; one ``system``/``init`` line with a session id; one
``assistant`` line per content block (text or ``tool_use``), blocks of one message sharing
``message.id`` and its ``usage``; one ``user`` line per tool result; a final ``result`` line
with cost, usage and turns. It really edits files in its working directory (the checkout
cgr prepared), so cgr has something to commit, push and open a pull request for.

What it does is scripted from the request's title and text (the blocks cgr marks as
untrusted in the prompt): a ``greet`` request adds a function with a test, an
``install``/``README`` request adds a README section, anything else is recorded in
``CHANGES.md``. It is part of the product only for the demo; real runs use Claude Code.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL = "cgr-demo-agent"
# Prices are irrelevant (nothing is billed); the figures only make the report realistic.
_INPUT_TOKENS_PER_TURN = 1800
_OUTPUT_TOKENS_PER_TURN = 120

_BLOCK = re.compile(r"<<<(UNTRUSTED-[0-9a-f]+) ([^>]*)>>>\n(.*?)\n<<<END \1>>>", re.DOTALL)


@dataclass
class _Session:
    session_id: str
    delay: float
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    def emit(self, event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def message(self, *blocks: dict[str, Any]) -> None:
        """One model message: each block its own ``assistant`` line, as the real CLI does."""
        self.turns += 1
        self.input_tokens += _INPUT_TOKENS_PER_TURN
        self.output_tokens += _OUTPUT_TOKENS_PER_TURN
        time.sleep(self.delay)  # paced so a person watching the demo sees it work
        usage = {"input_tokens": _INPUT_TOKENS_PER_TURN, "output_tokens": 1}
        message_id = f"msg_demo_{uuid.uuid4().hex[:16]}"
        for block in blocks:
            self.emit({
                "type": "assistant",
                "message": {"id": message_id, "type": "message", "role": "assistant",
                            "model": MODEL, "content": [block], "usage": usage},
                "parent_tool_use_id": None,
                "session_id": self.session_id,
            })  # fmt: skip

    def tool(self, note: str, name: str, tool_input: dict[str, Any], result: str) -> None:
        tool_id = f"toolu_demo_{uuid.uuid4().hex[:16]}"
        self.message(
            {"type": "text", "text": note},
            {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input},
        )
        self.emit({
            "type": "user",
            "message": {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": tool_id, "content": result}]},
            "parent_tool_use_id": None,
            "session_id": self.session_id,
        })  # fmt: skip

    def read(self, path: Path) -> str:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        self.tool(f"Reading {path}.", "Read", {"file_path": str(path)}, text or "(no file)")
        return text

    def write(self, path: Path, content: str, note: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        self.tool(note, "Write", {"file_path": str(path), "content": content},
                  f"File created successfully at: {path}")  # fmt: skip

    def edit(self, path: Path, old: str, new: str, note: str) -> None:
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        self.tool(note, "Edit", {"file_path": str(path), "old_string": old, "new_string": new},
                  f"The file {path} has been updated.")  # fmt: skip

    def finish(self, text: str) -> None:
        self.message({"type": "text", "text": text})
        self.emit({
            "type": "result", "subtype": "success", "is_error": False,
            "duration_ms": int((time.monotonic() - self.started) * 1000),
            "num_turns": self.turns, "result": text, "session_id": self.session_id,
            # What these tokens would cost at Claude Sonnet prices ($3/$15 per MTok).
            "total_cost_usd": round(
                self.input_tokens * 3e-6 + self.output_tokens * 15e-6, 4),
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        })  # fmt: skip


def _request_text(prompt: str) -> tuple[str, str]:
    """(title, everything else GitHub said) from the untrusted blocks of cgr's prompt."""
    title, rest = "", []
    for _, label, text in _BLOCK.findall(prompt):
        if label.endswith("title") and not title:
            title = text.strip()
        else:
            rest.append(text)
    return title, "\n".join(rest)


def _greet(s: _Session) -> str:
    init = Path("widgets/__init__.py")
    s.read(init)
    s.write(
        Path("widgets/greet.py"),
        '"""Greetings."""\n\n\ndef greet(name: str) -> str:\n'
        '    """Return a friendly greeting for ``name``."""\n'
        '    return f"Hello, {name}!"\n',
        "I'll add the function in its own module.",
    )
    s.edit(init, '"""Widgets."""\n', '"""Widgets."""\n\nfrom widgets.greet import greet\n',
           "Exporting it from the package.")  # fmt: skip
    s.write(
        Path("tests/test_greet.py"),
        "from widgets import greet\n\n\ndef test_greet() -> None:\n"
        '    assert greet("Ada") == "Hello, Ada!"\n',
        "And a test for it.",
    )
    return (
        "Added `widgets.greet(name)`, which returns `Hello, <name>!`, exported it from the "
        "package and added `tests/test_greet.py`."
    )


def _install(s: _Session) -> str:
    readme = Path("README.md")
    text = s.read(readme)
    section = (
        "\n## Installation\n\n```sh\npip install widgets\n```\n\nFrom a checkout: `pip install .`\n"
    )
    if text:
        s.edit(readme, text, text.rstrip("\n") + "\n" + section, "Adding an Installation section.")
    else:
        s.write(readme, "# widgets\n" + section, "Creating the README.")
    return "Added an Installation section to README.md (pip and from a checkout)."


def _other(s: _Session, number: str, title: str) -> str:
    changes = Path("CHANGES.md")
    text = s.read(changes) or "# Changes\n"
    s.write(changes, text.rstrip("\n") + f"\n- #{number}: {title}\n", "Recording the request.")
    return f"This demo agent has no script for “{title}”; it recorded the request in CHANGES.md."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cgr_cli.demo._agent")
    parser.add_argument("--step-delay", type=float, default=0.4, help="seconds per model turn")
    parser.add_argument("--resume", help="continue this session id")
    # cgr asks every agent for its release before a run; this answer is not Claude Code's,
    # so cgr passes the oldest supported release's flags (all ignored here anyway).
    parser.add_argument("--version", action="version", version=f"{MODEL} (not Claude Code)")
    # Claude Code's own flags (-p, --output-format, --max-turns, ...) are accepted and ignored.
    args, _ = parser.parse_known_args(argv)
    prompt = sys.stdin.read()
    session = _Session(args.resume or str(uuid.uuid4()), max(args.step_delay, 0.0))
    session.emit({
        "type": "system", "subtype": "init", "session_id": session.session_id,
        "cwd": str(Path.cwd()), "model": MODEL, "tools": ["Edit", "Read", "Write"],
        "permissionMode": "acceptEdits", "apiKeySource": "none",
    })  # fmt: skip
    title, rest = _request_text(prompt)
    number_match = re.search(r"#(\d+)", prompt)
    request = f"{title}\n{rest}".lower()
    if "greet" in request:
        final = _greet(session)
    elif "install" in request or "readme" in request:
        final = _install(session)
    else:
        final = _other(session, number_match.group(1) if number_match else "?", title)
    session.finish(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
