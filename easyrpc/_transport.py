"""WebSocket framing once the opening handshake is done, for both ends.

websocket-client reads each frame with several small ``recv`` calls, validates UTF-8 in
pure Python and masks whole payloads through big temporary integers; simple-websocket
runs every byte through wsproto's event machinery on a thread of its own. After the
HTTP upgrade (and, on the client, easyrpc's hello/welcome, which websocket-client reads
exactly frame by frame) easyrpc reads and writes the socket itself with this module:

* :class:`FrameReader` receives in large chunks and parses every complete frame in the
  buffer, so one wake-up can drain many messages; a big payload is received straight
  into one buffer (no growing copies of the whole), and a reader with a deadline can
  leave it half-received and go on with it later. The server's reader unmasks. It
  notes when bytes last arrived (:attr:`FrameReader.last_recv`): keepalive counts any
  byte, not only whole messages, so a big message arriving slowly is a sign of life.
* :func:`write_frame` masks in bounded chunks and writes them with ``sendall``, so a
  100 MB message costs one extra chunk of memory, not several copies of the payload.
  (The server's frames are unmasked: ``_frames.frame_header``.)

The caller serialises writes (a send lock) and lets one thread read at a time. UTF-8 of
text frames is checked where the text is decoded anyway (``_protocol.load`` raises
``InvalidText``: the server closes with 1007, the client drops the connection), not in a
second pass here. Close frames' bodies and the 64-bit length are checked here (RFC 6455
§5.2, §5.5.1, §7.4): a :class:`FrameError` with code 1002.
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator

from ._frames import OP_BINARY, OP_CLOSE, OP_TEXT, close_payload
from ._spin import BusyPoll
from .exceptions import ProtocolError

__all__ = ["FrameReader", "FrameError", "Writable", "frame_bytes", "write_frame", "write_items", "write_close",
           "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"]

OP_CONT = 0x0
OP_PING = 0x9
OP_PONG = 0xA

_CHUNK = 1 << 18  # the masking chunk
# One recv's size. Python allocates the whole size for every recv and then shrinks the
# result; at 256 KiB that allocation went through mmap/mremap/munmap (three system calls
# per message); 64 KiB stays on the heap. A big frame is received straight into its own
# buffer (FrameReader._read_big), so this size does not limit big messages.
_RECV = 1 << 16
_BIG = 1 << 20  # payloads at least this big are received into their own buffer
_PREALLOC = 1 << 24  # a big payload's buffer starts at most this big, then doubles



def _mask(key: bytes, data: bytes | memoryview, key_int: int | None = None) -> bytes:
    """XOR *data* with the repeated 4-byte *key* (byte-wise, through big integers: C speed
    without numpy). *key_int* is the key's integer for this length, if already built."""
    n = len(data)
    if n == 0:
        return b""
    if key_int is None:
        key_int = int.from_bytes((key * ((n + 3) // 4))[:n], "little")
    return (int.from_bytes(data, "little") ^ key_int).to_bytes(n, "little")


def _mask_chunks(key: bytes, data: memoryview) -> Iterator[bytes]:
    """*data* masked, in _CHUNK pieces (a multiple of 4: the key stays aligned); the
    key's integer is built once for all the full pieces."""
    full = int.from_bytes(key * (_CHUNK // 4), "little")
    for start in range(0, len(data), _CHUNK):
        piece = data[start:start + _CHUNK]
        yield _mask(key, piece, full if len(piece) == _CHUNK else None)


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
    for piece in _mask_chunks(key, memoryview(payload)):
        sock.sendall(piece)


Writable = bytes | Callable[[socket.socket], None]


def write_items(sock: socket.socket, items: list[Writable], join_below: int) -> None:
    """Write *items* in order in as few ``sendall`` calls as can be: frames shorter than
    *join_below* bytes are joined, longer ones written as they are (never copied), and a
    callable writes itself (a big frame masked piece by piece, a close frame)."""
    small: list[bytes] = []
    for item in items:
        if isinstance(item, bytes) and len(item) < join_below:
            small.append(item)
            continue
        if small:
            sock.sendall(small[0] if len(small) == 1 else b"".join(small))
            small = []
        if isinstance(item, bytes):
            sock.sendall(item)
        else:
            item(sock)
    if small:
        sock.sendall(small[0] if len(small) == 1 else b"".join(small))


def write_close(sock: socket.socket, code: int = 1000, reason: str = "") -> None:
    write_frame(sock, OP_CLOSE, close_payload(code, reason))


# close codes a peer may send (RFC 6455 §7.4.1 and the IANA registry; 3000-4999 too):
# never 1004-1006 or 1015 (reserved, or only for reporting locally), nor 1016-2999
_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


class FrameError(ProtocolError):
    """A malformed or oversized frame; *code* is the WebSocket close code it calls for."""

    def __init__(self, message: str, code: int = 1002) -> None:
        super().__init__(message)
        self.code = code


class _BigFrame:
    """A big frame's payload, being received into its own buffer."""

    __slots__ = ("b0", "length", "key", "payload", "have")

    def __init__(self, b0: int, length: int, key: bytes, first: bytes | bytearray) -> None:
        self.b0 = b0
        self.length = length
        self.key = key
        # grown as data arrives: a frame that only claims to be huge costs only what is sent
        self.payload = bytearray(min(length, max(_PREALLOC, len(first))))
        self.payload[:len(first)] = first
        self.have = len(first)

    def room(self) -> memoryview:
        """Where the next bytes go (the buffer doubles, up to the length, when full)."""
        if self.have == len(self.payload):
            self.payload.extend(bytes(min(len(self.payload), self.length - self.have)))
        return memoryview(self.payload)[self.have:self.have + min(len(self.payload) - self.have, 1 << 24)]

    def add(self, data: bytes | bytearray) -> None:
        while data:
            with self.room() as view:
                n = min(len(view), len(data))
                view[:n] = data[:n]
            self.have += n
            data = data[n:]


class FrameReader:
    """Parses WebSocket frames from a socket, draining many per ``recv``.

    A client reads the server's unmasked frames; a server (``masked=True``) reads the
    client's masked ones and unmasks them. *max_message* limits a message (and each of
    its frames); it may be changed between messages. With *tick*, every wait for data
    is cut into ticks of that many seconds and *on_tick* runs once a tick, quiet or not
    (it raises to give up: keepalive and deadlines must run while a big message
    arrives too); without, :meth:`fill` blocks until data arrives.

    Not thread-safe: one thread at a time reads (the engine's reading role).
    """

    def __init__(self, sock: socket.socket, max_message: int | None = None, *, masked: bool = False,
                 tick: float | None = None, on_tick: Callable[[], None] | None = None,
                 busy: BusyPoll | None = None) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._pos = 0
        self.max_message = max_message
        self._masked = masked
        self._tick = tick
        self._on_tick = on_tick
        self._fragments: list[bytes] = []
        self._fragment_size = 0
        self._fragment_op = 0
        self._poller: select.poll | None = None
        # True while an event loop reads (one recv per readiness): a big frame is then
        # buffered piece by piece instead of received in one blocking loop
        self.incremental = False
        self.busy = busy  # the connection's busy-poll policy, if it has one
        self.last_recv = time.monotonic()  # when bytes last arrived (read from other threads)
        self._tick_due = self.last_recv + (tick or 0.0)
        self._big: _BigFrame | None = None  # a big frame received in part

    def pop(self, deadline: float | None = None) -> tuple[int, bytes] | None:
        """The next complete message already received, as ``(opcode, payload)``, or None.

        Pings and closes are returned too. Raises :class:`ProtocolError` on a malformed
        frame. A big payload (1 MiB or more) is received here, straight into its buffer,
        until *deadline* (monotonic; None: no limit) if one is given: past it, None, and
        the part received is kept for the next call, which goes on with it.
        """
        while True:
            frame = self._next_frame(deadline)

            if frame is None:
                return None
            fin, opcode, payload = frame
            if opcode >= 0x8:  # control frames may interleave with fragments
                if opcode == OP_CLOSE:
                    _check_close(payload)
                return opcode, payload
            if opcode == OP_CONT:
                if not self._fragments:
                    raise FrameError("continuation frame without a message")
            elif opcode not in (OP_TEXT, OP_BINARY):
                raise FrameError(f"unknown opcode {opcode:#x}")
            elif self._fragments:
                raise FrameError("new message inside a fragmented one")
            else:
                self._fragment_op = opcode
            if fin and not self._fragments:
                return opcode, payload
            self._fragments.append(payload)
            self._fragment_size += len(payload)
            if self.max_message is not None and self._fragment_size > self.max_message:
                raise FrameError(f"a message of over {self.max_message} bytes exceeds the limit", 1009)
            if fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._fragment_size = 0
                return self._fragment_op, data

    def drained(self) -> bool:
        """True if every byte received so far has been returned by :meth:`pop`."""
        return self._pos == len(self._buf) and self._big is None

    def fill(self) -> None:
        """Receive what the socket has (blocking until something arrives).

        Raises ``ConnectionError`` at EOF and ``OSError`` on socket errors. Nothing is
        lost if it is interrupted: received bytes are appended in the same statement.
        """
        if self._pos:
            # one assignment: an interruption never leaves the position out of step; a
            # buffer read to its end is replaced, so a big message's capacity is let go
            self._buf, self._pos = (bytearray() if self._pos == len(self._buf) else self._buf[self._pos:]), 0
        self._await_data()
        before = len(self._buf)
        self._buf += self._sock.recv(_RECV)
        if len(self._buf) == before:
            raise ConnectionError("the peer closed the connection")
        self.last_recv = time.monotonic()
        if self.busy is not None:
            self.busy.mark()

    def receive_ready(self) -> int:
        """Receive what the socket has now, never blocking (for a reader woken by
        readiness: the hub): the number of bytes received, 0 if none were ready.

        Raises ``ConnectionError`` at EOF and ``OSError`` on socket errors. Call with
        :attr:`incremental` set, so that a big frame is buffered as it arrives.
        """
        if self._pos:
            self._buf, self._pos = (bytearray() if self._pos == len(self._buf) else self._buf[self._pos:]), 0
        big = self._big
        try:
            if big is not None and not self._buf:  # straight into the big frame's buffer
                with big.room() as view:
                    got = self._sock.recv_into(view, 0, socket.MSG_DONTWAIT)
                big.have += got
            else:
                data = self._sock.recv(_RECV, socket.MSG_DONTWAIT)
                got = len(data)
                self._buf += data
        except (BlockingIOError, InterruptedError):
            return 0
        if not got:
            raise ConnectionError("the peer closed the connection")
        self.last_recv = time.monotonic()
        if self.busy is not None:
            self.busy.mark()
        return got

    def wait_readable(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for :meth:`fill` to have something to read."""
        if self._tls_pending():
            return True
        return bool(self._poll_object().poll(max(0, math.ceil(timeout * 1000))))

    def busy_poll(self) -> bool:
        """Poll the socket for up to the window of :attr:`busy` (see ``_spin``); True if
        :meth:`fill` now has something to read, False if the caller should sleep on it."""
        return self.busy is not None and (self._tls_pending() or self.busy.poll(self._poll_object()))

    def _tls_pending(self) -> bool:
        sock = self._sock  # decrypted bytes wait in the TLS layer, invisible to poll
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def _poll_object(self) -> select.poll:
        fd = self._sock.fileno()  # every time: a cached poller would watch a reused number
        if fd < 0:  # closed by another thread: an OSError, as a recv would raise
            raise OSError(errno.EBADF, "the socket is closed")
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return self._poller

    def _await_data(self) -> None:
        if self._tick is None:
            return  # recv blocks
        while True:
            now = time.monotonic()
            if now >= self._tick_due:  # due even while data keeps arriving (a big frame)
                self._tick_due = now + self._tick
                if self._on_tick is not None:
                    self._on_tick()
            if self.wait_readable(self._tick_due - now):
                return

    def _next_frame(self, deadline: float | None) -> tuple[bool, int, bytes] | None:
        if self._big is not None:
            return self._read_big(deadline)
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        if bool(b1 & 0x80) != self._masked:
            raise FrameError("a client frame must be masked" if self._masked else "the server sent a masked frame")
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
            raise FrameError(f"a frame of {length} bytes exceeds the limit of {self.max_message}", 1009)
        key = b""
        if self._masked:
            if avail < head + 4:
                return None
            key = bytes(buf[pos + head:pos + head + 4])
            head += 4
        if avail - head < length:
            if length >= _BIG:  # received into its own buffer (piece by piece if incremental)
                self._big = _BigFrame(b0, length, key, self._buf[pos + head:])
                self._buf = bytearray()
                self._pos = 0
                return self._read_big(deadline)
            return None
        start = pos + head
        with memoryview(buf) as view:
            payload = bytes(view[start:start + length])  # one copy, even of a big payload
        self._pos = start + length
        if key:
            payload = _mask(key, payload)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _read_big(self, deadline: float | None) -> tuple[bool, int, bytes] | None:
        """Receive the rest of a big payload straight into its buffer; None (the part
        received kept) if *deadline* passes first, or, while an event loop reads
        (``incremental``), once what :meth:`fill` received is used up."""
        big = self._big
        assert big is not None
        buffered = len(self._buf) - self._pos
        if buffered:  # received by fill() since: the frame's bytes come first
            take = min(buffered, big.length - big.have)
            big.add(self._buf[self._pos:self._pos + take])
            self._pos += take
        while big.have < big.length:
            if self.incremental:
                return None  # the loop reads more when the socket is readable
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.wait_readable(remaining):
                    return None
            self._await_data()
            with big.room() as view:
                got = self._sock.recv_into(view)
            if got == 0:
                raise ConnectionError("the peer closed the connection")
            self.last_recv = time.monotonic()
            big.have += got
        self._big = None
        payload = big.payload
        if big.key:
            pos = 0
            for piece in _mask_chunks(big.key, memoryview(payload)):
                payload[pos:pos + len(piece)] = piece  # same length: the buffer stays put
                pos += len(piece)
        return bool(big.b0 & 0x80), big.b0 & 0x0F, bytes(payload) if len(payload) < _BIG else payload  # type: ignore[return-value]


def _check_close(payload: bytes) -> None:
    """Raise :class:`FrameError` (1002) for a close frame's body a peer may not send."""
    if not payload:
        return  # no status: allowed
    if len(payload) == 1:
        raise FrameError("a close frame with a 1-byte body")
    code = int.from_bytes(payload[:2], "big")
    if code not in _CLOSE_CODES and not 3000 <= code <= 4999:
        raise FrameError(f"close code {code} may not be sent by a peer")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("a close reason that is not UTF-8") from None
