from __future__ import annotations

import cgr_discovery


def test_all_names_are_exported() -> None:
    exported = {name for name in dir(cgr_discovery) if not name.startswith("_")}
    assert set(cgr_discovery.__all__) == exported - {"annotations"}
    for name in cgr_discovery.__all__:
        assert getattr(cgr_discovery, name) is not None
