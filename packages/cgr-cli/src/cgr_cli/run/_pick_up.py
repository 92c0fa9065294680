"""A queued run taken up by the process that will run it.

Its own module, light on imports, so that ``cgr run --run-id`` (what the daemon and a
tick start) names itself in the run's row before it loads the pipeline, the GitHub client
or the executor: from then on ``cgr status`` and the reaper see the run's process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cgr_cli._errors import RunNotFoundError

if TYPE_CHECKING:
    from cgr_cli.config._model import Config
    from cgr_store import HostLease, Run, Store

__all__ = ["pick_up", "pick_up_queued"]


def pick_up(store: Store, run_id: str, host: str, *, lease: HostLease | None = None) -> Run:
    """The queued run ``run_id``, now naming this process (host, pid, start time);
    ``lease``: the fleet lease it was claimed under (a superseded one raises
    ``cgr_store.FencingError``: see run/_fence.py)."""
    from cgr_exec import ProcessIdentity
    from cgr_store import RunChanged, RunNotFound, RunStatus

    try:
        if lease is not None:
            # First of all: is the run still this host's (FencingError if it was taken over)?
            store.heartbeat(run_id, lease=lease)
        run = store.get_run(run_id)
    except RunNotFound:
        raise RunNotFoundError(run_id, "no such run") from None
    # A fleet host claims the run in the store (claim_next) before starting us: then it is
    # claimed already, for this host (under the lease we carry), and the claim on GitHub is
    # ours to make. Without a lease (one host) a claimed run is another process's.
    claimed_for_us = run.status is RunStatus.CLAIMED and run.host == host and lease is not None
    if run.status != RunStatus.QUEUED and not claimed_for_us:
        raise RunNotFoundError(run_id, f"is {run.status}, not queued")
    me = ProcessIdentity.current()
    try:
        # Still as read (a compare-and-set): a run claimed or ended meanwhile is not ours.
        run = store.update_run(run.id, lease=lease, expect={"status": run.status}, host=host,
                               pid=me.pid, process_start_time=float(me.start_time))  # fmt: skip
    except RunChanged as changed:
        raise RunNotFoundError(run_id, f"is {changed.actual}, not queued") from None
    # The reaper judges silence from here on, not from created_at.
    store.heartbeat(run.id, lease=lease)
    return run


def pick_up_queued(config: Config, run_id: str, *, lease_epoch: int | None = None) -> Run:
    """``pick_up`` in the configured store, opened and closed here; ``lease_epoch``: the
    fleet lease epoch the run was claimed under (``--lease-epoch``)."""
    from cgr_cli.config._store import open_config_store
    from cgr_cli.run._fence import lease_for

    # Without SQLite's whole-file check: it reads every page (~0.3 s at 100,000 runs, at
    # every run), and the scheduler that wrote this row checked the file when it opened it
    # (a daemon at its start, a tick at each tick). Damage in a page this run touches is
    # still reported when it is read.
    store = open_config_store(config, quick_check=False)
    try:
        lease = lease_for(store, config.host_id, lease_epoch)
        return pick_up(store, run_id, config.host_id, lease=lease)
    finally:
        store.close()
