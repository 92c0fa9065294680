"""How cgr starts a process that works in a run's checkout.

The agent and the repository's own ``setup`` and ``check`` commands run code the run does
not control (the model's choices; the repository's scripts, changed by the agent or by a
pull request's author), so they are started the same way: one spec built in one place,
handed to one ``supervise`` call. Whatever confines the agent (its environment allow-list
today — no GitHub token under any name —, its process group, its kill grace) confines the
commands too, and a new limit added here applies to both.

``job`` (the run id) marks every process started this way (``CGR_EXEC_JOB`` in its
environment and, where cgr-exec can, a cgroup), so what one of them leaves running
detached from its process group can still be found and ended (``kill_job_leftovers``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgr_cli.config._model import Config
from cgr_cli.run._agent import agent_env

if TYPE_CHECKING:
    from cgr_exec import Confinement, HeldStart, SupervisionResult


@dataclass(frozen=True, slots=True)
class CheckoutProcess:
    """Where and how a checkout process runs: its directory, its environment (an
    allow-list over cgr's own), the grace between SIGTERM and SIGKILL of its group, and
    the job marker of the run."""

    cwd: Path
    env: dict[str, str]
    kill_grace: float
    job: str | None = None
    # Landlock and user rules applied between fork and exec (cgr-exec); None: none yet.
    confinement: Confinement | None = None

    async def supervise(
        self, argv: Sequence[str], *, held: HeldStart | None = None, **options: Any
    ) -> SupervisionResult:
        """``cgr_exec.supervise`` with this spec; ``options`` are the per-process parts
        (log paths, stdin, time limits, line callback, stop handle). ``held``: the child
        :meth:`hold` made ready for this spec and ``argv``, released now."""
        from cgr_exec import supervise

        if held is not None:
            return await supervise(argv, kill_grace=self.kill_grace, held=held, **options)
        return await supervise(
            argv,
            cwd=self.cwd,
            env=self.env,
            kill_grace=self.kill_grace,
            job=self.job,
            confinement=self.confinement,
            **options,
        )

    def hold(self, argv: Sequence[str]) -> HeldStart:
        """A child made ready to run ``argv`` with this spec (``cgr_exec.hold``: forked,
        in the job's cgroup, confined), for :meth:`supervise` to release. Blocking."""
        from cgr_exec import hold

        return hold(argv, cwd=self.cwd, env=self.env, confinement=self.confinement,
                    job=self.job)  # fmt: skip

    def made(self, held: HeldStart, argv: Sequence[str]) -> bool:
        """Whether ``held`` was made for this spec and ``argv``."""
        return (held.argv, held.cwd, held.env, held.confinement, held.job) == (
            tuple(argv),
            os.fspath(self.cwd),
            self.env,
            self.confinement,
            self.job,
        )

    async def end_leftovers(self) -> int:
        """End what a process of this job left running outside its group (a daemon it
        started with ``setsid``); returns how many processes were signalled."""
        if self.job is None:
            return 0
        import anyio.to_thread

        from cgr_exec import kill_job_leftovers

        ended = await anyio.to_thread.run_sync(kill_job_leftovers, self.job, self.kill_grace)
        return len(ended)


def checkout_process(
    config: Config,
    checkout: Path,
    environ: Mapping[str, str] | None,
    token: str,
    *,
    job: str | None = None,
) -> CheckoutProcess:
    """The spec for the agent and for the repository's commands in ``checkout``."""
    env = agent_env(config.agent, os.environ if environ is None else environ, secrets=(token,))
    return CheckoutProcess(
        cwd=checkout, env=env, kill_grace=config.timeouts.watchdog_grace_seconds, job=job
    )
