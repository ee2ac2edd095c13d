"""Handshake tokens: the secret, the client's token and the server's proof. No I/O.

1. The server sends ``hello`` with a fresh random nonce.
2. The client answers ``auth`` with a short-lived HS256 JWT, keyed by a key derived from
   the secret, carrying the server's nonce, its own nonce, its namespace, whether it wants
   encryption and the protocol version.
3. The server verifies it (constant-time signature and nonce checks) and answers
   ``welcome`` with the connection id it assigns, a proof that it knows the secret too
   (a JWT over both nonces) and the function list.

The secret itself never crosses the wire and never appears in a message or log line.
The steps' order and rules are :mod:`easyrpc._core.handshake`'s; nonces and frame
encryption are :mod:`easyrpc._core.cipher`'s (re-exported here). This module stays out
of ``_core`` because importing PyJWT loads socket, ssl and threading.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import jwt

from ._core.cipher import FrameCipher, frame_cipher, new_nonce
from ._protocol import PROTOCOL_VERSION
from .exceptions import AuthenticationError

__all__ = ["Secret", "claimed_id", "new_nonce", "FrameCipher"]

TOKEN_TTL = 30.0
CLOCK_LEEWAY = 5.0
_ALGORITHMS = ["HS256"]


class Secret:
    """A shared secret that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_raw", "_auth_key")

    def __init__(self, secret: str | bytes) -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if not isinstance(secret, bytes) or not secret:
            raise ValueError("server_secret must be a non-empty str or bytes")
        self._raw = secret
        # A derived 32-byte key for tokens: the raw secret is never a JWT key, so short
        # secrets are stretched to a full HMAC key and the token key differs from the
        # encryption keys.
        self._auth_key = hmac.new(secret, b"easyrpc/v1/auth", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    # --- client side ---
    def client_token(self, server_nonce: str, client_nonce: str, namespace: str, encryption: bool,
                     client_id: str | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "v": PROTOCOL_VERSION, "sn": server_nonce, "cn": client_nonce, "ns": namespace,
            "enc": encryption, "iat": now, "exp": now + int(TOKEN_TTL),
        }
        if client_id is not None:  # which secret signs it: the server picks that one to verify
            claims["id"] = client_id
        return jwt.encode(claims, self._auth_key, algorithm="HS256")

    def check_server_proof(self, proof: str, server_nonce: str, client_nonce: str, cid: str) -> None:
        claims = self._decode(proof)
        if not (
            _same(claims.get("sn"), server_nonce)
            and _same(claims.get("cn"), client_nonce)
            and _same(claims.get("cid"), cid)
            and claims.get("role") == "server"
        ):
            raise AuthenticationError("the server could not prove it knows the secret")

    # --- server side ---
    def check_client_token(self, token: str, server_nonce: str) -> dict[str, Any]:
        """Verify a client's token for this connection's nonce; return its claims."""
        claims = self._decode(token)
        if claims.get("role", "client") != "client" or not _same(claims.get("sn"), server_nonce):
            raise AuthenticationError("authentication failed")
        cn, ns, enc = claims.get("cn"), claims.get("ns"), claims.get("enc")
        if not isinstance(cn, str) or not isinstance(ns, str) or not isinstance(enc, bool):
            raise AuthenticationError("authentication failed")
        return claims

    def server_proof(self, server_nonce: str, client_nonce: str, cid: str) -> str:
        now = int(time.time())
        claims = {"role": "server", "sn": server_nonce, "cn": client_nonce, "cid": cid,
                  "iat": now, "exp": now + int(TOKEN_TTL)}
        return jwt.encode(claims, self._auth_key, algorithm="HS256")

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token, self._auth_key, algorithms=_ALGORITHMS, leeway=CLOCK_LEEWAY,
                options={"require": ["exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("authentication failed: token expired") from None
        except jwt.PyJWTError:
            raise AuthenticationError("authentication failed") from None
        if not isinstance(claims, dict) or claims.get("exp", 0) - claims.get("iat", 0) > TOKEN_TTL + 1:
            raise AuthenticationError("authentication failed")
        return claims

    # --- encryption ---
    def frame_cipher(self, server_nonce: str, client_nonce: str, is_server: bool) -> FrameCipher:
        return frame_cipher(self._raw, server_nonce, client_nonce, is_server)


def claimed_id(token: str) -> object:
    """The ``id`` claim of a client token, *not verified* (it says which secret to verify
    the token with); None if the token names none or does not parse."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims.get("id") if isinstance(claims, dict) else None


def _same(a: object, b: str) -> bool:
    return isinstance(a, str) and hmac.compare_digest(a.encode(), b.encode())
