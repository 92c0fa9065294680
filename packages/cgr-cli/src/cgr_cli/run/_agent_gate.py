"""The host's agent slots: at most ``polling.max_concurrency`` agents at once.

A scheduler starts up to ``polling.run_slots`` runs (the agents and ``runs_ahead`` more);
each run takes an agent slot right before its repository's set-up commands and its agent,
and gives it back once the agent and its checks are done. So a run's claim and checkout
happen while other runs' agents work, its push, pull request and report after it has
handed its slot on, and a slot given back is taken again at once by a run that is ready
(the slots are cgr-exec's ``SlotGate``: ``flock`` files that a killed process gives back,
and a FIFO that wakes a waiter the moment one is released).

Every run on the host (a tick's, the daemon's, a hand-started ``cgr run``) takes its slot
here, from one directory under the workspace root, which a confined agent cannot reach
(the sandbox forbids the workspace root as a whole, run/_sandbox.py).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from cgr_cli._errors import CgrError

if TYPE_CHECKING:
    import logging

    from cgr_cli.config._model import Config
    from cgr_exec import HeldSlot, SlotGate

SLOTS_DIR = ".agent-slots"
"""The agent slots' directory, under the workspace root."""

# A waiter is woken the moment a slot is released (the gate's FIFO); this poll only
# covers a holder that died without saying so (SIGKILL).
_POLL_SECONDS = 1.0
# A run still waiting after this long says so in its status comment.
_SAY_AFTER_SECONDS = 1.0


@asynccontextmanager
async def agent_slot(
    config: Config,
    *,
    log: logging.Logger,
    waiting: Callable[[str], Awaitable[None]],
    time_limit: anyio.CancelScope | None = None,
) -> AsyncIterator[float]:
    """Hold one of the host's agent slots; yields how long the run waited for it.

    ``config``: the host's settings (a repository's cgr.toml cannot change how many agents
    its host runs). ``waiting(line)`` is told once when the run has waited a second, for
    the run's status comment. ``time_limit``: the run's (``timeouts.run_seconds``), which
    stops while the run waits - that is other runs' time, and a run queued behind long
    agents must not be ended for it - and goes on afterwards, moved by the wait. (The
    reaper's clock for the run, its ``started_at``, starts when the run has its slot.) A
    cancellation of ``time_limit`` (a signal, a lost lease) still ends the wait at once.
    """
    from cgr_exec import SlotGate

    agents = config.polling.max_concurrency
    gate = SlotGate(config.workspace_root / SLOTS_DIR, agents)
    try:
        held, waited = gate.try_acquire(), 0.0
    except (OSError, ValueError) as exc:  # a file planted there, a directory not ours
        raise CgrError(
            f"the host's agent slots in {gate.directory} cannot be used ({exc}); "
            "remove that directory (no run may be working) and retry"
        ) from None
    if held is None:
        line = f"waiting for an agent slot (this host runs {agents} at once)"
        log.info("%s", line)
        held, waited = await _wait(gate, line, log=log, waiting=waiting, time_limit=time_limit)
        log.info("agent slot %d taken after %.1fs", held.index, waited)
    with held:
        yield waited


async def _wait(
    gate: SlotGate,
    line: str,
    *,
    log: logging.Logger,
    waiting: Callable[[str], Awaitable[None]],
    time_limit: anyio.CancelScope | None,
) -> tuple[HeldSlot, float]:
    """Wait for a slot with the run's time limit stopped; the slot and the seconds waited."""
    started = anyio.current_time()
    deadline = math.inf
    if time_limit is not None:
        deadline, time_limit.deadline = time_limit.deadline, math.inf

    async def say_so() -> None:
        # Not for a wait that ends at once (a slot handed on as the run came): a status
        # line that would flicker past, and a GitHub write, for nothing.
        await anyio.sleep(_SAY_AFTER_SECONDS)
        try:
            await waiting(line)
        except Exception:  # the status comment's line is not worth the run
            log.warning("could not say so on GitHub", exc_info=True)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(say_so)
            held = await gate.acquire(poll_interval=_POLL_SECONDS)
            tg.cancel_scope.cancel()
    finally:
        waited = anyio.current_time() - started
        if time_limit is not None:
            time_limit.deadline = deadline + waited
    return held, round(waited, 3)


def slots_problem(config: Config) -> str | None:
    """What keeps this user's runs from using the host's agent slots (``cgr doctor``), or
    None; nothing is created. Besides what the gate itself would refuse
    (``SlotGate.problem``): a directory made by another user (a ``cgr run`` as root before
    the daemon's first run, say) is private to that user, and every run of this one would
    fail at its agent."""
    import os

    from cgr_exec import SlotGate

    gate = SlotGate(config.workspace_root / SLOTS_DIR, config.polling.max_concurrency)
    try:
        owner = os.lstat(gate.directory).st_uid
    except FileNotFoundError:
        return None  # made by the first run
    if owner != os.geteuid():
        return f"{gate.directory} belongs to uid {owner}, not to this user ({os.geteuid()})"
    return gate.problem()
