"""The GitHub client's ETag cache, kept in the store across processes.

gidgethub keeps, per URL it GETs, ``(etag, last_modified, data, next_page)`` and sends the
ETag back; GitHub answers ``304 Not Modified`` to an unchanged list, and a 304 costs no
rate-limit point. In memory only, every ``cgr tick`` - a fresh process - would start
empty and pay one point per list it polls, every tick. Loaded from the store at the start
of a pass and written back, the idle poll of a fresh process costs nothing.

It is a ``cgr_discovery.PersistentCache``, like discovery's own ``ETagCache``: the client
flushes it (the changed entries, one write) at the end of each discovery poll and when it
closes. That ``ETagCache`` reads entries one URL at a time from a bytes backend; this one
loads the pass's entries from the store in one read and keeps the store's record shape
(``HttpCacheEntry``), and it prunes: entries the pass did not use are deleted when it
saves, since discovery's URLs carry the stream cursor (``since=``) and an entry no poll
asks for again is stale. Entries that did not change are not rewritten (the store
compares), so an idle pass writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cgr_store import HttpCacheEntry, Store


class PersistedCache(MutableMapping[str, Any]):
    """A ``GitHubClient(cache=...)`` whose entries come from, and go back to, ``store``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # Stored entries stay encoded until a request asks for their URL.
        self._data: dict[str, Any] = dict(store.http_cache_get_many())
        self._used: set[str] = set()
        self._changed: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if not isinstance(value, tuple):
            value = self._data[key] = _decode(value)
        self._used.add(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._used.add(key)
        self._changed.add(key)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._changed.discard(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def flush(self) -> int:
        """Write the entries that changed since the last flush, in one write; how many
        (``cgr_discovery.PersistentCache``: the client calls it after each poll)."""
        changed = [_encode(k, self._data[k]) for k in self._changed if k in self._data]
        if changed:
            self._store.http_cache_put_many(changed)
        self._changed.clear()
        return len(changed)

    def save(self) -> None:
        """Write what changed, delete what this pass did not use; start the next pass."""
        self.flush()
        stale = [k for k in self._data if k not in self._used]
        if stale:
            self._store.http_cache_delete(stale)
            for key in stale:
                del self._data[key]
        self._used.clear()


def _encode(key: str, value: tuple[Any, ...]) -> HttpCacheEntry:
    import msgspec

    from cgr_store import HttpCacheEntry

    etag, last_modified, data, more = value
    return HttpCacheEntry(
        key=key,
        etag=etag,
        last_modified=last_modified,
        body=msgspec.json.encode([data, more]),
    )


def _decode(entry: HttpCacheEntry) -> tuple[Any, ...]:
    import msgspec

    data, more = msgspec.json.decode(entry.body)
    return entry.etag, entry.last_modified, data, more
