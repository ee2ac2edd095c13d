"""WebSocket frame headers (RFC 6455 §5.2) for complete, lock-guarded sends. Sans-I/O.

simple-websocket's ``send()`` writes with ``sock.send`` (which may write only part of a
big frame) and takes no lock; easyrpc frames its own messages and writes them whole with
``sendall`` under a per-connection lock. Unmasked, uncompressed frames are valid for a
server whatever extensions were negotiated (RSV1 clear means "not compressed").
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")


def frame_header(opcode: int, length: int) -> bytes:
    """Header of one final, unmasked frame carrying *length* payload bytes."""
    b0 = 0x80 | opcode
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return _H16.pack(b0, 126, length)
    return _H64.pack(b0, 127, length)


def close_payload(code: int, reason: str) -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:120]
