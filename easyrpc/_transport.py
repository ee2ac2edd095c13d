"""WebSocket framing once the opening handshake is done, for both ends.

websocket-client reads each frame with several small ``recv`` calls, validates UTF-8 in
pure Python and masks whole payloads through big temporary integers; simple-websocket
runs every byte through wsproto's event machinery on a thread of its own. After the
HTTP upgrade (and, on the client, easyrpc's hello/welcome, which websocket-client reads
exactly frame by frame) easyrpc reads and writes the socket itself with this module:

* :class:`FrameReader` receives in large chunks and hands them to the core's
  :class:`~easyrpc._core.frames.FrameParser` (the framing rules live there, once, tested
  without sockets), which parses every complete frame in the buffer, so one wake-up can
  drain many messages; a big payload is received straight into its buffer
  (``FrameParser.big_room``: no growing copies of the whole), and a reader with a
  deadline can leave it half-received and go on with it later. The server's reader
  unmasks. It notes when bytes last arrived (:attr:`FrameReader.last_recv`): keepalive
  counts any byte, not only whole messages, so a big message arriving slowly is a sign
  of life.
* :func:`write_frame` masks in bounded chunks and writes them with ``sendall``, so a
  100 MB message costs one extra chunk of memory, not several copies of the payload.
  (The server's frames are unmasked: ``_core.frames.frame_header``.)

The caller serialises writes (a send lock) and lets one thread read at a time. UTF-8 of
text frames is checked where the text is decoded anyway (``_protocol.load`` raises
``InvalidText``: the server closes with 1007, the client drops the connection), not in a
second pass. Close frames' bodies and the 64-bit length are checked by the parser (RFC
6455 §5.2, §5.5.1, §7.4): a :class:`FrameError` with code 1002.
"""

from __future__ import annotations

import errno
import math
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable

from ._core.frames import (
    MASK_CHUNK,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameParser,
    MaskKeys,
    apply_mask,
    masked_chunks,
    masked_frame_header,
    masked_parts,
)
from ._core.frames import (
    OP_CONT as OP_CONT,  # re-exported: tests and peers build continuation frames
)
from ._spin import BusyPoll

__all__ = ["FrameReader", "FrameError", "frame_bytes", "write_frame", "write_frame_parts",
           "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"]

# One recv's size. Python allocates the whole size for every recv and then shrinks the
# result; at 256 KiB that allocation went through mmap/mremap/munmap (three system calls
# per message); 64 KiB stays on the heap. A big frame is received straight into its own
# buffer (FrameParser.big_room), so this size does not limit big messages.
_RECV = 1 << 16


_keys = MaskKeys(threading.Lock())  # the process's masking keys, drawn by any thread


def frame_bytes(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame as bytes (for small payloads, to batch writes)."""
    # build_frame(opcode, payload, mask=True, keys=_keys.next), one call layer less
    key = _keys.next()
    return masked_frame_header(opcode, len(payload)) + key + apply_mask(key, payload)


def write_frame(sock: socket.socket, opcode: int, payload: bytes) -> None:
    """Write one final, masked client frame carrying *payload*, completely."""
    if len(payload) <= MASK_CHUNK:
        sock.sendall(frame_bytes(opcode, payload))
        return
    for piece in masked_chunks(opcode, payload, _keys.next):
        sock.sendall(piece)


def write_frame_parts(sock: socket.socket, opcode: int, buffers: list[bytes | memoryview]) -> None:
    """Write one final, masked client frame whose payload is *buffers* back to back,
    masked piece by piece (never joined; small pieces are written together)."""
    batch: list[bytes] = []
    size = 0
    for piece in masked_parts(opcode, buffers, _keys.next):
        batch.append(piece)
        size += len(piece)
        if size >= MASK_CHUNK:
            sock.sendall(b"".join(batch))
            batch, size = [], 0
    if batch:
        sock.sendall(b"".join(batch))


class FrameReader:
    """Reads WebSocket messages from a socket, draining many per ``recv``: a socket
    driver over the core's :class:`~easyrpc._core.frames.FrameParser`, which does all
    the parsing and checking.

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
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._parser = FrameParser(max_message, masked=masked)
        self._masked = masked
        self._tick = tick
        self._on_tick = on_tick
        self._poller: select.poll | None = None
        # True while an event loop reads (one recv per readiness): a big frame is then
        # buffered piece by piece instead of received in one blocking loop
        self.incremental = False
        self.busy = busy  # the connection's busy-poll policy, if it has one
        self.last_recv = time.monotonic()  # when bytes last arrived (read from other threads)
        self._tick_due = self.last_recv + (tick or 0.0)

    @property
    def max_message(self) -> int | None:
        """The largest message (and frame) accepted, in bytes; None: no limit."""
        return self._parser.max_message

    @max_message.setter
    def max_message(self, value: int | None) -> None:
        self._parser.max_message = value

    def pop(self, deadline: float | None = None) -> tuple[int, bytes] | None:
        """The next complete message already received, as ``(opcode, payload)``, or None.

        Pings and closes are returned too. Raises :class:`ProtocolError` on a malformed
        frame. A big payload (1 MiB or more) is received here, straight into its buffer,
        until *deadline* (monotonic; None: no limit) if one is given: past it, None, and
        the part received is kept for the next call, which goes on with it.
        """
        parser = self._parser
        msg = parser.next_message()
        if msg is None and not self.incremental and parser.big_missing:
            return self._receive_big(deadline)
        return msg

    def _receive_big(self, deadline: float | None) -> tuple[int, bytes] | None:
        """Receive the rest of a big payload straight into its buffer, then the next
        message; None (the part received kept) if *deadline* passes first."""
        parser = self._parser
        while True:
            while parser.big_missing:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self.wait_readable(remaining):
                        return None
                self._await_data()
                room = parser.big_room()
                assert room is not None
                with room:
                    got = self._sock.recv_into(room)
                if got == 0:
                    raise ConnectionError("the peer closed the connection")
                self.last_recv = time.monotonic()
                parser.big_received(got)
            msg = parser.next_message()
            if msg is not None or not parser.big_missing:  # else the next frame is big too
                return msg

    def drained(self) -> bool:
        """True if every byte received so far has been returned by :meth:`pop`."""
        return self._parser.drained()

    def fill(self) -> None:
        """Receive what the socket has (blocking until something arrives).

        Raises ``ConnectionError`` at EOF and ``OSError`` on socket errors. Nothing is
        lost if it is interrupted: what one recv returns is handed to the parser in the
        same statement.
        """
        self._await_data()
        data = self._sock.recv(_RECV)
        if not data:
            raise ConnectionError("the peer closed the connection")
        self._parser.feed(data)
        self.last_recv = time.monotonic()
        if self.busy is not None:
            self.busy.mark()

    def receive_ready(self) -> int:
        """Receive what the socket has now, never blocking (for a reader woken by
        readiness: the hub): the number of bytes received, 0 if none were ready.

        Raises ``ConnectionError`` at EOF and ``OSError`` on socket errors. Call with
        :attr:`incremental` set, so that a big frame is buffered as it arrives.
        """
        parser = self._parser
        try:
            room = parser.big_room()
            if room is not None:  # straight into the big frame's buffer
                with room:
                    got = self._sock.recv_into(room, 0, socket.MSG_DONTWAIT)
                parser.big_received(got)
            else:
                data = self._sock.recv(_RECV, socket.MSG_DONTWAIT)
                got = len(data)
                parser.feed(data)
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
        busy = self.busy
        if busy is None:
            return False
        return (self._tls and self._sock.pending() > 0) or busy.poll(self._poll_object())  # type: ignore[attr-defined]

    def _tls_pending(self) -> bool:
        # decrypted bytes wait in the TLS layer, invisible to poll
        return self._tls and self._sock.pending() > 0  # type: ignore[attr-defined]

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
