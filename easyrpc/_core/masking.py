"""WebSocket masking (RFC 6455 §5.3), without I/O: the XOR, in pieces, and the keys.

A client masks every frame it sends with a fresh 4-byte key; a server unmasks. The XOR
is websockets' C ``apply_mask`` where that package is installed with its extension, else
it runs through big integers (a third of a byte per nanosecond, ten times slower).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

__all__ = ["MASK_CHUNK", "MaskKeys", "apply_mask", "mask_chunks", "urandom_key"]

MASK_CHUNK = 1 << 18  # the masking piece of a big frame (a multiple of 4: the key stays aligned)


def _load_c_mask() -> Callable[[Any, Any], bytes] | None:
    """websockets' C ``apply_mask(data, mask)``, or None. Its extension is loaded as a lone
    module: importing the websockets package would load socket and threading into the
    sans-I/O core, and the extension itself needs nothing from the package."""
    try:
        spec = importlib.util.find_spec("websockets")  # found, not imported
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(folder, "speedups" + suffix)
                if os.path.isfile(path):
                    loader = importlib.machinery.ExtensionFileLoader("websockets.speedups", path)
                    module_spec = importlib.util.spec_from_loader("websockets.speedups", loader)
                    assert module_spec is not None
                    module = importlib.util.module_from_spec(module_spec)
                    loader.exec_module(module)
                    mask: Callable[[Any, Any], bytes] = module.apply_mask
                    if mask(b"\x00\x01\x02\x03\x04", b"abcd") == b"acage":
                        return mask
    except (ImportError, OSError, AttributeError, TypeError, ValueError):
        pass
    return None


_c_mask = _load_c_mask()


def apply_mask(key: bytes | bytearray, data: bytes | bytearray | memoryview, key_int: int | None = None) -> bytes:
    """XOR *data* with the repeated 4-byte *key*; masking and unmasking are the same.
    *key_int* is the key's integer for this length, if already built (used only without
    the C extension)."""
    if _c_mask is not None:
        return _c_mask(data, key)
    return _mask_with_ints(key, data, key_int)


def _mask_with_ints(key: bytes | bytearray, data: bytes | bytearray | memoryview, key_int: int | None = None) -> bytes:
    """:func:`apply_mask` through big integers (C speed without a C extension)."""
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
