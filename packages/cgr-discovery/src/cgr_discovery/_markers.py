"""Hidden HTML-comment markers cgr writes into GitHub text, and the splice around them.

Pure functions. A pull request description is shared: a person or the agent may edit it,
so cgr rewrites only the section between its own markers and leaves every other byte alone.
"""

from __future__ import annotations

import re
from typing import Final

BEGIN: Final = "<!-- cgr:begin -->"
END: Final = "<!-- cgr:end -->"
_RUN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STATUS_MARKER = re.compile(r"<!-- cgr:run=(?P<id>[A-Za-z0-9._:-]{1,128}) -->")
_POST_MARKER = re.compile(r"<!-- cgr:post=(?P<key>[A-Za-z0-9._:-]{1,128}) -->")


def status_marker(run_id: str) -> str:
    """The hidden marker that identifies the one status comment of run ``run_id``."""
    if not _RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id!r} must be 1-128 characters of [A-Za-z0-9._:-]")
    return f"<!-- cgr:run={run_id} -->"


def find_status_run_id(body: str | None) -> str | None:
    """The run id of a status comment body, or ``None`` when it carries no marker."""
    if not body:
        return None
    match = _STATUS_MARKER.search(body)
    return match.group("id") if match else None


def post_marker(key: str) -> str:
    """The hidden marker of a comment cgr posts with idempotency key ``key``.

    A comment whose creation answer was lost is found again by it, so a retry never
    posts it twice.
    """
    if not _RUN_ID.match(key):
        raise ValueError(f"comment key {key!r} must be 1-128 characters of [A-Za-z0-9._:-]")
    return f"<!-- cgr:post={key} -->"


def find_post_key(body: str | None) -> str | None:
    """The idempotency key of a comment body, or ``None`` when it carries no marker."""
    if not body:
        return None
    match = _POST_MARKER.search(body)
    return match.group("key") if match else None


def splice_owned_section(body: str | None, section: str) -> str:
    """``body`` with cgr's marked section replaced by ``section`` (or appended).

    - Markers present (``BEGIN`` then ``END``): only the text between them changes; the
      text before and after, including whitespace, stays byte for byte.
    - No markers, or a ``BEGIN`` whose ``END`` was deleted by a person: the section is
      appended after a blank line, so nothing a person wrote is lost. (Everything after an
      orphan ``BEGIN`` is theirs now.)
    - ``section`` must not contain the markers itself, or the next splice would cut it.
    """
    if BEGIN in section or END in section:
        raise ValueError("the owned section must not contain the cgr markers")
    block = f"{BEGIN}\n{section.strip(chr(10))}\n{END}"
    text = body or ""
    start = text.find(BEGIN)
    if start != -1:
        stop = text.find(END, start + len(BEGIN))
        if stop != -1:
            return text[:start] + block + text[stop + len(END) :]
    if not text.strip():
        return block
    return text.rstrip("\n") + "\n\n" + block
