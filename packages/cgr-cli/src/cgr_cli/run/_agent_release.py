"""The agent's release, remembered per host between runs.

Asking ``<agent.command> --version`` starts the agent's runtime (Node for Claude Code:
0.3-0.5 s of CPU) and every run asked it before its claim, so a burst of runs paid that
again and again for an answer that changes only when the agent is upgraded. The answer
is kept in a small file under the workspace root, keyed by what could change it: the
command line, the environment it is asked in, and the identity (device, inode, size,
modification time) of every file the command names - the program found on ``PATH``
and a script given as an argument. An upgrade (npm replaces ``cli.js``) changes that
identity; a wrapper whose inside changes without its own file changing is caught by the
entry's age limit (``MAX_AGE_SECONDS``).

Only a release that was understood is kept: a program that failed to answer is asked
again on the next run, so its error is always current. Losing the file costs one
``--version``; a damaged file is ignored and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from cgr_cli.run._agent_cli import AgentCli, ClaudeVersion, detect_agent_cli

__all__ = ["MAX_AGE_SECONDS", "cached_agent_cli", "release_cache_path"]

MAX_AGE_SECONDS: Final = 15 * 60.0
_MAX_ENTRIES: Final = 16  # a host drives one agent command or a handful (tests, upgrades)


def release_cache_path(workspace_root: Path) -> Path:
    return workspace_root / ".agent-release.json"


def cached_agent_cli(
    argv: Sequence[str],
    env: Mapping[str, str],
    cache_file: Path,
    *,
    detect: Callable[[Sequence[str], Mapping[str, str]], AgentCli] = detect_agent_cli,
    now: Callable[[], float] = time.time,
) -> AgentCli:
    """``detect(argv, env)``, or the answer it gave for the same agent within the age limit."""
    key = _fingerprint(argv, env)
    if key is None:  # the program is not found: let detect() say so, every time
        return detect(argv, env)
    entries = _read(cache_file)
    entry = entries.get(key)
    if entry is not None and 0 <= now() - entry[1] <= MAX_AGE_SECONDS:
        version = ClaudeVersion.parse(entry[0])
        if version is not None:
            return AgentCli(version, entry[0])
    cli = detect(argv, env)
    if cli.version is not None:
        entries[key] = (cli.reported, now())
        newest = sorted(entries.items(), key=lambda kv: kv[1][1])[-_MAX_ENTRIES:]
        _write(cache_file, dict(newest))
    return cli


def _fingerprint(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    program = shutil.which(argv[0], path=env.get("PATH")) if argv else None
    if program is None:
        return None
    files = [program, *(arg for arg in argv[1:] if os.path.isabs(arg))]
    identity = []
    for name in files:
        try:
            st = os.stat(name)  # follows links: the file that would run
        except OSError:
            continue
        identity.append([os.path.realpath(name), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns])
    blob = json.dumps([list(argv), sorted(env.items()), identity], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _read(cache_file: Path) -> dict[str, tuple[str, float]]:
    """key -> (the line the agent printed, when it was asked); {} for a missing or
    damaged file."""
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    entries: dict[str, tuple[str, float]] = {}
    for key, value in data.items() if isinstance(data, dict) else ():
        if isinstance(value, dict):
            reported, at = value.get("reported"), value.get("at")
            if isinstance(reported, str) and isinstance(at, int | float):
                entries[key] = (reported, float(at))
    return entries


def _write(cache_file: Path, entries: Mapping[str, tuple[str, float]]) -> None:
    # Written whole and renamed into place: runs starting at once never read half a file.
    tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({k: {"reported": r, "at": at} for k, (r, at) in entries.items()}, f)
        os.replace(tmp, cache_file)
