"""A proxy's ``easyrpc-reader`` thread: it reads a TLS connection, and reconnects.

A plain connection is read by the process's hub; a TLS connection cannot be (a partial
TLS record would block it), so this thread reads it, holding the reading role as the
hub does. The same thread reconnects a proxy whose connection dropped, with backoff,
and ends once a plain connection is up again. It runs only while it has such work.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import TYPE_CHECKING

import websocket

from .._transport import FrameReader
from ..exceptions import AuthenticationError, ProtocolError
from .loops import LoopReader
from .roles import READER, STEP_ASIDE

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["ReaderThread"]

log = logging.getLogger("easyrpc.proxy")


class ReaderThread:
    """The reader thread of one engine (started on demand, joined on close)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._thread: threading.Thread | None = None
        self._running = False  # (under the engine's lock) it has work; it ends when not

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def start(self) -> None:
        """Start the reader thread unless it runs: it reads a TLS connection or reconnects."""
        engine = self.engine
        with engine._lock:
            if self._running or engine._closing.is_set():
                return
            self._running = True
            self._thread = thread = threading.Thread(target=self._run, name="easyrpc-reader", daemon=True)
        thread.start()

    def _run(self) -> None:
        """The reader thread: reads a TLS connection, or reconnects; it ends once a plain
        connection is up (the hub reads it) or the proxy gives up."""
        engine = self.engine
        try:
            while not engine._closing.is_set():
                with engine._lock:
                    ws, frames = engine._ws, engine._frames
                    if ws is not None and engine._hub_reader is not None:
                        self._running = False  # the hub reads it; lost() starts us again
                        return
                if ws is not None and frames is not None:
                    reason = self._read_connection(ws, frames)
                    if engine._closing.is_set():
                        return
                    if reason is not None:  # else a blocking caller noticed the end
                        engine.lost(reason, frames)
                if not engine.reconnect or not self._reconnect():
                    return
        except Exception:  # top of the reader thread: log it and fail what waits
            log.exception("easyrpc reader thread failed")
            engine.lost("internal error in the reader thread", None)
        finally:
            with engine._lock:
                if self._thread is threading.current_thread():
                    self._running = False

    def _read_connection(self, ws: websocket.WebSocket, frames: FrameReader) -> str | None:
        """Read and handle frames while holding the reading role, until the connection
        ends; return why it ended (None if a blocking caller found the end)."""
        engine = self.engine
        while True:
            with engine._role_cond:
                while True:
                    if engine._closing.is_set() or engine._frames is not frames:
                        return None
                    if engine._role is None and engine._reader_wanted:
                        break
                    # stepped aside: take the role back when it has been free a while
                    if not engine._role_cond.wait(STEP_ASIDE) and engine._role is None:
                        break
                engine._role = READER
                engine._reader_wanted = engine._leader_seen = False
            handover: LoopReader | None = None
            reason: str | None = None
            stepped_aside = False  # False too if _read_frames raised (an internal error)
            try:
                reason = self._read_frames(ws, frames)
                stepped_aside = reason is None
            finally:
                with engine._role_cond:
                    engine._role = None
                    loop, engine._loop_wanted = engine._loop_wanted, None
                    if loop is not None and stepped_aside and not loop.is_closed() and not engine._closing.is_set():
                        handover = engine._role = LoopReader(engine, loop, ws, frames)
                        frames.incremental = True
                    elif len(engine._pending):  # sent while we stepped aside: read on
                        engine._reader_wanted = True
            if handover is not None:
                try:
                    handover.loop.call_soon_threadsafe(handover.start)
                except RuntimeError:  # the loop closed meanwhile
                    handover.revoke()
            if reason is not None:
                return reason

    def _read_frames(self, ws: websocket.WebSocket, frames: FrameReader) -> str | None:
        """Handle frames until the connection ends (its reason) or, once a blocking
        caller has been answered and nothing else is in flight, None (step aside)."""
        engine = self.engine
        try:
            while True:
                reason = engine.handle_buffered(ws, frames)
                if reason is not None:
                    return reason
                if engine._leader_seen and (engine._loop_wanted is not None or not len(engine._pending)):
                    return None
                frames.fill()
        except (ProtocolError, OSError) as exc:  # OSError includes ConnectionError
            return engine.why_lost(exc)

    def _reconnect(self) -> bool:
        engine = self.engine
        delay = 0.05
        while not engine._closing.is_set():
            # full jitter: spread a crowd of proxies reconnecting to one server
            if engine._closing.wait(random.uniform(delay / 2, delay)):
                return False
            first = not engine._ever_connected
            try:
                engine._connect_once()
            except AuthenticationError as exc:
                log.error("reconnecting to %s: %s", engine.url, exc)
            except ConnectionError as exc:
                log.info("reconnecting to %s failed: %s", engine.url, exc)
            else:
                log.info("%s %s", "connected to" if first else "reconnected to", engine.url)
                return True
            delay = min(delay * 2, engine.options.max_backoff)
        return False
