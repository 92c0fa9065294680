"""The fleet's hosts for ``cgr status``: each host's lease age, running runs and slots.

Empty on SQLite (one host, no lease rows), so a single-host status looks as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cgr_store import Run, Store


def hosts_data(store: Store, active: list[Run], now: datetime) -> list[dict[str, Any]]:
    """One row per host that ever held a lease; ``running`` counts its active runs in the
    store (the truth), not the figure it last reported."""
    rows = []
    for lease in store.hosts():
        running = sum(1 for r in active if r.host == lease.host_id)
        rows.append(
            {
                "host_id": lease.host_id,
                "epoch": lease.epoch,
                "live": lease.lease_expires_at > now,
                "lease_age_seconds": round((now - lease.heartbeat_at).total_seconds(), 1),
                "expires_in_seconds": round((lease.lease_expires_at - now).total_seconds(), 1),
                "running": running,
                "slots": lease.slots,
            }
        )
    return rows


def render_hosts(hosts: list[dict[str, Any]]) -> list[str]:
    if not hosts:
        return []
    headers = ["HOST", "LEASE", "RENEWED", "RUNNING", "SLOTS"]
    rows = [
        [
            h["host_id"],
            f"live (epoch {h['epoch']})" if h["live"] else f"EXPIRED (epoch {h['epoch']})",
            f"{h['lease_age_seconds']:.0f}s ago",
            str(h["running"]),
            "-" if h["slots"] is None else str(h["slots"]),
        ]
        for h in hosts
    ]
    widths = [max(len(head), *(len(r[i]) for r in rows)) for i, head in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return ["HOSTS", fmt.format(*headers), *(fmt.format(*row) for row in rows), ""]
