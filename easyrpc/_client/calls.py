"""What the client keeps for each call or stream in flight, and how each is settled.

A blocking caller's call (:class:`BlockingCall`) wakes its own thread; an
``easyrpc.aio`` call (:class:`LoopCall`) settles the awaitable its task awaits; a call
made with ``.submit`` is a :class:`CallFuture` (a ``concurrent.futures.Future``); a
generator call is a :class:`ClientStream`, buffering items under credit.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from .. import _protocol as proto
from .._core.credit import ReceiveCredit
from .._wake import thread_waker
from .loops import settle_in_loop

if TYPE_CHECKING:
    from ..interceptors import Observed
    from .engine import Engine
    from .loops import LoopInbox

__all__ = ["CALLS", "END", "BlockingCall", "CallFuture", "ClientStream", "ConvertedFuture", "LoopCall", "Pending",
           "SettledOnce", "settle"]

END: Any = object()  # resolves a stream's future when the stream has ended


class _Request:
    """What the engine keeps for each call or stream in its request table."""

    # payload: the encoded request until it is sent; no_limit: it waits for a connection,
    # with no time limit of its own; leads: a blocking caller waits for it and will read
    # its own reply
    __slots__ = ("engine", "id", "payload", "sent", "deadline", "no_limit", "leads")

    def _init_request(self, engine: Engine, *, leads: bool = False) -> None:
        self.engine = engine
        self.id = 0
        self.payload: proto.Encoded = b""
        self.sent = False
        self.deadline: float | None = None
        self.no_limit = False
        self.leads = leads


class CallFuture(Future[Any], _Request):
    """A call's future; cancelling it (while pending) cancels the call on the server."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._init_request(engine)

    def cancel(self) -> bool:
        """Cancel the call (locally and on the server) unless it has already finished."""
        if not super().cancel():
            return False
        # Nobody will run this future: notify now, so concurrent.futures.wait() and
        # as_completed() count it as done (they only see CANCELLED_AND_NOTIFIED).
        try:
            self.set_running_or_notify_cancel()
        except RuntimeError:
            pass  # already notified by an earlier cancel()
        self.engine.calls.forget(self.id, self, send_cancel=self.sent)
        return True


class ConvertedFuture(CallFuture):
    """A typed proxy's call future (``interface=``): its result arrives converted to the
    interface's return annotation; a result that does not fit fails it, as the call would."""

    def __init__(self, engine: Engine, convert: Callable[[Any], Any]) -> None:
        super().__init__(engine)
        self._convert = convert

    def set_result(self, result: Any) -> None:
        try:
            value = self._convert(result)
        except BaseException as exc:  # what the blocking call would raise, the future holds
            super().set_exception(exc)
            if not isinstance(exc, Exception):
                raise  # (KeyboardInterrupt and the like go on, the future settled first)
            return
        super().set_result(value)


class SettledOnce(_Request):
    """A call that whichever thread gets there first settles, exactly once: the one
    reading its reply, or the dispatcher on a deadline or a dropped connection.

    The winner claims it with one atomic ``list.pop``; no lock is taken. Subclasses say
    how a settlement reaches the waiter (:meth:`_deliver`).
    """

    __slots__ = ("settled", "_claim")

    def _init_call(self, engine: Engine) -> None:
        self._init_request(engine, leads=True)
        self.settled = False
        self._claim = [True]  # popped by the one thread that settles the call

    def _claimed(self) -> bool:
        """Claim the call; False if another thread had."""
        try:
            self._claim.pop()
        except IndexError:
            return False
        self.settled = True
        return True

    def settle(self, value: Any, exc: BaseException | None) -> bool:
        """Settle the call (from any thread); False if it was settled already."""
        if not self._claimed():
            return False
        self._deliver(value, exc)
        return True

    def _deliver(self, value: Any, exc: BaseException | None) -> None:
        raise NotImplementedError


class BlockingCall(SettledOnce):
    """A blocking caller's call (``proxy.f(...)``): its thread sleeps on its own waker.

    Only the calling thread ever waits for it and nobody can attach a callback, so it
    needs no Future: a Future's waiter sleeps on a Python-level Condition, which costs
    CPU on every call when threads share a proxy. The thread's waker (a
    pipe, see ``_wake``) is woken with the GIL released.
    """

    __slots__ = ("_waker", "_owner", "delivered", "_value", "_exc", "__weakref__")

    def __init__(self, engine: Engine) -> None:
        self._init_call(engine)
        self._waker = thread_waker()
        self._owner = threading.get_ident()
        self.delivered = False  # value and error stored: the waiter may take them
        self._value: Any = None
        self._exc: BaseException | None = None

    def _deliver(self, value: Any, exc: BaseException | None) -> None:
        self._value, self._exc = value, exc
        self.delivered = True
        # the caller reading its own reply is awake, unless it read it in a signal handler
        # that interrupted its own wait (which the kernel resumes after the handler)
        if threading.get_ident() != self._owner or self._waker._depth:
            self._waker.wake()

    def wait_settled(self, timeout: float | None) -> bool:
        """Wait until settled, at most *timeout* s (None: no limit); True if it is."""
        return self.delivered or self._waker.wait_for(self, timeout)

    def outcome(self) -> Any:
        """The settled call's value, or raise its error."""
        exc = self._exc
        if exc is not None:
            self._exc = None  # no reference cycle through the traceback
            raise exc
        return self._value


class LoopCall(SettledOnce):
    """An ``easyrpc.aio`` call: settles the asyncio future its task awaits.

    Settled on the loop itself when the loop reads the reply (the common case), else
    through the loop's inbox (one ``call_soon_threadsafe`` per burst). No
    concurrent.futures.Future sits in between.
    """

    __slots__ = ("future", "_inbox", "__weakref__")

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, inbox: LoopInbox) -> None:
        self._init_call(engine)
        self.future: asyncio.Future[Any] = loop.create_future()
        self._inbox = inbox

    def _deliver(self, value: Any, exc: BaseException | None) -> None:
        self._inbox.put(self.future, value, exc)

    def cancel(self) -> None:
        """The awaiting task was cancelled: drop the call; the server stops it if it was sent."""
        if self._claimed():
            self.engine.calls.forget(self.id, self, send_cancel=self.sent)


class ClientStream(_Request):
    """The client side of a streaming generator call.

    Items are buffered (at most the credit window, which the server honours) and handed
    to one consumer at a time through futures, so the blocking and async iterators share
    this one mechanism.
    """

    def __init__(self, engine: Engine, window: int, item_timeout: float | None) -> None:
        self._init_request(engine)
        self._credit = ReceiveCredit(window)
        self.item_timeout = item_timeout
        self._lock = threading.Lock()
        self._items: deque[Any] = deque()
        self._waiter: Future[Any] | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._closed = False
        self._grantable = 0  # items taken whose credit is not granted yet
        self.obs: Observed | None = None  # the proxy's interceptors, told when the stream ends

    @property
    def window(self) -> int:
        """Items the server may send ahead of the consumer."""
        return self._credit.window

    # reader side
    def limit_window(self, window: int) -> None:
        """The server sends at most *window* items ahead (its ``stream_window_max``)."""
        with self._lock:
            self._credit.limit(window)

    def push(self, value: Any) -> None:
        with self._lock:
            waiter, self._waiter = self._waiter, None
            if waiter is None:
                self._items.append(value)
                return
            self._grantable += self._credit.took()
        self.engine.resolve(waiter, value, None)
        self._grant()

    def end(self, error: BaseException | None) -> None:
        with self._lock:
            self._ended = True
            self._error = error
            waiter, self._waiter = self._waiter, None
        if self.obs is not None:
            self.obs.end(error)
        if waiter is not None:
            self.engine.resolve(waiter, END, error)

    # consumer side
    def next_future(self) -> Future[Any]:
        """A future for the next item (``END`` when the stream is over)."""
        fut: Future[Any] = Future()
        with self._lock:
            if self._items:
                fut.set_result(self._items.popleft())
                self._grantable += self._credit.took()
            elif self._ended or self._closed:
                if self._error is not None:
                    fut.set_exception(self._error)
                    self._error = None  # raised once; then the stream is simply over
                else:
                    fut.set_result(END)
                return fut
            else:
                if self._waiter is not None:
                    raise RuntimeError("this stream is already being consumed concurrently")
                self._waiter = fut
                return fut
        self._grant()
        return fut

    def _grant(self) -> None:
        with self._lock:
            if not self._grantable or self._ended or self._closed:
                return
            n, self._grantable = self._grantable, 0
        self.engine.send_quiet(proto.encode("credit", i=self.id, n=n))

    def close(self) -> None:
        """Stop the stream: the server closes its generator and frees its state."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            ended = self._ended
            self._items.clear()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self.engine.resolve(waiter, END, None)
        if not ended:
            if self.obs is not None:
                self.obs.end(None, True)
            self.engine.calls.forget(self.id, self, send_cancel=self.sent)

    @property
    def closed(self) -> bool:
        return self._closed or (self._ended and not self._items)


def settle(fut: Future[Any] | BlockingCall | LoopCall, value: Any, exc: BaseException | None) -> None:
    """Settle *fut* with *value* or *exc* (its done-callbacks run on this thread)."""
    if isinstance(fut, SettledOnce):
        fut.settle(value, exc)
        return
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    except InvalidStateError:
        return  # cancelled or timed out meanwhile
    bridge = getattr(fut, "loop_bridge", None)
    if bridge is not None:
        settle_in_loop(bridge, value, exc)
    relay = getattr(fut, "on_settle", None)
    if relay is not None:  # easyrpc's own relay (server links), never user code
        relay(fut)


Pending = CallFuture | BlockingCall | LoopCall | ClientStream
CALLS = (CallFuture, SettledOnce)
