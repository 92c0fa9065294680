"""Agent sessions and checkouts are host-local; a follow-up may land on another host.

Claude Code keeps a conversation under the home directory of the machine that ran it,
keyed by the checkout's path, and the checkout itself lives in that host's workspace. A
fleet on one PostgreSQL store shares the *record* of the session (``AgentSession``) but not
the session. cgr does not route a follow-up to the host holding it (that host may be busy,
or gone for good): whichever host claims the follow-up runs it, and when the session was
made on another host it starts a fresh session in a fresh checkout of the pull request's
branch (the work is all on the branch), with the full prompt, and says so in the status
comment. On one host (SQLite, or the same host id) nothing changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cgr_store import AgentSession, Store


def host_local_session(
    store: Store, session: AgentSession | None, host: str
) -> tuple[AgentSession | None, str | None]:
    """``(session to resume, None)``, or ``(None, other_host)`` when the session was made
    by a run on ``other_host`` (this host cannot resume it)."""
    from cgr_store import RunNotFound

    if session is None:
        return None, None
    if session.run_id is None:
        return session, None  # no record of where: try it (a missing one starts fresh)
    try:
        made_by = store.get_run(session.run_id)
    except RunNotFound:
        return session, None  # no record of where: try it (a missing one starts fresh)
    if made_by.host is None or made_by.host == host:
        return session, None
    return None, made_by.host
