"""Independent GitHub writes in flight at once: one round trip of latency instead of many."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio


async def together(*calls: Callable[[], Awaitable[object]]) -> None:
    """Run independent writes concurrently. Each runs to its end even if another fails (no
    write is left half-way by a sibling's cancellation); then the first failure is raised
    as itself, not wrapped in an exception group."""
    errors: list[Exception] = []

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(one, call)
    if errors:
        raise errors[0]
