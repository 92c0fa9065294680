"""A small least-recently-used mapping for gidgethub's ``cache=`` (ETag requests)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any


class LRUCache(MutableMapping[str, Any]):
    """Keeps the ``maxsize`` most recently used URLs.

    gidgethub stores ``(etag, last_modified, data, next_url)`` per URL and sends the ETag
    back, so an unchanged resource answers 304 and costs no rate-limit point. Bounded,
    because a daemon polls for weeks and URLs carrying ``since=`` change over time.
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
