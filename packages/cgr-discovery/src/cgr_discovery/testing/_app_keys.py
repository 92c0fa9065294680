"""A GitHub App's key pair for tests: what ``GitHubSimulator.register_app`` takes (the
public half) and what an App's JWT is signed with (the private half)."""

from __future__ import annotations

import functools

__all__ = ["app_key_pems"]


@functools.cache
def app_key_pems(name: str = "app") -> tuple[str, str]:
    """An RSA key pair as PEM text (private, public), one per ``name`` for the whole
    process: generating a 2048-bit key takes a while. (``cryptography`` comes with
    cgr-discovery's PyJWT[crypto]; it is imported here, on first use only.)"""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public
