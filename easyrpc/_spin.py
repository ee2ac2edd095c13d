"""Busy polling: look at a socket for a moment before sleeping on it.

A lone call's reply (and a sequential caller's next request) usually arrives within a
few tens of microseconds. A thread that sleeps for it leaves its CPU idle, and on a
virtual machine an idle CPU halts: waking it again goes through the hypervisor, a
large part of a sequential call's time there. Polling the socket (``poll`` with no timeout, which releases the GIL each time)
for up to a short *window* first keeps the CPU awake; if nothing comes, the thread
sleeps as before. This is the user-space form of Linux's ``busy_poll`` and of KVM's
halt polling, and backs off the same way: a wait that polled its whole window in vain
makes the next waits skip polling (1, 2, 4 ... up to ``_MAX_SKIP`` of them) until one
polls successfully again, so a connection whose replies take longer than the window
loses at most one window per ``_MAX_SKIP`` waits.

Only one thread per process polls at a time (``_SLOT``): two would only fight over
the GIL. A thread polls only for the connection of the process that received data
last, and not while two connections receive data close together (``_SHARED``): the
thread polling for one would hold the GIL while the other's data waits. Callers poll
only where nothing else of theirs could use the time (a proxy's only call in flight;
a server connection with no call running).
"""

from __future__ import annotations

import math
import os
import select
import threading
import time

__all__ = ["DEFAULT_BUSY_POLL", "BusyPoll", "busy_policy", "check_window", "forget_traffic"]

DEFAULT_BUSY_POLL = 100e-6  # seconds

_MAX_SKIP = 128  # waits skipped after repeated misses (one window lost per 129 at most)
_MAX_WINDOW = 0.01  # longer than a scheduler tick: that is sleeping, not polling
_SLOT = threading.Lock()  # held by the one thread of the process that is polling
_SHARED = 0.002  # s: connections receiving data this close together share the process
_last: BusyPoll | None = None  # the connection that received data last, in this process
_last_at = -math.inf  # when (time.perf_counter)
_shared_until = 0.0  # no polling before this: several connections are busy


def check_window(window: float) -> float:
    """*window* (seconds) if it is a valid busy-poll window; ValueError if not."""
    if not isinstance(window, (int, float)) or isinstance(window, bool) or not math.isfinite(window) \
            or not 0 <= window <= _MAX_WINDOW:
        raise ValueError(f"busy_poll must be between 0 and {_MAX_WINDOW} seconds, not {window!r}")
    return float(window)


def busy_policy(window: float) -> BusyPoll | None:
    """A connection's policy for a *window* of seconds; None for 0 (it never polls,
    and its traffic does not keep other connections from polling)."""
    return BusyPoll(window) if check_window(window) else None


def forget_traffic() -> None:
    """Forget which connection of this process received data last, and when: as in a
    process none of whose connections has received any yet (no pause in force).

    For tests: whether a wait polls depends on every connection of the process, and
    connections other tests left open may have received data (a keepalive) meanwhile.
    """
    global _last, _last_at, _shared_until
    _last, _last_at, _shared_until = None, -math.inf, 0.0


class BusyPoll:
    """The busy-poll policy of one connection: its window and its back-off state.

    Not locked: one thread at a time reads a connection, and a lost update of the
    counters only changes how soon the next wait polls.
    """

    __slots__ = ("window", "hits", "misses", "_skip", "_backoff")

    def __init__(self, window: float) -> None:
        self.window = check_window(window)
        self.hits = 0  # waits that polled and saw data
        self.misses = 0  # waits that polled their whole window in vain
        self._skip = 0  # waits left that go straight to sleep
        self._backoff = 0  # how many the next miss makes skip

    @property
    def skip(self) -> int:
        """Waits left that go straight to sleep (the back-off after a miss), read-only:
        for tests and diagnostics."""
        return self._skip

    @property
    def backoff(self) -> int:
        """How many waits the last miss made skip (each miss doubles it, up to a cap; a
        hit resets it to 0), read-only: for tests and diagnostics."""
        return self._backoff

    def mark(self) -> None:
        """Data arrived on this connection: it is the last of the process to get any. If
        another got some just before, no connection polls for a while: a thread polling
        for one connection would hold the GIL while the other's requests wait for it."""
        global _last, _last_at, _shared_until
        now = time.perf_counter()
        if _last is not self:
            if now - _last_at < _SHARED:
                _shared_until = now + _SHARED
            _last = self
        _last_at = now

    def poll(self, poller: select.poll) -> bool:
        """Poll *poller* for up to the window; True once it has an event, False if it had
        none (or this wait does not poll: it should sleep as usual)."""
        if _last is not self:
            return False  # another connection got data since: the CPU has better things to do
        if self._skip:
            self._skip -= 1
            return False
        clock = time.perf_counter
        start = clock()
        if start < _shared_until or not self.window or not _SLOT.acquire(blocking=False):
            return False
        try:
            ready = poller.poll
            end = start + self.window
            while not ready(0):
                if clock() >= end:
                    self.misses += 1
                    self._backoff = min(_MAX_SKIP, self._backoff * 2 or 1)
                    self._skip = self._backoff
                    return False
        finally:
            _SLOT.release()
        self.hits += 1
        self._backoff = 0
        return True


def _free_slot_after_fork() -> None:
    global _SLOT
    _SLOT = threading.Lock()  # a thread that held it in the parent does not exist here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_free_slot_after_fork)
