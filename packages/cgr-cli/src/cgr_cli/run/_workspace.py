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
    <root>/targets/<owner>/<name>/<number>/repo.lock   flock: who works in that copy now
    <root>/.mirrors/<owner>/<name>.git             bare mirror per repository

Why the work copy lives under ``targets/``: Claude Code finds a session to ``--resume``
only from the working directory it was started in. Giving every issue or pull request one
stable checkout path lets a follow-up run resume the earlier conversation, while each run
still gets a fresh clone (the old checkout is removed first) and its own logs.

A mention on the pull request cgr opened for issue #N continues issue #N's conversation,
so that run works in issue #N's checkout (``with_checkout_of``). The store allows one
active run per target, but issue #N and PR #M are two targets: two runs could then want
the same checkout at once. ``checkout_lock`` (an exclusive ``flock`` on ``repo.lock``
next to the checkout) makes the second one wait until the first has published.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from cgr_cli._errors import CgrError


class CheckoutBusyError(CgrError):
    """Another run kept the checkout at ``path`` locked for longer than ``waited_s``."""

    def __init__(self, path: str, holder: str, waited_s: float) -> None:
        self.path = path
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(
            f"the checkout {path} is still in use by run {holder or '(unknown)'} after "
            f"waiting {waited_s:.0f}s; retry the run when that one has ended"
        )


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
            checkout=_checkout(root, repo, number),
            mirror=root / ".mirrors" / owner / f"{name}.git",
            logs=run_dir / "logs",
            artifacts=run_dir / "artifacts",
            prompt=run_dir / "prompt.md",
        )

    @property
    def lock(self) -> Path:
        """The lock file next to the checkout (not inside: ``fresh_checkout`` removes that)."""
        return self.checkout.with_name("repo.lock")

    def with_checkout_of(self, repo: str, number: int) -> Workspace:
        """This run's files, but the work copy of ``number`` (its session's directory)."""
        checkout = _checkout(self.root, repo, number)
        checkout.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return dataclasses.replace(self, checkout=checkout)

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


def _checkout(root: Path, repo: str, number: int) -> Path:
    owner, name = repo.split("/", 1)
    return root / "targets" / owner / name / str(number) / "repo"


def lock_holder(lock: Path) -> str | None:
    """The run id holding ``lock`` now, or None when nobody holds it."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "(unknown)"
        return None
    finally:
        os.close(fd)  # also drops the shared lock taken to test


@contextlib.asynccontextmanager
async def checkout_lock(
    lock: Path, *, owner: str, wait_s: float, log: Callable[[str], None], poll: float = 0.2
) -> AsyncIterator[float]:
    """Hold an exclusive ``flock`` on ``lock``; yields how long the wait took.

    Polled with ``LOCK_NB`` instead of a blocking ``flock`` in a thread: the wait stays
    cancellable (the run's time limit, SIGTERM) and leaves no thread blocked in the kernel.
    O_CLOEXEC keeps the descriptor out of git and the agent, so the lock ends with this
    process (or with the ``with`` block), never later because a child still holds it.
    """
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        start = time.monotonic()
        holder = ""
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if not holder:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "?"
                    log(f"the checkout is in use by run {holder}; waiting up to {wait_s:g}s")
                if waited >= wait_s:
                    raise CheckoutBusyError(str(lock.parent), holder, waited) from None
                await anyio.sleep(poll)
        waited = round(time.monotonic() - start, 3)
        if holder:
            log(f"got the checkout after waiting {waited:.1f}s for run {holder}")
        # Who holds it, for the next waiter's log and the reaper (see ``lock_holder``).
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        yield waited
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


def while_unlocked(lock: Path, fn: Callable[[], None]) -> bool:
    """Run ``fn`` holding ``lock`` if nobody else holds it now; False (``fn`` not run) when
    another run does: the checkout is that run's work now, not ours to archive or remove."""
    lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fn()
        return True
    finally:
        os.close(fd)
