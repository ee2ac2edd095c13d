"""How a server connection's bytes move: who reads it, its writer, and how it closes.

After the handshake (:mod:`.handshake`) one of three readers reads the connection
(``ServerConnection.run`` picks): the process's hub (:mod:`easyrpc._net.hub`, a plain
TCP socket: this class is its :class:`~easyrpc._net.hub.HubPeer`), the handler thread
itself (TLS: reading a partial record blocks, which must never happen to the hub), or
simple-websocket's thread through the inbox (:mod:`.owner`). Every message ends in
``handle_message``. Any thread writes, through the connection's
:class:`~easyrpc._net.writer.FrameWriter`; a peer that does not read its replies is
read no more until they drain (back-pressure). Closing sends the close frame after what
is queued and tears the socket down, whichever side started it.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import _protocol as proto
from .._core.close_codes import NORMAL, bad_frame, echo_code
from .._core.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameError, close_payload, frame_header
from .._core.keepalive import Keepalive
from .._net.hub import Hub, hub
from .._net.writer import QUEUE_LIMIT, FrameWriter
from .handshake import Handshake, Stop

if TYPE_CHECKING:
    from ..server import EasyRpcServer

__all__ = ["ConnectionIO", "CLOSE_WAIT"]

CLOSE_WAIT = 1.0  # how long a closing connection waits for the peer's close frame
_WAIT = 1.0  # the handler thread looks at its connection at least this often


class ConnectionIO(Handshake):
    """The reading, writing and closing of one server connection (the base of
    :class:`~.connection.ServerConnection`, which handles what is read)."""

    def __init__(self, server: EasyRpcServer, ws: Any) -> None:
        super().__init__(server, ws)
        self._fd = self.sock.fileno()
        self._hub: Hub | None = None
        self._writer = FrameWriter(self.sock, nonblocking=self._on_hub, want_write=self._want_write,
                                   on_error=self._write_failed)
        self._read_paused = False  # replies pile up: the hub stops reading this connection
        self._write_wanted = False
        self._closed_at: float | None = None
        self._done = threading.Event()  # reading is over: the handler thread tears down

    # what the connection provides
    _tasks: dict[int, Any]  # the calls in flight (none: a sequential caller's next call is due)
    _keepalive_policy: Keepalive

    def _keepalive(self, now: float) -> bool:
        raise NotImplementedError

    # --- who reads ---------------------------------------------------------------------
    def _wait_done(self) -> None:
        # bounded: keepalive ends a connection whose peer went silent
        while not self._done.wait(_WAIT):
            pass

    def _watch(self) -> None:
        """Keepalive and close detection, on the handler thread, while the inbox reads."""
        # A closing socket wakes us through CloseSignal at once; the tick paces keepalive
        # and catches a close simple-websocket signals before marking it.
        while not self._done.wait(self.server_tick) and self.ws.connected:
            self.on_timer(time.monotonic())

    def _serve_from_hub(self) -> None:
        self._frames.incremental = True  # a big frame is buffered as it arrives
        if self.sock.gettimeout() is not None:
            self.sock.settimeout(None)  # our workers' sends block; the hub's never do
        self._hub = hub()
        self._hub.add(self)
        self._wait_done()

    def _read_here(self) -> None:
        """Read and handle frames on this thread until the connection ends."""
        frames = self._frames
        try:
            while not self._done.is_set():
                msg = frames.pop()
                if msg is None:
                    if not self._tasks:  # nothing running: a sequential caller's next call is due
                        frames.busy_poll()
                    frames.fill()  # its ticks run on_tick
                    self.alive()
                elif not self._on_message(*msg):
                    return
        except FrameError as exc:
            self.log.warning("connection %s: %s; closed", self.cid, exc)
            self.close(*bad_frame(exc.code))
        except (OSError, Stop):
            pass  # the peer is gone, or we dropped it

    def on_tick(self) -> None:
        """The socket read by this thread was quiet for a tick: deadlines and keepalive."""
        if not self.welcomed:
            super().on_tick()  # the auth deadline
            return
        self.on_timer(time.monotonic())
        if self._done.is_set():
            raise Stop

    # --- closing -----------------------------------------------------------------------
    def close(self, code: int = NORMAL, reason: str = "", bye: str | None = None) -> None:
        """Close the connection (idempotent); *bye* tells the proxy why, first (once it
        has been welcomed: before that the proxy expects the welcome, and the close frame
        alone tells it)."""
        if bye is not None and self.welcomed:
            self.send(proto.encode("bye", reason=bye))
        if self.owned:
            frame: Any = frame_header(OP_CLOSE, 2 + len(reason.encode()[:120])) + close_payload(code, reason)
        else:
            def frame(sock: socket.socket) -> None:  # simple-websocket writes it (its state)
                try:
                    self.ws.close(code, reason)
                except OSError:
                    raise
                except Exception:  # noqa: BLE001 - closed already (ConnectionClosed, wsproto's state)
                    pass
        if not self._writer.send_last(frame):
            return
        self._closed_at = time.monotonic()
        if not self.owned:
            self._done.set()

    def _kill(self) -> None:
        """Drop the socket at once (keepalive expiry)."""
        self._writer.close()
        self._shutdown()
        self._end()

    def _end(self) -> None:
        """Reading is over, whoever read: the handler thread may tear down (idempotent)."""
        if self._hub is not None:
            self._hub.remove(self)
        self._done.set()

    def wait_ended(self, timeout: float) -> bool:
        """Wait up to *timeout* for the connection's reading to be over."""
        return self._done.wait(timeout)

    def peer_gone(self) -> None:
        """(simple-websocket's thread.) The socket closed."""
        self._done.set()

    def _teardown(self) -> None:
        self._writer.close()
        if not self.owned:
            thread = getattr(self.ws, "thread", None)
            if thread is not None:
                thread.join(1.0)
                if thread.is_alive():  # the peer never answered our close frame
                    self._shutdown()
                    thread.join(1.0)
            return
        # as simple-websocket's thread would: close the socket, after what is queued
        self.ws.connected = False
        try:
            self.sock.settimeout(CLOSE_WAIT)  # a peer that reads nothing cannot hold us
            self._writer.resume()  # what the hub left unsent (our close frame, say)
        except OSError:
            pass
        self._writer.wait_idle(CLOSE_WAIT)  # a worker still writing fails fast once shut down
        self._shutdown()
        self._writer.wait_idle(CLOSE_WAIT)
        self.sock.close()

    def _shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # unblocks a send stuck on a silent peer
        except OSError:
            pass

    # --- sending -----------------------------------------------------------------------
    def send(self, payload: proto.Encoded) -> bool:
        """Send one message whole, in order; False if the connection is closed."""
        cipher = self.cipher
        if cipher is not None:  # sealed in queue order: the counters stay in step
            return self._writer.send(OP_BINARY, payload, cipher.seal)
        return self._writer.send(OP_TEXT, payload)

    def send_control(self, opcode: int, payload: bytes) -> None:
        """Send one control frame (a pong), unless the connection is closed."""
        self._writer.send(opcode, payload)

    @property
    def send_backlog(self) -> int:
        return self._writer.backlog()

    def _on_hub(self) -> bool:
        """True on the hub's leader: it must never block on this socket."""
        return self._hub is not None and self._hub.is_leader()

    def _want_write(self, wanted: bool) -> None:
        self._write_wanted = wanted
        self._set_interest()

    def _set_interest(self) -> None:
        if self._hub is not None:
            self._hub.interest(self, read=not self._read_paused, write=self._write_wanted)

    def _write_failed(self, exc: OSError) -> None:
        self.log.info("connection %s: send failed (%s)", self.cid, type(exc).__name__)
        self._end()

    # --- the hub's peer ----------------------------------------------------------------
    @property
    def tick(self) -> float:
        return self.server_tick

    def fileno(self) -> int:
        return self._fd

    def poll_briefly(self) -> bool:
        """(Hub, before it sleeps, this connection having received last.) With no call
        running, a sequential caller's next call is due: poll for it a moment (``_spin``)."""
        try:
            return not self._tasks and not self._read_paused and self._frames.busy_poll()
        except OSError:  # closed meanwhile (it was just removed): its end is handled elsewhere
            return False

    def on_readable(self) -> None:
        if self._done.is_set() or (self._writer.full and self._backed_up()):
            return
        try:
            if not self._frames.receive_ready():
                return
        except OSError:  # the peer is gone (ConnectionError at EOF)
            self._end()
            return
        # Silence is measured from the reader's last_recv (see _keepalive); only a ping
        # waiting for an answer needs telling that the peer spoke.
        if self._keepalive_policy.ping_pending:
            self.alive()
        self.on_buffered()

    def on_buffered(self) -> None:
        done, writer = self._done, self._writer
        try:
            while not done.is_set() and not (writer.full and self._backed_up()):
                msg = self._frames.pop()
                if msg is None:
                    return
                if not self._on_message(*msg):
                    self._end()
                    return
        except FrameError as exc:
            self.log.warning("connection %s: %s; closed", self.cid, exc)
            self.close(*bad_frame(exc.code))
            self._end()
        except (OSError, Stop):
            self._end()

    def _backed_up(self) -> bool:
        """A peer that sends but does not read: while its replies pile up, the hub reads
        no more of its requests (they wait in the socket); the timer resumes reading."""
        if not self._writer.full:
            return False  # (callers ask writer.full first: the common case costs no call)
        if not self._read_paused:
            self._read_paused = True
            self._set_interest()
        return True

    def on_writable(self) -> None:
        self._writer.resume()
        self._resume_reading()  # at once: a caller's next request must not wait for the timer

    def _resume_reading(self) -> None:
        """(Hub.) Read again once the replies that paused reading have drained."""
        if self._read_paused and self._writer.backlog() < QUEUE_LIMIT:
            self._read_paused = False
            self._set_interest()
            if self._hub is not None:
                self._hub.pend(self)  # what was received meanwhile waits in the buffer

    def on_timer(self, now: float) -> None:
        if self._done.is_set():
            return
        self._resume_reading()
        if self._closed_at is not None:
            if now - self._closed_at >= CLOSE_WAIT:
                self._end()  # the peer never answered our close frame
        elif not self._keepalive(now):
            self._end()

    def _on_message(self, opcode: int, data: bytes) -> bool:
        """Handle one frame read from the owned socket; False once the connection ends."""
        if self._closed_at is not None and time.monotonic() - self._closed_at >= CLOSE_WAIT:
            return False  # a peer that keeps talking after our close frame
        if opcode == OP_PING:
            self.send_control(OP_PONG, data)
        elif opcode == OP_CLOSE:
            self.close(echo_code(data), "")
            return False
        elif opcode != OP_PONG:
            return self.handle_message(data, opcode == OP_BINARY)
        return True
