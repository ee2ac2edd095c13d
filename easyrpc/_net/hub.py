"""One I/O hub per process: a single thread reads every connection it serves.

A thread per connection costs little while it sleeps, but hundreds of reading threads
take turns on the GIL and each wake-up is a context switch: the cost of a call grew with
the number of connections. The hub reads every registered connection from one
readiness-driven loop (``selectors``) and hands each complete message to its connection,
which answers it, hands it to the worker pool, or runs it on the spot (a fast function:
no hand-off at all). Keepalive and other deadlines are swept by the same loop.

Leader/follower. One thread at a time runs the loop: the *leader*. A call it runs on the
spot may turn out slow; the watchdog (:mod:`._inline`) then makes a new thread the leader,
and the old one, once its call has returned, retires (:class:`Retired` unwinds it). Only
the leader touches a connection's reading state, so no connection is ever read by two
threads, and one slow function holds up nobody else.

Writes. The leader never blocks on a socket: a connection it writes for sends what the
socket takes at once and, for a peer that reads slowly, the hub writes the rest when the
socket is writable (:meth:`Hub.want_write`).

The hub's thread runs only while it serves connections: it ends with the last one.
"""

from __future__ import annotations

import logging
import os
import selectors
import threading
import time
from typing import Any, Protocol

from ._inline import InlineWatch
from .process import PerProcess

__all__ = ["Hub", "HubPeer", "Retired", "hub"]

log = logging.getLogger("easyrpc.hub")

_MAX_TICK = 1.0  # the sweep runs at least this often
# After a busy poll saw the last connection's next request, the leader reads it at once,
# skipping the selector (a system call), up to this many times in a row: then the
# selector looks at every other connection and at the wake-up pipe again.
_DIRECT_MAX = 8


class HubPeer(Protocol):
    """What the hub needs of a connection it serves."""

    @property
    def tick(self) -> float: ...  # how often its deadlines need looking at (seconds)

    def fileno(self) -> int: ...
    def on_readable(self) -> None: ...  # receive what the socket has and handle it
    def on_buffered(self) -> None: ...  # handle messages received but not handled yet
    def on_writable(self) -> None: ...  # write what the socket would not take before
    def on_timer(self, now: float) -> None: ...  # keepalive and close deadlines
    def poll_briefly(self) -> bool: ...  # busy-poll its socket for a moment (see _spin)


class Retired(BaseException):
    """Raised in a thread that ran a call on the spot and lost the leader role meanwhile:
    it unwinds to the top of the thread, which ends (a BaseException so that no handler
    of a connection's message takes it for that message's failure)."""


class Hub:
    """Reads every registered connection of the process on one thread at a time."""

    def __init__(self, name: str = "easyrpc-hub") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        # epoll and kqueue apply a change made while the loop waits in them at once
        self._live_changes = isinstance(self._selector, (
            getattr(selectors, "EpollSelector", ()), getattr(selectors, "KqueueSelector", ())))
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._events: dict[HubPeer, int] = {}  # the peers served, and what is watched for each
        self._pending: set[HubPeer] = set()  # peers with messages received but not handled
        self._leader = 0  # thread ident of the loop's runner
        self._threads: list[threading.Thread] = []
        self._count = 0
        self._last: HubPeer | None = None  # the peer that got data last (busy polling)
        self.watch = InlineWatch(self, f"{name}-watchdog")

    # --- membership (any thread) ---------------------------------------------------------
    def add(self, peer: HubPeer, *, read: bool = True) -> None:
        """Serve *peer* from now on; what it has buffered already is handled first. With
        ``read=False`` its socket is not watched until :meth:`interest` says so."""
        with self._lock:
            events = selectors.EVENT_READ if read else 0
            self._events[peer] = events
            if read:
                self._pending.add(peer)
                self._selector.register(peer.fileno(), events, peer)
            if not self._leader:
                self._start_leader()
        self._wake()

    def remove(self, peer: HubPeer) -> None:
        """Stop serving *peer* (idempotent). Its socket must still be open."""
        with self._lock:
            events = self._events.pop(peer, None)
            if events is None:
                return
            self._pending.discard(peer)
            if self._last is peer:
                self._last = None
            if events:
                try:
                    self._selector.unregister(peer.fileno())
                except (KeyError, ValueError, OSError):
                    pass
        self._wake()

    def interest(self, peer: HubPeer, *, read: bool, write: bool) -> None:
        """Watch *peer*'s socket for read and/or write readiness (a peer whose replies
        pile up stops being read; one with bytes left unsent is watched for writing).
        Watched for neither, it stays served: its timers still run."""
        events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
        with self._lock:
            old = self._events.get(peer)
            if old is None or old == events:
                return
            self._events[peer] = events
            if not old:
                self._selector.register(peer.fileno(), events, peer)
            elif events:
                self._selector.modify(peer.fileno(), events, peer)
            else:
                self._selector.unregister(peer.fileno())
        if not self._live_changes:
            self._wake()  # a poll or select selector sees the change on its next call only

    def pend(self, peer: HubPeer, *, wake: bool = False) -> None:
        """*peer* has messages received but not yet handled (the leader handles them;
        *wake* it if this thread is not the leader)."""
        with self._lock:
            if peer not in self._events:
                return
            self._pending.add(peer)
        if wake:
            self._wake()

    @property
    def peer_count(self) -> int:
        with self._lock:
            return len(self._events)

    @property
    def leaders_started(self) -> int:
        """How many leader threads this hub has started (a start that failed counts too),
        read-only: it grows each time the watchdog promotes a new leader past one held by
        a long call. For monitoring and tests."""
        with self._lock:
            return self._count

    def is_leader(self) -> bool:
        """True on the thread that runs the loop now."""
        return self._leader == threading.get_ident()

    def join_if_idle(self, timeout: float) -> None:
        """If the hub serves no connection, join its threads (they are ending), each for
        up to *timeout*; else return at once (they serve others)."""
        with self._lock:
            if self._events:
                return
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self.watch.join(timeout)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]

    # --- the leader role ---------------------------------------------------------------
    def _start_leader(self) -> None:
        """(Under the lock.) Start a thread that takes the leader role; if no thread can
        be had (RuntimeError, as under thread exhaustion), the role stays where it was."""
        self._count += 1
        thread = threading.Thread(target=self._run, name=f"{self._name}-{self._count}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        previous, self._leader = self._leader, -1  # taken: the new thread sets its ident first thing
        try:
            thread.start()
        except BaseException:
            self._leader = previous
            self._threads.remove(thread)
            raise

    def promote(self, since: float) -> None:
        """(Watchdog.) The leader's call started at *since* runs long: a new thread leads.
        If none can be started, the old leader goes on once its call returns."""
        with self._lock:
            if self.watch.since != since or not self._events:
                return
            self.watch.since = None  # looked at once: the old leader's call is not the loop's business
            try:
                self._start_leader()
            except RuntimeError:
                log.exception("no thread for a new hub leader: every connection waits for a long call")
                return
        self._wake()

    def run_inline(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the leader, under the watchdog; :class:`Retired` after it
        if another thread took over the loop meanwhile."""
        me = threading.get_ident()
        with self._lock:
            self.watch.since = time.monotonic()
        self.watch.started()
        try:
            fn(*args)
        finally:
            with self._lock:
                self.watch.since = None
                retired = self._leader != me
        if retired:
            raise Retired

    # --- the loop ----------------------------------------------------------------------
    def _run(self) -> None:
        me = threading.get_ident()
        with self._lock:
            self._leader = me
        try:
            self._loop(me)
        except Retired:
            pass
        except Exception:  # noqa: BLE001 - top of a hub thread: log it; a new leader takes over
            log.exception("the hub's loop failed")
        finally:
            with self._lock:
                if self._leader == me:
                    self._leader = 0
                    if self._events:  # ended by surprise: never leave peers unread
                        self._start_leader()

    def _loop(self, me: int) -> None:
        next_sweep = 0.0
        direct = 0  # reads in a row after a busy poll, without the selector
        while True:
            with self._lock:
                if self._leader != me:
                    return
                if not self._events:
                    self._leader = 0
                    return
                pending = self._pending
                if pending:
                    self._pending = set()
            for peer in pending:
                self._last = peer
                _safely(peer.on_buffered)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + self._sweep(now)
            timeout = 0.0 if self._pending else max(0.0, next_sweep - now)
            last = self._last
            if timeout and last is not None:  # a sequential caller's next request is due soon
                try:  # (as _safely does, inline: this runs once a call)
                    if last.poll_briefly() and direct < _DIRECT_MAX:
                        direct += 1  # it came: read it without asking the selector first
                        last.on_readable()
                        continue
                except Exception:  # noqa: BLE001 - top of the hub loop for one event: log, go on
                    log.exception("the hub's handler of %r failed", last)
            direct = 0
            for key, mask in self._selector.select(timeout):
                peer = key.data
                if peer is None:
                    self._drain_wake()
                    continue
                if mask & selectors.EVENT_WRITE:
                    _safely(peer.on_writable)
                if mask & selectors.EVENT_READ:
                    self._last = peer
                    _safely(peer.on_readable)

    def _sweep(self, now: float) -> float:
        """Run every peer's timers; the seconds until the next sweep."""
        with self._lock:
            peers = list(self._events)
        tick = _MAX_TICK
        for peer in peers:
            _safely(peer.on_timer, now)
            tick = min(tick, peer.tick)
        return tick

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full: the loop is awake anyway

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass


def _safely(method: Any, *args: Any) -> None:
    """Run a peer's handler; a bug in one connection's handling must not stop the loop
    that reads every other (peers handle their own errors; this only logs)."""
    try:
        method(*args)
    except Exception:  # noqa: BLE001 - top of the hub loop for one event: log, go on
        log.exception("the hub's handler %r failed", method)


_hub = PerProcess(Hub)


def hub() -> Hub:
    """The process's hub (created on first use)."""
    return _hub.get()
