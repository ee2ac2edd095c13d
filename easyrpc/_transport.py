"""The client's WebSocket framing once websocket-client has done the opening handshake.

websocket-client reads each frame with several small ``recv`` calls, validates UTF-8 in
pure Python and masks whole payloads through big temporary integers. After the HTTP
upgrade (and easyrpc's hello/welcome, which it reads exactly frame by frame) this module
takes over its socket:

* :class:`FrameReader` receives in large chunks and parses every complete frame in the
  buffer, so one wake-up of the reader thread can drain many replies; a big payload is
  received straight into one preallocated buffer (no growing copies).
* :func:`write_frame` masks in bounded chunks and writes them with ``sendall``, so a
  100 MB message costs one extra chunk of memory, not several copies of the payload.

The caller serialises writes (the engine's send lock) and keeps one reader thread.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator

from ._frames import OP_BINARY, OP_CLOSE, OP_TEXT, close_payload
from .exceptions import ProtocolError

__all__ = ["FrameReader", "frame_bytes", "write_frame", "write_close", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"]

OP_CONT = 0x0
OP_PING = 0x9
OP_PONG = 0xA

_CHUNK = 1 << 18  # receive size, and the masking chunk
_BIG = 1 << 20  # payloads at least this big are received into their own buffer



def _mask(key: bytes, data: bytes | memoryview) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    # byte-wise XOR through big integers: C speed without numpy
    key_int = int.from_bytes((key * ((n + 3) // 4))[:n], "little")
    return (int.from_bytes(data, "little") ^ key_int).to_bytes(n, "little")


class _MaskKeys:
    """Masking keys from the OS's CSPRNG, fetched 4 KiB at a time.

    A ``getrandom`` call per frame cost as much as the ``sendall`` itself here; RFC 6455
    asks for unpredictable keys, not for one system call each.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        with self._lock:
            if self._pos + 4 > len(self._pool):
                self._pool = os.urandom(4096)
                self._pos = 0
            key = self._pool[self._pos:self._pos + 4]
            self._pos += 4
            return key


_keys = _MaskKeys()


def _header(opcode: int, n: int) -> bytes:
    if n < 126:
        return bytes((0x80 | opcode, 0x80 | n))
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    return struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)


def frame_bytes(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame as bytes (for small payloads, to batch writes)."""
    key = _keys.next()
    return _header(opcode, len(payload)) + key + _mask(key, payload)


def write_frame(sock: socket.socket, opcode: int, payload: bytes) -> None:
    """Write one final, masked client frame carrying *payload*, completely."""
    n = len(payload)
    if n <= _CHUNK:
        sock.sendall(frame_bytes(opcode, payload))
        return
    key = _keys.next()
    header = _header(opcode, n)
    sock.sendall(header + key)
    view = memoryview(payload)
    for start in range(0, n, _CHUNK):  # _CHUNK is a multiple of 4: the key stays aligned
        sock.sendall(_mask(key, view[start:start + _CHUNK]))


def write_close(sock: socket.socket, code: int = 1000, reason: str = "") -> None:
    write_frame(sock, OP_CLOSE, close_payload(code, reason))


class FrameReader:
    """Parses the server's (unmasked) frames from a socket, draining many per ``recv``."""

    def __init__(self, sock: socket.socket, max_message: int | None = None) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._pos = 0
        self._max = max_message
        self._fragments: list[bytes] = []
        self._fragment_op = 0

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(opcode, payload)`` for each complete message, pings and closes included.

        Raises ``ConnectionError`` at EOF, ``OSError`` on socket errors and
        :class:`ProtocolError` on malformed frames.
        """
        while True:
            frame = self._next_frame()
            if frame is None:
                self._fill()
                continue
            fin, opcode, payload = frame
            if opcode >= 0x8:  # control frames may interleave with fragments
                yield opcode, payload
                continue
            if opcode == OP_CONT:
                if not self._fragments:
                    raise ProtocolError("continuation frame without a message")
            elif self._fragments:
                raise ProtocolError("new message inside a fragmented one")
            else:
                self._fragment_op = opcode
            if fin and not self._fragments:
                yield opcode, payload
                continue
            self._fragments.append(payload)
            if fin:
                data = b"".join(self._fragments)
                self._fragments = []
                yield self._fragment_op, data

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        if b1 & 0x80:
            raise ProtocolError("the server sent a masked frame")
        if b0 & 0x70:
            raise ProtocolError("unexpected reserved bits (no extension was negotiated)")
        length = b1 & 0x7F
        head = 2
        if length == 126:
            if avail < 4:
                return None
            length = int.from_bytes(buf[pos + 2:pos + 4], "big")
            head = 4
        elif length == 127:
            if avail < 10:
                return None
            length = int.from_bytes(buf[pos + 2:pos + 10], "big")
            head = 10
        if self._max is not None and length > self._max:
            raise ProtocolError(f"a frame of {length} bytes exceeds the limit of {self._max}")
        if avail - head < length:
            if length >= _BIG:
                return self._read_big(b0, pos + head, length)
            return None
        start = pos + head
        payload = bytes(buf[start:start + length])
        self._pos = start + length
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _read_big(self, b0: int, start: int, length: int) -> tuple[bool, int, bytes]:
        """Receive a big payload straight into one buffer of its final size."""
        payload = bytearray(length)
        view = memoryview(payload)
        have = len(self._buf) - start
        view[:have] = self._buf[start:]
        self._buf = bytearray()
        self._pos = 0
        while have < length:
            got = self._sock.recv_into(view[have:], min(length - have, 1 << 24))
            if got == 0:
                raise ConnectionError("the server closed the connection")
            have += got
        view.release()
        return bool(b0 & 0x80), b0 & 0x0F, bytes(payload) if len(payload) < _BIG else payload  # type: ignore[return-value]

    def _fill(self) -> None:
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        data = self._sock.recv(_CHUNK)
        if not data:
            raise ConnectionError("the server closed the connection")
        self._buf += data
