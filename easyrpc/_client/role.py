"""Who reads a proxy's connection: the reading role, held by one thread at a time.

A blocking call whose thread finds the role free reads the socket itself until its
reply arrives (:meth:`ReadingRole.lead`), settling whatever else arrives meanwhile, so a
sequential caller is woken by the kernel, not by another thread. An event loop running
``easyrpc.aio`` calls takes the role the same way (``loop.add_reader``, see
:class:`.loops.LoopReader`) while it has calls in flight. Otherwise *the reader* holds
it: the process's I/O hub for a plain connection (:class:`.reader.HubReader`), or the
``easyrpc-reader`` thread for a TLS one (:class:`.thread_reader.ReaderThread`). The
reader reads while futures or streams wait and while the connection is idle
(keepalive, pushed function lists), and steps aside once it has answered a caller that
wants to read, or for an event loop that does.

Whoever holds the role hands what it reads to :class:`.inbound.Inbound`.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

import websocket

from .._transport import FrameReader
from ..exceptions import ProtocolError
from .calls import BlockingCall
from .loops import LoopReader
from .sock import shutdown

if TYPE_CHECKING:
    from .engine import Engine
    from .reader import HubReader

__all__ = ["READER", "STEP_ASIDE", "ReadingRole"]

READER: Any = object()  # the reader holds the reading role: the hub, or a TLS connection's thread
STEP_ASIDE = 0.05  # how long the reader leaves a freed role to blocking callers before taking it


class ReadingRole:
    """The reading role of one proxy: who holds it, who wants it, and the hand-overs.

    ``holder`` is None (free), :data:`READER`, a blocking caller's thread ident, or a
    :class:`LoopReader`. Every change happens under ``cond``; reads of ``holder``
    without it are hints, checked again under it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cond = threading.Condition(threading.Lock())
        self.holder: Any = None
        self.reader_wanted = True  # (TLS) the reader thread must take the role as soon as free
        self.leader_seen = False  # a caller wanted the role the reader held
        self.loop_wanted: asyncio.AbstractEventLoop | None = None  # ... an event loop, namely

    # --- the connection comes and goes --------------------------------------------------
    def connected(self) -> None:
        """A new connection is up: the reader reads it at once (or once the role is free)."""
        with self.cond:
            if self.holder is None:
                self._reader_takes()
            else:
                self.reader_wanted = True

    def closing(self) -> None:
        """The proxy closes: wake the reader thread; revoke an event loop's role."""
        with self.cond:
            # Read under the lock: read_in_loop and the reader's hand-over give a loop the
            # role under it too, and only while not closing, so no loop gets it after this.
            holder = self.holder
            self.cond.notify_all()
        if isinstance(holder, LoopReader):
            holder.revoke()

    def reader_gone(self) -> None:
        """The hub stopped reading the connection: it holds the role no more."""
        with self.cond:
            if self.holder is READER:
                self.holder = None

    # --- taking the role ----------------------------------------------------------------
    def want_reader(self) -> None:
        """Make the reader take the free role now (something awaits a reply).

        Callers add their request to the table before looking at the role, and a thread
        giving up the role looks at the table after: one of the two always wakes it.
        """
        with self.cond:
            if self.holder is None:
                self._reader_takes()

    def _reader_takes(self) -> None:
        """(Under ``cond``, the role free.) The reader takes it: the hub reads a plain
        connection from now on; a TLS connection's thread is told to."""
        engine = self.engine
        link = engine.link
        hub_reader = link.hub_reader if link is not None else None
        if hub_reader is None or engine.closed:
            if not self.reader_wanted:
                self.reader_wanted = True
                self.cond.notify()
            return
        self.holder = READER
        self.reader_wanted = self.leader_seen = False
        hub_reader.frames.incremental = True  # the hub never blocks, in a big frame neither
        hub_reader.watch(True)

    def _freed(self, frames: FrameReader) -> None:
        """(Under ``cond``.) A holder let the role go: the reader takes it if replies are
        awaited (or the connection changed), else after a while. Not at once: the hub
        takes it when it next runs, so a caller whose call was just answered and calls
        again meanwhile reads its own reply (no thread hand-off for it)."""
        link = self.engine.link
        hub_reader = link.hub_reader if link is not None else None
        if self.engine.in_flight or link is None or link.frames is not frames:
            if hub_reader is None:
                self._reader_takes()
            else:
                self.reader_wanted = True
                hub_reader.claim_soon()
        elif hub_reader is not None:
            hub_reader.free_since = time.monotonic()

    def release(self, reader: LoopReader) -> None:
        """An event loop's role ends; the reader takes over if anything waits."""
        with self.cond:
            if self.holder is not reader:
                return
            self.holder = None
            reader.frames.incremental = False
            self._freed(reader.frames)

    def _hand_to_loop(self, ws: websocket.WebSocket, frames: FrameReader) -> LoopReader | None:
        """(Under ``cond``, the reader stepping aside.) Give the role to the event loop
        that asked for it, if it still runs and the proxy is not closing."""
        loop, self.loop_wanted = self.loop_wanted, None
        if loop is None or loop.is_closed() or self.engine.closed:
            return None
        reader = self.holder = LoopReader(self.engine, loop, ws, frames)
        frames.incremental = True
        return reader

    @staticmethod
    def _start_on_loop(reader: LoopReader | None) -> None:
        if reader is not None:
            try:
                reader.loop.call_soon_threadsafe(reader.start)
            except RuntimeError:  # the loop closed meanwhile
                reader.revoke()

    # --- the reader (the hub, or a TLS connection's thread) -----------------------------
    def reader_claim(self, hub_reader: HubReader) -> None:
        """(Hub.) Take the role if it is free and the reader is wanted."""
        if self.holder is None and self.reader_wanted:
            with self.cond:
                if self.holder is None and self.reader_wanted and self._current(hub_reader):
                    self._reader_takes()

    def reader_holds(self, frames: FrameReader) -> bool:
        """(Hub.) True if the reader holds the role on the connection *frames* reads."""
        link = self.engine.link
        return self.holder is READER and link is not None and link.frames is frames

    def reader_should_step_aside(self) -> bool:
        """True once a blocking caller has been answered and nothing else is in flight,
        or an event loop wants to read."""
        return self.leader_seen and (self.loop_wanted is not None or not self.engine.in_flight)

    def reader_handled(self, hub_reader: HubReader) -> None:
        """(Hub, after handling what arrived.) Step aside if :meth:`reader_should_step_aside`."""
        if not self.reader_should_step_aside():
            return
        with self.cond:
            if self.holder is not READER:
                return
            self.holder = None
            hub_reader.watch(False)
            handover = self._hand_to_loop(hub_reader.ws, hub_reader.frames)
            if handover is None:
                self._freed(hub_reader.frames)
        self._start_on_loop(handover)

    def reader_tick(self, hub_reader: HubReader, now: float) -> None:
        """(Hub, periodically.) Take the role back once it has been free a while: an idle
        connection is read (keepalive, pushed function lists)."""
        if self.holder is None and now - hub_reader.free_since >= STEP_ASIDE:
            with self.cond:
                if self.holder is None and self._current(hub_reader):
                    self._reader_takes()

    def _current(self, hub_reader: HubReader) -> bool:
        link = self.engine.link
        return link is not None and link.hub_reader is hub_reader

    def thread_takes(self, frames: FrameReader) -> bool:
        """(The TLS reader thread.) Wait until the role is free and wanted, or has been
        free a while, and take it; False if the proxy closes or *frames* is not the
        connection's any more."""
        engine = self.engine
        with self.cond:
            while True:
                link = engine.link
                if engine.closed or link is None or link.frames is not frames:
                    return False
                if self.holder is None and self.reader_wanted:
                    break
                # stepped aside: take the role back when it has been free a while
                if not self.cond.wait(STEP_ASIDE) and self.holder is None:
                    break
            self.holder = READER
            self.reader_wanted = self.leader_seen = False
            return True

    def thread_lets_go(self, ws: websocket.WebSocket, frames: FrameReader, *, stepped_aside: bool) -> None:
        """(The TLS reader thread.) It stops reading: it stepped aside, or the connection ended."""
        handover: LoopReader | None = None
        with self.cond:
            self.holder = None
            if stepped_aside:
                handover = self._hand_to_loop(ws, frames)
            else:
                self.loop_wanted = None
            if handover is None and self.engine.in_flight:  # sent while we stepped aside: read on
                self.reader_wanted = True
        self._start_on_loop(handover)

    # --- event loops --------------------------------------------------------------------
    def read_in_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let *loop* (the running loop, which just sent calls) read their replies itself.

        If the hub holds the role, it hands it over once it has drained what it
        received; on TLS connections (a readable socket may not hold a whole record) the
        reader thread keeps reading.
        """
        holder = self.holder
        if isinstance(holder, LoopReader) and not holder.revoked:
            if holder.loop is loop:
                return
            if holder.loop.is_closed():  # a loop that ended without closing the proxy
                holder.revoke()
        engine = self.engine
        with self.cond:
            holder, link = self.holder, engine.link
            tls = link is None or isinstance(link.ws.sock, ssl.SSLSocket)
            if holder is None and not tls and engine.connected and not engine.closed:
                assert link is not None
                reader = self.holder = LoopReader(engine, loop, link.ws, link.frames)
                link.frames.incremental = True
            else:
                if holder is READER and not tls:
                    self.loop_wanted = loop
                    self.leader_seen = True
                elif holder is None:
                    self._reader_takes()
                return
        reader.start()

    def poll_in_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """(easyrpc.aio, a callback on *loop*, which sent a lone call.) If that call is
        still the only one in flight, poll the socket for up to the busy-poll window and
        read the reply here if it comes: the loop's thread stays awake instead of
        sleeping in the selector (see ``_spin``)."""
        holder = self.holder
        if isinstance(holder, LoopReader) and holder.loop is loop and self.engine.in_flight == 1:
            holder.poll_once()

    def check_loop(self, now: float) -> None:
        """(Dispatcher, every tick.) Revoke the role of an event loop that stopped reading."""
        holder = self.holder
        if isinstance(holder, LoopReader):
            holder.check_stalled(now)

    # --- blocking callers ---------------------------------------------------------------
    def lead(self, call: BlockingCall, deadline: float | None) -> None:
        """Hold the role, if it is free, until *call* settles or *deadline* passes.

        Every wait honours the deadline, in the middle of a big frame too: a reply stuck
        half-way (a stalled link) fails only this call, with CallTimeout, on time. The
        frame is left half-read and the next reader goes on with it; the connection is
        not dropped for a slow reply. Calls behind the stuck frame wait like any call
        for a reply: they fail at their own limit, or with ConnectionLost once keepalive
        finds the server silent (no byte for ``ping_interval + ping_timeout``).
        """
        engine = self.engine
        with self.cond:
            link = engine.link
            if self.holder is not None or link is None or not engine.connected:
                if self.holder is READER:
                    self.leader_seen = True  # it steps aside once it has answered us
                return  # the thread holding the role settles the call; we wait on it
            self.holder = threading.get_ident()
            ws, frames = link.ws, link.frames
            frames.incremental = False  # a big reply is received straight into its buffer
        inbound = engine.inbound
        reason: str | None = None
        clean = True  # only while waiting for data does an interruption lose nothing
        try:
            try:
                while True:
                    clean = False  # parsing (a big payload is received in pop) and handling
                    reason = inbound.handle_buffered(ws, frames, deadline)
                    if reason is not None or call.settled:
                        break
                    clean = True
                    if engine.in_flight == 1:  # the call alone in flight: its reply is due soon
                        frames.busy_poll()
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not frames.wait_readable(remaining):
                            break  # out of time: the caller expires the call
                    frames.fill()
            except (ProtocolError, OSError) as exc:  # OSError includes ConnectionError
                reason = inbound.why_lost(exc)
            except BaseException:
                if not clean:  # a frame may be half read or handled: start afresh on a new connection
                    shutdown(ws)
                raise
            if reason is not None and not engine.closed:
                engine.lost(reason, frames)
        finally:
            with self.cond:
                self.holder = None
                self._freed(frames)

