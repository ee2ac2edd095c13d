"""Messages with binary parts: one binary WebSocket message, no base64. Sans-I/O.

``bytes``, ``bytearray`` and ``memoryview`` values travel as raw bytes after the JSON
envelope, in the same WebSocket message (so its parts cannot be mixed up with another
message's)::

    0x01 | header length (4 bytes, big-endian) | header: the UTF-8 JSON envelope | part 0 | part 1 | ...

The envelope marks where each part goes with the typed-value marks of
:mod:`easyrpc._values` (``"x": {"bytes": [paths]}``, the value at each path being the
part's index) and lists the parts' lengths (``"b": [n0, n1, ...]``). Every part is
referenced exactly once. A message without binary values is plain JSON, as before.

:class:`Packed` is such a message on the way out: the header and the parts as separate
buffers, never joined, so a 100 MB ``bytes`` is written from the caller's own object.
:func:`unpack` splits one received message into its header and views of its parts.
"""

from __future__ import annotations

import mmap
import struct
from typing import Any

from .exceptions import ProtocolError

__all__ = ["FORMAT", "PARTS", "Packed", "is_packed", "as_part", "split", "take", "MAX_PARTS"]

FORMAT = 0x01  # the first byte of a message with binary parts (JSON never starts with it)
PARTS = "b"  # the envelope key of the parts' lengths
MAX_PARTS = 1 << 20  # parts in one message
_PREFIX = struct.Struct("!BI")
MAX_HEADER = (1 << 32) - 1


def as_part(value: bytes | bytearray | memoryview) -> memoryview:
    """A flat byte view of a binary value (a non-contiguous memoryview is copied)."""
    view = memoryview(value)
    if not view.c_contiguous:
        return memoryview(view.tobytes())
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class Packed:
    """An encoded message with binary parts, as the buffers to write in order:
    :attr:`head` (the format byte, the header's length and the header), then
    :attr:`parts`. ``len()`` is the whole message's size."""

    __slots__ = ("head", "parts", "size")

    def __init__(self, header: bytes, parts: list[memoryview]) -> None:
        if len(header) > MAX_HEADER:
            raise ValueError("a message header over 4 GiB")
        self.head = _PREFIX.pack(FORMAT, len(header)) + header
        self.parts = parts
        self.size = len(self.head) + sum(p.nbytes for p in parts)

    def __len__(self) -> int:
        return self.size

    def buffers(self) -> list[bytes | memoryview]:
        """The buffers to write, in order (none of them a copy of a part)."""
        return [self.head, *self.parts]

    def join(self) -> bytes:
        """The whole message as one ``bytes`` (a copy: for small messages)."""
        return b"".join(self.buffers())


def is_packed(data: Any) -> bool:
    """True if received *data* (bytes-like) is a message with binary parts."""
    return not isinstance(data, str) and len(data) > 0 and data[0] == FORMAT


def split(data: bytes | bytearray | memoryview) -> tuple[bytes, int]:
    """(the header, where the parts start) of a received message with binary parts."""
    with memoryview(data) as view:
        if view.nbytes < _PREFIX.size:
            raise ProtocolError("a binary message shorter than its prefix")
        fmt, length = _PREFIX.unpack_from(view)
        if fmt != FORMAT:
            raise ProtocolError(f"unknown binary message format {fmt:#x}")
        end = _PREFIX.size + length
        if end > view.nbytes:
            raise ProtocolError(f"a binary message's header length ({length}) runs past its end ({view.nbytes} bytes)")
        return view[_PREFIX.size:end].tobytes(), end


def take(data: bytes | bytearray | memoryview, start: int, lengths: Any) -> list[bytes]:
    """The parts of a received message as ``bytes``, given where they start in *data* and
    the envelope's ``b``; a :class:`ProtocolError` unless the lengths are integers that
    add up to the rest of *data*.

    A big frame's buffer (a ``bytearray`` or an anonymous ``mmap``) is consumed: each
    part, the last first, is moved out of its end and the buffer shrunk (the mapping's
    pages given back), so a big part costs its size once, not twice, on the way in.
    """
    total = len(data) - start
    if not isinstance(lengths, list) or not lengths or len(lengths) > MAX_PARTS:
        raise ProtocolError(f"field {PARTS!r} must be a non-empty array of part lengths")
    offsets: list[int] = []
    pos = 0
    for n in lengths:
        if type(n) is not int or n < 0 or pos + n > total:
            raise ProtocolError(f"field {PARTS!r}: the part lengths do not match the message ({total} bytes of parts)")
        offsets.append(start + pos)
        pos += n
    if pos != total:
        raise ProtocolError(f"field {PARTS!r}: the parts take {pos} bytes, the message has {total}")
    if isinstance(data, (bytearray, mmap.mmap)) and _new_bytes is not None:
        try:
            return _move_out(data, offsets)
        except BufferError:  # the buffer is shared (exported): copy instead
            pass
    with memoryview(data) as view:
        return [view[offset:offset + n].tobytes() for offset, n in zip(offsets, lengths, strict=True)]


# An uninitialised bytes object, filled in place before anyone sees it, as the C API allows
# (PyBytes_FromStringAndSize(NULL, n)); pages not yet written cost no memory.
try:
    import ctypes

    _new_bytes: Any = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new_bytes.restype = ctypes.py_object
    _new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _bytes_data: Any = ctypes.pythonapi.PyBytes_AsString
    _bytes_data.restype = ctypes.c_void_p
    _bytes_data.argtypes = (ctypes.py_object,)
    _writable: Any = ctypes.pythonapi.PyMemoryView_FromMemory
    _writable.restype = ctypes.py_object
    _writable.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)
except (ImportError, AttributeError):  # no CPython C API (PyPy): parts are copied
    _new_bytes = None

_PyBUF_WRITE = 0x200
_MOVE = 1 << 20  # a big part moves out of the buffer this much at a time
_SMALL_PART = 1 << 20


def _move_out(buf: bytearray | mmap.mmap, offsets: list[int]) -> list[bytes]:
    out: list[bytes] = [b""] * len(offsets)
    end = len(buf)
    for i in range(len(offsets) - 1, -1, -1):
        start = offsets[i]
        n = end - start
        if n < _SMALL_PART:
            with memoryview(buf) as view:
                out[i] = view[start:end].tobytes()
        else:
            part = _new_bytes(None, n)
            with _writable(_bytes_data(part), n, _PyBUF_WRITE) as target:
                top = n
                while top:
                    step = min(_MOVE, top)
                    with memoryview(buf) as view:
                        target[top - step:top] = view[start + top - step:start + top]
                    _shrink(buf, start + top - step)  # the buffer shrinks as the part fills
                    top -= step
            out[i] = part
        _shrink(buf, start)
        end = start
    return out


def _shrink(buf: bytearray | mmap.mmap, end: int) -> None:
    """Let go of *buf*'s bytes from *end* on."""
    if isinstance(buf, bytearray):
        del buf[end:]
        return
    page = -(-end // mmap.PAGESIZE) * mmap.PAGESIZE
    if page < len(buf):
        buf.madvise(mmap.MADV_DONTNEED, page, len(buf) - page)
