"""Which Claude Code release the agent command is, and what its command line may say.

cgr asks ``<agent.command> --version`` before a run claims anything, and keeps the answer
for the whole run (``detect_agent_cli``; remembered between runs while the agent is
unchanged, ``_agent_release``). The release decides:

- the name of the permission mode that asks before every tool: ``default`` up to 2.1.199,
  ``manual`` since 2.1.200 (later releases still take ``default`` without listing it;
  cgr passes the name the installed release lists, whichever of the two is configured);
- ``--permission-prompts none`` (since 2.1.259): nobody answers a permission prompt in a
  headless run, so anything that would prompt is refused at once rather than left to a
  host that does not exist; older releases refuse such tools by themselves in ``-p``;
- whether the flags a configuration may put in ``agent.extra_args`` exist
  (``--restricted`` since 2.1.248, ``--permission-prompts`` since 2.1.259): named for a
  release that lacks them, the run is refused before the claim with the release needed.

The first releases above were found by installing the releases between the two pinned
ones and reading their ``--help``. Releases older than ``OLDEST_SUPPORTED`` are refused;
releases newer than ``NEWEST_TESTED`` are used (the parser ignores stream fields it does
not know) and ``cgr doctor`` warns about them. A program whose ``--version`` is not
Claude Code's (a wrapper script, cgr's demo agent) gets the oldest release's flags.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cgr_cli._errors import ConfigError

__all__ = [
    "MANUAL_MODE_SINCE",
    "NEWEST_TESTED",
    "OLDEST_SUPPORTED",
    "AgentCli",
    "AgentVersionError",
    "ClaudeVersion",
    "Support",
    "detect_agent_cli",
]

_VERSION = re.compile(r"\s*(\d+)\.(\d+)\.(\d+)\s+\(Claude Code\)")


@dataclass(frozen=True, order=True, slots=True)
class ClaudeVersion:
    """A Claude Code release number; compares in release order."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> ClaudeVersion | None:
        """The release in ``claude --version`` output ("2.1.332 (Claude Code)"), else None."""
        match = _VERSION.match(text)
        if match is None:
            return None
        major, minor, patch = (int(part) for part in match.groups())
        return cls(major, minor, patch)

    @classmethod
    def of(cls, text: str) -> ClaudeVersion:
        """A release written as "2.1.332" (for constants and tests)."""
        major, minor, patch = (int(part) for part in text.split("."))
        return cls(major, minor, patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


#: The oldest release cgr runs: the last that installs on Node 20, tested by ``nox -s e2e``.
OLDEST_SUPPORTED: Final = ClaudeVersion(2, 1, 197)
#: The newest release ``nox -s e2e`` runs (the npm release when the pins were last bumped).
NEWEST_TESTED: Final = ClaudeVersion(2, 1, 332)
#: ``--permission-mode manual`` (formerly ``default``) is listed since this release.
MANUAL_MODE_SINCE: Final = ClaudeVersion(2, 1, 200)
# Flags later releases added, by the first release whose --help lists them.
_FLAGS_SINCE: Final[Mapping[str, ClaudeVersion]] = {
    "--restricted": ClaudeVersion(2, 1, 248),
    "--permission-prompts": ClaudeVersion(2, 1, 259),
}
_ASK_MODES: Final = frozenset({"default", "manual"})


class Support(StrEnum):
    """How a release stands against the tested range (``cgr doctor`` reports it)."""

    TESTED = "tested"  # between OLDEST_SUPPORTED and NEWEST_TESTED
    NEWER = "newer"  # newer than NEWEST_TESTED: used, not yet tested
    TOO_OLD = "too_old"  # older than OLDEST_SUPPORTED: refused
    UNKNOWN = "unknown"  # --version is not Claude Code's


class AgentVersionError(ConfigError):
    """The agent is a Claude Code release cgr cannot drive (too old, or lacking a flag the
    configuration asks for); raised before the run claims anything."""

    def __init__(self, message: str, *, version: ClaudeVersion, key: str) -> None:
        self.version = version
        super().__init__(message, key=key)


@dataclass(frozen=True, slots=True)
class AgentCli:
    """What cgr learned from ``--version``: the release (None when the program is not
    Claude Code) and the line it printed."""

    version: ClaudeVersion | None
    reported: str = ""

    @property
    def support(self) -> Support:
        if self.version is None:
            return Support.UNKNOWN
        if self.version < OLDEST_SUPPORTED:
            return Support.TOO_OLD
        return Support.NEWER if self.version > NEWEST_TESTED else Support.TESTED

    def has(self, flag: str) -> bool:
        """Whether this release takes ``flag`` (one of the flags added after 2.1.197)."""
        since = _FLAGS_SINCE[flag]
        return self.version is not None and self.version >= since

    def permission_mode(self, configured: str) -> str:
        """The release's own name for ``configured`` (``default`` and ``manual`` are one
        mode under two names); other modes are passed as they are."""
        if configured not in _ASK_MODES:
            return configured
        known = self.version if self.version is not None else OLDEST_SUPPORTED
        return "manual" if known >= MANUAL_MODE_SINCE else "default"

    def headless_args(self, extra_args: Sequence[str]) -> list[str]:
        """Flags cgr adds for a run nobody watches, unless ``extra_args`` chose otherwise."""
        if self.has("--permission-prompts") and not _names(extra_args, "--permission-prompts"):
            return ["--permission-prompts", "none"]
        return []

    def check(self, extra_args: Sequence[str]) -> None:
        """Refuse a release older than the oldest supported, or one that lacks a flag
        ``extra_args`` names, with the release needed."""
        if self.version is None:
            return
        if self.version < OLDEST_SUPPORTED:
            raise AgentVersionError(
                f"the agent is Claude Code {self.version}, older than the oldest release "
                f"cgr supports ({OLDEST_SUPPORTED}); upgrade it "
                "(npm install -g @anthropic-ai/claude-code) or point agent.command at a "
                "newer one",
                version=self.version,
                key="agent.command",
            )
        for flag, since in _FLAGS_SINCE.items():
            if self.version < since and _names(extra_args, flag):
                raise AgentVersionError(
                    f"agent.extra_args has {flag}, which Claude Code {self.version} does "
                    f"not know (it arrived in {since}); upgrade the agent or remove the flag",
                    version=self.version,
                    key="agent.extra_args",
                )


def _names(args: Sequence[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(f"{flag}=") for arg in args)


def detect_agent_cli(
    argv: Sequence[str], env: Mapping[str, str], *, timeout: float = 30.0
) -> AgentCli:
    """Run ``argv --version`` and read the release from its first line.

    A program that does not answer like Claude Code (or fails to answer) is reported as
    version None: the run then tries it with the oldest release's flags, and the agent
    itself will say what is wrong. Raises nothing: ``AgentCli.check`` decides.
    """
    try:
        done = subprocess.run(
            [*argv, "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env),
            # Nothing to read: a program that waits for a prompt on stdin gets EOF at once.
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return AgentCli(None, f"{' '.join(argv)} --version: {exc}")
    lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
    first = lines[0].strip() if lines else ""
    version = ClaudeVersion.parse(first) if done.returncode == 0 else None
    return AgentCli(version, first)
