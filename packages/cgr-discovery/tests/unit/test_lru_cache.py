from __future__ import annotations

import pytest

from cgr_discovery import LRUCache


def test_least_recently_used_entry_is_evicted() -> None:
    cache = LRUCache(maxsize=2)
    cache["a"] = 1
    cache["b"] = 2
    assert cache["a"] == 1  # "a" is now the most recent
    cache["c"] = 3
    assert set(cache) == {"a", "c"}
    assert len(cache) == 2
    del cache["a"]
    assert "a" not in cache


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        LRUCache(maxsize=0)
