"""How cgr starts a process that works in a run's checkout.

The agent and the repository's own ``setup`` and ``check`` commands run code the run does
not control (the model's choices; the repository's scripts, changed by the agent or by a
pull request's author), so they are started the same way: one spec built in one place,
handed to one ``supervise`` call. Whatever confines the agent (its environment allow-list
today — no GitHub token under any name —, its process group, its kill grace) confines the
commands too, and a new limit added here applies to both.
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
    from cgr_exec import SupervisionResult


@dataclass(frozen=True, slots=True)
class CheckoutProcess:
    """Where and how a checkout process runs: its directory, its environment (an
    allow-list over cgr's own), and the grace between SIGTERM and SIGKILL of its group."""

    cwd: Path
    env: dict[str, str]
    kill_grace: float

    async def supervise(self, argv: Sequence[str], **options: Any) -> SupervisionResult:
        """``cgr_exec.supervise`` with this spec; ``options`` are the per-process parts
        (log paths, stdin, time limits, line callback, stop handle)."""
        from cgr_exec import supervise

        return await supervise(
            argv, cwd=self.cwd, env=self.env, kill_grace=self.kill_grace, **options
        )


def checkout_process(
    config: Config, checkout: Path, environ: Mapping[str, str] | None, token: str
) -> CheckoutProcess:
    """The spec for the agent and for the repository's commands in ``checkout``."""
    env = agent_env(config.agent, os.environ if environ is None else environ, secrets=(token,))
    return CheckoutProcess(cwd=checkout, env=env, kill_grace=config.timeouts.watchdog_grace_seconds)
