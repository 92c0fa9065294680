"""What the dashboard shows, read from the store and the run directories (no Textual here).

Every function takes ``now`` where time matters, so screens (and their snapshot tests)
are reproducible.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cgr_store import Run, RunEvent, Store

# Long tool inputs and results are cut to this many characters in the log view.
_CUT = 160


def age(moment: datetime | None, now: datetime) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``: how long ago, for a table column."""
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def money(cost: float | None) -> str:
    return "-" if cost is None else f"${cost:.2f}"


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    status: str
    repo: str
    target: str
    age: str
    cost: str
    outcome: str


def run_row(run: Run, now: datetime) -> RunRow:
    return RunRow(
        id=run.id,
        status=str(run.status),
        repo=run.repo,
        target=f"#{run.target}",
        age=age(run.created_at, now),
        cost=money(run.cost_usd),
        outcome=run.outcome or "",
    )


class RunSource:
    """The store and the workspace of one configuration, as the dashboard reads them."""

    def __init__(
        self,
        store: Store,
        workspace_root: Path,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        limit: int = 200,
    ) -> None:
        self.store = store
        self.workspace_root = workspace_root
        self.clock = clock
        self.limit = limit

    def now(self) -> datetime:
        return self.clock()

    def rows(self) -> list[RunRow]:
        """Active runs first (oldest first), then the most recent ended ones."""
        active = self.store.active_runs()
        ids = {run.id for run in active}
        recent = [r for r in self.store.recent_runs(limit=self.limit) if r.id not in ids]
        now = self.now()
        return [run_row(run, now) for run in [*active, *recent][: self.limit]]

    def run(self, run_id: str) -> tuple[Run, list[RunEvent]]:
        return self.store.run_with_events(run_id)

    def run_dir(self, run_id: str) -> Path:
        return self.workspace_root / run_id

    def prompt(self, run_id: str) -> str:
        path = self.run_dir(run_id) / "prompt.md"
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return f"(no prompt: {path} does not exist yet or was cleaned up)"

    def agent_log_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "logs" / "agent.jsonl"


class LogTail:
    """Follows ``agent.jsonl`` as it grows; each call returns the new complete lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                size = handle.seek(0, 2)
                if size < self._offset:  # replaced or truncated: start again
                    self._offset, self._partial = 0, b""
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()  # an unfinished last line waits for its end
        return [c.decode("utf-8", "replace") for c in chunks if c.strip()]


def _cut(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _CUT else text[: _CUT - 1] + "…"


def _tool_input(block: dict[str, Any]) -> str:
    data = block.get("input") or {}
    if not isinstance(data, dict):
        return _cut(str(data))
    for key in ("command", "file_path", "path", "pattern", "url", "description"):
        if key in data:
            return _cut(str(data[key]))
    return _cut(json.dumps(data, ensure_ascii=False))


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content)


def render_agent_line(line: str) -> list[str]:  # noqa: PLR0911, PLR0912 - one branch per line kind
    """One stream-json line of Claude Code as readable text lines (raw if not JSON)."""
    try:
        event = json.loads(line)
    except ValueError:
        return [_cut(line)]
    if not isinstance(event, dict):
        return [_cut(line)]
    kind = event.get("type")
    if kind == "system" and event.get("subtype") == "init":
        return [f"▶ session {event.get('session_id', '?')} (model {event.get('model', '?')})"]
    raw_message = event.get("message")
    message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    raw_blocks = message.get("content")
    blocks: list[Any] = raw_blocks if isinstance(raw_blocks, list) else []
    if kind == "assistant":
        out = []
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and str(block.get("text", "")).strip():
                out.append(f"assistant: {_cut(block['text'])}")
            elif block.get("type") == "tool_use":
                out.append(f"tool {block.get('name', '?')}: {_tool_input(block)}")
        return out
    if kind == "user":
        out = []
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                mark = "✗" if block.get("is_error") else "↳"
                out.append(f"  {mark} {_cut(_result_text(block.get('content', '')))}")
        return out
    if kind == "result":
        cost = event.get("total_cost_usd")
        shown = f"${cost:.4f}" if isinstance(cost, int | float) else "?"
        state = "error" if event.get("is_error") else event.get("subtype", "done")
        lines = [f"■ result: {state}, {event.get('num_turns', '?')} turns, {shown}"]
        if event.get("result"):
            lines.append(f"  {_cut(str(event['result']))}")
        return lines
    return []
