"""What a server connection runs: calls and generator streams, and how fast they are.

A plain or async call is a :class:`CallTask`; a generator is a :class:`StreamTask`, which
pumps items under credit-based flow control. :class:`CallPace` scores a function's recent
run times, so the connection can run the calls of a fast function on the spot.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from .. import _protocol as proto
from .._core.credit import SendCredit
from .._pool import PoolClosed
from ..exceptions import SerializationError
from ..interceptors import Observed, current_call
from .callers import current

if TYPE_CHECKING:
    from .connection import ServerConnection

__all__ = ["CallPace", "CallTask", "StreamTask", "function_errors", "refused_at_shutdown",
           "FAST_CALL", "FAST_SCORE", "FAST_CAP"]

FAST_CALL = 0.001  # a run of a plain function this short (wall time) counts as fast
FAST_SCORE = 8  # a function whose score is this high runs inline among other calls
FAST_CAP = 16  # the score's top: a fast run adds 1, a slow one takes 8 away
# What a served function may raise, reported to its caller. Off the main thread a
# SystemExit or KeyboardInterrupt comes from the function itself (signals reach only
# the main thread): it ends the call, never the worker, loop or connection thread
# running it. On the main thread (a WSGI server without threads) it may be a signal's,
# and goes on up once the caller has its answer.
_FUNCTION_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


def function_errors() -> type[BaseException] | tuple[type[BaseException], ...]:
    """The errors to report to the caller, here (the ``except`` clause calls it only when one is raised)."""
    return Exception if threading.current_thread() is threading.main_thread() else _FUNCTION_ERRORS


class CallPace:
    """How one served plain function has been running: a score of its recent run times.

    A run under ``FAST_CALL`` adds 1 (up to ``FAST_CAP``), a longer one takes 8 away.
    While the score is at least ``FAST_SCORE`` (8 fast runs from the start), a call of
    the function runs inline on the hub's leader even while other calls are in flight
    on the connection: no hand-off to a worker and back (the watchdog still gives the
    loop to a new leader if one runs long). A function that has been fast for a while
    (score at the cap) stays inline after one slow run among fast ones (a run held up
    by another thread holding the GIL); two slow runs in a row, or one before the score
    reached the cap, send its calls back to the pool until it has been fast again. Not
    locked: a lost update moves the score by one run, no more.
    """

    __slots__ = ("score",)

    def __init__(self) -> None:
        self.score = 0

    @property
    def fast(self) -> bool:
        return self.score >= FAST_SCORE

    def record(self, seconds: float) -> None:
        score = self.score
        self.score = min(score + 1, FAST_CAP) if seconds < FAST_CALL else max(score - 8, 0)


def refused_at_shutdown(call_id: int) -> bytes:
    """The reply to a call or stream the server's closed pool or loop cannot run."""
    return proto.encode_failure(call_id, proto.error_wire("ServerBusy", "the server is shutting down"))


class CallTask:
    """A plain or async call in flight."""

    # scope: what call_context() reads while the function runs; obs: the call's
    # interceptors at work (None: the server has none)
    __slots__ = ("future", "cancelled", "scope", "obs")

    def __init__(self) -> None:
        self.future: Future[Any] | None = None
        self.cancelled = False
        self.scope: Any = None
        self.obs: Observed | None = None

    def cancel(self) -> None:
        self.cancelled = True  # a plain call still queued for a worker will not start
        if self.future is not None:
            self.future.cancel()


class StreamTask:
    """A generator streaming items under credit-based flow control.

    The consumer grants credit (``window`` up front, then ``credit`` messages as it
    consumes), so at most that many items are ever produced ahead of it. The pump runs
    only while it has credit: an idle stream holds no worker thread.
    """

    def __init__(self, conn: ServerConnection, call_id: int, gen: Any, is_async: bool, credit: SendCredit,
                 name: str = "?") -> None:
        self.conn = conn
        self.id = call_id
        self.name = name  # the function's, for error messages
        self.gen = gen
        self.is_async = is_async
        self.credit = credit
        self.lock = threading.Lock()
        self.running = False
        self.finished = False
        self.cancelled = False
        self.future: Future[Any] | None = None
        self.scope: Any = None  # what call_context() reads while the generator runs
        self.obs: Observed | None = None  # the stream's interceptors at work

    def start(self) -> None:
        with self.lock:
            self.running = True
        self._schedule()

    def _schedule(self) -> None:
        server = self.conn.server
        try:
            if self.is_async:
                loop = server.event_loop()  # first: a refusal must not leave a coroutine unawaited
                self.future = asyncio.run_coroutine_threadsafe(self._pump_async(), loop)
            else:
                server.executor().submit(self._pump_sync)
        except PoolClosed:  # the server has closed its pool and loop: close the generator here
            self._close_here()

    def _close_here(self) -> None:
        with self.lock:
            waited_for = not self.cancelled  # else the caller let go of it: nothing to say
            self.cancelled = True
        try:
            if self.gen is not None:
                if self.is_async:
                    asyncio.run(self.gen.aclose())
                else:
                    self.gen.close()
        except Exception:  # noqa: BLE001 - a generator failing to close: log it, the stream ends
            self.conn.log.exception("stream %s: closing its generator failed", self.id)
        self._finish(refused_at_shutdown(self.id) if waited_for else None)

    def add_credit(self, n: int) -> None:
        with self.lock:
            self.credit.grant(n)
            if self.running or self.finished:
                return
            self.running = True
        self._schedule()

    def cancel(self) -> None:
        with self.lock:
            if self.finished or self.cancelled:
                return
            self.cancelled = True
            running = self.running
            self.running = True
        if running:
            if self.is_async and self.future is not None:
                self.future.cancel()  # interrupts the pending __anext__
            return  # the sync pump sees the flag after its current item
        self._schedule()  # an idle pump: run once to close the generator

    def _take(self) -> bool:
        with self.lock:
            if self.cancelled:
                return False
            if not self.credit.take():
                self.running = False
                return False
            return True

    def _finish(self, payload: proto.Encoded | None) -> None:
        with self.lock:
            self.finished = True
            self.running = False
        self.conn.finish(self.id, self, payload)

    def _pump_sync(self) -> None:
        serving = current.set(self.conn.outgoing)  # for easyrpc.server.caller() in the generator
        try:
            while self._take():
                scope = current_call.set(self.scope)
                try:
                    with self._running():
                        item = next(self.gen)
                except StopIteration:
                    self._finish(proto.encode("end", i=self.id))
                    return
                except function_errors() as exc:  # the function's error goes to its caller
                    self._finish(self.conn.failure(self.id, exc))
                    return
                finally:
                    current_call.reset(scope)
                self.conn.send(self._item(item))
            if self.cancelled:
                self.gen.close()
                self._finish(None)
        except _ItemError as exc:
            self.gen.close()
            self._finish(exc.payload)
        except Exception:  # top of a worker task: log, never lose the stream silently
            self.conn.log.exception("stream %s failed", self.id)
            self._finish(proto.encode_failure(self.id, proto.error_wire("InternalError", "stream failed")))
        finally:
            current.reset(serving)

    async def _pump_async(self) -> None:
        current_call.set(self.scope)  # this pump's task's own context
        current.set(self.conn.outgoing)
        try:
            while self._take():
                try:
                    with self._running():
                        item = await self.gen.__anext__()
                except StopAsyncIteration:
                    self._finish(proto.encode("end", i=self.id))
                    return
                except function_errors() as exc:  # the function's error goes to its caller
                    self._finish(self.conn.failure(self.id, exc))
                    return
                await asyncio.wrap_future(self.conn.server.executor().run(self.conn.send, self._item(item)))
            if self.cancelled:
                await self.gen.aclose()
                self._finish(None)
        except asyncio.CancelledError:
            await self.gen.aclose()
            self._finish(None)
        except _ItemError as exc:
            await self.gen.aclose()
            self._finish(exc.payload)
        except Exception:  # top of a loop task: log, never lose the stream silently
            self.conn.log.exception("stream %s failed", self.id)
            self._finish(proto.encode_failure(self.id, proto.error_wire("InternalError", "stream failed")))

    def _running(self) -> AbstractContextManager[object]:
        """The interceptors' contexts around one step of the generator."""
        return nullcontext() if self.obs is None else self.obs.running()

    def _item(self, item: Any) -> proto.Encoded:
        try:
            return proto.encode_item(self.id, item, self.credit.announce())
        except SerializationError as exc:
            raise _ItemError(proto.encode_failure(
                self.id, proto.error_wire("SerializationError", f"an item of {self.name} cannot be sent: {exc}"))) from None


class _ItemError(Exception):
    def __init__(self, payload: bytes) -> None:
        super().__init__("item cannot be encoded")
        self.payload = payload
