"""What a run tells people: the status comment texts and the run summary.

Every text here goes through the run's Redactor before it reaches GitHub, and none of it
contains workspace paths or raw tool output: only the agent's final prose, figures and
cgr's own sentences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

MAX_AGENT_TEXT = 3000


class Outcome:
    """The machine-friendly outcomes stored in ``Run.outcome`` and ``summary.json``."""

    PR_OPENED = "pr_opened"
    PR_UPDATED = "pr_updated"
    NO_CHANGES = "no_changes"
    CONFLICT = "conflict"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    # The secret gate found a known secret or a token shape in what would be pushed.
    SECRET_BLOCKED = "secret_blocked"  # noqa: S105 - an outcome name, not a password


class RunSummary(msgspec.Struct, kw_only=True):
    """``artifacts/summary.json`` and ``cgr run --json``."""

    run_id: str
    repo: str
    number: int
    status: str
    outcome: str
    pr_number: int | None = None
    pr_url: str | None = None
    branch: str | None = None
    base_branch: str | None = None
    commits: int = 0
    changed_files: list[str] = msgspec.field(default_factory=list)
    agent_session_id: str | None = None
    resumed_session: bool = False
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_tokens: int | None = None
    cache_read_tokens: int | None = None
    turns: int | None = None
    duration_s: float = 0.0
    timings: dict[str, float] = msgspec.field(default_factory=dict)
    error: str | None = None
    conflicts: list[str] = msgspec.field(default_factory=list)
    # Where the secret gate found secrets (file:line or a commit's message; never a value).
    secret_findings: list[str] = msgspec.field(default_factory=list)
    permission_denials: list[str] = msgspec.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return (
            0 if self.outcome in (Outcome.PR_OPENED, Outcome.PR_UPDATED, Outcome.NO_CHANGES) else 1
        )

    def one_line(self) -> str:
        where = f"{self.repo}#{self.number}"
        if self.pr_url:
            return f"{self.run_id} {where}: {self.outcome} {self.pr_url}"
        detail = f" ({self.error})" if self.error else ""
        return f"{self.run_id} {where}: {self.outcome}{detail}"


def _clean_agent_text(text: str) -> str:
    # An HTML comment in the agent's text could forge cgr's hidden markers.
    text = text.replace("<!--", "&lt;!--").strip()
    if len(text) > MAX_AGENT_TEXT:
        cut = text.rfind("\n", 0, MAX_AGENT_TEXT)
        text = text[: cut if cut > MAX_AGENT_TEXT // 2 else MAX_AGENT_TEXT].rstrip()
        text += "\n\n… (truncated; the full text is in the run's artifacts)"
    return text


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:.4f}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def figures(summary: RunSummary) -> str:
    tokens = (
        "n/a"
        if summary.input_tokens is None
        else f"{summary.input_tokens:,} in / {summary.output_tokens or 0:,} out"
    )
    return (
        f"Duration {_duration(summary.duration_s)} · cost {_money(summary.cost_usd)} · "
        f"tokens {tokens} · turns {summary.turns if summary.turns is not None else 'n/a'}"
    )


@dataclass(slots=True)
class Texts:
    bot: str
    run_id: str
    extra: list[str] = field(default_factory=list)

    def retry_hint(self) -> str:
        return f"To try again, comment `@{self.bot} retry` or run `cgr retry {self.run_id}`."

    def working(self, progress: str = "") -> str:
        lines = [f"🤖 Working on it — run `{self.run_id}`."]
        if progress:
            lines.append(f"\nProgress: {progress}")
        return "\n".join(lines)

    def final(self, summary: RunSummary, agent_text: str = "") -> str:
        outcome = summary.outcome
        parts: list[str] = []
        if outcome in (Outcome.PR_OPENED, Outcome.PR_UPDATED):
            verb = "Opened" if outcome == Outcome.PR_OPENED else "Updated"
            parts.append(f"✅ {verb} pull request #{summary.pr_number}: {summary.pr_url}")
        elif outcome == Outcome.NO_CHANGES:
            parts.append(
                "⚠️ The agent finished without changing any files, so there is no pull "
                "request. A person needs to look at this."
            )
        elif outcome == Outcome.CONFLICT:
            files = "\n".join(f"- `{f}`" for f in summary.conflicts)
            parts.append(
                f"⚠️ Branch `{summary.branch}` could not be rebased onto "
                f"`{summary.base_branch}`: these files conflict:\n\n{files}\n\n"
                "Resolve the conflict on the branch (or delete the branch), then retry."
            )
        elif outcome == Outcome.SECRET_BLOCKED:
            where = "\n".join(f"- `{f}`" for f in summary.secret_findings)
            parts.append(
                "🔒 Nothing was pushed: the changes hold what looks like a secret "
                f"(the values are not shown here):\n\n{where}\n\n"
                "A person needs to look at the run's workspace on the runner; the branch was "
                "not published."
            )
        elif outcome == Outcome.TIMED_OUT:
            parts.append(f"⏱️ The run timed out: {summary.error}. No pull request was opened.")
        elif outcome == Outcome.CANCELLED:
            parts.append(f"🛑 The run was cancelled: {summary.error}.")
        else:
            parts.append(f"❌ The run failed: {summary.error}. No pull request was opened.")
        if agent_text.strip():
            parts.append("### What the agent said\n\n" + _clean_agent_text(agent_text))
        if summary.permission_denials:
            tools = ", ".join(f"`{t}`" for t in sorted(set(summary.permission_denials)))
            parts.append(
                f"Note: the permission settings refused the agent these tools: {tools} "
                "(see `agent.permission_mode` / `agent.allowed_tools`)."
            )
        parts.append(figures(summary) + f" · run `{summary.run_id}`")
        if summary.exit_code != 0 or outcome == Outcome.NO_CHANGES:
            parts.append(self.retry_hint())
        return "\n\n".join(parts)


def pr_section(summary: RunSummary, agent_text: str, *, closes: int | None) -> str:
    """The cgr-owned part of a pull request description."""
    lines = ["### Summary (by cgr)", "", _clean_agent_text(agent_text) or "(no summary)", ""]
    if closes is not None:
        lines += [f"Closes #{closes}", ""]
    lines.append(f"<sub>run `{summary.run_id}` · {figures(summary)}</sub>")
    return "\n".join(lines)
