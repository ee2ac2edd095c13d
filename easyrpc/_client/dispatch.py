"""One dispatcher thread per process for every proxy: callbacks, time limits, keepalive.

Some work must not run on a thread that reads a socket: a future's done-callbacks are
user code (they may block, or close the proxy), and a call's time limit must fire
whoever is reading. A thread per proxy did it before; with hundreds of proxies in one
process that is hundreds of threads taking turns on the GIL. This one thread serves
every proxy of the process: it settles futures that have callbacks, expires calls past
their deadline (one heap for all), and runs each proxy's periodic checks (keepalive, an
event loop that stopped reading). It runs while any proxy is open and ends after the
last one closes.

One slow done-callback delays the others (as one slow callback delays an asyncio loop):
callbacks should hand long work to a thread of their own.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .._net.process import PerProcess
from .calls import settle

if TYPE_CHECKING:
    from .calls import Pending
    from .engine import Engine

__all__ = ["Dispatcher", "dispatcher"]

log = logging.getLogger("easyrpc.proxy")

_WAKE: Any = object()  # look at the proxies again (one was added or removed)
_MAX_TICK = 1.0


class Dispatcher:
    """The process's dispatcher thread and what it serves."""

    def __init__(self, name: str = "easyrpc-dispatch") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._engines: dict[Engine, None] = {}  # in the order they came
        self._thread: threading.Thread | None = None
        self._last: threading.Thread | None = None
        self._seq = itertools.count()

    # --- membership --------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        """Serve *engine* from now on (its checks run every ``engine.tick`` seconds)."""
        with self._lock:
            self._engines[engine] = None
            if self._thread is None:
                self._thread = self._last = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put(_WAKE)

    def detach(self, engine: Engine) -> None:
        """Stop serving *engine* (idempotent); what is queued for it is still settled."""
        with self._lock:
            self._engines.pop(engine, None)
        self._queue.put(_WAKE)

    def join_if_idle(self, timeout: float) -> None:
        """If no proxy is served, join the thread (it is ending), for up to *timeout*."""
        with self._lock:
            if self._engines:
                return
            thread = self._last
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- work --------------------------------------------------------------------------
    def settle(self, fut: Any, value: Any, exc: BaseException | None) -> None:
        """Settle *fut* on the dispatcher thread (it has callbacks: user code)."""
        self._queue.put((fut, value, exc))

    def expire_at(self, deadline: float, engine: Engine, item: Pending) -> None:
        """Have *engine* expire *item* at *deadline* (monotonic) unless it has finished."""
        # weakly: a call that finished must not be kept alive until its deadline
        self._queue.put((deadline, next(self._seq), engine, item.id, weakref.ref(item)))

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # top of the dispatcher thread: log it (proxies fail their calls on close)
            log.exception("the easyrpc dispatcher thread failed")
            with self._lock:
                self._thread = None

    def _loop(self) -> None:
        heap: list[tuple[float, int, Engine, int, weakref.ref[Pending]]] = []
        next_tick = 0.0
        while True:
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self._checks(now)
            wait = next_tick - now if not heap else min(next_tick, heap[0][0]) - now
            try:
                entry = self._queue.get(timeout=max(0.0, wait))
            except queue.Empty:
                entry = None
            if entry is _WAKE:
                with self._lock:
                    if not self._engines and self._queue.empty():
                        self._thread = None  # the next proxy starts another
                        return
                continue
            if entry is not None:
                if isinstance(entry[0], float):
                    heapq.heappush(heap, entry)
                else:
                    settle(*entry)
                    continue  # settle what is queued first; deadlines on the next quiet look
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                _, _, engine, call_id, ref = heapq.heappop(heap)
                item = ref()
                if item is not None:
                    engine.calls.expire_if_due(call_id, item)
                del item

    def _checks(self, now: float) -> float:
        """Run every proxy's periodic checks; the seconds until the next run."""
        with self._lock:
            engines = list(self._engines)
        tick = _MAX_TICK
        for engine in engines:
            try:
                engine.check(now)
            except Exception:  # noqa: BLE001 - one proxy's bug must not stop the others' checks
                log.exception("periodic checks of %s failed", engine.url)
            tick = min(tick, engine.tick)
        return tick


_dispatcher = PerProcess(Dispatcher)


def dispatcher() -> Dispatcher:
    """The process's dispatcher (created on first use)."""
    return _dispatcher.get()
