"""Short constructors for scripted model steps, so a scenario reads like the conversation.

    scenario = [
        turn(text("Creating it."), write(path, "hello\\n")),
        turn(edit(path, "hello", "hello world")),
        turn(bash("cat hello.txt")),
        turn(text("Done.")),
    ]

Tool inputs follow the schemas the Claude Code CLI declares for its tools (``Write``:
``file_path`` + ``content``; ``Edit``: ``file_path`` + ``old_string`` + ``new_string``;
``Bash``: ``command`` + ``description``). The CLI validates them, so a wrong shape shows up
as an ``is_error`` tool_result, not as a silent pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_server import ApiError, Hang, Text, ToolUse, Turn

__all__ = [
    "api_error",
    "bash",
    "edit",
    "hang",
    "reply",
    "text",
    "tool",
    "turn",
    "write",
]


def text(content: str) -> Text:
    return Text(content)


def tool(name: str, tool_input: Mapping[str, Any]) -> ToolUse:
    return ToolUse(name, dict(tool_input))


def write(path: Path | str, content: str) -> ToolUse:
    # A relative path is passed on as is: the CLI resolves it against its own working
    # directory (verified on 2.1.197), so a scenario can be written before the test knows
    # where cgr will put the workspace.
    return ToolUse("Write", {"file_path": str(path), "content": content})


def edit(path: Path | str, old: str, new: str) -> ToolUse:
    return ToolUse("Edit", {"file_path": str(path), "old_string": old, "new_string": new})


def bash(command: str, description: str = "Run a command") -> ToolUse:
    return ToolUse("Bash", {"command": command, "description": description})


def turn(*blocks: Text | ToolUse) -> Turn:
    return Turn(tuple(blocks))


def reply(content: str) -> Turn:
    """A final answer: one text block, ``stop_reason`` ``end_turn``."""
    return Turn((Text(content),))


def api_error(status: int, message: str = "scripted error") -> ApiError:
    return ApiError(status, message)


def hang() -> Hang:
    return Hang()
