"""GitHub App authentication against a small loopback server that really verifies the
RS256 JWT with the app's public key and hands out short-lived installation tokens.

(The GitHub simulator mints installation tokens too, see test_sim_webhooks.py; this server
scripts what it does not: short token lifetimes, revocation and counting of mints.)
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cgr_discovery import AppAuth, AuthError, GitHubClient, RetryPolicy

APP_ID = "4242"
INSTALLATION = "77"


@functools.cache
def _key(name: str) -> rsa.RSAPrivateKey:
    # Generating a 2048-bit key takes a while; one per name is enough for the module.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class AppServer:
    def __init__(self) -> None:
        key = _key("app")
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        self.public_key = key.public_key()
        self.token_lifetime = 3600.0
        self.minted: list[str] = []
        self.valid: set[str] = set()
        self.seen_auth: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def reply(self, status: int, data: Any) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                auth = self.headers.get("authorization", "")
                if self.path != f"/app/installations/{INSTALLATION}/access_tokens":
                    self.reply(404, {"message": "Not Found"})
                    return
                try:
                    claims = jwt.decode(
                        auth.removeprefix("bearer "), server.public_key, algorithms=["RS256"]
                    )
                except jwt.PyJWTError:
                    self.reply(401, {"message": "A JSON web token could not be decoded"})
                    return
                if claims["iss"] != APP_ID:
                    self.reply(401, {"message": "Integration not found"})
                    return
                with server.lock:
                    token = f"ghs_minted{len(server.minted)}"
                    server.minted.append(token)
                    server.valid.add(token)
                expires = datetime.fromtimestamp(time.time() + server.token_lifetime, UTC)
                self.reply(
                    201, {"token": token, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
                )

            def do_GET(self) -> None:
                auth = self.headers.get("authorization", "")
                if self.path == "/repos/o/r/installation":
                    try:
                        jwt.decode(
                            auth.removeprefix("bearer "), server.public_key, algorithms=["RS256"]
                        )
                    except jwt.PyJWTError:
                        self.reply(401, {"message": "A JSON web token could not be decoded"})
                        return
                    self.reply(200, {"id": int(INSTALLATION), "app_id": int(APP_ID)})
                    return
                if self.path == "/repos/o/elsewhere/installation":
                    self.reply(404, {"message": "Not Found"})
                    return
                with server.lock:
                    server.seen_auth.append(auth)
                    ok = auth.removeprefix("token ") in server.valid
                if not ok:
                    self.reply(401, {"message": "Bad credentials"})
                    return
                self.reply(200, {"full_name": "o/r", "default_branch": "main"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def app_server() -> Iterator[AppServer]:
    server = AppServer()
    yield server
    server.close()


def client(server: AppServer, auth: AppAuth) -> GitHubClient:
    return GitHubClient(auth=auth, base_url=server.url, retry=RetryPolicy(scale=0.0), timeout=5)


@pytest.mark.anyio
async def test_installation_token_minted_once_and_used(app_server: AppServer) -> None:
    auth = AppAuth(app_id=APP_ID, private_key=app_server.private_pem, installation_id=INSTALLATION)
    async with client(app_server, auth) as gh:
        for _ in range(3):
            assert (await gh.getitem("/repos/o/r"))["default_branch"] == "main"
    assert app_server.minted == ["ghs_minted0"]
    assert app_server.seen_auth == ["token ghs_minted0"] * 3
    assert auth.refreshes == 1
    assert "ghs_minted0" not in repr(auth)
    assert "PRIVATE KEY" not in repr(auth)


@pytest.mark.anyio
async def test_token_refreshed_before_expiry(app_server: AppServer) -> None:
    # expires_at has whole seconds: the token has 3-4 s left when minted.
    app_server.token_lifetime = 4.0
    auth = AppAuth(
        app_id=APP_ID,
        private_key=app_server.private_pem,
        installation_id=INSTALLATION,
        refresh_margin=2.5,
    )
    async with client(app_server, auth) as gh:
        await gh.getitem("/repos/o/r")
        await gh.getitem("/repos/o/r")  # still more than the margin left: same token
        # The margin is at most half the token's life (1.5-2 s here): after 2.6 s the
        # token has 0.4-1.4 s left, within it: refreshed before sending.
        await anyio.sleep(2.6)
        await gh.getitem("/repos/o/r")
    assert app_server.minted == ["ghs_minted0", "ghs_minted1"]
    assert app_server.seen_auth[-1] == "token ghs_minted1"


@pytest.mark.anyio
async def test_revoked_token_is_replaced_once(app_server: AppServer) -> None:
    auth = AppAuth(app_id=APP_ID, private_key=app_server.private_pem, installation_id=INSTALLATION)
    async with client(app_server, auth) as gh:
        await gh.getitem("/repos/o/r")
        app_server.valid.clear()  # GitHub revoked every token
        await gh.getitem("/repos/o/r")
    assert len(app_server.minted) == 2


@pytest.mark.anyio
async def test_wrong_key_is_an_auth_error(app_server: AppServer) -> None:
    other = _key("someone else")
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    auth = AppAuth(app_id=APP_ID, private_key=pem, installation_id=INSTALLATION)
    async with client(app_server, auth) as gh:
        with pytest.raises(AuthError, match=f"GitHub App {APP_ID}") as info:
            await gh.getitem("/repos/o/r")
    assert "PRIVATE KEY" not in str(info.value)
    assert app_server.minted == []


@pytest.mark.anyio
async def test_installation_found_from_repository(app_server: AppServer) -> None:
    auth = AppAuth(app_id=APP_ID, private_key=app_server.private_pem, repository="o/r")
    async with client(app_server, auth) as gh:
        await gh.getitem("/repos/o/r")
    assert auth.installation_id == INSTALLATION
    assert app_server.minted == ["ghs_minted0"]


@pytest.mark.anyio
async def test_app_not_installed_on_repository(app_server: AppServer) -> None:
    auth = AppAuth(app_id=APP_ID, private_key=app_server.private_pem, repository="o/elsewhere")
    async with client(app_server, auth) as gh:
        with pytest.raises(AuthError, match="not installed on o/elsewhere"):
            await gh.getitem("/repos/o/r")


def test_app_auth_needs_installation_or_repository(app_server: AppServer) -> None:
    with pytest.raises(AuthError, match="installation id or a repository"):
        AppAuth(app_id=APP_ID, private_key=app_server.private_pem)


@pytest.mark.anyio
async def test_corrupt_key_is_an_auth_error(app_server: AppServer) -> None:
    bad = (
        "-----BEGIN RSA PRIVATE KEY-----\nnot-base64-key-material\n-----END RSA PRIVATE KEY-----\n"
    )
    auth = AppAuth(app_id=APP_ID, private_key=bad, installation_id=INSTALLATION)
    async with client(app_server, auth) as gh:
        with pytest.raises(AuthError, match="private key is invalid") as info:
            await gh.getitem("/repos/o/r")
    assert "not-base64" not in str(info.value)
    assert info.value.__cause__ is None
