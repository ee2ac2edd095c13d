"""Waking a sleeping thread cheaply: one waker per thread, reused by all its calls.

A blocking call's thread sleeps until the thread that reads its reply wakes it. Releasing
a ``threading.Lock`` that a thread sleeps on makes the futex system call that wakes it
while still holding the GIL; on a virtual machine that wake can take long, and
no other Python thread runs meanwhile. With 8 threads sharing one proxy, py-spy put a
fifth of the client's GIL-holding time on that one ``release()``.

Each thread gets a pipe: ``os.write`` and ``os.read`` release the GIL around their
system calls, so the wake no longer stalls every other thread. A pipe rather than an
``eventfd``: the kernel wakes a pipe's reader as a *sync* wake (the waker says it will
sleep soon), which puts the woken thread on the waker's CPU when that CPU has nothing
else to run. A proxy's threads then stay together instead of waking on the other CPU
only to find the GIL held there (the A/B figures are in the commit that made the
waker a pipe, c030177). A lone blocking caller mostly reads its
own reply and does not sleep here. Where ``poll`` is missing, or the process is out of
file descriptors, a raw lock stands in.

A waker is a signal, not a count: a wake may be meant for an earlier call that the thread
stopped waiting for (on Ctrl-C, say), so :meth:`ThreadWaker.wait_for` checks its
condition and sleeps again.
"""

from __future__ import annotations

import math
import os
import select
import threading
import time
from typing import Protocol

__all__ = ["Delivered", "ThreadWaker", "close_fd", "thread_waker"]

_PIPE = os.name == "posix" and hasattr(select, "poll")
_POLL_MAX_MS = 2**31 - 1  # poll() takes an int of milliseconds
_DRAIN = 64  # bytes one read takes: every wake pending (each is one byte, written asleep only)


class Delivered(Protocol):
    """What a thread waits for: ``delivered`` turns true once (then stays true)."""

    delivered: bool


class ThreadWaker:
    """Lets other threads wake the one thread that sleeps on it.

    Only its own thread calls :meth:`wait_for`; any thread may call :meth:`wake`. The
    pipe is closed when the last reference goes: a call still pending when its thread
    ended keeps it open, so a late wake never writes to a reused descriptor.

    With *pipe* false it sleeps on a lock, as it does where the platform has no ``poll``
    or the process is out of descriptors.
    """

    __slots__ = ("_fd", "_wfd", "_poll", "_lock", "_depth", "_sleeping", "__weakref__")

    def __init__(self, pipe: bool = True) -> None:
        self._fd = self._wfd = -1  # the pipe's ends: the thread reads, wakers write
        self._poll: select.poll | None = None
        self._lock: threading.Lock | None = None
        self._depth = 0  # waits in progress on this thread (more than one: a signal handler's)
        self._sleeping = False  # the thread may be asleep on the pipe: wakes must write
        if _PIPE and pipe:
            try:
                self._fd, self._wfd = os.pipe()  # close-on-exec
                os.set_blocking(self._wfd, False)  # a full pipe holds wakes enough
            except OSError:  # out of descriptors (many threads, a low ulimit): a lock will do
                self._close()
        if self._fd < 0:
            self._lock = threading.Lock()
            self._lock.acquire()  # held: no wake pending

    @property
    def kind(self) -> str:
        """What the thread sleeps on: ``"pipe"`` or ``"lock"`` (read-only, for tests and
        diagnostics)."""
        return "lock" if self._lock is not None else "pipe"

    @property
    def descriptors(self) -> tuple[int, int]:
        """The pipe's read and write ends; ``(-1, -1)`` for a lock, or once closed
        (read-only: for tests that check what the waker leaves open, and diagnostics)."""
        return self._fd, self._wfd

    def wake_as_if_asleep(self) -> None:
        """Wake as though the thread slept, though it does not: the wake stays pending,
        as one does that raced with the end of the wait it was meant for (a stale wake,
        which the thread's next wait must only look past).

        For tests: that race cannot be made to happen on demand. Call it on the waker's
        own thread, outside a wait.
        """
        sleeping, self._sleeping = self._sleeping, True
        try:
            self.wake()
        finally:
            self._sleeping = sleeping

    def wake(self) -> None:
        """Wake the thread if it sleeps; call it after making the condition true.

        A thread not yet asleep looks at its condition before it sleeps, so it is only
        written to when it may sleep (a write that finds it awake would be left pending,
        and cost its next wait a spurious turn)."""
        if self._lock is None:
            if self._sleeping:
                try:
                    os.write(self._wfd, b"\0")
                except BlockingIOError:
                    pass  # full of wakes not read yet
        else:
            try:
                self._lock.release()
            except RuntimeError:
                pass  # a wake is pending already

    def wait_for(self, event: Delivered, timeout: float | None) -> bool:
        """Sleep until ``event.delivered`` is true, at most *timeout* s (None: no limit);
        True if it is. Whoever sets it calls :meth:`wake` after.

        A wake meant for something this thread stopped waiting for only makes it look
        again. Re-entrant: a signal handler may make a blocking call while this thread
        waits here, and the inner wait may take the wake meant for the outer one, so on
        leaving it wakes the thread again and the outer wait looks once more.
        """
        if event.delivered:
            return True
        if timeout is None and not self._depth and self._lock is None:
            # The common case, in one frame with no calls: with threads taking turns on
            # the GIL, every step here delays all of them (a callable condition and two
            # more frames cost 8 threads in a wakeups.py-like test a fifth of their calls/s).
            fd = self._fd
            self._depth = 1
            try:
                while True:
                    self._sleeping = True  # from here on a wake writes; so look once more first
                    if event.delivered:
                        return True
                    # after a signal handler returns, os.read goes on sleeping (PEP 475); a
                    # blocking call made by the handler wakes this wait as it ends
                    os.read(fd, _DRAIN)
                    self._sleeping = False
                    if event.delivered:
                        return True
            finally:
                self._sleeping = False
                self._depth = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        self._depth += 1
        try:
            while not event.delivered:
                if deadline is None:
                    self._sleep(event, None)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._sleep(event, remaining)
            return True
        finally:
            self._depth -= 1
            if self._depth:  # an outer wait on this thread (interrupted by a handler) looks again
                self._sleeping = True
                self.wake()

    def _sleep(self, event: Delivered, timeout: float | None) -> None:
        """Sleep until woken, at most *timeout* s (None: no limit); may return early."""
        if self._lock is not None:
            # retried after a signal handler returns (PEP 475), with the time left
            self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout))
            return
        self._sleeping = True  # from here on a wake writes; so look once more first
        try:
            if not event.delivered:
                self._sleep_fd(timeout)
        finally:
            self._sleeping = False

    def _sleep_fd(self, timeout: float | None) -> None:
        if timeout is not None:
            poller = self._poll if self._depth == 1 else None  # a nested wait never shares it
            if poller is None:
                poller = select.poll()
                poller.register(self._fd, select.POLLIN)
                if self._depth == 1:
                    self._poll = poller
            if not poller.poll(min(_POLL_MAX_MS, max(0, math.ceil(timeout * 1000)))):
                return
        os.read(self._fd, _DRAIN)  # readable, or no limit: consumes every pending wake

    def _close(self) -> None:
        self._fd = close_fd(self._fd)
        self._wfd = close_fd(self._wfd)

    def __del__(self) -> None:
        self._close()


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
    # A forked child shares its parent's pipes: a read in one would steal the other's
    # wake. The child's threads start afresh.
    global _local
    _local = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
