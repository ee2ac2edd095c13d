"""Nonces and frame sealing, without I/O (``docs/protocol.md`` §4.4, §4.5).

With encryption, each direction gets an AES-256-GCM key from HKDF over the secret and
both nonces; each frame's nonce is a per-direction counter, so a replayed, reordered or
tampered frame fails to open. The tokens that prove the secret (JWT) are
:mod:`easyrpc._handshake`'s: PyJWT loads socket, ssl and threading, so they stay out of
the core.
"""

from __future__ import annotations

import base64
import mmap
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._parts import Packed
from ..exceptions import ProtocolError

_STREAM_SEAL = 1 << 20  # a message with binary parts this big is sealed part by part, never joined

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

    __slots__ = ("_send", "_recv", "_send_n", "_recv_n", "_send_key")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        self._send_key = send_key
        self._send = AESGCM(send_key)
        self._recv = AESGCM(recv_key)
        self._send_n = 0
        self._recv_n = 0

    def seal(self, plaintext: bytes | Packed) -> bytes:
        """The sealed frame of one message (a message with binary parts: of its buffers
        back to back, as if joined)."""
        nonce = self._send_n.to_bytes(12, "big")
        self._send_n += 1
        if isinstance(plaintext, Packed):
            if len(plaintext) >= _STREAM_SEAL:
                return self._seal_parts(nonce, plaintext)
            plaintext = plaintext.join()
        return self._send.encrypt(nonce, plaintext, None)

    def _seal_parts(self, nonce: bytes, message: Packed) -> bytes:
        # the same bytes AESGCM.encrypt gives (ciphertext, then the 16-byte tag), written
        # straight into the frame's buffer, part by part
        encryptor = Cipher(algorithms.AES(self._send_key), modes.GCM(nonce)).encryptor()
        out = bytearray(len(message) + 16)
        pos = 0
        with memoryview(out) as view:
            for buf in message.buffers():
                pos += encryptor.update_into(buf, view[pos:])
            encryptor.finalize()
            view[pos:] = encryptor.tag
        return out  # type: ignore[return-value]  # a bytearray: written as it is

    def open(self, frame: bytes) -> bytes:
        """The plaintext of one received frame. A big frame's own buffer (a ``bytearray``
        or an ``mmap``) is opened in place and returned, shortened by the tag: no second
        copy of a big message."""
        nonce = self._recv_n.to_bytes(12, "big")
        try:
            if len(frame) >= _STREAM_SEAL and isinstance(frame, (bytearray, mmap.mmap)):
                plaintext = _open_in_place(self._recv, nonce, frame)
            else:
                plaintext = self._recv.decrypt(nonce, frame, None)
        except InvalidTag:
            raise ProtocolError("an encrypted frame failed authentication (tampered, replayed or reordered)") from None
        self._recv_n += 1
        return plaintext


def _open_in_place(aead: AESGCM, nonce: bytes, frame: bytearray | mmap.mmap) -> bytes:
    n = len(frame) - 16
    with memoryview(frame) as view, view[:n] as out:
        aead.decrypt_into(nonce, view, None, out)  # GCM decrypts in place (OpenSSL allows it)
    try:
        if isinstance(frame, bytearray):
            del frame[n:]
        else:
            frame.resize(n)
    except (OSError, SystemError, ValueError):  # a mapping that cannot shrink here: copied
        return bytes(frame[:n])
    return frame  # type: ignore[return-value]  # a buffer: read as it is
