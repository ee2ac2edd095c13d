"""The server calling its client: callbacks passed as arguments, and offered functions.

A call whose arguments hold callbacks (marked by the client, ``easyrpc._core.callbacks``)
gets a :class:`RemoteCallback` at each place. Calling one sends a ``cb`` to the client
and waits for its ``cbok``/``cberr``: blocking from a plain function or a thread,
awaitable from an ``async def`` function (a running event loop is what tells them
apart). It lives as long as its call or stream (:class:`Scope`); calling it afterwards
raises :class:`~easyrpc.CallbackExpired`. Its time limit is what is left of the call's
own (the ``t`` the client sent), unless the call site gives one.

:func:`caller`, inside any origin function, gives the connection's :class:`Caller`: the
functions the client offered (``p.offer``), callable until the connection closes.

The server numbers its ``cb`` requests itself (a ``RequestTable`` per connection), so
they are never confused with the client's call ids. Replies are settled by the thread
that reads them (the hub's leader): it only completes a future. A worker that waits for
a reply lets the pool start another worker meanwhile (``WorkerPool.waiting``), so
callbacks that call the server again cannot starve it of threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from .. import _protocol as proto
from .._core import callbacks as cbs
from .._core.requests import RequestTable
from .._futures import CancelHook, settle_elsewhere
from .._pool import PoolClosed, current_pool
from ..exceptions import CallbackExpired, CallTimeout, ConnectionLost

if TYPE_CHECKING:
    from .connection import ServerConnection

__all__ = ["Caller", "Offered", "Outgoing", "RemoteCallback", "Scope", "caller", "current"]

_CURRENT: contextvars.ContextVar[Outgoing | None] = contextvars.ContextVar("easyrpc_connection", default=None)
current = _CURRENT  # set while an origin function runs: the connection it runs for


class Scope:
    """The life of one call's callbacks: until the call (or stream) ends."""

    __slots__ = ("call_id", "alive", "deadline", "pending")

    def __init__(self, call_id: int, deadline: float | None) -> None:
        self.call_id = call_id
        self.alive = True
        self.deadline = deadline  # monotonic: the call's own limit, if the client gave one
        self.pending: set[int] = set()  # this scope's cb requests awaiting an answer


class _Ask:
    """One ``cb`` awaiting the client's answer (by *deadline*, monotonic, if it has one)."""

    __slots__ = ("fut", "scope", "deadline")

    def __init__(self, scope: Scope | None, deadline: float | None) -> None:
        self.fut = CancelHook()  # cancelling it also tells the client (cbcancel)
        self.scope = scope
        self.deadline = deadline


class Outgoing:
    """One connection's requests to its client (``cb``), and its calls' callback scopes."""

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self._table: RequestTable[_Ask] = RequestTable()
        self.scopes: dict[int, Scope] = {}  # call id -> scope, for calls with callbacks
        self.gone: str | None = None  # why nothing more can be sent

    # --- scopes ------------------------------------------------------------------------
    def bind(self, msg: proto.Call) -> None:
        """Put a :class:`RemoteCallback` at each callback's place in *msg*'s arguments."""
        assert msg.callbacks is not None
        deadline = time.monotonic() + msg.timeout if msg.timeout is not None else None
        scope = Scope(msg.id, deadline)
        with self._lock:
            self.scopes[msg.id] = scope
        for container, key, cb_id in msg.callbacks:
            container[key] = RemoteCallback(self, cb_id, scope)

    def end(self, call_id: int) -> None:
        """The call ended: its callbacks expire; what they wait for fails at once."""
        with self._lock:
            scope = self.scopes.pop(call_id, None)
            if scope is None:
                return
            scope.alive = False
            waiting = [(sid, ask) for sid in scope.pending if (ask := self._table.get(sid)) is not None]
            for sid, ask in waiting:
                self._table.remove(sid, ask)
            scope.pending.clear()
        for sid, ask in waiting:
            self._complete(ask, exc=CallbackExpired(f"call {call_id} ended while its callback ran"))
            self.conn.send(proto.encode("cbcancel", i=sid))

    def close(self, reason: str) -> None:
        """The connection is gone: every request fails with ConnectionLost, and later ones at once."""
        with self._lock:
            self.gone = reason
            pending = self._table.take()
            for scope in self.scopes.values():
                scope.alive = False
            self.scopes.clear()
        for ask in pending:
            self._complete(ask, exc=ConnectionLost(reason))

    # --- requests ----------------------------------------------------------------------
    def request(self, target: int | str, args: list[Any], kwargs: dict[str, Any], scope: Scope | None,
                timeout: float | None) -> tuple[_Ask, int, float | None]:
        """Send a ``cb``; what waits for its answer, its id and its time limit (seconds)."""
        if timeout is None and scope is not None and scope.deadline is not None:
            timeout = scope.deadline - time.monotonic()
            if timeout <= 0:
                raise CallTimeout("the call's time limit has passed: its callbacks cannot run")
        ask = _Ask(scope, None if timeout is None else time.monotonic() + timeout)
        with self._lock:
            if self.gone is not None:
                raise ConnectionLost(self.gone)
            if scope is not None and not scope.alive:
                raise CallbackExpired(f"the callback of call {scope.call_id} expired: that call has ended")
            sid = self._table.add(ask)
            if scope is not None:
                scope.pending.add(sid)
        try:
            payload = cbs.encode_callback(sid, target, args, kwargs, timeout)
        except BaseException:
            self._forget(sid, ask)
            raise
        ask.fut.on_cancel = functools.partial(self._cancelled, sid, ask)
        if not self.conn.send(payload):
            self._forget(sid, ask)
            raise ConnectionLost("the connection is closed")
        return ask, sid, timeout

    def expire(self, now: float) -> None:
        """(The connection's timer.) Requests past their time limit fail with
        CallTimeout, and the client is told to stop (``cbcancel``): a submitted request
        has nobody waiting on it to notice."""
        if not self._table:
            return
        with self._lock:  # taken out of the table here: whoever takes a request settles it
            due = [(sid, ask) for sid in self._table
                   if (ask := self._table.get(sid)) is not None and ask.deadline is not None and ask.deadline <= now]
            for sid, ask in due:
                self._table.remove(sid, ask)
                if ask.scope is not None:
                    ask.scope.pending.discard(sid)
        for sid, ask in due:
            self._complete(ask, exc=CallTimeout("no answer from the client within its time limit"))
            self.conn.send(proto.encode("cbcancel", i=sid))

    def _complete(self, ask: _Ask, value: Any = None, exc: BaseException | None = None) -> None:
        """(Whoever took *ask* out of the table.) Settle its future; done-callbacks, which
        only a submitted request's future can have, run on a worker, not here (this may be
        the hub's thread, which reads every connection)."""
        fut = ask.fut

        def settle() -> None:
            if fut.set_running_or_notify_cancel():
                if exc is None:
                    fut.set_result(value)
                else:
                    fut.set_exception(exc)

        def on_worker(fn: Callable[[], None]) -> None:
            try:
                self.conn.server.executor().submit(fn)
            except PoolClosed:  # the server is closing: settle here after all
                fn()

        settle_elsewhere(fut, settle, on_worker)

    def _forget(self, sid: int, ask: _Ask) -> bool:
        with self._lock:
            if ask.scope is not None:
                ask.scope.pending.discard(sid)
            return self._table.remove(sid, ask)

    def settle(self, msg: cbs.CallbackResult | cbs.CallbackFailure) -> None:
        """(The reading thread.) The client answered a ``cb``; late answers are dropped."""
        with self._lock:
            ask = self._table.get(msg.id)
            if ask is None:
                return
            self._table.remove(msg.id, ask)
            if ask.scope is not None:
                ask.scope.pending.discard(msg.id)
        if isinstance(msg, cbs.CallbackResult):
            self._complete(ask, msg.value)
        else:
            self._complete(ask, exc=msg.error)

    def _give_up(self, sid: int, ask: _Ask) -> None:
        """The caller stopped waiting: tell the client (``cbcancel``) if it still runs."""
        if self._forget(sid, ask):
            self.conn.send(proto.encode("cbcancel", i=sid))

    def _cancelled(self, sid: int, ask: _Ask) -> None:
        """(The future was cancelled.) If this thread took it out of the table, tell its
        waiters (``concurrent.futures.wait`` counts it as done only then) and the client;
        else whoever took it does (its settling finds it cancelled)."""
        if self._forget(sid, ask):
            ask.fut.set_running_or_notify_cancel()
            self.conn.send(proto.encode("cbcancel", i=sid))

    def wait(self, ask: _Ask, sid: int, timeout: float | None) -> Any:
        """Block until the answer (a worker lets the pool start another meanwhile)."""
        pool = current_pool()
        try:
            with pool.waiting() if pool is not None else contextlib.nullcontext():
                return ask.fut.result(timeout)
        except FutureTimeout:
            if ask.fut.done():
                raise  # the callback itself raised a TimeoutError
            self._give_up(sid, ask)
            raise CallTimeout(f"no answer from the client within {timeout:.3g} s") from None

    async def wait_async(self, ask: _Ask, sid: int, timeout: float | None) -> Any:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(ask.fut), timeout)
        except asyncio.TimeoutError:
            if ask.fut.done() and not ask.fut.cancelled():
                raise
            self._give_up(sid, ask)
            raise CallTimeout(f"no answer from the client within {timeout:.3g} s") from None
        except asyncio.CancelledError:
            self._give_up(sid, ask)
            raise

    def submit(self, target: int | str, args: tuple[Any, ...], kwargs: dict[str, Any], scope: Scope | None,
               timeout: float | None) -> Future[Any]:
        """Send a ``cb`` and return the future of its answer without waiting."""
        return self.request(target, list(args), kwargs, scope, timeout)[0].fut

    def call(self, target: int | str, args: tuple[Any, ...], kwargs: dict[str, Any], scope: Scope | None,
             timeout: float | None) -> Any:
        ask, sid, limit = self.request(target, list(args), kwargs, scope, timeout)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self.wait(ask, sid, limit)
        return self.wait_async(ask, sid, limit)


class RemoteCallback:
    """A client's callable, passed as an argument: calling it runs it in the client.

    From a plain function (or any thread without a running event loop) the call blocks
    and returns the callback's result; from an ``async def`` function it returns an
    awaitable. The callback's exceptions arrive as :class:`~easyrpc.RemoteError` (mixed
    with the builtin type, as for any remote error).
    """

    __slots__ = ("_out", "_id", "_scope", "_timeout")

    def __init__(self, out: Outgoing, cb_id: int, scope: Scope, timeout: float | None = None) -> None:
        self._out = out
        self._id = cb_id
        self._scope = scope
        self._timeout = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._out.call(self._id, args, kwargs, self._scope, self._timeout)

    def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run the callback without waiting: a ``concurrent.futures.Future`` of its result
        (see :meth:`Caller.submit`)."""
        return self._out.submit(self._id, args, kwargs, self._scope, self._timeout)

    def with_timeout(self, timeout: float | None) -> RemoteCallback:
        """This callback with its own time limit (seconds) instead of the call's."""
        return RemoteCallback(self._out, self._id, self._scope, timeout)

    @property
    def alive(self) -> bool:
        """False once its call has ended (or the connection has)."""
        return self._scope.alive

    def __repr__(self) -> str:
        return f"<client callback {self._id} of call {self._scope.call_id}{'' if self.alive else ' (expired)'}>"


class Caller:
    """The functions a connected client offered (``p.offer``), callable from the server.

    ``c.call('name', *args, **kwargs)`` or ``c.name(*args, **kwargs)``: blocking from a
    plain function or thread, awaitable from an ``async def`` function. Usable from any
    thread until the connection closes (then :class:`~easyrpc.ConnectionLost`). A name
    the client did not offer fails with :class:`~easyrpc.FunctionNotFound`.
    """

    def __init__(self, out: Outgoing, timeout: float | None = None) -> None:
        self._out = out
        self._timeout = timeout

    def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the client's offered function *name* (the way to call one named like a
        method of this class: ``call``, ``submit``, ``with_timeout``...)."""
        return self._out.call(_offered_name(name), args, kwargs, None, self._timeout)

    def submit(self, name: str, /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Call the client's offered function *name* without waiting: a
        ``concurrent.futures.Future`` of its result, from any thread or function (a push
        to many clients at once). It fails with :class:`~easyrpc.ConnectionLost` if the
        connection closes first, with :class:`~easyrpc.CallTimeout` once this caller's
        time limit (``with_timeout``) has passed (the connection's timer notices it, at
        most about a second late); cancelling it tells the client to stop."""
        return self._out.submit(_offered_name(name), args, kwargs, None, self._timeout)

    def __getattr__(self, name: str) -> Offered:
        if name.startswith("_"):
            raise AttributeError(name)
        return Offered(self, name)

    def with_timeout(self, timeout: float | None) -> Caller:
        """The same client, each call limited to *timeout* seconds."""
        return Caller(self._out, timeout)

    @property
    def connected(self) -> bool:
        """True until the connection closes."""
        return self._out.gone is None

    @property
    def connection_id(self) -> str:
        """The id of the client's connection (as the proxy's ``connection_id``)."""
        return self._out.conn.cid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Caller) and other._out is self._out

    def __hash__(self) -> int:
        return hash(self._out)

    def __repr__(self) -> str:
        return f"<Caller of connection {self._out.conn.cid}{'' if self.connected else ' (closed)'}>"


def _offered_name(name: object) -> str:
    if not isinstance(name, str):  # (an int would address a callback by its id)
        raise TypeError(f"an offered function's name is a str, not {type(name).__name__}")
    return name


class Offered:
    """One function a client offered, as ``caller.name``: call it, or ``.submit`` it."""

    __slots__ = ("_caller", "_name")

    def __init__(self, caller: Caller, name: str) -> None:
        self._caller = caller
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._caller.call(self._name, *args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
        """As :meth:`Caller.submit`."""
        return self._caller.submit(self._name, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<offered function {self._name!r} of {self._caller!r}>"


def caller(timeout: float | None = None) -> Caller:
    """The client of the call being served, to call what it offered, now or later.

    Call it inside an origin function (plain, ``async def`` or generator); keep the
    :class:`Caller` to push to that client after the call has returned, until its
    connection closes. *timeout* limits each call (default: none).
    """
    out = _CURRENT.get()
    if out is None:
        raise RuntimeError("easyrpc.server.caller() is only available inside a function the server is running")
    return Caller(out, timeout)
