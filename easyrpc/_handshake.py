"""Handshake tokens and frame encryption. Sans-I/O.

1. The server sends ``hello`` with a fresh random nonce.
2. The client answers ``auth`` with a short-lived HS256 JWT, keyed by a key derived from
   the secret, carrying the server's nonce, its own nonce, its namespace, whether it wants
   encryption and the protocol version.
3. The server verifies it (constant-time signature and nonce checks) and answers
   ``welcome`` with the connection id it assigns, a proof that it knows the secret too
   (a JWT over both nonces) and the function list.

The secret itself never crosses the wire and never appears in a message or log line.
With encryption, each direction gets an AES-256-GCM key from HKDF over the secret and
both nonces; each frame's nonce is a per-direction counter, so a replayed, reordered or
tampered frame fails to open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._protocol import PROTOCOL_VERSION
from .exceptions import AuthenticationError, ProtocolError

__all__ = ["Secret", "new_nonce", "FrameCipher"]

TOKEN_TTL = 30.0
CLOCK_LEEWAY = 5.0
_ALGORITHMS = ["HS256"]


def new_nonce() -> str:
    """32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


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
    def client_token(self, server_nonce: str, client_nonce: str, namespace: str, encryption: bool) -> str:
        now = int(time.time())
        claims = {
            "v": PROTOCOL_VERSION, "sn": server_nonce, "cn": client_nonce, "ns": namespace,
            "enc": encryption, "iat": now, "exp": now + int(TOKEN_TTL),
        }
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
        material = HKDF(
            algorithm=hashes.SHA256(), length=64,
            salt=(server_nonce + "|" + client_nonce).encode("ascii"),
            info=b"easyrpc/v1/frames",
        ).derive(self._raw)
        c2s, s2c = material[:32], material[32:]
        return FrameCipher(send_key=s2c if is_server else c2s, recv_key=c2s if is_server else s2c)


def _same(a: object, b: str) -> bool:
    return isinstance(a, str) and hmac.compare_digest(a.encode(), b.encode())


class FrameCipher:
    """AES-256-GCM per direction; the frame nonce is a counter, so order is enforced.

    ``seal`` must be called in send order (under the connection's send lock) and ``open``
    in receive order (on the one reader thread).
    """

    __slots__ = ("_send", "_recv", "_send_n", "_recv_n")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        self._send = AESGCM(send_key)
        self._recv = AESGCM(recv_key)
        self._send_n = 0
        self._recv_n = 0

    def seal(self, plaintext: bytes) -> bytes:
        nonce = self._send_n.to_bytes(12, "big")
        self._send_n += 1
        return self._send.encrypt(nonce, plaintext, None)

    def open(self, frame: bytes) -> bytes:
        nonce = self._recv_n.to_bytes(12, "big")
        try:
            plaintext = self._recv.decrypt(nonce, frame, None)
        except InvalidTag:
            raise ProtocolError("an encrypted frame failed authentication (tampered, replayed or reordered)") from None
        self._recv_n += 1
        return plaintext
