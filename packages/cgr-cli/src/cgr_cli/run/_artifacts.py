"""What a run leaves on disk: the summary, the diff of unpublished work, and the cleanup
policy applied at the end."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec

from cgr_cli.run._git import Git
from cgr_cli.run._report import RunSummary
from cgr_cli.run._workspace import Workspace


def write_summary(ws: Workspace, summary: RunSummary) -> Path:
    """``artifacts/summary.json``, indented for people."""
    ws.artifacts.mkdir(parents=True, exist_ok=True)
    path = ws.artifacts / "summary.json"
    data = json.loads(msgspec.json.encode(summary))
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def write_uncommitted_diff(
    git: Git, repo: Path, ws: Workspace, redact: Callable[[str], str]
) -> None:
    """For a run that failed, keep what the agent left (for a person), never pushed."""
    git.run(["add", "--all", "--intent-to-add"], cwd=repo, check=False)
    done = git.run(["diff", "HEAD"], cwd=repo, check=False)
    (ws.artifacts / "git.diff").write_text(redact(done.stdout), encoding="utf-8")


def cleanup(ws: Workspace, policy: str) -> None:
    """``delete`` the checkout; ``archive`` it to ``artifacts/repo.tar.gz`` first; ``keep``
    it (the next run on the same target replaces it). Logs and artifacts always stay: the
    reaper removes whole run directories after ``cleanup.retention_days``."""
    if policy == "keep" or not ws.checkout.exists():
        return
    if policy == "archive":
        import tarfile  # only for this policy: not on every run's start-up path

        with tarfile.open(ws.artifacts / "repo.tar.gz", "w:gz") as tar:
            tar.add(ws.checkout, arcname="repo")
    shutil.rmtree(ws.checkout, ignore_errors=True)
    if ws.repo_link.is_symlink():
        ws.repo_link.unlink()
