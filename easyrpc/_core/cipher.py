"""Nonces and frame sealing, without I/O (``docs/protocol.md`` §4.4, §4.5).

With encryption, each direction gets an AES-256-GCM key from HKDF over the secret and
both nonces; each frame's nonce is a per-direction counter, so a replayed, reordered or
tampered frame fails to open. The tokens that prove the secret (JWT) are
:mod:`easyrpc._handshake`'s: PyJWT loads socket, ssl and threading, so they stay out of
the core.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..exceptions import ProtocolError

__all__ = ["FrameCipher", "frame_cipher", "new_nonce"]


def new_nonce() -> str:
    """32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def frame_cipher(secret: bytes, server_nonce: str, client_nonce: str, is_server: bool) -> FrameCipher:
    """One end's cipher for a connection: keys from HKDF over the raw *secret* (not the
    token key) and both nonces as sent."""
    material = HKDF(
        algorithm=hashes.SHA256(), length=64,
        salt=(server_nonce + "|" + client_nonce).encode("ascii"),
        info=b"easyrpc/v1/frames",
    ).derive(secret)
    c2s, s2c = material[:32], material[32:]
    return FrameCipher(send_key=s2c if is_server else c2s, recv_key=c2s if is_server else s2c)


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
