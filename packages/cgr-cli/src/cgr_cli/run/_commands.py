"""The repository's own commands: ``setup`` before the agent, ``check`` after it, and the
check loop that gives the agent the failures for another attempt.

::

    setup ─ fail ──────────────────────────────► run failed (no agent, no PR)
      │ pass
    agent ─ fail ──────────────────────────────► run failed
      │ ok
    check ─ pass ──────────────────────────────► pull request
      │ fail, attempts left
      └──► agent again, with the failing output ─► check …
      │ fail, no attempts left
      └──► draft pull request, or none (commands.on_failure)

Every command runs like the agent (``run/_process.py``: the same environment allow-list
without a GitHub token, its own process group, SIGTERM then SIGKILL on every early end)
with a wall-clock limit and an output bound. Its stdout and stderr go to one log file in
the run's ``logs/`` (``exec 2>&1`` in the shell that starts it, so the order is kept),
scrubbed of secrets when it ends. Only cgr's one-line verdicts reach GitHub; the output
reaches the agent (its end, ``commands.feedback_chars`` at most, in an untrusted block)
and the run's log.

Files the commands leave in the checkout (a virtualenv, ``node_modules``, caches, coverage
data) are not the agent's work: whatever is untracked after a command and was not before
is added to the checkout's ``.git/info/exclude``, so cgr's commit leaves it out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from cgr_cli._redact import Redactor
from cgr_cli.config._repo import RepoSettings, command_text
from cgr_cli.run._git import Git
from cgr_cli.run._process import CheckoutProcess
from cgr_cli.run._prompt import CheckFailure, build_fix_prompt
from cgr_cli.run._report import CommandOutcome, RunSummary

# Lines of a failing command's output copied into run.log (so `cgr logs` shows them).
_LOG_TAIL_LINES = 40

Again = Callable[[str, int], Awaitable[bool]]
"""Runs the agent once more with this prompt (attempt number given); False when that
attempt failed (the run has then ended: timed out, over budget, an error …)."""


def _wrapped(argv: list[str]) -> list[str]:
    """``argv`` with stderr joined to stdout, in order (one log, as a terminal shows it)."""
    if len(argv) == 3 and argv[:2] == ["/bin/sh", "-c"]:
        return ["/bin/sh", "-c", "exec 2>&1\n" + argv[2]]
    return ["/bin/sh", "-c", 'exec 2>&1; exec "$@"', "sh", *argv]


@dataclass(slots=True)
class RepoCommands:
    """Runs one repository's ``setup`` and ``check`` commands for a run; records every
    outcome in ``summary.commands``."""

    settings: RepoSettings
    process: CheckoutProcess
    run_dir: Path
    log: logging.Logger
    redact: Redactor
    summary: RunSummary
    progress: Callable[[str], Awaitable[None]]
    git: Git

    async def run_one(
        self, phase: str, argv: list[str], *, attempt: int, index: int, limit_s: float
    ) -> CommandOutcome:
        limits = self.settings.config.commands
        name = f"{phase}-{index}" if phase == "setup" else f"{phase}-{attempt}-{index}"
        out = self.run_dir / "logs" / f"{name}.log"
        err = out.with_suffix(".stderr")
        text = command_text(argv)
        self.log.info("%s: %s (limit %gs)", phase, text, limit_s)
        before = await anyio.to_thread.run_sync(self._untracked)
        started = time.monotonic()
        try:
            result = await self.process.supervise(
                _wrapped(argv),
                stdout_path=out,
                stderr_path=err,
                timeout=limit_s,
                # Past the bound the output is read but no longer stored (a note line
                # says so): a chatty command never fills the disk, and is not failed
                # for being chatty.
                max_output_bytes=limits.output_bytes,
            )
        finally:
            # Also when the run is being cancelled: nothing a command started outlives it.
            with anyio.CancelScope(shield=True):
                leftovers = await self.process.end_leftovers()
            if leftovers:
                self.log.warning("%s: ended %d process(es) it left running", phase, leftovers)
            for path in (out, err):
                if path.exists():
                    path.write_bytes(self.redact.bytes(path.read_bytes()))
            if err.exists() and err.stat().st_size == 0:
                err.unlink()
        left = await anyio.to_thread.run_sync(self._untracked)
        await anyio.to_thread.run_sync(self._exclude, sorted(left - before))
        outcome = CommandOutcome(
            phase=phase,
            attempt=attempt,
            command=text,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            timeout_s=limit_s,
            output_limited=result.stdout_truncated or result.stderr_truncated,
            duration_s=round(time.monotonic() - started, 3),
            log=str(out.relative_to(self.run_dir)),
        )
        self.summary.commands.append(outcome)
        self.log.info("%s: %s: %s", phase, text, outcome.verdict())
        if not outcome.ok:
            lines = tail(out, 16_000).splitlines()[-_LOG_TAIL_LINES:]
            self.log.info(
                "%s: the end of its output (%s):\n%s", phase, outcome.log, "\n".join(lines)
            )
        return outcome

    async def setup(self) -> CommandOutcome | None:
        """Run the set-up commands in order; the first that fails (the rest are skipped,
        they usually build on it), or None when all passed."""
        limits = self.settings.config.commands
        total = len(self.settings.setup)
        for index, argv in enumerate(self.settings.setup, 1):
            await self._say(f"running the repository's set-up ({index} of {total})")
            outcome = await self.run_one(
                "setup", argv, attempt=0, index=index, limit_s=limits.setup_seconds
            )
            if not outcome.ok:
                return outcome
        return None

    async def checks(self, attempt: int) -> list[CommandOutcome]:
        """Run every check (all of them, so the agent sees every failure at once)."""
        limits = self.settings.config.commands
        await self._say(f"running the repository's checks (round {attempt})")
        return [
            await self.run_one(
                "check", argv, attempt=attempt, index=index, limit_s=limits.check_seconds
            )
            for index, argv in enumerate(self.settings.check, 1)
        ]

    async def check_loop(self, task_prompt: str, again: Again) -> bool | None:
        """Checks, and while they fail and attempts are left, the agent again with the
        failures. True: they passed; False: they still fail; None: an agent attempt
        failed (``again`` ended the run)."""
        limits = self.settings.config.commands
        attempts = 1 + limits.fix_attempts
        for round_ in range(1, attempts + 1):
            failed = [c for c in await self.checks(round_) if not c.ok]
            if not failed:
                self.summary.checks_passed = True
                return True
            if round_ == attempts:
                break
            failures = self.failures(failed)
            prompt = build_fix_prompt(task_prompt, failures, attempt=round_ + 1, attempts=attempts)
            await self._say(
                f"{len(failed)} check(s) failed; the agent is fixing them "
                f"(attempt {round_ + 1} of {attempts})"
            )
            if not await again(prompt, round_ + 1):
                return None
        self.summary.checks_passed = False
        return False

    async def _say(self, line: str) -> None:
        try:
            await self.progress(line)
        except Exception:  # progress is best effort (GitHub may be slow); the report is not
            self.log.warning("progress update failed", exc_info=True)

    def _untracked(self) -> set[str]:
        return _untracked_in(self.git, self.process.cwd)

    def _exclude(self, paths: list[str]) -> None:
        if not paths:
            return
        exclude = self.process.cwd / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a", encoding="utf-8") as f:
            f.write("# left by the repository's set-up/check commands (cgr)\n")
            f.writelines(_pattern(p) + "\n" for p in paths)
        self.log.info("not committed (left by the commands): %s", ", ".join(paths))

    def failures(self, failed: list[CommandOutcome]) -> list[CheckFailure]:
        """What the agent is shown: each failing command's verdict and the end of its
        output, ``commands.feedback_chars`` shared between them."""
        budget = max(self.settings.config.commands.feedback_chars // len(failed), 200)
        return [
            CheckFailure(c.command, c.verdict(), tail(self.run_dir / c.log, budget)) for c in failed
        ]


def tail(path: Path, chars: int) -> str:
    """The last ``chars`` characters of a log (from a line start when one is near), saying
    how much was left out; only the end of the file is read."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - chars * 4))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace")
    if len(text) <= chars and size <= chars * 4:
        return text
    cut = text[-chars:]
    newline = cut.find("\n")
    if 0 <= newline < chars // 4:
        cut = cut[newline + 1 :]
    return f"[… the output's first {size - len(cut.encode())} bytes left out]\n" + cut


def _untracked_in(git: Git, checkout: Path) -> set[str]:
    """Untracked, not ignored paths; a wholly untracked directory is one entry (``dir/``)."""
    done = git.run(
        ["ls-files", "--others", "--exclude-standard", "--directory", "-z"], cwd=checkout
    )
    return {p for p in done.stdout.split("\0") if p}


def _pattern(path: str) -> str:
    """An exclude pattern matching exactly ``path`` from the checkout's root."""
    escaped = "".join("\\" + ch if ch in "\\*?[!# " else ch for ch in path)
    return "/" + escaped
