"""Waking a sleeping thread cheaply: one waker per thread, reused by all its calls.

A blocking call's thread sleeps until the thread that reads its reply wakes it. Releasing
a ``threading.Lock`` that a thread sleeps on makes the futex system call that wakes it
while still holding the GIL; on a virtual machine that wake can take 10 µs or more, and
no other Python thread runs meanwhile. With 8 threads sharing one proxy, py-spy put a
fifth of the client's GIL-holding time on that one ``release()``.

On Linux each thread gets an ``eventfd``: ``os.eventfd_write`` and ``os.eventfd_read``
release the GIL around their system calls, so the wake no longer stalls every other
thread. Eight threads woken in turn by one replier (``benchmarks/wakeups.py``) run 1.94x
as many calls per second with it as with a lock per call; 8 threads sharing one proxy,
1.18x. A lone thread woken by another is slower with it (0.82x), but a lone blocking
caller mostly reads its own reply and does not sleep here. Elsewhere, or when the process
is out of file descriptors, a raw lock stands in.

A waker is a signal, not a count: :meth:`ThreadWaker.sleep` may return without a wake
of its own (a wake meant for an earlier call that the thread stopped waiting for, say,
on Ctrl-C), so a sleeper checks its condition and sleeps again.
"""

from __future__ import annotations

import math
import os
import select
import threading

__all__ = ["ThreadWaker", "close_fd", "thread_waker"]

_EVENTFD = hasattr(os, "eventfd") and hasattr(select, "poll")


class ThreadWaker:
    """Lets other threads wake the one thread that sleeps on it.

    Only its own thread calls :meth:`sleep`; any thread may call :meth:`wake`. The
    eventfd is closed when the last reference goes: a call still pending when its thread
    ended keeps it open, so a late wake never writes to a reused descriptor.
    """

    __slots__ = ("_fd", "_poll", "_lock", "__weakref__")

    def __init__(self) -> None:
        self._fd = -1
        self._poll: select.poll | None = None
        self._lock: threading.Lock | None = None
        if _EVENTFD:
            try:
                self._fd = os.eventfd(0)  # close-on-exec
            except OSError:  # out of descriptors (many threads, a low ulimit): a lock will do
                self._fd = -1
        if self._fd < 0:
            self._lock = threading.Lock()
            self._lock.acquire()  # held: no wake pending

    def wake(self) -> None:
        """Wake the thread if it sleeps, else make its next :meth:`sleep` return at once."""
        if self._lock is None:
            os.eventfd_write(self._fd, 1)
        else:
            try:
                self._lock.release()
            except RuntimeError:
                pass  # a wake is pending already

    def sleep(self, timeout: float | None) -> None:
        """Sleep until woken, at most *timeout* s (None: no limit); may return early."""
        if self._lock is not None:
            self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout))
            return
        if timeout is not None:
            if self._poll is None:
                self._poll = select.poll()
                self._poll.register(self._fd, select.POLLIN)
            if not self._poll.poll(max(0, math.ceil(timeout * 1000))):
                return
        os.eventfd_read(self._fd)  # readable, or no limit: consumes every pending wake

    def __del__(self) -> None:
        self._fd = close_fd(self._fd)


def close_fd(fd: int) -> int:
    """Close *fd* if it is one (>= 0), ignoring errors; -1, for the caller to store."""
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    return -1


_local = threading.local()


def thread_waker() -> ThreadWaker:
    """The calling thread's waker (made on first use)."""
    try:
        waker: ThreadWaker = _local.waker
    except AttributeError:
        waker = _local.waker = ThreadWaker()
    return waker


def _forget_after_fork() -> None:
    # A forked child shares its parent's eventfds: a read in one would steal the other's
    # wake. The child's threads start afresh.
    global _local
    _local = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
