"""The Claude Code adapter: its command line, its environment, and its stream-json output.

Facts this module relies on, checked against the real CLI by ``nox -s e2e`` on every
pinned release (2.1.197 and 2.1.332; which release is installed, and the flags it takes,
is ``_agent_cli``'s business):

- ``--output-format stream-json`` requires ``--verbose`` with ``-p``.
- The first line is ``{"type":"system","subtype":"init","session_id":...}``.
- Each content block arrives as its own ``assistant`` line; blocks of one API message share
  ``message.id`` and repeat its ``usage``, so usage is counted once per message id.
- Only the final ``result`` line has the real totals (``total_cost_usd``, ``usage``,
  ``num_turns``, ``duration_ms``, ``session_id``, ``result``).
- An API error exits 1 with a ``result`` whose ``is_error`` is true while ``subtype`` may
  still say ``success``: success is judged by ``is_error``, ``api_error_status`` and the exit
  code, never by ``subtype`` alone. Reaching ``--max-turns`` gives ``error_max_turns``.
- An unknown ``--resume ID`` exits 1 with "No conversation found with session ID" on
  stderr and in the ``errors`` of a result line without turns. (2.1.197 only finds
  sessions started in the same working directory, 2.1.332 finds them from anywhere; cgr
  resumes in the same one.)
- Lines, and keys within lines, that this module does not know are ignored: every
  release adds some (2.1.332's init line has a dozen more keys than 2.1.197's).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cgr_cli.config._load import FORBIDDEN_PASSTHROUGH
from cgr_cli.config._model import AgentConfig
from cgr_cli.run._agent_cli import AgentCli, detect_agent_cli

if TYPE_CHECKING:
    from pathlib import Path

NO_CONVERSATION = "No conversation found with session ID"

# Always handed through when set. Locale, home and proxy variables let the CLI start
# normally; ANTHROPIC_*/CLAUDE_CODE_* configure the model access. IS_SANDBOX is needed for
# bypassPermissions when running as root.
_BASE_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TERM", "TZ", "LANG", "LANGUAGE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "IS_SANDBOX", "CLAUDE_CONFIG_DIR", "DISABLE_AUTOUPDATER", "DISABLE_TELEMETRY",
    "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE",
})  # fmt: skip
_BASE_PREFIXES = ("LC_", "ANTHROPIC_", "CLAUDE_CODE_")


def agent_argv(
    config: AgentConfig, *, resume: str | None = None, cli: AgentCli | None = None
) -> list[str]:
    """The agent's argv for the Claude Code release ``cli`` (from ``detect_agent_cli``;
    None: the oldest supported release's flags). The prompt is never in it: it goes to
    stdin."""
    cli = AgentCli(None) if cli is None else cli
    argv = [*config.argv, "-p", "--output-format", "stream-json", "--verbose"]
    argv += ["--max-turns", str(config.max_turns)]
    if config.model:
        argv += ["--model", config.model]
    if config.permission_mode:
        argv += ["--permission-mode", cli.permission_mode(config.permission_mode)]
    if config.allowed_tools:
        argv += ["--allowedTools", ",".join(config.allowed_tools)]
    argv += cli.headless_args(config.extra_args)
    argv += config.extra_args
    if resume:
        argv += ["--resume", resume]
    return argv


def agent_env(
    config: AgentConfig,
    environ: Mapping[str, str] | None = None,
    *,
    secrets: tuple[str, ...] = (),
) -> dict[str, str]:
    """The agent's environment: an allow-list over ``environ``, never a GitHub token.

    ``secrets`` are values that must not reach the agent under any name (the GitHub token):
    a variable whose value contains one is dropped even if its name is allowed.
    """
    environ = os.environ if environ is None else environ
    allowed = set(config.env_passthrough)
    env: dict[str, str] = {}
    for name, value in environ.items():
        if name.upper() in FORBIDDEN_PASSTHROUGH:
            continue
        if name in _BASE_NAMES or name.startswith(_BASE_PREFIXES) or name in allowed:
            if any(s and s in value for s in secrets):
                continue
            env[name] = value
    return env


def check_can_start(
    config: AgentConfig, env: Mapping[str, str], *, release_cache: Path | None = None
) -> AgentCli:
    """Refuse early what the CLI would refuse after cgr claimed the issue, and return the
    agent's release (asked once here, then used for the whole run).

    A release older than the oldest supported, or one lacking a flag ``extra_args`` names,
    is refused (``AgentVersionError``). With ``release_cache`` the release is remembered
    between runs (``_agent_release``). Claude Code refuses
    ``--dangerously-skip-permissions`` and ``--permission-mode bypassPermissions`` when
    running as root unless ``IS_SANDBOX=1`` is set.
    """
    from cgr_cli._errors import ConfigError

    if release_cache is None:
        cli = detect_agent_cli(config.argv, env)
    else:
        from cgr_cli.run._agent_release import cached_agent_cli

        cli = cached_agent_cli(config.argv, env, release_cache)
    cli.check(config.extra_args)

    bypass = config.permission_mode == "bypassPermissions" or (
        "--dangerously-skip-permissions" in config.extra_args
    )
    if bypass and os.geteuid() == 0 and env.get("IS_SANDBOX") != "1":
        raise ConfigError(
            "agent.permission_mode = 'bypassPermissions' (or --dangerously-skip-permissions) "
            "is refused by Claude Code when running as root unless IS_SANDBOX=1 is set in "
            "cgr's environment; run cgr as another user, set IS_SANDBOX=1 in a real "
            "sandbox, or choose another permission mode",
            key="agent.permission_mode",
        )
    return cli


@dataclass(slots=True)
class AgentResult:
    """The agent's final ``result`` line."""

    subtype: str
    is_error: bool
    text: str
    session_id: str | None
    cost_usd: float | None
    num_turns: int | None
    duration_ms: int | None
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    api_error_status: int | None = None
    # Tools the permission settings refused (their names only; inputs may hold anything).
    permission_denials: list[str] = field(default_factory=list)


@dataclass(slots=True)
class StreamState:
    """What cgr learns from the agent's stream-json, line by line, as it arrives."""

    input_usd_per_mtok: float = 3.0
    output_usd_per_mtok: float = 15.0
    session_id: str | None = None
    tools_used: dict[str, int] = field(default_factory=dict)
    files_written: list[str] = field(default_factory=list)
    last_text: str = ""
    result: AgentResult | None = None
    lines: int = 0
    bad_lines: int = 0
    _usage_by_message: dict[str, dict[str, int]] = field(default_factory=dict)

    def feed(self, line: str) -> bool:  # noqa: PLR0911 - one exit per kind of line
        """Take one stdout line; True when progress worth reporting changed."""
        line = line.strip()
        if not line:
            return False
        self.lines += 1
        try:
            event = json.loads(line)
        except ValueError:
            self.bad_lines += 1
            return False
        if not isinstance(event, dict):
            self.bad_lines += 1
            return False
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            self.session_id = _str_or_none(event.get("session_id")) or self.session_id
            return False
        if kind == "assistant":
            return self._assistant(event)
        if kind == "result":
            self._result(event)
            return True
        return False

    def _assistant(self, event: dict[str, Any]) -> bool:
        message = event.get("message")
        if not isinstance(message, dict):
            return False
        usage = message.get("usage")
        if isinstance(usage, dict):
            key = str(message.get("id") or f"line-{self.lines}")
            self._usage_by_message[key] = {k: _int(usage.get(k)) for k in _USAGE_KEYS}
        changed = False
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                self.last_text = block["text"]
            elif block.get("type") == "tool_use":
                name = str(block.get("name") or "tool")
                self.tools_used[name] = self.tools_used.get(name, 0) + 1
                changed = True
                tool_input = block.get("input")
                if name in {"Write", "Edit", "MultiEdit", "NotebookEdit"} and isinstance(
                    tool_input, dict
                ):
                    path = tool_input.get("file_path") or tool_input.get("notebook_path")
                    if isinstance(path, str) and path not in self.files_written:
                        self.files_written.append(path)
        return changed

    def _result(self, event: dict[str, Any]) -> None:
        raw_usage = event.get("usage")
        usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
        cost = event.get("total_cost_usd")
        status = event.get("api_error_status")
        self.result = AgentResult(
            subtype=str(event.get("subtype") or ""),
            is_error=bool(event.get("is_error")),
            text=str(event.get("result") or ""),
            session_id=_str_or_none(event.get("session_id")) or self.session_id,
            cost_usd=float(cost) if isinstance(cost, int | float) else None,
            num_turns=_int_or_none(event.get("num_turns")),
            duration_ms=_int_or_none(event.get("duration_ms")),
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            cache_creation_tokens=_int(usage.get("cache_creation_input_tokens")),
            cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
            api_error_status=_int_or_none(status),
            permission_denials=[
                str(d.get("tool_name") or "tool")
                for d in event.get("permission_denials") or []
                if isinstance(d, dict)
            ],
        )
        if self.result.session_id:
            self.session_id = self.result.session_id

    @property
    def estimated_cost_usd(self) -> float:
        """Running cost estimated from ``usage`` of the assistant messages seen so far.

        Cache writes are priced at 1.25x input and cache reads at 0.1x input (Anthropic's
        published multipliers); the prices per million tokens come from the configuration.
        Once the ``result`` line arrived, its ``total_cost_usd`` is the truth.
        """
        if self.result is not None and self.result.cost_usd is not None:
            return self.result.cost_usd
        total_in = total_out = 0.0
        for usage in self._usage_by_message.values():
            total_in += (
                usage["input_tokens"]
                + 1.25 * usage["cache_creation_input_tokens"]
                + 0.1 * usage["cache_read_input_tokens"]
            )
            total_out += usage["output_tokens"]
        return (total_in * self.input_usd_per_mtok + total_out * self.output_usd_per_mtok) / 1e6

    def progress_line(self) -> str:
        tools = ", ".join(f"{name} x{count}" for name, count in sorted(self.tools_used.items()))
        files = len(self.files_written)
        return f"tools used: {tools or 'none yet'}; files written: {files}"


_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str
    # "timed_out" for the wall clock, else "failed"; used for the run's terminal status.
    status: str = "failed"


def judge(  # noqa: PLR0911 - a decision table, checked in order
    *,
    exit_code: int | None,
    result: AgentResult | None,
    timed_out: bool = False,
    watchdog: str | None = None,
    cost_exceeded: bool = False,
    max_cost_usd: float = 0.0,
) -> Verdict:
    """Did the agent finish its work? Anything else means no pull request is opened."""
    if timed_out:
        return Verdict(False, "the agent ran past its time limit and was stopped", "timed_out")
    if cost_exceeded:
        return Verdict(False, f"the agent passed the cost ceiling of ${max_cost_usd:.2f}")
    if watchdog:
        return Verdict(False, f"the watchdog stopped the agent ({watchdog})")
    if result is None:
        return Verdict(False, f"the agent exited ({exit_code}) without a result")
    if result.subtype == "error_max_turns":
        return Verdict(False, "the agent reached its maximum number of turns")
    if result.is_error or result.api_error_status is not None:
        status = f" (API status {result.api_error_status})" if result.api_error_status else ""
        return Verdict(False, f"the agent reported an error{status}: {result.text[:300]}")
    if exit_code != 0:
        return Verdict(False, f"the agent exited with code {exit_code}")
    if result.subtype and result.subtype != "success":
        return Verdict(False, f"the agent ended with {result.subtype}")
    return Verdict(True, "the agent finished")
