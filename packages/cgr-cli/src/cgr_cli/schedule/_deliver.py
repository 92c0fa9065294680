"""Sending the reports runs could not send themselves (GitHub was down when they ended).

A run records its final report in the store's outbox together with its terminal status
(``run/_outbox.py``) and sends it at once; what GitHub did not take stays pending. Every
reap pass — so every ``cgr tick``, every daemon loop and ``cgr reap`` — ends with
:func:`deliver_pending`, which sends those.

Two rules keep this from doing harm:

- a run whose own process is still alive is left alone: it is sending its report right
  now, and two senders that both find no status comment yet would both create one. A run
  is this host's when its row names the configured ``fleet.host_id`` (not the machine's
  hostname: several hosts may share one, and a host may be renamed); in a fleet, a run of
  another host whose lease is live is that host's to send (its own passes do), so two
  hosts never race to create one comment;
- an item that failed more than once waits before it is tried again (``2**(attempts - 1)``
  seconds, at most five minutes), and each pass sends with a short write budget, so an
  outage does not hold up scheduling for minutes per pending report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cgr_cli.run._outbox import attempt_recorder, deliver_run
from cgr_cli.schedule._github import GitHubSession
from cgr_cli.schedule._runs import process_alive

if TYPE_CHECKING:
    from cgr_discovery import RunGitHub
    from cgr_store import OutboxItem, Store

log = logging.getLogger("cgr.outbox")

DELIVERY_BUDGET = 10.0
"""Seconds one write of a pending report may keep retrying within one pass."""
MAX_WAIT = 300.0


def run_ops(
    github: GitHubSession, store: Store, run_id: str, *, budget: float | None = None
) -> RunGitHub:
    """GitHub calls made on behalf of run ``run_id``: each attempt an event of that run."""
    from cgr_discovery import RunGitHub

    limit = github.ops.write_budget  # github.write_retry_seconds
    return RunGitHub(
        github.gh,
        min_edit_interval=0,
        on_attempt=attempt_recorder(store, run_id, log),
        write_budget=limit if budget is None else min(budget, limit),
    )


@dataclass(slots=True)
class Delivery:
    delivered: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def _due(item: OutboxItem, now: datetime) -> bool:
    # The first failure is the run's own (after its own retries): the next pass tries at
    # once; later ones wait 2, 4, 8, ... seconds, at most MAX_WAIT.
    if item.attempts <= 1 or item.last_attempt_at is None:
        return True
    wait = min(MAX_WAIT, 2.0 ** (item.attempts - 1))
    return now - item.last_attempt_at >= timedelta(seconds=wait)


async def deliver_pending(
    store: Store,
    github: GitHubSession,
    *,
    host: str,
    now: datetime | None = None,
    limit: int = 500,
) -> Delivery:
    """Send the pending reports of runs whose process is gone; returns the run ids sent
    in full and those left pending. ``host``: this host's id (``config.host_id``)."""
    import anyio.to_thread

    from cgr_store import RunNotFound, utcnow

    now = now or utcnow()
    result = Delivery()
    items = await anyio.to_thread.run_sync(lambda: store.pending_outbox(limit))
    live = {h.host_id for h in store.hosts() if h.lease_expires_at > now} - {host}
    for run_id in dict.fromkeys(item.run_id for item in items):
        mine = [i for i in items if i.run_id == run_id]
        try:
            run = store.get_run(run_id)
        except RunNotFound:
            continue
        if run.host == host and process_alive(run):
            continue  # its own process is sending it
        if run.host in live:
            continue  # another live host's run: its own passes send it
        if not any(_due(i, now) for i in mine):
            result.pending.append(run_id)
            continue
        ops = run_ops(github, store, run_id, budget=DELIVERY_BUDGET)
        if await deliver_run(store, ops, run_id, log=log):
            result.delivered.append(run_id)
        else:
            result.pending.append(run_id)
    return result
