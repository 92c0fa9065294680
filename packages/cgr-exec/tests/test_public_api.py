from __future__ import annotations

import cgr_exec


def test_all_names_are_exported() -> None:
    exported = {name for name in dir(cgr_exec) if not name.startswith("_")}
    assert set(cgr_exec.__all__) == exported - {"annotations"}
    for name in cgr_exec.__all__:
        assert getattr(cgr_exec, name) is not None
