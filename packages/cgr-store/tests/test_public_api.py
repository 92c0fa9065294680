from __future__ import annotations

import cgr_store


def test_all_names_are_exported() -> None:
    exported = {name for name in dir(cgr_store) if not name.startswith("_")}
    # cgr_store.testing is a public submodule (for tests), not a re-exported name.
    assert set(cgr_store.__all__) == exported - {"annotations", "testing"}
    for name in cgr_store.__all__:
        assert getattr(cgr_store, name) is not None
