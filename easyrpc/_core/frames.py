"""WebSocket frames (RFC 6455 §5) without I/O: bytes in, messages out; frames out as bytes.

:class:`FrameParser` takes the bytes a peer sent, in pieces of any size, and gives back
whole messages as ``(opcode, payload)``, control frames included; it checks everything
RFC 6455 asks of a frame and raises :class:`FrameError` with the close code the fault
calls for. A big payload (``BIG_FRAME`` bytes or more) is gathered in a buffer of its
own, which a driver may receive into directly (:meth:`FrameParser.big_room`), so no
copy of the whole payload is ever made on the way in.

Building: :func:`frame_header`, :func:`build_frame` (either direction: a client masks, a
server does not), :func:`masked_chunks` (a big client frame as bounded pieces, so masking
100 MB costs one piece of memory, not a copy) and :func:`close_payload`. Masking keys
come from a source passed in; :class:`MaskKeys` draws them from the OS's CSPRNG in
batches.

UTF-8 of text frames is checked where the text is decoded anyway (``_protocol.load``),
not in a second pass here; close frames' bodies are checked here (§5.5.1, §7.4).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Iterator, Sequence

from ..exceptions import ProtocolError
from .close_codes import PROTOCOL_ERROR, TOO_BIG, may_send
from .masking import MASK_CHUNK, MaskKeys, apply_mask, mask_chunks, urandom_key

__all__ = [
    "OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG", "BIG_FRAME", "MASK_CHUNK",
    "FrameError", "FrameParser", "MaskKeys", "apply_mask", "mask_chunks", "check_close", "frame_header",
    "masked_frame_header", "build_frame", "masked_chunks", "masked_parts", "close_payload",
]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

BIG_FRAME = 1 << 20  # payloads at least this big are gathered in a buffer of their own
_PREALLOC = 1 << 24  # a big payload's buffer starts at most this big, then doubles
_ROOM = 1 << 24  # the most room offered for one receive into a big payload

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")


class FrameError(ProtocolError):
    """A malformed or oversized frame from the peer; *code* is the WebSocket close code
    it calls for (:data:`~.close_codes.PROTOCOL_ERROR`, :data:`~.close_codes.TOO_BIG`)."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


# --- building ----------------------------------------------------------------------------
# Three header builders, not one with flags: a header is built for every message sent,
# and the two common kinds stay free of the branches the third needs.
def frame_header(opcode: int, length: int) -> bytes:
    """Header of one final, unmasked frame (a server's) carrying *length* payload bytes."""
    b0 = 0x80 | opcode
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return _H16.pack(b0, 126, length)
    return _H64.pack(b0, 127, length)


def masked_frame_header(opcode: int, length: int) -> bytes:
    """Header of one final, masked frame (a client's), without the key that follows it."""
    b0 = 0x80 | opcode
    if length < 126:
        return bytes((b0, 0x80 | length))
    if length < 65536:
        return _H16.pack(b0, 0xFE, length)
    return _H64.pack(b0, 0xFF, length)


def _any_header(opcode: int, length: int, mask: bool, fin: bool) -> bytes:
    b0 = 0x80 | opcode if fin else opcode
    b1 = 0x80 if mask else 0
    if length < 126:
        return bytes((b0, b1 | length))
    if length < 65536:
        return _H16.pack(b0, b1 | 126, length)
    return _H64.pack(b0, b1 | 127, length)


def build_frame(opcode: int, payload: bytes | bytearray | memoryview, *, mask: bool,
                keys: Callable[[], bytes] | None = None, fin: bool = True) -> bytes:
    """One frame as bytes: masked (a client's) with a key from *keys* (default: a fresh
    ``os.urandom(4)``), or not (a server's). For a big client payload, prefer
    :func:`masked_chunks`, which never holds a masked copy of the whole."""
    header = _any_header(opcode, len(payload), mask, fin)
    if not mask:
        return header + payload
    key = (keys or urandom_key)()
    return header + key + apply_mask(key, payload)


def masked_chunks(opcode: int, payload: bytes | bytearray | memoryview,
                  keys: Callable[[], bytes] | None = None) -> Iterator[bytes]:
    """One final, masked frame as pieces to send in order: the header with its key, then
    the payload masked ``MASK_CHUNK`` bytes at a time."""
    key = (keys or urandom_key)()
    yield masked_frame_header(opcode, len(payload)) + key
    yield from mask_chunks(key, memoryview(payload))


def masked_parts(opcode: int, buffers: Sequence[bytes | bytearray | memoryview],
                 keys: Callable[[], bytes] | None = None) -> Iterator[bytes]:
    """One final, masked frame whose payload is *buffers* back to back, as pieces to
    send in order (the buffers are never joined: a message with binary parts)."""
    key = (keys or urandom_key)()
    yield masked_frame_header(opcode, sum(len(memoryview(b).cast("B")) for b in buffers)) + key
    full: dict[int, int] = {}  # the key's integer for a full piece, per rotation
    offset = 0
    for buf in buffers:
        data = memoryview(buf).cast("B")
        for start in range(0, len(data), MASK_CHUNK):
            piece = data[start:start + MASK_CHUNK]
            shift = offset % 4
            rotated = key[shift:] + key[:shift]
            key_int = None
            if len(piece) == MASK_CHUNK:
                key_int = full.get(shift)
                if key_int is None:
                    key_int = full[shift] = int.from_bytes(rotated * (MASK_CHUNK // 4), "little")
            yield apply_mask(rotated, piece, key_int)
            offset += len(piece)


def close_payload(code: int, reason: str) -> bytes:
    """A close frame's body: *code*, then *reason* in UTF-8 (cut to fit a control frame)."""
    return struct.pack("!H", code) + reason.encode("utf-8")[:120]


def check_close(payload: bytes | bytearray) -> None:
    """Raise :class:`FrameError` (protocol error) for a close frame's body a peer may not send."""
    if not payload:
        return  # no status: allowed
    if len(payload) == 1:
        raise FrameError("a close frame with a 1-byte body")
    code = int.from_bytes(payload[:2], "big")
    if not may_send(code):
        raise FrameError(f"close code {code} may not be sent by a peer")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("a close reason that is not UTF-8") from None


# --- parsing -----------------------------------------------------------------------------
class _BigFrame:
    """A big frame's payload, being gathered in its own buffer."""

    __slots__ = ("b0", "length", "key", "payload", "have")

    def __init__(self, b0: int, length: int, key: bytes, first: bytes | bytearray) -> None:
        self.b0 = b0
        self.length = length
        self.key = key
        # An anonymous mapping of the whole length: its pages cost memory only once
        # written, so a frame that only claims to be huge costs only what is sent, and a
        # real one is never copied as it grows. Where the system refuses the mapping, a
        # bytearray grown as data arrives.
        self.payload: bytearray | mmap.mmap
        try:
            self.payload = mmap.mmap(-1, length)
        except (OSError, OverflowError, ValueError):
            self.payload = bytearray(min(length, max(_PREALLOC, len(first))))
        self.payload[:len(first)] = first
        self.have = len(first)

    def room(self) -> memoryview:
        """Where the next bytes go (the buffer doubles, up to the length, when full)."""
        if self.have == len(self.payload):
            assert isinstance(self.payload, bytearray)
            self.payload.extend(bytes(min(len(self.payload), self.length - self.have)))
        return memoryview(self.payload)[self.have:self.have + min(len(self.payload) - self.have, _ROOM)]

    def add(self, data: bytes | bytearray | memoryview) -> None:
        while data:
            with self.room() as view:
                n = min(len(view), len(data))
                view[:n] = data[:n]
            self.have += n
            data = data[n:]


class FrameParser:
    """Bytes from a peer in, whole WebSocket messages out.

    A client parses the server's unmasked frames; a server (*masked*) parses the
    client's masked ones and unmasks them. *max_message* limits a message (and each of
    its frames), or None; it may be changed between messages.

    :meth:`feed` adds received bytes; :meth:`next_message` returns the next complete
    message, or None until more bytes are needed. While a big frame is incomplete
    (:attr:`big_missing`), a driver may receive straight into its buffer:
    ``with parser.big_room() as room: n = sock.recv_into(room)``, then
    ``parser.big_received(n)``; the view must be released before the next call.
    """

    __slots__ = ("max_message", "masked", "_buf", "_pos", "_fragments", "_fragment_size", "_fragment_op", "_big")

    def __init__(self, max_message: int | None = None, *, masked: bool) -> None:
        self.max_message = max_message
        self.masked = masked
        self._buf = bytearray()
        self._pos = 0
        self._fragments: list[bytes] = []
        self._fragment_size = 0
        self._fragment_op = 0
        self._big: _BigFrame | None = None  # a big frame received in part

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer (any amount: part of a frame, or many)."""
        big = self._big
        if big is not None and big.have < big.length:  # the big frame's bytes come first
            need = big.length - big.have
            if len(data) <= need:
                big.add(data)
                return
            big.add(memoryview(data)[:need])
            data = memoryview(data)[need:]
        if self._pos:
            # one assignment, and a buffer read to its end is replaced (a big message's
            # capacity is let go)
            self._buf, self._pos = (bytearray() if self._pos == len(self._buf) else self._buf[self._pos:]), 0
        self._buf += data

    @property
    def big_missing(self) -> int:
        """How many bytes the big frame being gathered still lacks (0: none is)."""
        big = self._big
        return 0 if big is None else big.length - big.have

    def big_room(self) -> memoryview | None:
        """Where to receive the big frame's next bytes directly (at most what it lacks),
        or None if no big frame lacks any. Release the view before the next call."""
        big = self._big
        if big is None or big.have == big.length:
            return None
        return big.room()

    def big_received(self, n: int) -> None:
        """*n* bytes were written into the view :meth:`big_room` gave."""
        big = self._big
        if big is None or not 0 <= n <= big.length - big.have:
            raise ValueError(f"{n} bytes cannot have been received into the big frame's room")
        big.have += n

    def drained(self) -> bool:
        """True if every byte fed so far has been returned by :meth:`next_message`."""
        return self._pos == len(self._buf) and self._big is None

    def next_message(self) -> tuple[int, bytes] | None:
        """The next complete message as ``(opcode, payload)``, or None until more bytes
        come. Pings, pongs and closes are returned too (between a fragmented message's
        frames if they came there). Raises :class:`FrameError` on a frame the peer may
        not send; the parser is then unusable (the connection must close)."""
        while True:
            big = self._big
            if big is not None:
                if big.have < big.length:
                    return None
                self._big = None
                b0 = big.b0
                payload: bytes = big.payload  # type: ignore[assignment]  # a bytearray: not copied
                if big.key:
                    pos = 0
                    for piece in mask_chunks(big.key, memoryview(payload)):
                        payload[pos:pos + len(piece)] = piece  # type: ignore[index]  # same length: stays put
                        pos += len(piece)
            else:
                # one frame from the buffer, inline: this is every small message's path
                buf, pos = self._buf, self._pos
                avail = len(buf) - pos
                if avail < 2:
                    return None
                b0, b1 = buf[pos], buf[pos + 1]
                if bool(b1 & 0x80) != self.masked:
                    raise FrameError("a client frame must be masked" if self.masked else "the server sent a masked frame")
                if b0 & 0x70:
                    raise FrameError("unexpected reserved bits (no extension is in use)")
                length = b1 & 0x7F
                head = 2
                if b0 & 0x08:  # a control frame: checked before any of its payload is read
                    if b0 & 0x0F not in (OP_CLOSE, OP_PING, OP_PONG):
                        raise FrameError(f"unknown control opcode {b0 & 0x0F:#x}")
                    if not b0 & 0x80 or length > 125:
                        raise FrameError("malformed control frame")
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
                    if length >> 63:
                        raise FrameError("a 64-bit payload length with its most significant bit set")
                if self.max_message is not None and length > self.max_message:
                    raise FrameError(f"a frame of {length} bytes exceeds the limit of {self.max_message}", TOO_BIG)
                if self.masked:
                    if avail < head + 4:
                        return None
                    start = pos + head + 4
                    if avail - head - 4 < length:
                        if length >= BIG_FRAME:  # gathered in its own buffer
                            self._big = _BigFrame(b0, length, bytes(buf[start - 4:start]), buf[start:])
                            self._buf = bytearray()
                            self._pos = 0
                        return None
                    with memoryview(buf) as view:  # unmasked straight from the buffer: one copy
                        payload = apply_mask(buf[start - 4:start], view[start:start + length])
                else:
                    start = pos + head
                    if avail - head < length:
                        if length >= BIG_FRAME:
                            self._big = _BigFrame(b0, length, b"", buf[start:])
                            self._buf = bytearray()
                            self._pos = 0
                        return None
                    with memoryview(buf) as view:
                        payload = bytes(view[start:start + length])  # one copy
                self._pos = start + length

            opcode = b0 & 0x0F
            if opcode >= 0x8:  # control frames may interleave with fragments
                if opcode == OP_CLOSE:
                    check_close(payload)
                return opcode, payload
            if b0 & 0x80 and not self._fragments:
                if opcode == OP_CONT:
                    raise FrameError("continuation frame without a message")
                if opcode not in (OP_TEXT, OP_BINARY):
                    raise FrameError(f"unknown opcode {opcode:#x}")
                return opcode, payload
            self._fragment(b0, opcode, payload)
            if b0 & 0x80:
                data = b"".join(self._fragments)
                self._fragments = []
                self._fragment_size = 0
                return self._fragment_op, data

    def _fragment(self, b0: int, opcode: int, payload: bytes) -> None:
        """Keep one frame of a fragmented message (its first, a middle or its last)."""
        if opcode == OP_CONT:
            if not self._fragments:
                raise FrameError("continuation frame without a message")
        elif opcode not in (OP_TEXT, OP_BINARY):
            raise FrameError(f"unknown opcode {opcode:#x}")
        elif self._fragments:
            raise FrameError("new message inside a fragmented one")
        else:
            self._fragment_op = opcode
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if self.max_message is not None and self._fragment_size > self.max_message:
            raise FrameError(f"a message of over {self.max_message} bytes exceeds the limit", TOO_BIG)
