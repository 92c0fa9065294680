"""``cgr doctor`` on a PostgreSQL store: the server, the schema, and this host's clock.

Leases are written with each host's own clock and compared on the server (cgr-store's
"Clocks"), so a host whose clock is off by a good part of ``fleet.lease_seconds`` would
see live hosts as lost, or keep a dead one alive: the skew is measured against the
server's ``now()`` (half a round trip is the measurement's own uncertainty).

The verdict (:func:`judge_clock`): a skew beyond a twentieth of the lease (less what the
measurement cannot tell) warns, beyond a quarter of it fails - a quarter of the lease is
where one host's renewal can look late to another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cgr_cli.config._model import Config

# The values of _doctor.CheckStatus (which wraps these findings into its Checks: this
# module does not import _doctor, which imports it).
PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    name: str
    status: str
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def check_postgres(
    config: Config, url: str, *, clock: Callable[[], float] = time.time
) -> list[Finding]:
    """The ``database`` check (reachable, authenticated, schema current) and ``clock``;
    ``clock``: this host's clock (the seconds of ``time.time``), compared with the server's."""
    from cgr_store import (
        SCHEMA_VERSION,
        AuthenticationFailed,
        PostgresStore,
        SchemaTooNew,
        ServerUnreachable,
        StoreError,
        redact_url,
        utcnow,
    )

    where = redact_url(url)
    source = "$CGR_DATABASE_URL" if url != config.paths.database else "paths.database"
    try:
        store = PostgresStore(url, connect_timeout=10.0)
    except ServerUnreachable as exc:
        return [
            Finding(
                name="database",
                status=FAIL,
                detail=str(exc),
                fix=f"start the PostgreSQL server, or correct the host/port in {source}",
            )
        ]
    except AuthenticationFailed as exc:
        fix = f"correct the user and password in {source} (or the server's pg_hba.conf)"
        return [Finding(name="database", status=FAIL, detail=str(exc), fix=fix)]
    except SchemaTooNew as exc:
        return [
            Finding(
                name="database",
                status=FAIL,
                detail=str(exc),
                fix="upgrade cgr on this host: a newer cgr migrated the database",
            )
        ]
    except StoreError as exc:
        fix = f"point {source} at a database cgr may use"
        return [Finding(name="database", status=FAIL, detail=str(exc), fix=fix)]
    with store:
        version = store.schema_version
        live = [h for h in store.hosts() if h.lease_expires_at > utcnow()]
        sent = clock()
        server = store.server_now()
        back = clock()
    checks = [
        Finding(
            name="database",
            status=PASS,
            detail=f"PostgreSQL at {where}, schema version {version} of {SCHEMA_VERSION}, "
            f"{len(live)} live host(s)",
            data={"url": where, "schema_version": version, "live_hosts": len(live)},
        )
    ]
    midpoint = (sent + back) / 2
    checks.append(
        judge_clock(server.timestamp() - midpoint, (back - sent) / 2, config.fleet.lease_seconds)
    )
    return checks


def judge_clock(skew: float, uncertainty: float, lease: float) -> Finding:
    """The ``clock`` finding for a measured ``skew`` (server minus host, seconds) known to
    ±``uncertainty``, with leases of ``lease`` seconds; see the module docstring."""
    direction = "behind" if skew > 0 else "ahead of"
    detail = (
        f"this host's clock is {abs(skew) * 1000:.0f} ms {direction} the server's "
        f"(±{uncertainty * 1000:.0f} ms; leases last {lease:g}s)"
    )
    data = {"skew_seconds": round(skew, 4), "uncertainty_seconds": round(uncertainty, 4)}
    sync = "synchronise the clocks (NTP) of this host and the server"
    if abs(skew) - uncertainty > lease / 4:
        return Finding(name="clock", status=FAIL, detail=detail, fix=sync, data=data)
    if abs(skew) - uncertainty > lease / 20:
        return Finding(name="clock", status=WARN, detail=detail, fix=sync, data=data)
    return Finding(name="clock", status=PASS, detail=detail, data=data)
