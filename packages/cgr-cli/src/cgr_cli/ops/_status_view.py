"""What ``cgr status`` and ``cgr logs`` show: read-only views of the store and workspaces."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgr_cli.config._model import Config
from cgr_cli.config._store import database_location
from cgr_cli.ops._fleet_view import hosts_data, render_hosts
from cgr_cli.schedule._locks import daemon_owner
from cgr_cli.schedule._runs import process_alive

if TYPE_CHECKING:
    from cgr_store import Run, Store


def run_files(config: Config, run_id: str) -> dict[str, Path]:
    base = config.workspace_root / run_id
    return {
        "run": base / "logs" / "run.log",
        "process": base / "logs" / "process.log",
        "agent": base / "logs" / "agent.jsonl",
        "stderr": base / "logs" / "agent.stderr",
        "prompt": base / "prompt.md",
        "summary": base / "artifacts" / "summary.json",
    }


def cost_so_far(config: Config, run: Run) -> float | None:
    """The final cost once known, else an estimate from the agent's stream so far."""
    if run.cost_usd is not None:
        return run.cost_usd
    path = run_files(config, run.id)["agent"]
    if not path.exists():
        return None
    from cgr_cli.run._agent import StreamState

    state = StreamState(
        input_usd_per_mtok=config.agent.input_usd_per_mtok,
        output_usd_per_mtok=config.agent.output_usd_per_mtok,
    )
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            state.feed(line)
    return round(state.estimated_cost_usd, 4)


def phase(config: Config, run: Run) -> str:
    """A word for where an active run is: the store's status refined by its files."""
    files = run_files(config, run.id)
    if run.status.value != "running":
        return run.status.value
    if files["agent"].exists():
        return "agent"
    return "preparing"


def status_data(config: Config, config_path: Path | None, store: Store) -> dict[str, Any]:
    from cgr_store import RunStatus, utcnow

    now = utcnow()
    host = config.host_id
    daemon = daemon_owner(config)
    active = store.active_runs()
    mine = [r for r in active if r.host == host and process_alive(r)]
    recent = [r for r in store.recent_runs(limit=50) if r.status.is_terminal][:10]
    return {
        "config": {
            "file": str(config_path) if config_path else None,
            "repositories": list(config.repositories),
            "database": database_location(config),
            "workspace_root": str(config.workspace_root),
            "max_concurrency": config.polling.max_concurrency,
            "run_slots": config.polling.run_slots,
            "interval_seconds": config.polling.interval_seconds,
        },
        "daemon": None
        if daemon is None
        else {
            "pid": daemon.pid,
            "up_seconds": round(time.time() - daemon.started_at, 1),
            "heartbeat_age_seconds": round(time.time() - daemon.heartbeat_at, 1),
            "webhooks": _webhook_state(config),
        },
        "slots": {
            "limit": config.polling.run_slots,
            "used": len(mine),
            "free": max(0, config.polling.run_slots - len(mine)),
            "agents": config.polling.max_concurrency,
            # A run is `running` from the moment it has its agent slot (`claimed` while it
            # waits for one): the store says how many agents are at work, whoever looks.
            "agents_at_work": sum(1 for r in mine if r.status is RunStatus.RUNNING),
        },
        "active": [
            {
                "id": r.id,
                "target": f"{r.repo}#{r.target}",
                "status": r.status.value,
                "phase": phase(config, r),
                "age_seconds": round((now - r.created_at).total_seconds(), 1),
                "host": r.host,
                "pid": r.pid,
                "alive": process_alive(r),
                "attempt": r.attempt,
                "cost_usd": cost_so_far(config, r),
            }
            for r in active
        ],
        "recent": [
            {
                "id": r.id,
                "target": f"{r.repo}#{r.target}",
                "status": r.status.value,
                "outcome": r.outcome,
                "ended_at": r.ended_at.isoformat() if r.ended_at else None,
                "pr_url": r.pr_url,
                "cost_usd": r.cost_usd,
                "error": r.error,
            }
            for r in recent
        ],
        "counts": {status.value: n for status, n in store.counts().items() if n},
        "undelivered": undelivered(store),
        "hosts": hosts_data(store, active, now),
    }


def undelivered(store: Store, limit: int = 1000) -> dict[str, Any]:
    """Reports (labels, final comments) recorded but not yet accepted by GitHub; the next
    reap pass (tick, daemon, ``cgr reap``) sends them."""
    pending = store.pending_outbox(limit)
    runs: dict[str, dict[str, Any]] = {}
    for item in pending:
        entry = runs.setdefault(item.run_id, {"id": item.run_id, "items": 0, "attempts": 0,
                                              "last_error": None})  # fmt: skip
        entry["items"] += 1
        entry["attempts"] += item.attempts
        entry["last_error"] = item.last_error or entry["last_error"]
    return {"count": len(pending), "runs": list(runs.values())}


def _webhook_state(config: Config) -> dict[str, Any] | None:
    """What a daemon receiving webhooks last wrote (schedule/_webhooks), ages made current."""
    from cgr_cli.schedule._webhooks import read_state

    if config.webhook.listen is None:
        return None
    state = read_state(config)
    if state is None:
        return None
    now = time.time()
    last = state.get("last_delivery")
    if isinstance(last, dict) and isinstance(last.get("at"), int | float):
        last["age_seconds"] = round(now - last["at"], 1)
    at = state.get("last_reconcile_at")
    state["reconcile_lag_seconds"] = round(now - at, 1) if isinstance(at, int | float) else None
    return state


def _webhook_line(hooks: dict[str, Any]) -> str:
    last = hooks.get("last_delivery")
    seen = (
        f"last delivery {_age(last['age_seconds'])} ago ({last['event']}, {last['outcome']})"
        if last
        else "no delivery yet"
    )
    lag = hooks.get("reconcile_lag_seconds")
    reconciled = f"reconciled {_age(lag)} ago" if lag is not None else "not reconciled yet"
    health = "healthy" if hooks.get("healthy") else f"{hooks.get('missed_total', 0)} missed"
    return (
        f"webhooks    {hooks.get('listen')}: {seen}; {reconciled}, every "
        f"{hooks.get('reconcile_interval_seconds', 0):g}s ({health})"
    )


def _age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _table(headers: list[str], rows: list[list[str]], width: int | None = None) -> list[str]:
    """Aligned columns, no trailing spaces. With ``width``, the last column wraps at word
    boundaries under itself so no line passes the terminal's edge (a word longer than the
    room left, such as a URL, stays whole rather than being cut)."""
    import textwrap

    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1])
    indent = sum(widths[:-1]) + 2 * (len(widths) - 1)
    room = width - indent if width else None
    if width and room is not None and room < 24:
        # Too narrow to wrap beside the row: the last column goes under it, indented.
        return _table_below(headers, rows, widths, width)
    out = [(fmt.format(*headers[:-1]) + "  " + headers[-1]).rstrip()]
    for row in rows:
        last = row[-1]
        pieces = (
            textwrap.wrap(last, room, break_long_words=False, break_on_hyphens=False) or [""]
            if room
            else [last]
        )
        out.append((fmt.format(*row[:-1]) + "  " + pieces[0]).rstrip())
        out += [(" " * indent + piece).rstrip() for piece in pieces[1:]]
    return out


def _table_below(
    headers: list[str], rows: list[list[str]], widths: list[int], width: int
) -> list[str]:
    import textwrap

    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1])
    out = [fmt.format(*headers[:-1]).rstrip(), f"    {headers[-1]}"]
    for row in rows:
        out.append(fmt.format(*row[:-1]).rstrip())
        wrapped = textwrap.wrap(row[-1], max(20, width - 4), break_long_words=False,
                                break_on_hyphens=False)  # fmt: skip
        out += [f"    {piece}" for piece in wrapped]
    return out


def render_status(data: dict[str, Any], width: int | None = None) -> str:
    """The status for a terminal ``width`` columns wide (None: no limit, for pipes)."""
    cfg, slots = data["config"], data["slots"]
    lines = [
        f"config      {cfg['file'] or 'built-in defaults'}",
        f"repos       {', '.join(cfg['repositories']) or '(none)'}",
        f"database    {cfg['database']}",
        f"workspaces  {cfg['workspace_root']}",
    ]
    daemon = data["daemon"]
    lines.append(
        "scheduler   "
        + (
            f"daemon pid {daemon['pid']}, up {_age(daemon['up_seconds'])}, "
            f"last heartbeat {daemon['heartbeat_age_seconds']:.0f}s ago"
            if daemon
            else "no daemon (cgr tick by timer, or idle)"
        )
    )
    if daemon and daemon.get("webhooks"):
        lines.append(_webhook_line(daemon["webhooks"]))
    at_work = slots.get("agents_at_work")
    agents = (
        f"{at_work}/{slots['agents']} agents at work"
        if at_work is not None
        else (f"at most {slots['agents']} agents at once")
    )
    lines.append(
        f"slots       {slots['used']}/{slots['limit']} runs, {slots['free']} free; {agents}"
    )
    waiting = data.get("undelivered") or {"count": 0, "runs": []}
    if waiting["count"]:
        ids = ", ".join(r["id"] for r in waiting["runs"][:10])
        more = f" and {len(waiting['runs']) - 10} more" if len(waiting["runs"]) > 10 else ""
        lines.append(
            f"undelivered {waiting['count']} report(s) of {len(waiting['runs'])} run(s) "
            f"waiting for GitHub: {ids}{more}"
        )
    else:
        lines.append("undelivered none")
    lines.append("")
    lines += render_hosts(data.get("hosts", []))
    if data["active"]:
        lines.append("ACTIVE")
        rows = [
            [
                a["id"],
                a["target"],
                a["phase"],
                _age(a["age_seconds"]),
                f"${a['cost_usd']:.4f}" if a["cost_usd"] is not None else "-",
                f"{a['pid']}{'' if a['alive'] else ' (gone)'}" if a["pid"] else "-",
            ]
            for a in data["active"]
        ]
        lines += _table(["RUN", "TARGET", "PHASE", "AGE", "COST", "PID"], rows, width)
    else:
        lines.append("ACTIVE      none")
    lines.append("")
    if data["recent"]:
        lines.append("RECENT")
        rows = [
            [
                r["id"],
                r["target"],
                r["status"],
                r["outcome"] or "-",
                r["pr_url"] or " ".join((r["error"] or "").split()),
            ]
            for r in data["recent"]
        ]
        lines += _table(["RUN", "TARGET", "STATUS", "OUTCOME", "PR / ERROR"], rows, width)
    else:
        lines.append("RECENT      none")
    return "\n".join(line.rstrip() for line in lines) + "\n"
