"""One connection's writer: frames go out whole, in order, from any thread.

Writes are combined. A thread with a frame queues it and, if no thread is writing,
becomes the writer and writes the queue, with whatever others queue meanwhile, in as few
system calls as it can. A lone reply goes out at once; replies that finish together on
several workers share one write.

Two kinds of writer. Any other thread (a worker, a caller, a TLS connection's reader)
may block in ``sendall`` (it serves one call). The hub's leader must never block (it
reads every connection): it writes what the socket takes (non-blocking ``send`` /
``sendmsg``) and leaves the rest to the hub, which finishes it when the socket is
writable. Meanwhile the connection stays "being written", so nobody else writes out of
order.

Back-pressure. Threads other than the hub's leader wait (bounded) while a big frame
would queue behind a writer, or while more than ``QUEUE_LIMIT`` bytes wait; on the
server, the hub stops reading a connection whose queue is over the limit until it has
drained (a client reads only replies to its own calls).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from .._core.frames import OP_BINARY, frame_header
from .._parts import Packed
from .._transport import frame_bytes, write_frame, write_frame_parts

__all__ = ["QUEUE_LIMIT", "SMALL_FRAME", "FrameWriter"]

SMALL_FRAME = 1 << 16  # frames this long and longer are written as they are, never joined
QUEUE_LIMIT = 4 << 20  # bytes queued behind a writer before senders wait
_IOV_MAX = 512  # buffers per sendmsg (Linux allows 1024)
_WAIT = 1.0  # a waiting sender looks again this often

Item = bytes | memoryview | Callable[[socket.socket], None]
Message = bytes | Packed  # a message with binary parts always goes in a binary frame
Seal = Callable[[Message], bytes]


class FrameWriter:
    """Queues and writes the frames of one connection: a server's (unmasked) or, with
    *masked*, a client's (each frame masked with a fresh key, RFC 6455 §5.3).

    *nonblocking* says whether the calling thread must not block (the hub's leader);
    *want_write* asks the hub to call :meth:`resume` when the socket is writable (True)
    or to stop (False); *on_error* is told once that a write failed.
    """

    def __init__(self, sock: socket.socket, *, nonblocking: Callable[[], bool],
                 want_write: Callable[[bool], None], on_error: Callable[[OSError], None],
                 masked: bool = False) -> None:
        self._sock = sock
        self._masked = masked
        self._nonblocking = nonblocking
        self._want_write = want_write
        self._on_error = on_error
        self._lock = threading.Lock()  # the queue, the unsent rest and the flags
        self._done = threading.Condition(self._lock)
        self._out: list[Item] = []
        self._out_bytes = 0
        self._unsent: deque[memoryview] = deque()  # what a non-blocking write left over
        self._unsent_bytes = 0
        self._writing = False
        self._waited = False  # threads wait for the writer (room, or its end)
        self._failed = False
        self._watching = False  # the hub watches the socket for write readiness
        self.last_sent = time.monotonic()  # when a write last went out (keepalive reads it)
        self.closed = False  # no more frames are accepted

    # --- queueing ----------------------------------------------------------------------
    def send(self, opcode: int, payload: Message, seal: Seal | None = None) -> bool:
        """Write one frame whole, in order; False if the connection is closed (or a write
        failed). *seal* (encryption) runs in queue order, so its counters stay in step."""
        if len(payload) >= SMALL_FRAME:
            return self.send_many(opcode, (payload,), seal)
        with self._lock:
            if self._writing or self._out or self.closed:
                frame = b""
            else:  # the common case: a lone small frame, nobody writing; no queue at all
                frame = self._small_frame(opcode, seal(payload) if seal is not None else payload)
                self._writing = True  # (after building it: a failure there leaves no writer stuck)
        if not frame:
            return self.send_many(opcode, (payload,), seal)
        return self._write_lone(frame)

    def send_many(self, opcode: int, payloads: Sequence[Message], seal: Seal | None = None) -> bool:
        """Write one frame per payload, in order, none interleaved with other frames
        (a :class:`~easyrpc._parts.Packed` payload in a binary frame, whatever *opcode*)."""
        big = any(len(p) >= SMALL_FRAME for p in payloads)
        with self._lock:
            if self._writing and not self._nonblocking() and (big or self._backlog() >= QUEUE_LIMIT):
                while self._writing and not self.closed:
                    self._waited = True
                    self._done.wait(_WAIT)
                    if not big and self._backlog() < QUEUE_LIMIT:
                        break
            if self.closed:
                return False
            sealed: Sequence[Message] = [seal(p) for p in payloads] if seal is not None else payloads
            if self._writing or self._out or big or len(sealed) != 1:
                for data in sealed:
                    self._append(opcode, data)
                if not self._become_writer():
                    return True  # the writer sends it
                frame = b""
            else:  # the common case: a lone small frame, nobody writing; no queue at all
                frame = self._small_frame(opcode, sealed[0])
                self._writing = True
        if frame:
            return self._write_lone(frame)
        return self._write_queued()

    def _write_lone(self, frame: bytes) -> bool:
        """(The writer, the queue empty when it began.) Write *frame*; if nothing was
        queued meanwhile and it all went out, stop writing without a pass over the queue."""
        self._write_one(frame)
        with self._lock:
            if not self._out and not self._unsent and not self._waited:
                self._writing = False
                return not self._failed
        return self._write_queued()

    def _write_one(self, frame: bytes) -> None:
        """(The writer.) Write one small frame straight away; a non-blocking writer leaves
        what the socket does not take to the queue's writing, which follows."""
        try:
            if self._nonblocking():
                try:
                    sent = self._sock.send(frame, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    sent = 0
            else:
                self._sock.sendall(frame)
                sent = len(frame)
        except OSError as exc:
            self._fail(exc)
            return
        if sent:
            self.last_sent = time.monotonic()
        if sent < len(frame):
            with self._lock:
                self._unsent.append(memoryview(frame)[sent:])
                self._unsent_bytes += len(frame) - sent

    def send_last(self, item: Item) -> bool:
        """Queue a final frame (a close), after everything queued before it; no frame is
        accepted after it. False if the writer was closed already."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            self._out.append(item)
            if not self._become_writer():
                return True
        self._write_queued()
        return True

    def close(self) -> None:
        """Accept no more frames (what is queued may still go out)."""
        with self._lock:
            self.closed = True

    def backlog(self) -> int:
        """Bytes queued or left unsent."""
        with self._lock:
            return self._backlog()

    @property
    def full(self) -> bool:
        """True while ``QUEUE_LIMIT`` bytes or more are queued or unsent. Read without the
        lock (it is asked once a message): a stale answer moves a pause by one message."""
        return self._out_bytes + self._unsent_bytes >= QUEUE_LIMIT

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to *timeout* for the writer to finish; True if nobody writes now."""
        with self._lock:
            if self._writing:
                self._waited = True
                self._done.wait(timeout)
            return not self._writing

    def _backlog(self) -> int:
        return self._out_bytes + self._unsent_bytes

    def _small_frame(self, opcode: int, data: Message) -> bytes:
        if isinstance(data, Packed):
            opcode, data = OP_BINARY, data.join()
        return frame_bytes(opcode, data) if self._masked else frame_header(opcode, len(data)) + data

    def _append(self, opcode: int, data: Message) -> None:
        self._out_bytes += len(data)
        if isinstance(data, Packed):
            if len(data) >= SMALL_FRAME:
                self._append_parts(data)
            else:
                self._out.append(self._small_frame(opcode, data))
        elif len(data) < SMALL_FRAME:
            self._out.append(self._small_frame(opcode, data))
        elif not self._masked:  # not joined: a big payload is written as it is, never copied
            self._out.append(frame_header(opcode, len(data)))
            self._out.append(data)
        elif self._nonblocking():  # the hub's leader (a big argument forwarded over a link):
            self._out.append(frame_bytes(opcode, data))  # masked whole, sent as the socket takes it
        else:  # masked piece by piece as it is written: never a masked copy of the whole
            self._out.append(lambda sock: write_frame(sock, opcode, data))

    def _append_parts(self, data: Packed) -> None:
        """A big message with binary parts: its buffers as they are, never joined."""
        if not self._masked:
            self._out.append(frame_header(OP_BINARY, len(data)))
            self._out.extend(data.buffers())
        elif self._nonblocking():
            self._out.append(frame_bytes(OP_BINARY, data.join()))
        else:
            buffers = data.buffers()
            self._out.append(lambda sock: write_frame_parts(sock, OP_BINARY, buffers))

    def _become_writer(self) -> bool:
        """(Under the lock.) True if the caller must now write the queue: nobody is."""
        if self._writing:
            return False
        self._writing = True
        return True

    # --- writing -----------------------------------------------------------------------
    def resume(self) -> None:
        """(The hub, the socket being writable.) Go on writing what was left unsent."""
        with self._lock:
            if not self._writing or not self._unsent:
                return
        self._write_queued()

    def _write_queued(self) -> bool:
        """Write the queue until it is empty (this thread is the writer); False on failure."""
        try:
            return self._write_all()
        except BaseException:  # an unexpected error: never leave the queue without a writer
            with self._lock:
                self._writing = False
                self._done.notify_all()
            raise

    def _write_all(self) -> bool:
        while True:
            with self._lock:
                items, self._out, self._out_bytes = self._out, [], 0
                if self._waited:  # senders waiting for room, or for the writer to end
                    self._waited = False
                    self._done.notify_all()
                if not items and not self._unsent:
                    self._writing = False
                    return not self._failed
                if self._failed:
                    continue  # drop what was queued: the socket is broken
                nonblocking = self._nonblocking()
                if nonblocking:
                    self._unsent.extend(memoryview(i) for i in items if not callable(i))
                    self._unsent_bytes += sum(len(i) for i in items if not callable(i))
            try:
                if not nonblocking:
                    self._write_blocking(items)
                    self.last_sent = time.monotonic()
                elif not self._write_some():
                    return True  # the hub writes the rest when the socket is writable
            except OSError as exc:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """A write failed: the socket is broken; drop what is queued, say so once."""
        with self._lock:
            first = not self._failed
            self._failed = True
            self.closed = True
            self._out, self._out_bytes = [], 0
            self._unsent.clear()
            self._unsent_bytes = 0
        if first:
            self._on_error(exc)

    def _write_blocking(self, items: list[Item]) -> None:
        """Write *items* with ``sendall``: short frames joined, long ones as they are, a
        callable writing itself (a close frame written by simple-websocket)."""
        with self._lock:
            unsent = list(self._unsent)  # a non-blocking writer's rest goes first
            self._unsent.clear()
            self._unsent_bytes = 0
        small: list[bytes] = [bytes(u) for u in unsent]
        for item in items:
            if not callable(item) and len(item) < SMALL_FRAME:
                small.append(bytes(item))
                continue
            if small:
                self._sock.sendall(small[0] if len(small) == 1 else b"".join(small))
                small = []
            if callable(item):
                item(self._sock)
            else:
                self._sock.sendall(item)
        if small:
            self._sock.sendall(small[0] if len(small) == 1 else b"".join(small))

    def _write_some(self) -> bool:
        """Send what the socket takes now; True if nothing is left unsent."""
        with self._lock:
            buffers = list(self._unsent)[:_IOV_MAX]
        try:
            sent = self._sock.sendmsg(buffers, [], socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent:
            self.last_sent = time.monotonic()
        with self._lock:
            self._unsent_bytes -= sent
            while sent:
                head = self._unsent[0]
                if len(head) <= sent:
                    sent -= len(head)
                    self._unsent.popleft()
                else:
                    self._unsent[0] = head[sent:]
                    sent = 0
            done = not self._unsent
            change = done == self._watching
            self._watching = not done
        if change:
            self._want_write(not done)
        return done
