from __future__ import annotations

import inspect

import cgr_discovery


def test_all_names_are_exported() -> None:
    # Subpackages (cgr_discovery.testing) become attributes once some test imports them;
    # they are reached by their own import path, not through __all__.
    exported = {
        name
        for name in dir(cgr_discovery)
        if not name.startswith("_") and not inspect.ismodule(getattr(cgr_discovery, name))
    }
    assert set(cgr_discovery.__all__) == exported - {"annotations"}
    for name in cgr_discovery.__all__:
        assert getattr(cgr_discovery, name) is not None
