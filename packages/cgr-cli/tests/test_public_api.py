from __future__ import annotations

import cgr_cli


def test_all_names_are_exported() -> None:
    exported = {name for name in dir(cgr_cli) if not name.startswith("_")}
    assert set(cgr_cli.__all__) - {"__version__"} == exported - {"annotations"}
    for name in cgr_cli.__all__:
        assert getattr(cgr_cli, name) is not None


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    assert cgr_cli.__version__ == version("cgr-cli")
