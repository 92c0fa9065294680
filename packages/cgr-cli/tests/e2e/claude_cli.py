"""Running the real Claude Code CLI against the scripted model server.

``Claude`` builds the command line and an allow-listed environment (nothing from the test
process leaks in except ``PATH``), runs ``claude -p --output-format stream-json --verbose``
with the prompt on stdin and parses every stdout line as JSON into ``ClaudeOutput``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from model_server import ModelServer

__all__ = [
    "API_KEY",
    "ENV_VAR",
    "Claude",
    "ClaudeOutput",
    "ClaudeRun",
    "cli_environment",
    "version_key",
]

#: The nox ``e2e`` session puts the path of the pinned ``claude`` binary here.
ENV_VAR: Final = "CGR_E2E_CLAUDE"

#: A syntactically plausible key: the CLI only needs *a* key, the server accepts any.
API_KEY: Final = "sk-ant-api03-e2e-scripted-not-a-real-key"

# Tools the scripted scenarios use. acceptEdits lets Write/Edit through without prompts and
# --allowedTools lets Bash through; unlike --dangerously-skip-permissions this also works
# as root without IS_SANDBOX=1, and it is the least privilege a cgr run needs.
DEFAULT_TOOLS: Final = ("Bash", "Edit", "Read", "Write")


@dataclass(frozen=True)
class ClaudeOutput:
    """What one CLI process did: exit status, stdout parsed as stream-json, stderr."""

    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for number, line in enumerate(self.stdout.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AssertionError(f"stdout line {number} is not JSON: {line!r}") from exc
            assert isinstance(event, dict), f"stdout line {number} is not an object: {line!r}"
            events.append(event)
        return events

    def of_type(self, kind: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("type") == kind and (subtype is None or e.get("subtype") == subtype)
        ]

    @property
    def init(self) -> dict[str, Any]:
        found = self.of_type("system", "init")
        assert len(found) == 1, f"expected one system init line, got {len(found)}\n{self}"
        return found[0]

    @property
    def result(self) -> dict[str, Any] | None:
        """The final ``result`` line, or None when the process printed none."""
        found = self.of_type("result")
        assert len(found) <= 1, f"more than one result line\n{self}"
        return found[0] if found else None

    @property
    def session_id(self) -> str:
        session_id = self.init["session_id"]
        assert isinstance(session_id, str)
        return session_id

    def tool_uses(self) -> list[dict[str, Any]]:
        """Every ``tool_use`` block of the assistant lines, in order."""
        return [
            block
            for event in self.of_type("assistant")
            for block in event["message"]["content"]
            if block.get("type") == "tool_use"
        ]

    def tool_results(self) -> list[dict[str, Any]]:
        """Every ``tool_result`` block of the user lines, in order."""
        return [
            block
            for event in self.of_type("user")
            if isinstance(event["message"]["content"], list)
            for block in event["message"]["content"]
            if block.get("type") == "tool_result"
        ]

    def __str__(self) -> str:
        # Shown in assertion messages: the whole exchange is what one needs to debug.
        return (
            f"$ {' '.join(self.argv)}\nexit {self.returncode} after {self.elapsed:.2f} s\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class ClaudeRun:
    """A CLI process that is still running (see ``Claude.start``)."""

    def __init__(self, argv: Sequence[str], process: subprocess.Popen[str], started: float):
        self.argv = list(argv)
        self.process = process
        self._started = started

    def send_signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> ClaudeOutput:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            stdout, stderr = self.process.communicate()
            raise AssertionError(
                f"claude did not exit within {timeout} s\n--- stdout\n{stdout}--- stderr\n{stderr}"
            ) from None
        return ClaudeOutput(
            self.argv, self.process.returncode, stdout, stderr, time.monotonic() - self._started
        )

    def kill(self) -> None:
        """SIGKILL the whole process group: Bash tool children included."""
        if self.process.poll() is None:
            # Only while unreaped: after that the group id may belong to someone else.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def cli_environment(
    base_url: str, home: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An allow-list environment for the CLI: what it needs and nothing of the test process.

    PATH is passed on so the Bash tool finds git and coreutils; HOME is a scratch folder, so
    the CLI's settings and session files never touch the real ~/.claude. ``extra`` is added
    last, so a test can put a variable in on purpose (for example to prove a check fires).
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": API_KEY,
        # Without it the CLI also calls telemetry, update and feature-flag endpoints, and
        # asks the model server for a session title.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # Without it a 401, 429 or 500 is retried with backoff for minutes.
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "DISABLE_AUTOUPDATER": "1",
    }
    env.update(extra or {})
    return env


def version_key(version: str) -> tuple[int, ...]:
    """ "2.1.332" as (2, 1, 332), so releases compare in order."""
    return tuple(int(part) for part in version.split("."))


class Claude:
    """A pinned ``claude`` binary, bound to one model server and one scratch HOME.

    ``version`` is what the binary reports ("2.1.332"); ``since`` lets a test state a
    behaviour that changed between the pinned releases.
    """

    def __init__(self, binary: Path, version: str, server: ModelServer, home: Path) -> None:
        self.binary = binary
        self.version = version
        self.server = server
        self.home = home
        self._running: list[ClaudeRun] = []

    def since(self, version: str) -> bool:
        """True when this CLI is ``version`` or newer."""
        return version_key(self.version) >= version_key(version)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return cli_environment(self.server.base_url, self.home, extra)

    def argv(
        self,
        *,
        max_turns: int | None = None,
        resume: str | None = None,
        tools: Sequence[str] = DEFAULT_TOOLS,
        extra_args: Sequence[str] = (),
    ) -> list[str]:
        argv = [str(self.binary), "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--permission-mode", "acceptEdits", "--allowedTools", ",".join(tools)]
        if max_turns is not None:
            argv += ["--max-turns", str(max_turns)]
        if resume is not None:
            argv += ["--resume", resume]
        return [*argv, *extra_args]

    def start(
        self,
        prompt: str,
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        argv: Sequence[str] | None = None,
        **argv_options: Any,
    ) -> ClaudeRun:
        """Start the CLI with the harness's argv (``argv_options``), or with ``argv`` as
        given (cgr's own, to prove the real CLI takes it)."""
        argv = list(argv) if argv is not None else self.argv(**argv_options)
        # The prompt goes on stdin, as cgr will pass it: never in argv (ps shows argv).
        # A file rather than a pipe: nothing to feed while waiting, no deadlock possible.
        with tempfile.TemporaryFile() as stdin:
            stdin.write(prompt.encode())
            stdin.seek(0)
            started = time.monotonic()
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=self.env(env),
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                # Its own process group, so cleanup can kill Bash tool children with it.
                start_new_session=True,
            )
        run = ClaudeRun(argv, process, started)
        self._running.append(run)
        return run

    def run(
        self,
        prompt: str,
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        argv: Sequence[str] | None = None,
        **argv_options: Any,
    ) -> ClaudeOutput:
        return self.start(prompt, cwd=cwd, env=env, argv=argv, **argv_options).wait(timeout)

    def cleanup(self) -> None:
        """Kill whatever a failed test left running and reap it."""
        for run in self._running:
            run.kill()
            if run.process.returncode is None:
                run.process.communicate()
        self._running.clear()
