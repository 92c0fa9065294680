"""What a run leaves on disk: the summary, the diff of unpublished work, and the cleanup
policy applied at the end."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec

from cgr_cli.run._git import Git
from cgr_cli.run._report import RunSummary
from cgr_cli.run._safe_fs import RunFiles
from cgr_cli.run._workspace import Workspace


def write_summary(
    ws: Workspace, summary: RunSummary, redact: Callable[[str], str] = lambda text: text
) -> Path:
    """``artifacts/summary.json``, indented for people, redacted, never through a symlink."""
    path = ws.artifacts / "summary.json"
    data = json.loads(msgspec.json.encode(summary))
    RunFiles(ws.root).write(path, redact(json.dumps(data, indent=2) + "\n"))
    return path


def write_uncommitted_diff(
    git: Git, repo: Path, ws: Workspace, redact: Callable[[str], str]
) -> None:
    """For a run that failed, keep what the agent left (for a person), never pushed."""
    git.run(["add", "--all", "--intent-to-add"], cwd=repo, check=False)
    done = git.run(["diff", "HEAD"], cwd=repo, check=False)
    RunFiles(ws.root).write(ws.artifacts / "git.diff", redact(done.stdout))


def cleanup(ws: Workspace, policy: str) -> None:
    """``delete`` the checkout; ``archive`` it to ``artifacts/repo.tar.gz`` first; ``keep``
    it (the next run on the same target replaces it). Logs and artifacts always stay: the
    reaper removes whole run directories after ``cleanup.retention_days``."""
    if policy == "keep" or not ws.checkout.exists():
        return
    if policy == "archive":
        import tarfile  # only for this policy: not on every run's start-up path

        fd = RunFiles(ws.root).open(
            ws.artifacts / "repo.tar.gz", os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        )
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            tar.add(ws.checkout, arcname="repo")  # symlinks are stored, not followed
    shutil.rmtree(ws.checkout, ignore_errors=True)
    if ws.repo_link.is_symlink():
        ws.repo_link.unlink()
