"""A proxy's ``easyrpc-reader`` thread: it reads a TLS connection, and reconnects.

A plain connection is read by the process's hub; a TLS connection cannot be (a partial
TLS record would block it), so this thread reads it, holding the reading role as the
hub does (:mod:`.role`). The same thread reconnects a proxy whose connection dropped,
with backoff, and ends once a plain connection is up again. It runs only while it has
such work.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import TYPE_CHECKING

import websocket

from .._transport import FrameReader
from ..exceptions import AuthenticationError, ProtocolError

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["ReaderThread"]

log = logging.getLogger("easyrpc.proxy")


class ReaderThread:
    """The reader thread of one engine (started on demand, joined on close)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set on close: a reconnect backoff ends at once
        self._thread: threading.Thread | None = None
        self._running = False  # (under _lock) it has work; it ends when not

    def join(self, timeout: float) -> None:
        """Stop reconnecting and wait for the thread (the proxy closes)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def start(self) -> None:
        """Start the reader thread unless it runs: it reads a TLS connection or reconnects."""
        with self._lock:
            if self._running or self.engine.closed:
                return
            self._running = True
            self._thread = thread = threading.Thread(target=self._run, name="easyrpc-reader", daemon=True)
        thread.start()

    def _run(self) -> None:
        """The reader thread: reads a TLS connection, or reconnects; it ends once a plain
        connection is up (the hub reads it) or the proxy gives up."""
        engine = self.engine
        try:
            while not engine.closed:
                with self._lock:
                    link = engine.link
                    if link is not None and link.hub_reader is not None:
                        self._running = False  # the hub reads it; lost() starts us again
                        return
                if link is not None:
                    reason = self._read_connection(link.ws, link.frames)
                    if engine.closed:
                        return
                    if reason is not None:  # else a blocking caller noticed the end
                        engine.lost(reason, link.frames)
                if not engine.options.reconnect or not self._reconnect():
                    return
        except Exception:  # top of the reader thread: log it and fail what waits
            log.exception("easyrpc reader thread failed")
            engine.lost("internal error in the reader thread", None)
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._running = False

    def _read_connection(self, ws: websocket.WebSocket, frames: FrameReader) -> str | None:
        """Read and handle frames while holding the reading role, until the connection
        ends; return why it ended (None if a blocking caller found the end)."""
        role = self.engine.role
        while role.thread_takes(frames):
            reason: str | None = None
            stepped_aside = False  # False too if _read_frames raised (an internal error)
            try:
                reason = self._read_frames(ws, frames)
                stepped_aside = reason is None
            finally:
                role.thread_lets_go(ws, frames, stepped_aside=stepped_aside)
            if reason is not None:
                return reason
        return None

    def _read_frames(self, ws: websocket.WebSocket, frames: FrameReader) -> str | None:
        """Handle frames until the connection ends (its reason) or the reader should step
        aside (None)."""
        engine = self.engine
        inbound, role = engine.inbound, engine.role
        try:
            while True:
                reason = inbound.handle_buffered(ws, frames)
                if reason is not None:
                    return reason
                if role.reader_should_step_aside():
                    return None
                frames.fill()
        except (ProtocolError, OSError) as exc:  # OSError includes ConnectionError
            return inbound.why_lost(exc)

    def _reconnect(self) -> bool:
        engine = self.engine
        delay = 0.05
        while not engine.closed:
            # full jitter: spread a crowd of proxies reconnecting to one server
            if self._stop.wait(random.uniform(delay / 2, delay)):
                return False
            first = not engine.ever_connected
            try:
                engine.connect_once()
            except AuthenticationError as exc:
                log.error("reconnecting to %s: %s", engine.url, exc)
            except ConnectionError as exc:
                log.info("reconnecting to %s failed: %s", engine.url, exc)
            else:
                log.info("%s %s", "connected to" if first else "reconnected to", engine.url)
                return True
            delay = min(delay * 2, engine.options.max_backoff)
        return False
