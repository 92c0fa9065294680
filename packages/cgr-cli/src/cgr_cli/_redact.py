"""Removing secrets from everything cgr writes: logs, artifacts and GitHub comments."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

REDACTED = "[REDACTED]"

# GitHub token formats (classic PAT, OAuth, user-to-server, server-to-server, refresh,
# fine-grained PAT), HTTP Authorization headers in any casing, and credentials in URLs.
_PATTERNS = [
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}\b"),
    re.compile(r"(?i)(authorization:\s*)(?:(?:bearer|token|basic)\s+)?[^\s\"']+"),
    re.compile(r"(?i)(https?://)[^/\s:@]+:[^/\s@]+@"),
]
# Token shapes of other services an agent is likely to see: Anthropic API keys, AWS access
# key ids, and PEM private keys (a whole block, or from its BEGIN line when cut short, or
# its END line alone: the tail of a key split over several files has no BEGIN line). PGP's
# armour says "PRIVATE KEY BLOCK".
_PEM_LABEL = r"[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
SHAPES = {
    "a GitHub token": re.compile(
        r"\bgh[pousr]_[A-Za-z0-9]{20,}\b|\bgithub_pat_[A-Za-z0-9_]{20,}\b"
    ),
    "an Anthropic API key": re.compile(r"\bsk-ant-[A-Za-z0-9_-]{16,}"),
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    "a private key": re.compile(
        rf"-----BEGIN {_PEM_LABEL}(?:[\s\S]*?-----END {_PEM_LABEL}|[^\n]*)"
        rf"|-----END {_PEM_LABEL}"
    ),
}


class Redactor:
    """Replaces known secrets and anything shaped like a token (GitHub, Anthropic, AWS, a
    PEM private key) with ``[REDACTED]``.

    Known secrets are matched literally (longest first, so a secret containing another is
    removed whole); the patterns catch tokens cgr was never told about, e.g. one the agent
    printed from its own environment.
    """

    def __init__(self, secrets: Iterable[str] = (), *, hide_paths: Iterable[Path] = ()) -> None:
        # Very short "secrets" would shred ordinary text; tokens are always long.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        self._paths = sorted({str(p) for p in hide_paths}, key=len, reverse=True)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(self._secrets)

    def add_secret(self, secret: str) -> None:
        if secret and len(secret) >= 6 and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for shape in SHAPES.values():
            text = shape.sub(REDACTED, text)
        text = _PATTERNS[2].sub(lambda m: m.group(1) + REDACTED, text)
        text = _PATTERNS[3].sub(lambda m: m.group(1) + REDACTED + "@", text)
        for path in self._paths:
            text = text.replace(path, "<workspace>")
        return text

    def bytes(self, data: bytes) -> bytes:
        return self(data.decode("utf-8", errors="replace")).encode("utf-8")


def yaml_error_text(exc: Exception) -> str:
    """A YAML parse error without the excerpt of the file PyYAML puts in its message.

    The excerpt is the offending line, and in a configuration that line may be
    ``token: ghp_…``: the message keeps the problem and its line and column only.
    """
    parts = []
    for text_name, mark_name in (("context", "context_mark"), ("problem", "problem_mark")):
        text, mark = getattr(exc, text_name, None), getattr(exc, mark_name, None)
        if not isinstance(text, str):
            continue
        line, column = getattr(mark, "line", None), getattr(mark, "column", None)
        if isinstance(line, int) and isinstance(column, int):
            text += f" (at line {line + 1}, column {column + 1})"
        parts.append(text)
    return ": ".join(parts) or type(exc).__name__
