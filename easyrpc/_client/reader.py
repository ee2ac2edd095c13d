"""A proxy's connection read by the process's hub while nobody else reads it.

Reading a proxy's socket is a role (see :mod:`.engine`): a blocking caller waiting for
its own reply holds it, or an event loop with calls in flight, or else *the reader*.
The reader used to be a thread per proxy; now it is the process's I/O hub
(:mod:`easyrpc._net.hub`), which reads every proxy's connection (and every server
connection) from one thread: a process holding 500 proxies runs a fixed number of
easyrpc threads. The hub watches a connection's socket only while the reader holds
the role, and steps aside (the same rule as before) once it has answered a caller that
wants to read.

A TLS connection keeps a reading thread of its own: a TLS record can arrive in pieces,
and reading a partial one blocks, which must never happen to the hub.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import websocket

from .._net.hub import hub
from .._transport import FrameReader
from ..exceptions import ProtocolError
from .sock import sock_of

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["HubReader"]

_MAX_ROUNDS = 8  # reads in a row for one readiness (then the hub serves the others)


class HubReader:
    """The hub's side of one (plain TCP) connection of a proxy."""

    def __init__(self, engine: Engine, ws: websocket.WebSocket, frames: FrameReader) -> None:
        self.engine = engine
        self.ws = ws
        self.frames = frames
        self._fd = sock_of(ws).fileno()
        self.free_since = time.monotonic()  # when the reading role was last let go
        self._reading = False  # the reader holds the role: the hub reads the socket
        self._writing = False  # the writer has bytes the socket would not take

    @property
    def tick(self) -> float:
        return self.engine.tick

    def fileno(self) -> int:
        return self._fd

    def attach(self) -> None:
        """Let the hub serve this connection (watched once the reader holds the role)."""
        hub().add(self, read=False)

    def detach(self) -> None:
        """Stop serving it (before its socket is closed)."""
        hub().remove(self)

    def watch(self, reading: bool) -> None:
        """Have the hub read the socket (the reader holds the role) or leave it alone."""
        self._reading = reading
        the_hub = hub()
        the_hub.interest(self, read=reading, write=self._writing)
        if reading and not self.frames.drained():
            the_hub.pend(self, wake=True)  # what the last holder left received is handled first

    def want_write(self, wanted: bool) -> None:
        """(The writer.) Have the hub finish a write when the socket is writable."""
        self._writing = wanted
        hub().interest(self, read=self._reading, write=wanted)

    # --- the hub's peer ----------------------------------------------------------------
    def poll_briefly(self) -> bool:
        return False  # a proxy's lone caller polls for its own reply (it holds the role)

    def on_writable(self) -> None:
        out = self.engine.writer_of(self.frames)
        if out is not None:
            out.resume()

    def on_readable(self) -> None:
        # Replies that arrived while the last ones were handled are read at once, without
        # going back to the selector: with many callers on one proxy they usually have.
        for _ in range(_MAX_ROUNDS):
            if not self.engine.role.reader_holds(self.frames):
                return
            try:
                if not self.frames.receive_ready():
                    return
            except OSError as exc:  # ConnectionError at EOF
                self._end(self.engine.inbound.why_lost(exc))
                return
            self._handle()

    def on_buffered(self) -> None:
        role = self.engine.role
        role.reader_claim(self)
        if role.reader_holds(self.frames):
            self._handle()

    def claim_soon(self) -> None:
        """Have the hub take the reading role (if still free) when it next runs."""
        hub().pend(self, wake=True)

    def _handle(self) -> None:
        inbound = self.engine.inbound
        try:
            reason = inbound.handle_buffered(self.ws, self.frames)
        except (ProtocolError, OSError) as exc:
            reason = inbound.why_lost(exc)
        if reason is not None:
            self._end(reason)
        else:
            self.engine.role.reader_handled(self)

    def on_timer(self, now: float) -> None:
        self.engine.role.reader_tick(self, now)

    def _end(self, reason: str) -> None:
        if not self.engine.closed:
            self.engine.lost(reason, self.frames)
