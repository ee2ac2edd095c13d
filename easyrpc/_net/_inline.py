"""The watchdog of calls the hub's leader runs on the spot.

The hub's leader runs a call of a plain function itself when that saves a hand-off (a
sequential caller, or a function that has been fast): no worker wakes, no thread switch.
A call that runs long must not keep every other connection waiting: this thread wakes
when the leader's call reaches ``INLINE_LIMIT`` and makes a new thread the leader
(:meth:`Hub.promote`). It runs only while calls run on the spot: after ``_WATCH_IDLE``
without one it ends, and the next one starts it again.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["INLINE_LIMIT", "InlineWatch"]

INLINE_LIMIT = 0.002  # a call run on the spot for longer hands the loop to a new leader
_WATCH_IDLE = 0.05  # the watchdog ends after this long without a call run on the spot
WATCH_MIN_SLEEP = INLINE_LIMIT / 2  # it never looks more often than this


class InlineWatch:
    """Watches the one call the hub's leader may be running on the spot."""

    def __init__(self, hub: Hub, name: str) -> None:
        self._hub = hub
        self._name = name
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: threading.Thread | None = None
        self._begun = 0
        # When the leader's call began; set and cleared by the hub under its own lock.
        self.since: float | None = None
        self.ticks = 0  # how many times it has looked (for tests and benchmarks)

    @property
    def idle(self) -> bool:
        """True while no watchdog thread runs."""
        return self._thread is None

    def started(self) -> None:
        """The leader has just begun a call on the spot: make sure the watchdog runs."""
        with self._lock:
            self._begun += 1
            if self._thread is None:
                self._stop.clear()
                self._thread = self._last = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        begun, begun_at = -1, time.monotonic()
        wait = INLINE_LIMIT
        while not self._stop.wait(wait):
            now = time.monotonic()
            since = self.since
            self.ticks += 1
            if since is not None and now - since >= INLINE_LIMIT:
                self._hub.promote(since)
                wait = INLINE_LIMIT
            else:
                wait = INLINE_LIMIT if since is None else since + INLINE_LIMIT - now
            with self._lock:
                if self._begun != begun:
                    begun, begun_at = self._begun, now
                if since is None and now - begun_at >= _WATCH_IDLE:
                    self._thread = None  # the next call on the spot starts another
                    return
            # measured from this look (starting a leader can take a while)
            wait = max(now + wait - time.monotonic(), WATCH_MIN_SLEEP)

    def join(self, timeout: float) -> None:
        """Join the watchdog thread if it has ended or ends within *timeout*."""
        with self._lock:
            thread = self._last
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
