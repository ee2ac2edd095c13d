"""How the client meets asyncio: settling awaitables, and an event loop that reads.

A call made from ``easyrpc.aio`` is settled on its loop: through the loop's inbox (one
``call_soon_threadsafe`` per burst of replies), or on the loop itself when the loop holds
the reading role (:class:`LoopReader`: the loop reads the socket when it is readable,
so a reply settles its awaitable with no thread hand-off at all).
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import websocket

from .._transport import FrameReader
from .._wake import close_fd
from ..exceptions import ProtocolError
from .sock import shutdown, sock_of

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["LOOP_STALL", "LoopInbox", "LoopReader", "bridge_to_loop", "loop_inbox", "settle_in_loop"]

LOOP_STALL = 0.25  # a loop that leaves readable data this long loses the reading role


def bridge_to_loop(fut: Future[Any], loop: Any, *, cancel_back: bool = True) -> Any:
    """An asyncio future on *loop* that the engine settles together with *fut*.

    ``asyncio.wrap_future`` would attach a callback to *fut*, sending its settlement
    through the dispatcher thread; a bridge is settled straight from whichever engine
    thread settles *fut*, with ``call_soon_threadsafe`` (no user code runs there).
    Cancelling the returned future cancels *fut* (and so the call on the server); with
    ``cancel_back=False`` the caller does that itself where it awaits, which spares the
    loop a callback per settlement.
    """
    afut = loop.create_future()
    bridge = (loop_inbox(loop), afut)
    fut.loop_bridge = bridge  # type: ignore[attr-defined]
    if fut.done():  # settled before the bridge existed
        if fut.cancelled():
            afut.cancel()
        else:
            settle_in_loop(bridge, None if fut.exception() else fut.result(), fut.exception())

    if cancel_back:
        def on_done(done: Any) -> None:
            if done.cancelled():
                fut.cancel()

        afut.add_done_callback(on_done)
    return afut


def settle_in_loop(bridge: tuple[LoopInbox, Any], value: Any, exc: BaseException | None) -> None:
    inbox, afut = bridge
    inbox.put(afut, value, exc)


class LoopInbox:
    """Settlements bound for one event loop, delivered in batches.

    ``call_soon_threadsafe`` writes to the loop's self-pipe on every call; when replies
    arrive in bursts (64 calls in flight), one wake-up settles them all.
    """

    def __init__(self, loop: Any) -> None:
        self.loop = weakref.ref(loop)  # the inbox lives in a weak mapping keyed by the loop
        self.lock = threading.Lock()
        self.items: list[tuple[Any, Any, BaseException | None]] = []
        self.scheduled = False

    def put(self, afut: Any, value: Any, exc: BaseException | None) -> None:
        if asyncio._get_running_loop() is self.loop():  # on the loop itself: settle now
            if not afut.done():
                if exc is not None:
                    afut.set_exception(exc)
                else:
                    afut.set_result(value)
            return
        with self.lock:
            self.items.append((afut, value, exc))
            if self.scheduled:
                return
            self.scheduled = True
        loop = self.loop()
        try:
            if loop is None:
                raise RuntimeError("the event loop is gone")
            loop.call_soon_threadsafe(self.drain)
        except RuntimeError:  # the event loop is closed: nobody awaits any more
            with self.lock:
                self.items.clear()
                self.scheduled = False

    def drain(self) -> None:
        with self.lock:
            items, self.items = self.items, []
            self.scheduled = False
        for afut, value, exc in items:
            if afut.done():
                continue
            if exc is not None:
                afut.set_exception(exc)
            else:
                afut.set_result(value)


_inboxes: weakref.WeakKeyDictionary[Any, LoopInbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


_last_inbox: LoopInbox | None = None  # the inbox asked for last: nearly always the one wanted


def loop_inbox(loop: Any) -> LoopInbox:
    """*loop*'s inbox (one per loop, made on first use)."""
    global _last_inbox
    inbox = _last_inbox
    if inbox is not None and inbox.loop() is loop:
        return inbox
    with _inboxes_lock:
        inbox = _inboxes.get(loop)
        if inbox is None:
            inbox = _inboxes[loop] = LoopInbox(loop)
        _last_inbox = inbox
        return inbox



class LoopReader:
    """The reading role held by an event loop: the loop reads the socket when readable.

    It watches a duplicate of the socket's descriptor, so the registration can never
    outlive the descriptor it names (the engine may close the socket from any thread);
    the duplicate is closed when the loop lets go. ``lock`` is held while the loop reads:
    the dispatcher takes it to revoke the role of a loop that stopped reading.
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, ws: websocket.WebSocket,
                 frames: FrameReader) -> None:
        self.engine = engine
        self.loop = loop
        self.ws = ws
        self.frames = frames
        self.lock = threading.Lock()
        self.revoked = False
        self.last_read = time.monotonic()
        self.stalled_since: float | None = None  # the dispatcher saw replies waiting unread
        self._fd = -1

    def start(self) -> None:
        """Register with the loop (on the loop's thread)."""
        with self.lock:
            if self.revoked:
                return
            try:
                self._fd = os.dup(sock_of(self.ws).fileno())
                self.loop.add_reader(self._fd, self.on_readable)
            except (OSError, RuntimeError):
                self.revoked = True
                self._close_fd()
        if self.revoked:
            self.engine.role.release(self)

    def on_readable(self) -> None:
        """Read what the socket has and handle it (on the loop, when it is readable)."""
        engine, frames = self.engine, self.frames
        reason: str | None = None
        with self.lock:
            if self.revoked:
                self.stop()
                return
            try:
                # What the loop saw may be stale: poll_in_loop, run earlier in the same
                # turn, may have read it. One recv, and only if it cannot block.
                if not frames.wait_readable(0):
                    return
                frames.fill()
                reason = engine.inbound.handle_buffered(self.ws, frames)
            except (ProtocolError, OSError) as exc:  # OSError includes ConnectionError
                reason = engine.inbound.why_lost(exc)
            except BaseException:  # Ctrl-C on the loop: a frame may be half handled
                shutdown(self.ws)
                raise
            self.last_read = time.monotonic()
            if reason is None:
                return  # keep reading, idle or not (the dispatcher revokes a stalled loop)
            self.revoked = True
            self.stop()
        if not engine.closed:
            engine.lost(reason, frames)
        engine.role.release(self)

    def poll_once(self) -> None:
        """(On the loop, its lone call just sent.) Poll the socket for up to the busy-poll
        window and read the reply here if it comes (see ``_spin``)."""
        # Under the lock: once revoked, the reader thread polls the same descriptor
        # (one poll object per connection, which two threads must not use at once).
        if self.revoked or not self.lock.acquire(blocking=False):
            return
        try:
            readable = not self.revoked and self.frames.busy_poll()
        except OSError:  # the socket was closed meanwhile: the connection's end is reported elsewhere
            return
        finally:
            self.lock.release()
        if readable:
            self.on_readable()

    def check_stalled(self, now: float) -> None:
        """(Dispatcher, every tick.) Revoke the role if the loop stopped reading: replies
        wait unread. Once is a reply that just arrived; twice (a tick apart, the loop
        not having read meanwhile) a loop blocked or stopped."""
        if not self.revoked and now - self.last_read > LOOP_STALL and _readable_now(self.ws):
            if self.stalled_since is not None and self.last_read < self.stalled_since:
                if self.revoke(wait=False):  # busy reading after all: not stalled
                    self.stalled_since = None
            else:
                self.stalled_since = now
        else:
            self.stalled_since = None

    def stop(self) -> None:
        """Unregister (on the loop's thread, under ``lock``)."""
        if self._fd >= 0:
            try:
                self.loop.remove_reader(self._fd)
            except (RuntimeError, ValueError, OSError):
                pass  # the loop is closed
            self._close_fd()

    def _close_fd(self) -> None:
        self._fd = close_fd(self._fd)

    def revoke(self, *, wait: bool = True) -> bool:
        """Take the role away (from another thread); the loop unregisters when it runs
        next. With ``wait=False``, give up (False) if the loop is busy reading."""
        if not self.lock.acquire(timeout=-1 if wait else 0):
            return False
        try:
            self.revoked = True
            try:
                self.loop.call_soon_threadsafe(self._stop_on_loop)
            except RuntimeError:  # the loop is closed: it will never run again
                self._close_fd()
        finally:
            self.lock.release()
        self.engine.role.release(self)
        return True

    def _stop_on_loop(self) -> None:
        with self.lock:
            self.stop()


def _readable_now(ws: websocket.WebSocket) -> bool:
    sock = ws.sock
    if sock is None:
        return False
    poller = select.poll()  # its own poller: the reading thread may be polling too
    try:
        poller.register(sock, select.POLLIN)
    except (OSError, ValueError):
        return False
    return bool(poller.poll(0))
