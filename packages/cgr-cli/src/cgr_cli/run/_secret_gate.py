"""The outbound secret gate: nothing leaves cgr holding a secret it knows or a token shape.

Two kinds of findings, one list of what to look for:

1. every secret value cgr knows: the GitHub token(s), every ``Secret`` in the configuration
   (an App private key, a webhook secret), the values of variables handed to the agent whose
   name looks secret (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``) or that
   ``agent.secret_env`` lists, and GitHub token variables in cgr's own environment;
2. token shapes (``_redact.SHAPES``): GitHub ``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_``,
   Anthropic ``sk-ant-``, AWS ``AKIA``/``ASIA``, PEM private-key blocks.

What leaves by git (``scan_patch`` over ``git log -p`` of every new commit: the agent's
commits, their messages, and cgr's commit of its leftovers) blocks the push on a hit; the
finding names the file and line (or the commit whose message it is), never the value. Text
that leaves by the API (comments, PR bodies) is redacted instead (the run's ``Redactor``
knows the same secrets and shapes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from cgr_cli._redact import SHAPES
from cgr_cli.config._load import FORBIDDEN_PASSTHROUGH
from cgr_cli.config._model import Config, Secret
from cgr_cli.run._github_auth import file_secrets

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
# Shorter values would match ordinary text everywhere (a "secret" of "1234").
MIN_SECRET_LENGTH = 8
COMMIT_MARK = "\x1ecgr-commit "
PEM = "a private key"
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY")
MESSAGE_END = "\x1f"


@dataclass(frozen=True, slots=True)
class Finding:
    """Where a secret was found, and which kind: never the value."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def _config_secrets(node: object) -> Iterable[str]:
    # Secret values, webhook.secret among them; the App's key and secret files: file_secrets.
    if isinstance(node, Secret):
        yield node.reveal()
    elif isinstance(node, msgspec.Struct):
        for name in node.__struct_fields__:
            yield from _config_secrets(getattr(node, name))
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _config_secrets(item)


def known_secrets(
    config: Config, *, token: str, agent_env: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, str]:
    """Name → value of every secret cgr knows for this run (names say where it came from,
    for the finding's text)."""
    found: dict[str, str] = {"the GitHub token": token}
    for index, value in enumerate(_config_secrets(config)):
        found.setdefault(f"a secret of the configuration ({index + 1})", value)
    found.update({k: v for k, v in file_secrets(config).items() if v not in found.values()})
    listed = set(config.agent.secret_env)
    for name, value in agent_env.items():
        if name in listed or SECRET_NAME.search(name):
            found.setdefault(f"${name}", value)
    for name in FORBIDDEN_PASSTHROUGH | {"CGR_WEBHOOK_SECRET"}:
        if environ.get(name):
            found.setdefault(f"${name}", environ[name])
    return {k: v for k, v in found.items() if v and len(v) >= MIN_SECRET_LENGTH}


class SecretGate:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first: a secret containing another is named as itself.
        self._secrets = sorted(secrets.items(), key=lambda kv: len(kv[1]), reverse=True)

    def add_token(self, token: str) -> None:
        """Block a GitHub token minted after the run began (a renewed App token) too."""
        if token and all(value != token for _, value in self._secrets):
            self._secrets.append(("the GitHub token", token))
            self._secrets.sort(key=lambda kv: len(kv[1]), reverse=True)

    def kinds(self, text: str) -> list[str]:
        """What secrets ``text`` holds (their names), none of their values."""
        found = [name for name, value in self._secrets if value in text]
        found += [what for what, shape in SHAPES.items() if shape.search(text)]
        return list(dict.fromkeys(found))

    def scan_patch(self, patch: str) -> list[Finding]:
        """Findings in ``git log -p`` output made with ``PATCH_FORMAT``: added lines
        (file and new line number) and commit messages (the commit's short sha)."""
        findings: list[Finding] = []
        commits = patch.split(COMMIT_MARK)
        for chunk in commits[1:]:
            sha, _, rest = chunk.partition("\n")
            message, _, diff = rest.partition(MESSAGE_END)
            for what in self.kinds(message):
                findings.append(Finding(f"the message of commit {sha[:12]}", what))
            findings += self._scan_diff(diff)
        return findings

    def _scan_diff(self, diff: str) -> list[Finding]:
        findings: list[Finding] = []
        path, line_no = "?", 0
        # Multi-line shapes (a PEM block) are looked for in each file's added text as a
        # whole too, reported at the line where the file's additions start.
        added: list[tuple[int, str]] = []

        def flush() -> None:
            if not added:
                return
            block = "\n".join(text for _, text in added)
            seen = {f.what for f in findings if f.where.startswith(f"{path}:")}
            for what in self.kinds(block):
                if what not in seen:
                    findings.append(Finding(f"{path}:{added[0][0]}", what))
            added.clear()

        # A key's END line is a finding of its own only when no BEGIN line came before it
        # in the file (the tail of a key split over several files).
        pem_open = False
        for line in diff.split("\n"):
            if line.startswith("diff --git "):
                flush()
                path, line_no, pem_open = "?", 0, False
            elif line.startswith("+++ "):
                target = line[4:]
                path = target[2:] if target.startswith("b/") else target
            elif line.startswith("@@"):
                match = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)", line)
                line_no = int(match.group(1)) if match else 0
            elif line.startswith("+"):
                found = self.kinds(line[1:])
                if _PEM_BEGIN.search(line):
                    pem_open = True
                elif PEM in found and pem_open:
                    found.remove(PEM)
                    pem_open = False
                for what in found:
                    findings.append(Finding(f"{path}:{line_no}", what))
                added.append((line_no, line[1:]))
                line_no += 1
            elif line.startswith(" "):
                line_no += 1
        flush()
        return findings


# ``git log`` arguments for ``scan_patch``: every new commit with its full message, its
# patch as text (binary files too: --text), with no external diff driver or textconv filter
# (the agent could have configured one in the checkout to hide a change).
PATCH_ARGS = (
    "log", "-p", "--text", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
    f"--format={COMMIT_MARK}%H%n%B{MESSAGE_END}",
)  # fmt: skip


def describe(findings: list[Finding], limit: int = 10) -> str:
    """For the status comment: file and line of each finding, never a value."""
    lines = [f"- `{f.where}`: {f.what}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"- … and {len(findings) - limit} more")
    return "\n".join(lines)
