"""A proxy's side of calls in the other direction: callbacks and offered functions.

A callable among a call's arguments is registered here while the call is encoded (the
encoder meets it only when the C encoder gives up on the message, so calls without
one pay nothing) and lives until the call or stream leaves the request table. The
server calls it, or a function offered with ``p.offer``, with a ``cb`` message.

A ``cb`` never runs on the thread that read it: that thread may be the only one able to
read the reply a callback waits for when it calls the server again. Plain callables run
on a small pool of named threads (``easyrpc-callback-N``); an ``async def`` passed
through ``easyrpc.aio`` runs on the event loop of the call that passed it (an offered
one, on the proxy's loop). A callback thread that makes a blocking call lets the pool
start another thread meanwhile, so callbacks may call the server, which calls back
again, without running out of threads.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .. import _protocol as proto
from .._core import callbacks as cbs
from .._core.callbacks import Callback, CallbackCancel, CallbackTable
from .._pool import PoolClosed, WorkerPool, current_pool
from .._values import CALLBACK
from ..exceptions import SerializationError

if TYPE_CHECKING:
    from .engine import Engine
    from .link import Link

__all__ = ["Callbacks", "callback_pool"]

log = logging.getLogger("easyrpc.proxy")

CALLBACK_THREADS = 8  # (more start while callbacks wait on calls back into the server)
_Entry = tuple[Callable[..., Any], "asyncio.AbstractEventLoop | None"]


class _CallbackPool(WorkerPool):
    """The threads that run one proxy's plain callbacks."""


def callback_pool() -> WorkerPool | None:
    """The callback pool running this thread, if any: a blocking wait on it goes inside
    ``pool.waiting()``, which lets the pool start another thread meanwhile."""
    pool = current_pool()
    return pool if isinstance(pool, _CallbackPool) else None


class Callbacks:
    """One proxy's callbacks and offered functions, and how the server's calls run."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._table: CallbackTable[_Entry, object] = CallbackTable()
        self._pool: _CallbackPool | None = None
        self._on_loop: dict[int, Future[Any]] = {}  # the server's cb id -> a coroutine callback running
        self._closed = False
        self.use_loops = False  # easyrpc.aio: async def callbacks run on the calling loop

    # --- registering -------------------------------------------------------------------
    def encode_call(self, item: object, call_id: int, fn: str, args: list[Any], kwargs: dict[str, Any],
                    window: int, timeout: float | None, metadata: dict[str, str] | None = None) -> proto.Encoded:
        """Encode a call whose arguments the plain encoder refused: its callables become
        callbacks of *item*. SerializationError if something else is in the way."""
        loop: asyncio.AbstractEventLoop | None = None
        if self.use_loops:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None

        def mark(value: Any) -> tuple[str, int] | None:
            if not callable(value):
                return None
            with self._lock:
                return CALLBACK, self._table.register((value, loop), item)

        try:
            return proto.encode_call(call_id, fn, args, kwargs, window, timeout, metadata, other=mark)
        except SerializationError:
            self.release(item)
            raise

    @property
    def live(self) -> bool:
        """Some call in flight has callbacks (read without the lock: a hint)."""
        return self._table.has_owners()

    def release(self, item: object) -> None:
        """*item*'s call is over: its callbacks are gone."""
        with self._lock:
            self._table.release(item)

    def offer(self, name: str, fn: Callable[..., Any], loop: asyncio.AbstractEventLoop | None) -> None:
        with self._lock:
            self._table.offer(name, (fn, loop))

    def withdraw(self, name: str) -> bool:
        with self._lock:
            return self._table.withdraw(name)

    @property
    def offered(self) -> list[str]:
        with self._lock:
            return sorted(self._table.offered)

    # --- the server's calls ------------------------------------------------------------
    def on_message(self, msg: Callback | CallbackCancel, link: Link) -> None:
        """(The reading thread.) Start the callback a ``cb`` names, elsewhere; or stop one."""
        if isinstance(msg, CallbackCancel):
            with self._lock:
                running = self._on_loop.pop(msg.id, None)
            if running is not None:
                running.cancel()
            return  # a plain callback runs to its end; the server ignores its answer
        with self._lock:
            entry = self._table.find(msg.target)
        if entry is None:
            self._answer(link, cbs.encode_callback_failure(msg.id, proto.error_wire(*cbs.not_found(msg.target))))
            return
        fn, loop = entry
        if loop is not None and inspect.iscoroutinefunction(fn):
            try:
                fut = asyncio.run_coroutine_threadsafe(self._run_async(msg, fn, link), loop)
            except RuntimeError:  # the loop is closed
                self._answer(link, cbs.encode_callback_failure(msg.id, proto.error_wire(
                    "ConnectionLost", "the callback's event loop is closed")))
                return
            with self._lock:
                self._on_loop[msg.id] = fut
            fut.add_done_callback(lambda _: self._on_loop.pop(msg.id, None))
            return
        try:
            self._threads().submit(self._run, msg, fn, link)
        except PoolClosed:
            pass  # the proxy is closing

    def _threads(self) -> _CallbackPool:
        with self._lock:
            if self._closed:
                raise PoolClosed("the proxy is closed")
            if self._pool is None:
                self._pool = _CallbackPool(CALLBACK_THREADS, "easyrpc-callback")
            return self._pool

    def _run(self, msg: Callback, fn: Callable[..., Any], link: Link) -> None:
        try:
            value = fn(*msg.args, **msg.kwargs)
            if inspect.isawaitable(value):  # an async def passed to the blocking proxy
                value = asyncio.run(_awaited(value))
            payload = self._result(msg.id, value)
        except Exception as exc:  # noqa: BLE001 - the callback's error goes to the server
            payload = cbs.encode_callback_failure(msg.id, proto.error_to_wire(exc))
        self._answer(link, payload)

    async def _run_async(self, msg: Callback, fn: Callable[..., Any], link: Link) -> None:
        try:
            payload = self._result(msg.id, await fn(*msg.args, **msg.kwargs))
        except Exception as exc:  # noqa: BLE001 - the callback's error goes to the server
            payload = cbs.encode_callback_failure(msg.id, proto.error_to_wire(exc))
        self._answer(link, payload)

    @staticmethod
    def _result(request_id: int, value: Any) -> bytes:
        try:
            return cbs.encode_callback_result(request_id, value)
        except SerializationError as exc:
            return cbs.encode_callback_failure(request_id, proto.error_wire(
                "SerializationError", f"the callback's result cannot be sent: {exc}"))

    def _answer(self, link: Link, payload: bytes) -> None:
        if self.engine.link is link:  # never to a later connection: its cb ids are not these
            self.engine.send_quiet(payload)

    def close(self, deadline: float) -> None:
        """(The proxy closes.) Stop the callback threads, waiting for those running until *deadline*."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            running = list(self._on_loop.values())
        for fut in running:
            fut.cancel()
        if pool is not None:
            pool.shutdown(deadline)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable

