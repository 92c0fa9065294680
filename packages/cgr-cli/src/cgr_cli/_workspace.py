"""Where a run's files live.

::

    <root>/<run-id>/            mode 0700, one per run
        prompt.md               the prompt (outside repo/, so the agent cannot commit it)
        repo -> <root>/targets/<owner>/<name>/<number>/repo
        logs/agent.jsonl        the agent's stream, redacted
        logs/agent.stderr
        logs/run.log
        artifacts/git.diff
        artifacts/summary.json
        artifacts/repo.tar.gz   (cleanup policy "archive")
    <root>/targets/<owner>/<name>/<number>/repo    the git work copy of one issue or PR
    <root>/.mirrors/<owner>/<name>.git             bare mirror per repository

Why the work copy lives under ``targets/``: Claude Code finds a session to ``--resume``
only from the working directory it was started in. Giving every issue or pull request one
stable checkout path lets a follow-up run resume the earlier conversation, while each run
still gets a fresh clone (the old checkout is removed first) and its own logs. Only one
run per target is active at a time (the store's unique index), so the path is never
shared by two live runs.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Workspace:
    root: Path
    run_dir: Path
    repo_link: Path
    checkout: Path
    mirror: Path
    logs: Path
    artifacts: Path
    prompt: Path

    @classmethod
    def for_run(cls, root: Path, run_id: str, repo: str, number: int) -> Workspace:
        owner, name = repo.split("/", 1)
        run_dir = root / run_id
        return cls(
            root=root,
            run_dir=run_dir,
            repo_link=run_dir / "repo",
            checkout=root / "targets" / owner / name / str(number) / "repo",
            mirror=root / ".mirrors" / owner / f"{name}.git",
            logs=run_dir / "logs",
            artifacts=run_dir / "artifacts",
            prompt=run_dir / "prompt.md",
        )

    def create(self) -> None:
        # 0700 on every level cgr creates: prompts, logs and checkouts may hold private code.
        for path in (self.root, self.run_dir, self.logs, self.artifacts):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        self.checkout.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.mirror.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def fresh_checkout(self) -> None:
        """Remove the previous run's checkout of this target, then link it from the run."""
        if self.checkout.exists():
            shutil.rmtree(self.checkout)
        if self.repo_link.is_symlink() or self.repo_link.exists():
            self.repo_link.unlink()
        self.repo_link.symlink_to(self.checkout, target_is_directory=True)
