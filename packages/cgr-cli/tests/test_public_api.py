from __future__ import annotations

import cgr_cli


def test_all_names_are_exported() -> None:
    exported = {name for name in dir(cgr_cli) if not name.startswith("_")}
    assert set(cgr_cli.__all__) - {"__version__"} == exported - {"annotations"}
    for name in cgr_cli.__all__:
        assert getattr(cgr_cli, name) is not None
