"""Database URLs: telling a PostgreSQL URI from a path, and printing one without its password.

A module of its own (not in _open.py) so that _postgres.py can use it without an import
cycle: _open.py imports the backends.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

__all__ = ["is_postgres_url", "redact_url"]

_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(database: str | os.PathLike[str]) -> bool:
    """True for a libpq URI (``postgresql://`` or ``postgres://``), False for a path."""
    return isinstance(database, str) and database.lower().startswith(_SCHEMES)


def redact_url(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` parameter), for
    messages and logs. Anything that is not a URI is returned with ``password=...`` masked."""
    if not is_postgres_url(url):
        return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", url, flags=re.IGNORECASE)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if password else f"{userinfo}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            masked = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
            query = urlencode(masked, safe="/*", quote_via=quote)
    # Put together by hand: urlunsplit drops the "//" of an empty host (the unix-socket
    # form postgresql:///db?host=/dir), which would change the URL's meaning.
    text = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        text += f"?{query}"
    if parts.fragment:
        text += f"#{parts.fragment}"
    return text
