"""WebSocket masking (RFC 6455 §5.3), without I/O: the XOR, in pieces, and the keys.

A client masks every frame it sends with a fresh 4-byte key; a server unmasks. The XOR
runs through big integers (C speed without numpy).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext

__all__ = ["MASK_CHUNK", "MaskKeys", "apply_mask", "mask_chunks", "urandom_key"]

MASK_CHUNK = 1 << 18  # the masking piece of a big frame (a multiple of 4: the key stays aligned)


def apply_mask(key: bytes | bytearray, data: bytes | bytearray | memoryview, key_int: int | None = None) -> bytes:
    """XOR *data* with the repeated 4-byte *key* (through big integers: C speed without
    numpy); masking and unmasking are the same. *key_int* is the key's integer for this
    length, if already built."""
    n = len(data)
    if n == 0:
        return b""
    if key_int is None:
        key_int = int.from_bytes((key * ((n + 3) // 4))[:n], "little")
    return (int.from_bytes(data, "little") ^ key_int).to_bytes(n, "little")


def mask_chunks(key: bytes | bytearray, data: memoryview) -> Iterator[bytes]:
    """*data* masked, in ``MASK_CHUNK`` pieces; the key's integer is built once for all
    the full pieces."""
    full = int.from_bytes(key * (MASK_CHUNK // 4), "little")
    for start in range(0, len(data), MASK_CHUNK):
        piece = data[start:start + MASK_CHUNK]
        yield apply_mask(key, piece, full if len(piece) == MASK_CHUNK else None)


class MaskKeys:
    """Masking keys from the OS's CSPRNG, fetched 4 KiB at a time.

    A ``getrandom`` call per frame cost as much as sending the frame; RFC 6455 asks for
    unpredictable keys, not for one system call each. A driver that frames on several
    threads passes a *lock* (``threading.Lock()``: the core creates none), held while a
    key is drawn.
    """

    def __init__(self, lock: AbstractContextManager[object] | None = None) -> None:
        self._lock: AbstractContextManager[object] = lock if lock is not None else nullcontext()
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        """The next 4-byte key."""
        with self._lock:
            if self._pos + 4 > len(self._pool):
                self._pool = os.urandom(4096)
                self._pos = 0
            key = self._pool[self._pos:self._pos + 4]
            self._pos += 4
            return key


def urandom_key() -> bytes:
    return os.urandom(4)
