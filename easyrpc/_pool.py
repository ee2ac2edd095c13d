"""A lean, bounded worker pool for the server.

``concurrent.futures.ThreadPoolExecutor`` builds a Future and a work item per task and
keeps a semaphore per submit; the server submits one task per call and needs none of
that: its replies go out from the task itself, so a leaner pool answers more calls per
second. Threads start on demand up to ``max_workers``,
are named ``easyrpc-worker-N``, and are stopped and joined by :meth:`shutdown`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["PoolClosed", "WorkerPool", "current_pool"]

T = TypeVar("T")
log = logging.getLogger("easyrpc.server")
_STOP: Any = None
_local = threading.local()  # .pool: the pool whose worker the thread is


def current_pool() -> WorkerPool | None:
    """The pool whose worker runs the current thread, if any."""
    return getattr(_local, "pool", None)


class PoolClosed(RuntimeError):
    """The pool (or the server that owns it) is shut down: nothing more runs on it."""


class WorkerPool:
    """Runs callables on up to *max_workers* named threads, in submission order."""

    def __init__(self, max_workers: int, name: str = "easyrpc-worker") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._backlog = 0  # tasks queued while no worker was idle and none could start
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker; exceptions are logged (tasks report their own)."""
        with self._lock:
            if self._closed:
                raise PoolClosed("the worker pool is shut down")
            if self._idle > 0:
                self._idle -= 1  # this task takes an idle worker
            elif len(self._threads) < self._max:
                self._start_worker()
            else:
                self._backlog += 1
        self._queue.put((fn, args))

    def _start_worker(self) -> None:
        thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads) + 1}", daemon=True)
        self._threads.append(thread)
        thread.start()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """This pool's worker waits on another party (a callback in a client, say): the
        pool may run one more thread meanwhile, so work that the other party's answer
        depends on (a call it makes back) is never left queued behind waiting workers.
        Elsewhere (not on one of this pool's workers), it does nothing."""
        if getattr(_local, "pool", None) is not self:
            yield
            return
        with self._lock:
            self._max += 1
            if self._backlog and len(self._threads) < self._max and not self._closed:
                self._backlog -= 1
                self._start_worker()
        try:
            yield
        finally:
            with self._lock:
                self._max -= 1

    def run(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on a worker and return a future of its result."""
        fut: Future[T] = Future()

        def call() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the future's owner
                fut.set_exception(exc)

        self.submit(call)
        return fut

    def _work(self) -> None:
        _local.pool = self
        while True:
            task = self._queue.get()
            if task is None:  # _STOP
                return
            fn, args = task
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - top of a worker: log it, keep the worker
                # BaseException too: a task's GeneratorExit or CancelledError (signals
                # never reach a worker) must not end a thread the pool counts as live.
                log.exception("a worker task failed")
            with self._lock:
                if self._backlog:
                    self._backlog -= 1  # this worker takes a task that found none idle
                else:
                    self._idle += 1

    def shutdown(self, deadline: float) -> int:
        """Stop accepting work, drop what is queued, join the workers until *deadline*
        (monotonic). Returns how many are still busy running a function."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
            threads = list(self._threads)
        while True:  # drop queued tasks: their callers are told the server is going away
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in threads:
            self._queue.put(_STOP)
        busy = 0
        for thread in threads:
            if thread is threading.current_thread():
                continue  # shut down by one of its own tasks: that worker ends after it
            thread.join(max(0.0, deadline - time.monotonic()))
            busy += thread.is_alive()
        return busy
