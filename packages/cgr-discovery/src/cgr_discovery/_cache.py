"""ETag caches for gidgethub's ``cache=``: in memory, or kept across processes.

gidgethub stores ``(etag, last_modified, data, next_url)`` per URL and sends the ETag
back, so an unchanged resource answers 304, which costs no rate-limit point on GitHub.
In memory that helps only while one process lives; ``cgr tick`` is a new process each
time, so its first poll would pay a point per list. :class:`ETagCache` keeps the entries
in a backend the caller provides so a fresh process starts warm. Any cache with a
``flush()`` (:class:`PersistentCache`) is written back by the client the same way.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Protocol, runtime_checkable


class LRUCache(MutableMapping[str, Any]):
    """Keeps the ``maxsize`` most recently used URLs.

    Bounded, because a daemon polls for weeks and URLs carrying ``since=`` change over
    time.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        if maxsize < 1:
            raise ValueError("LRUCache maxsize must be at least 1")
        self.maxsize = maxsize
        self._data: OrderedDict[str, Any] = OrderedDict()

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        self._data.move_to_end(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@runtime_checkable
class PersistentCache(Protocol):
    """A ``cache=`` that keeps its entries beyond the process (gidgethub's mapping of URL to
    ``(etag, last_modified, data, next_url)``, plus this method).

    ``flush()`` writes what changed since the last flush, in one write, and returns how
    many entries it wrote. :meth:`GitHubClient.flush_cache` calls it: at the end of each
    :func:`~cgr_discovery.discover` poll and when the client closes. :class:`ETagCache` is
    one, over a :class:`CacheBackend`; a caller with its own storage brings its own.
    """

    def flush(self) -> int: ...


@runtime_checkable
class CacheBackend(Protocol):
    """Where an :class:`ETagCache` keeps its entries between processes.

    Keys are request URLs, values opaque bytes (JSON). ``http_cache_get`` is called at
    most once per URL and process, when the URL is first requested; ``http_cache_put_many``
    once per :meth:`ETagCache.flush` with every entry that changed since the last one
    (write them in one transaction). Both are called from the event loop's thread and
    should be quick (a local database lookup, not a network round trip).
    """

    def http_cache_get(self, key: str) -> bytes | None: ...

    def http_cache_put_many(self, entries: Mapping[str, bytes]) -> None: ...


class ETagCache(MutableMapping[str, Any]):
    """gidgethub's ETag cache, backed by a :class:`CacheBackend` so it survives the process.

    Reads go to memory first (an LRU of ``maxsize`` URLs), then to the backend. Writes go
    to memory and are remembered as dirty until :meth:`flush` hands them to the backend
    in one call; gidgethub writes an entry only when an answer changed (a 200), never on a
    304, so an idle poll writes nothing. :func:`~cgr_discovery.discover` flushes at the
    end of each poll and :meth:`GitHubClient.aclose` flushes too.

    An entry the backend returns that cannot be decoded is ignored (the request is then
    simply unconditional), so a corrupt or old-format row costs one point, not an error.
    """

    def __init__(self, backend: CacheBackend | None = None, *, maxsize: int = 4096) -> None:
        self.backend = backend
        self._memory = LRUCache(maxsize)
        self._dirty: dict[str, Any] = {}
        # URLs the backend was asked for and had nothing: not asked again by this process.
        self._missing: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        try:
            return self._memory[key]
        except KeyError:
            pass
        if self.backend is None or key in self._missing:
            raise KeyError(key)
        raw = self.backend.http_cache_get(key)
        value = _decode(raw) if raw is not None else None
        if value is None:
            self._missing.add(key)
            raise KeyError(key)
        self._memory[key] = value
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._memory[key] = value
        self._dirty[key] = value
        self._missing.discard(key)

    def __delitem__(self, key: str) -> None:
        del self._memory[key]
        self._dirty.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._memory)

    def __len__(self) -> int:
        return len(self._memory)

    @property
    def pending(self) -> int:
        """How many changed entries the next :meth:`flush` writes."""
        return len(self._dirty)

    def flush(self) -> int:
        """Write the changed entries to the backend in one call; returns how many."""
        if self.backend is None or not self._dirty:
            self._dirty.clear()
            return 0
        entries = {key: _encode(value) for key, value in self._dirty.items()}
        self.backend.http_cache_put_many(entries)
        self._dirty.clear()
        return len(entries)


def _encode(value: Any) -> bytes:
    etag, last_modified, data, more = value
    return json.dumps([etag, last_modified, data, more], separators=(",", ":")).encode()


def _decode(raw: bytes) -> tuple[str | None, str | None, Any, str | None] | None:
    try:
        etag, last_modified, data, more = json.loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    if not (etag is None or isinstance(etag, str)) or not (
        last_modified is None or isinstance(last_modified, str)
    ):
        return None
    return etag, last_modified, data, more if isinstance(more, str) else None
