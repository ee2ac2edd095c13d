"""A proxy's calls in flight: registered, sent, waited for, expired, failed.

Every call and stream is in the request table (the core's ``RequestTable``) from the
moment it is made until its reply settles it, its time limit expires it, or the
connection that carried it drops. Requests made while disconnected wait in the table,
unsent, and go out on reconnect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import _protocol as proto
from .._core.requests import RequestTable, call_deadline
from ..exceptions import CallTimeout, ConnectionLost, EasyRpcError, SerializationError
from .callbacks import callback_pool
from .calls import BlockingCall, ClientStream, Pending

if TYPE_CHECKING:
    from ..interceptors import Observed
    from .engine import Engine

__all__ = ["InFlight"]


class InFlight:
    """The request table of one proxy, and what is done with its requests."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # callers waiting for max_in_flight
        self._room_waiters = 0
        self.table: RequestTable[Pending] = RequestTable(engine.options.max_in_flight)
        self.gone: str | None = None  # why calls fail at once: lost, and no reconnecting

    def submit(self, item: Pending, fn: str, args: list[Any], kwargs: dict[str, Any], timeout: float | None,
               *, send: bool = True, metadata: dict[str, str] | None = None) -> None:
        """Register *item* (a call or a stream) and send its call.

        Raises SerializationError (nothing sent) if the arguments are not JSON. With
        ``send=False`` the caller sends it later with :meth:`send_items` (easyrpc.aio does,
        off the event loop, for big payloads). *metadata* (valid, or None) is sent with it.
        """
        engine = self.engine
        stream = isinstance(item, ClientStream)
        now = time.monotonic()
        limit = timeout if timeout is not None else engine.timeout
        with self._lock:
            if engine.closed:
                raise ConnectionLost("the proxy is closed")
            if self.gone is not None:
                raise ConnectionLost(self.gone)
            if self.table.full:
                self._wait_for_room(fn, now + (limit if limit is not None else engine.options.connect_timeout))
            call_id = item.id = self.table.add(item)
        window = item.window if stream else 0  # type: ignore[union-attr]
        try:
            try:
                item.payload = proto.encode_call(call_id, fn, args, kwargs, window, None if stream else limit, metadata)
            except SerializationError:  # callables among the arguments? (only then looked for)
                item.payload = engine.callbacks.encode_call(item, call_id, fn, args, kwargs, window,
                                                            None if stream else limit, metadata)
        except BaseException:
            self.forget(call_id, item, send_cancel=False)
            raise
        deadline, item.no_limit = call_deadline(now, limit, stream=stream, connected=engine.connected,
                                                connect_timeout=engine.options.connect_timeout)
        if deadline is not None:
            item.deadline = deadline
            engine.dispatch.expire_at(deadline, engine, item)
        if send:
            self.send_items((item,))

    def _wait_for_room(self, fn: str, wait_until: float) -> None:
        """(Under the lock.) Wait until a request may be added, at most until *wait_until*."""
        while self.table.full:
            remaining = wait_until - time.monotonic()
            if remaining <= 0 or self.engine.closed:
                raise CallTimeout(f"{fn}: too many calls in flight (limit {self.table.max_in_flight})")
            self._room_waiters += 1
            try:
                self._room.wait(remaining)
            finally:
                self._room_waiters -= 1

    def open_stream(self, fn: str, args: list[Any], kwargs: dict[str, Any], timeout: float | None,
                    metadata: dict[str, str] | None = None, obs: Observed | None = None) -> ClientStream:
        """Start a generator call; *timeout* (default: the proxy's) limits each item;
        *obs*: the stream's interceptors at work, ended when the stream is."""
        engine = self.engine
        stream = ClientStream(engine, engine.options.stream_window, timeout if timeout is not None else engine.timeout)
        stream.obs = obs
        self.submit(stream, fn, args, kwargs, timeout, metadata=metadata)
        return stream

    def send_items(self, items: Sequence[Pending]) -> None:
        """Send registered calls not sent yet, in as few writes as possible.

        Each is sent once; a call whose request is still unsent while disconnected is
        sent on reconnect. The encoded request is dropped once sent, so a big one is
        not kept alive."""
        engine = self.engine
        with self._lock:
            if not engine.connected:
                return  # sent on reconnect by flush_unsent
            ready = [it for it in items if not it.sent and self.table.get(it.id) is it]
            for it in ready:
                it.sent = True
        if not ready:
            return
        payloads = [it.payload for it in ready]
        for it in ready:
            it.payload = b""
        try:
            engine.send(*payloads)
        except ConnectionLost:
            pass  # the reader fails in-flight calls when it notices the drop
        if engine.role.holder is None and not all(it.leads for it in ready):
            engine.role.want_reader()

    def flush_unsent(self) -> None:
        """(Connected.) Send what waited for the connection."""
        with self._lock:
            waiting = [item for item in self.table.values() if not item.sent]
        for item in waiting:
            if item.no_limit:
                # it waited for the connection; now it may run as long as it needs
                item.deadline = None
        self.send_items(waiting)

    def wait(self, call: BlockingCall, limit: float | None) -> Any:
        """Block until *call* (submitted) settles and return its result, reading the
        socket on this thread when no other thread is; CallTimeout after *limit* s,
        counted from :meth:`submit` (a wait there for room under ``max_in_flight``
        included)."""
        if limit is None:
            deadline = None
        else:  # submit set the call's deadline before it waited for room, if it did
            deadline = call.deadline if call.deadline is not None else time.monotonic() + limit
        pool = callback_pool()  # (a callback calling the server: its pool may grow meanwhile)
        if pool is None:
            self._wait(call, deadline)
        else:
            with pool.waiting():
                self._wait(call, deadline)
        return call.outcome()

    def _wait(self, call: BlockingCall, deadline: float | None) -> None:
        if not call.settled:
            self.engine.role.lead(call, deadline)
        if not call.wait_settled(None if deadline is None else max(0.0, deadline - time.monotonic())):
            self.expire(call)  # fails it with CallTimeout unless it has settled meanwhile
            call.wait_settled(None)  # settled now: whoever claimed it releases it at once

    def done(self, call_id: int, item: Pending) -> bool:
        """Drop a finished request from the table; False if it had left already."""
        with self._lock:
            if not self.table.remove(call_id, item):
                return False
            if self._room_waiters:
                self._room.notify()
        if self.engine.callbacks.live:
            self.engine.callbacks.release(item)
        return True

    def forget(self, call_id: int, item: Pending, *, send_cancel: bool) -> None:
        """Drop *item* from the request table; tell the server to stop if it was sent."""
        if self.done(call_id, item) and send_cancel:
            self.engine.send_quiet(proto.encode("cancel", i=call_id))

    def expire(self, item: Pending) -> None:
        """The call ran past its deadline: fail it with CallTimeout, cancel it remotely."""
        self.forget(item.id, item, send_cancel=item.sent)
        what = "no connection within the time limit" if not item.sent else "no reply within the time limit"
        exc = CallTimeout(f"call {item.id}: {what}")
        if isinstance(item, ClientStream):
            item.end(exc)
        else:
            self.engine.resolve(item, None, exc)

    def expire_if_due(self, call_id: int, item: Pending) -> None:
        """(Dispatcher.) *item*'s deadline has come: expire it if it still waits."""
        with self._lock:
            live = self.table.get(call_id) is item and item.deadline is not None
        if live:
            self.expire(item)

    def fail_all(self, exc: EasyRpcError, *, include_unsent: bool) -> None:
        """Fail every request sent (or every one) with *exc*: the connection is gone."""
        with self._lock:
            failed = self.table.take(None if include_unsent else _unsent)
            self._room.notify_all()
        for it in failed:
            if self.engine.callbacks.live:
                self.engine.callbacks.release(it)
            if isinstance(it, ClientStream):
                it.end(exc)
            else:
                self.engine.resolve(it, None, exc)


def _unsent(item: Pending) -> bool:
    return not item.sent
