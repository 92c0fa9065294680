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
    # Not an end: GitHub failed before the agent started and the run is queued again.
    REQUEUED = "requeued"
    # Not this host's end: its lease was lost and another host took the run over (a fleet;
    # run/_fence.py). Only in this process's summary: the store keeps the other's decision.
    LEASE_LOST = "lease_lost"


class CommandOutcome(msgspec.Struct, kw_only=True):
    """One set-up or check command of the repository's ``cgr.toml`` and how it ended."""

    phase: str  # "setup" or "check"
    # Check rounds count from 1 (after the agent's first attempt); set-up is round 0.
    attempt: int = 0
    command: str
    exit_code: int | None = None
    timed_out: bool = False
    timeout_s: float = 0.0
    output_limited: bool = False
    duration_s: float = 0.0
    # The combined output, relative to the run directory (``logs/check-1-1.log``).
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def verdict(self) -> str:
        more = (
            " (its output past commands.output_bytes was not kept)" if self.output_limited else ""
        )
        if self.timed_out:
            return f"timed out after {self.timeout_s:g}s{more}"
        if self.exit_code is None:
            return f"killed by a signal{more}"
        return ("passed" if self.exit_code == 0 else f"exit code {self.exit_code}") + more


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
    # The runner host holding the earlier conversation, when this run (on another host of
    # a fleet) started a fresh session instead (_host_session).
    session_elsewhere: str | None = None
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
    # The branch reached GitHub: a failure after it must not claim "no pull request".
    pushed: bool = False
    # The repository's own settings file, as "path@commit" (None: it has none), and what
    # of it was not applied because it would have loosened a host limit.
    repo_file: str | None = None
    repo_notes: list[str] = msgspec.field(default_factory=list)
    commands: list[CommandOutcome] = msgspec.field(default_factory=list)
    # None: the repository has no check commands (or they never ran).
    checks_passed: bool | None = None
    agent_attempts: int = 0
    draft: bool = False

    @property
    def exit_code(self) -> int:
        if self.checks_passed is False:
            return 1  # a pull request whose checks fail needs a person (needs-human)
        return (
            0 if self.outcome in (Outcome.PR_OPENED, Outcome.PR_UPDATED, Outcome.NO_CHANGES) else 1
        )

    def figures(self) -> tuple[float, int, int, int, int, int]:
        """Cost, tokens and turns, to add up the attempts of a run (``add_figures``)."""
        return (
            self.cost_usd or 0.0,
            self.input_tokens or 0,
            self.output_tokens or 0,
            self.cache_creation_tokens or 0,
            self.cache_read_tokens or 0,
            self.turns or 0,
        )

    def add_figures(self, earlier: tuple[float, int, int, int, int, int]) -> None:
        cost, tokens_in, tokens_out, cache_new, cache_read, turns = earlier
        self.cost_usd = round((self.cost_usd or 0.0) + cost, 6)
        self.input_tokens = (self.input_tokens or 0) + tokens_in
        self.output_tokens = (self.output_tokens or 0) + tokens_out
        self.cache_creation_tokens = (self.cache_creation_tokens or 0) + cache_new
        self.cache_read_tokens = (self.cache_read_tokens or 0) + cache_read
        self.turns = (self.turns or 0) + turns

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
        parts: list[str] = [_headline(summary)]
        if agent_text.strip():
            parts.append("### What the agent said\n\n" + _clean_agent_text(agent_text))
        if summary.commands or summary.repo_notes:
            parts.append(commands_text(summary, run_id=self.run_id))
        if summary.permission_denials:
            tools = ", ".join(f"`{t}`" for t in sorted(set(summary.permission_denials)))
            parts.append(
                f"Note: the permission settings refused the agent these tools: {tools} "
                "(see `agent.permission_mode` / `agent.allowed_tools`)."
            )
        if summary.session_elsewhere:
            parts.append(
                f"Note: the earlier conversation is on runner host `{summary.session_elsewhere}`; "
                "this run started a fresh agent session in a fresh checkout of the branch."
            )
        parts.append(figures(summary) + f" · run `{summary.run_id}`")
        if summary.exit_code != 0 or outcome == Outcome.NO_CHANGES:
            parts.append(self.retry_hint())
        return "\n\n".join(parts)


def _headline(summary: RunSummary) -> str:  # noqa: PLR0911 - one sentence per outcome
    """The status comment's first paragraph: what came of the run."""
    outcome = summary.outcome
    if outcome in (Outcome.PR_OPENED, Outcome.PR_UPDATED) and summary.checks_passed is False:
        verb = "Opened draft" if summary.draft else "Updated"
        return (
            f"⚠️ {verb} pull request #{summary.pr_number}: {summary.pr_url}. The "
            "repository's checks still fail on it: a person needs to look at it."
        )
    if outcome in (Outcome.PR_OPENED, Outcome.PR_UPDATED):
        verb = "Opened" if outcome == Outcome.PR_OPENED else "Updated"
        return f"✅ {verb} pull request #{summary.pr_number}: {summary.pr_url}"
    if outcome == Outcome.NO_CHANGES:
        return (
            "⚠️ The agent finished without changing any files, so there is no pull "
            "request. A person needs to look at this."
        )
    if outcome == Outcome.CONFLICT:
        files = "\n".join(f"- `{f}`" for f in summary.conflicts)
        return (
            f"⚠️ Branch `{summary.branch}` could not be rebased onto "
            f"`{summary.base_branch}`: these files conflict:\n\n{files}\n\n"
            "Resolve the conflict on the branch (or delete the branch), then retry."
        )
    if outcome == Outcome.SECRET_BLOCKED:
        where = "\n".join(f"- `{f}`" for f in summary.secret_findings)
        return (
            "🔒 Nothing was pushed: the changes hold what looks like a secret "
            f"(the values are not shown here):\n\n{where}\n\n"
            "A person needs to look at the run's workspace on the runner; the branch was "
            "not published."
        )
    if outcome == Outcome.TIMED_OUT:
        return f"⏱️ The run timed out: {summary.error}. No pull request was opened."
    if outcome == Outcome.CANCELLED:
        return f"🛑 The run was cancelled: {summary.error}."
    if summary.pushed:
        # The PR step failed after the push; whether GitHub created the PR anyway (an
        # answer lost) was looked up first, but GitHub may not have said.
        return (
            f"❌ The run failed: {summary.error}. The work was pushed to branch "
            f"`{summary.branch}`; open a pull request from it, or retry."
        )
    return f"❌ The run failed: {summary.error}. No pull request was opened."


def pr_section(summary: RunSummary, agent_text: str, *, closes: int | None) -> str:
    """The cgr-owned part of a pull request description."""
    lines = ["### Summary (by cgr)", "", _clean_agent_text(agent_text) or "(no summary)", ""]
    if summary.commands or summary.repo_notes:
        lines += [commands_text(summary), ""]
    if closes is not None:
        lines += [f"Closes #{closes}", ""]
    lines.append(f"<sub>run `{summary.run_id}` · {figures(summary)}</sub>")
    return "\n".join(lines)


def _code(text: str, limit: int = 200) -> str:
    """``text`` as inline code on one line, whatever backticks it holds."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def commands_text(summary: RunSummary, *, run_id: str | None = None) -> str:
    """What ran of the repository's ``setup``/``check`` commands and how each ended; the
    notes on values of its file that were not applied. Never the commands' output (it
    stays in the run's logs): a comment gets cgr's sentences, not raw tool output."""
    source = f" (from `{summary.repo_file}` on the default branch)" if summary.repo_file else ""
    lines = [f"### Repository commands{source}", ""]
    for c in summary.commands:
        mark = "✅" if c.ok else "❌"
        kind = "set-up" if c.phase == "setup" else f"check (round {c.attempt})"
        lines.append(
            f"- {mark} {kind} {_code(c.command)}: {c.verdict()} in {_duration(c.duration_s)}"
        )
    if summary.checks_passed is True:
        lines += ["", "The checks passed."]
    elif summary.checks_passed is False:
        attempts = summary.agent_attempts
        lines += [
            "",
            f"The checks still failed after {attempts} agent attempt"
            f"{'s' if attempts != 1 else ''}.",
        ]
    if any(not c.ok for c in summary.commands) and run_id:
        lines += ["", f"The commands' output is in the run's logs: `cgr logs {run_id}`."]
    for note in summary.repo_notes:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines)
