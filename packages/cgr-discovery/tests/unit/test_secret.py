from __future__ import annotations

import logging
import pickle

import pytest

from cgr_discovery import AppAuth, AuthError, Secret, TokenAuth

TOKEN = "ghp_supersecretvalue123"


def test_secret_is_redacted_everywhere() -> None:
    secret = Secret(TOKEN)
    assert secret.reveal() == TOKEN
    for text in (
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>40}",
        repr([secret]),
        repr({"token": secret}),
    ):
        assert TOKEN not in text
        assert "**" in text


def test_secret_in_exception_and_log(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(TOKEN)
    err = ValueError(f"failed with {secret}")
    assert TOKEN not in str(err)
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("token is %s / %r", secret, secret)
    assert TOKEN not in caplog.text


def test_secret_equality_and_pickling() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert not Secret("")
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(Secret(TOKEN))
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


def test_secret_survives_copies() -> None:
    import copy

    secret = Secret(TOKEN)
    assert copy.copy(secret) is secret
    assert copy.deepcopy({"token": secret})["token"].reveal() == TOKEN


def test_auth_reprs_hide_credentials() -> None:
    auth = TokenAuth(TOKEN, source="GH_TOKEN")
    assert TOKEN not in repr(auth)
    assert "GH_TOKEN" in repr(auth)
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEsecretkeymaterial\n-----END RSA PRIVATE KEY-----\n"
    app = AppAuth(app_id=1, private_key=key, installation_id=2)
    assert "MIIEsecret" not in repr(app)


def test_empty_token_and_bad_key_are_auth_errors() -> None:
    with pytest.raises(AuthError, match="empty"):
        TokenAuth("   ", source="GH_TOKEN")
    with pytest.raises(AuthError, match="PEM"):
        AppAuth(app_id=1, private_key="not a key", installation_id=2)
