from __future__ import annotations

import inspect

import httpx
import pytest

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


def test_version_is_the_installed_distributions() -> None:
    # The literal in _version.py is what hatch puts in the wheel; a copy elsewhere would drift.
    from importlib.metadata import version

    assert cgr_discovery.__version__ == version("cgr-discovery")


def test_clients_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading the CA bundle costs ~60 ms; a client of 8 pools used to do it 8 times, and
    # every `cgr run` builds a client. It is made once per process now.
    from cgr_discovery import _client

    made: list[object] = []
    real = httpx.create_ssl_context

    def counting(*args: object, **kwargs: object) -> object:
        made.append(1)
        return real()

    _client._tls_context.cache_clear()
    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    try:
        clients = [cgr_discovery.GitHubClient(max_connections=64) for _ in range(3)]
        assert len(made) == 1
        assert all(len(c._pools) == 8 for c in clients)
    finally:
        _client._tls_context.cache_clear()
