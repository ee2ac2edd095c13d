"""How one server connection runs its calls: on the spot, in the pool, on the loop, or
as a stream.

A plain call runs on the hub's leader itself when that saves a hand-off (a sequential
caller: this call and the last ``SOLO_STREAK - 1`` found nothing else in flight and
nothing more received; or a function that has been fast, ``CallPace``), under the
watchdog (``Hub.run_inline``); other plain calls go to the worker pool, ``async def``
functions to the server's event loop, generators to a ``StreamTask``, forwarded
functions to their link. Every call ends in :meth:`ServerConnection.finish`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _protocol as proto
from .._core.credit import SendCredit
from .._core.session import not_found
from .._pool import PoolClosed
from ..exceptions import ArgumentError, SerializationError
from ..interceptors import current_call, info_of, observe, refusal
from .callers import current
from .tasks import CallPace, CallTask, StreamTask, function_errors, refused_at_shutdown

if TYPE_CHECKING:
    from .connection import ServerConnection
    from .registry import Registered

__all__ = ["Calls", "SOLO_STREAK"]

SOLO_STREAK = 3  # calls in a row alone on their connection before they run on the spot


def refused_argument(call_id: int, exc: ArgumentError) -> bytes:
    """The reply to a call whose arguments do not fit the function's annotations (it did not run)."""
    return proto.encode_failure(call_id, proto.error_wire("ArgumentError", str(exc)))


class Calls:
    """Runs the calls of one connection."""

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self._solo = 0  # calls in a row that were alone on the connection

    # --- calls -------------------------------------------------------------------------
    def start(self, msg: proto.Call, reg: Any) -> None:
        """Run a call the session admitted (its id is reserved)."""
        conn = self.conn
        if msg.callbacks:  # the client's callables among the arguments
            conn.outgoing.bind(msg)
        task: CallTask | StreamTask
        stream = reg.kind not in ("sync", "async", "builtin", "remote")
        if not stream:
            task = CallTask()
        else:
            credit = SendCredit(msg.window, conn.server.stream_window_max)
            task = StreamTask(conn, msg.id, None, reg.kind == "agen", credit, msg.fn)
        deadline = None if msg.timeout is None else time.monotonic() + msg.timeout
        task.scope = [conn, msg, deadline, stream, None]  # call_context() builds its CallInfo if asked
        with conn._lock:
            conn._session.started(msg.id, task)
        if conn.relayed_for is not None and not conn.relayed_for(msg, reg):  # a trusted relay's caller
            conn.finish(msg.id, task, not_found(msg.id, msg.fn))
            return
        if conn.server.interceptors and not self._observe(msg, task):
            return
        try:
            self._dispatch(msg, reg, task)
        except PoolClosed:  # the server closed its pool and loop meanwhile
            conn.finish(msg.id, task, refused_at_shutdown(msg.id))

    def _observe(self, msg: proto.Call, task: CallTask | StreamTask) -> bool:
        """Run the server's interceptors' ``before`` hooks; False if one refused the call."""
        info = task.scope = info_of(task.scope)
        try:
            task.obs = observe(self.conn.server.interceptors, info)
        except Exception as exc:  # noqa: BLE001 - a refusal, or an interceptor's bug: the caller is told
            self.conn.finish(msg.id, task, proto.encode_failure(msg.id, proto.error_wire(*refusal(exc))))
            return False
        if info.metadata != (msg.metadata or {}):
            msg.metadata = info.metadata  # added by an interceptor: a relayed call passes it on
        return True

    def _dispatch(self, msg: proto.Call, reg: Any, task: CallTask | StreamTask) -> None:
        conn = self.conn
        server = conn.server
        if reg.kind == "builtin":
            if msg.args or msg.kwargs:  # it takes none, as its description says
                conn.finish(msg.id, task, proto.encode_failure(msg.id, proto.error_wire(
                    "TypeError", f"{msg.fn}() takes no arguments")))
            else:
                conn.finish(msg.id, task, proto.encode_result(msg.id, server.get_registered_functions(
                    conn.namespace, conn.access)))
        elif reg.kind == "sync":
            assert isinstance(task, CallTask)
            # a call that may wait on its callbacks never holds the hub's leader
            drained = conn._frames.drained()
            if not msg.callbacks and self._may_inline(reg.pace, drained):
                assert conn._hub is not None
                if not drained:
                    conn._hub.pend(conn)  # should this thread lose the loop, the next leader reads on
                conn._hub.run_inline(self._run_sync, msg.id, task, reg, msg.args, msg.kwargs)
            else:
                server.executor().submit(self._run_sync, msg.id, task, reg, msg.args, msg.kwargs)
        elif reg.kind == "remote":
            assert isinstance(task, CallTask) and reg.link is not None
            reg.link.forward(conn, msg, task)
        elif reg.kind == "async":
            assert isinstance(task, CallTask)
            loop = server.event_loop()  # first: a refusal must not leave a coroutine unawaited
            task.future = asyncio.run_coroutine_threadsafe(
                self._run_async(msg.id, task, reg, msg.args, msg.kwargs), loop)
        else:
            assert isinstance(task, StreamTask)
            args, kwargs = msg.args, msg.kwargs
            try:
                if reg.plan is not None:
                    args, kwargs = reg.plan(args, kwargs)
                task.gen = reg.func(*args, **kwargs)
            except ArgumentError as exc:
                conn.finish(msg.id, task, refused_argument(msg.id, exc))
                return
            except Exception as exc:  # noqa: BLE001 - binding errors go to the caller
                conn.finish(msg.id, task, conn.failure(msg.id, exc))
                return
            task.start()

    # A plain call read by the hub's leader runs right there when the connection is used
    # sequentially (this call and the last SOLO_STREAK - 1 found nothing else in flight
    # and nothing more received), or when its function has been fast (CallPace):
    # concurrent calls of fast functions then cost no hand-off either. Other calls go to
    # the pool. A call that runs long makes the watchdog give the loop to a new leader.
    def _may_inline(self, pace: CallPace, drained: bool) -> bool:
        conn = self.conn
        hub = conn._hub
        if hub is None or not hub.is_leader():
            return False
        if len(conn._tasks) != 1 or not drained:
            self._solo = 0
        else:
            self._solo += 1
        return (pace.fast or self._solo >= SOLO_STREAK) and conn._closed_at is None

    def _result(self, call_id: int, fn: Callable[..., Any], value: Any) -> proto.Encoded:
        try:
            return proto.encode_result(call_id, value)
        except SerializationError as exc:
            return proto.encode_failure(call_id, proto.error_wire(
                "SerializationError", f"the result of {getattr(fn, '__name__', '?')} cannot be sent: {exc}"))

    def _run_sync(self, call_id: int, task: CallTask, reg: Registered, args: list[Any], kwargs: dict[str, Any]) -> None:
        conn = self.conn
        if task.cancelled:
            return  # cancelled (or timed out) while it waited for a worker
        fn, pace = reg.func, reg.pace
        if reg.plan is not None:
            try:
                args, kwargs = reg.plan(args, kwargs)
            except ArgumentError as exc:
                conn.finish(call_id, task, refused_argument(call_id, exc))
                return
        payload: proto.Encoded | None = None
        scope = current_call.set(task.scope)
        serving = current.set(conn.outgoing)  # for easyrpc.server.caller()
        obs = task.obs
        started = time.perf_counter()
        try:
            if obs is None or not obs.around:
                value = fn(*args, **kwargs)
            else:
                with obs.running():  # interceptors' contexts: the call's span current, say
                    value = fn(*args, **kwargs)
            payload = self._result(call_id, fn, value)
        except function_errors() as exc:  # the function's error goes to its caller
            payload = conn.failure(call_id, exc)
        finally:
            pace.record(time.perf_counter() - started)
            if payload is None:  # SystemExit or the like: the caller still gets an answer
                payload = proto.encode_failure(call_id, proto.error_wire("InternalError", "the call did not complete"))
            try:
                conn.finish(call_id, task, payload)  # the reply first: the caller waits for it
            finally:
                current_call.reset(scope)
                current.reset(serving)

    async def _run_async(
        self, call_id: int, task: CallTask, reg: Registered, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        conn = self.conn
        fn = reg.func
        current_call.set(task.scope)  # this call's task's own context
        current.set(conn.outgoing)  # ... and for easyrpc.server.caller()
        try:
            if reg.plan is not None:
                args, kwargs = reg.plan(args, kwargs)
            if task.obs is None or not task.obs.around:
                value = await fn(*args, **kwargs)
            else:
                with task.obs.running():
                    value = await fn(*args, **kwargs)
            payload = self._result(call_id, fn, value)
        except ArgumentError as exc:
            payload = refused_argument(call_id, exc)
        except asyncio.CancelledError:
            conn.finish(call_id, task, None)
            raise
        except function_errors() as exc:  # the function's error goes to its caller
            payload = conn.failure(call_id, exc)
        await asyncio.wrap_future(conn.server.executor().run(conn.finish, call_id, task, payload))
