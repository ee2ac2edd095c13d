"""The asyncio client: a thin layer over the blocking client's engine.

Example::

    from easyrpc.aio import EasyRpcProxy

    p = await EasyRpcProxy.create('127.0.0.1', 8090, '/ws/server_a', server_secret='abcd1234')
    await p.good_func_a(1, 5, 7)
    async for item in p.count_up(3): ...
    await p.close()

Calls never block the event loop: connecting and closing run on a helper thread; calls
started in one turn of the loop go out together (16 to a write), and while they are in
flight the loop itself reads their replies (``loop.add_reader``; on TLS connections the
engine's reader thread does). Each call's reply settles the asyncio future its task
awaits (an engine ``LoopCall``; streams await the engine's futures through a bridge).
Cancelling the awaiting task cancels the call on the server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar, overload

from .._client import END, ClientStream, Engine, LoopCall, bridge_to_loop, loop_inbox
from .._client.endpoints import EndpointSpec
from .._client.observed import open_stream, start_observed
from .._client.options import ClientOptions, client_options
from .._proxy_base import ProxyBase, engine_of, make_function
from .._signature import FunctionSpec, wire_from_bound
from ..exceptions import CallTimeout

__all__ = ["AsyncRemoteIterator", "ClientOptions", "EasyRpcProxy", "engine_of"]

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - the interface a proxy is typed as
_SEND_OFF_LOOP = 1 << 20  # payloads this big are written off the event loop
_OUTBOX_BATCH = 16  # calls queued in one turn of the loop go out this many at a time


async def _off_loop(fn: Callable[[], T], name: str, on_abandon: Callable[[], object] | None = None) -> T:
    """Run blocking *fn* on a named helper thread and await its result.

    If the awaiting task is cancelled, *fn* still runs to its end; *on_abandon* then runs
    on the helper thread (to undo what *fn* did).
    """
    fut: Future[T] = Future()

    def run() -> None:
        try:
            fut.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            fut.set_exception(exc)

    thread = threading.Thread(target=run, name=f"easyrpc-aio-{name}", daemon=True)
    thread.start()
    try:
        return await asyncio.shield(asyncio.wrap_future(fut))
    except asyncio.CancelledError:
        if on_abandon is not None:
            fut.add_done_callback(lambda _: on_abandon())
        raise
    finally:
        if fut.done():
            thread.join(1.0)


class AsyncRemoteIterator:
    """Items of a remote generator for ``async for``; ``aclose()`` stops it on the server."""

    def __init__(self, stream: ClientStream, convert: Callable[[Any], Any] | None = None) -> None:
        self._stream = stream
        self._convert = convert

    def __aiter__(self) -> AsyncRemoteIterator:
        return self

    async def __anext__(self) -> Any:
        fut = self._stream.next_future()
        try:
            if fut.done():  # buffered: no need to wait, or to wake the loop
                value = fut.result()
            elif self._stream.item_timeout is None:
                value = await bridge_to_loop(fut, asyncio.get_running_loop())
            else:
                value = await asyncio.wait_for(bridge_to_loop(fut, asyncio.get_running_loop()), self._stream.item_timeout)
        except asyncio.TimeoutError:
            if fut.done() and not fut.cancelled():
                raise  # the stream itself failed with a TimeoutError
            self._stream.engine.calls.expire(self._stream)
            raise CallTimeout(f"stream {self._stream.id}: no item within the time limit") from None
        except asyncio.CancelledError:
            self._stream.close()  # the consumer is gone: stop the producer
            raise
        if value is END:
            raise StopAsyncIteration
        return value if self._convert is None else self._convert(value)

    async def aclose(self) -> None:
        """Stop the stream and free the server's side."""
        self._stream.close()

    def close(self) -> None:
        """Stop the stream (usable from synchronous code, e.g. a finaliser)."""
        self._stream.close()

    async def __aenter__(self) -> AsyncRemoteIterator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stream.close()

    def __del__(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None and not stream.closed:
            stream.close()


class EasyRpcProxy(ProxyBase):
    """An asyncio proxy for the functions of one easyrpc server namespace.

    Create it with ``await EasyRpcProxy.create(...)`` (the same parameters as
    :meth:`easyrpc.proxy.EasyRpcProxy.create`). Remote functions are coroutine functions
    with the origin's name, doc and signature; generator functions return async iterators.
    A proxy belongs to the event loop that uses it.
    """

    def __init__(self, engine: Engine, interface: type | None = None) -> None:
        super().__init__(engine, interface)
        self._outbox: list[LoopCall] = []
        engine.callbacks.use_loops = True  # async def callbacks run on the loop of their call
        try:
            self._offer_loop = asyncio.get_running_loop()
        except RuntimeError:
            self._offer_loop = None

    @overload
    @classmethod
    async def create(cls, origin_host: str, origin_port: int, origin_path: str, server_secret: str | bytes, *,
                     interface: Callable[..., I], options: ClientOptions | None = None, **kwargs: Any) -> I: ...

    @overload
    @classmethod
    async def create(cls, origin_host: str, origin_port: int, origin_path: str, server_secret: str | bytes, *,
                     interface: None = None, options: ClientOptions | None = None, **kwargs: Any) -> EasyRpcProxy: ...

    @classmethod
    async def create(
        cls,
        origin_host: str,
        origin_port: int,
        origin_path: str,
        server_secret: str | bytes,
        *,
        interface: Any = None,
        options: ClientOptions | None = None,
        **kwargs: Any,
    ) -> Any:
        """Connect, authenticate and fetch the server's functions, off the event loop.

        The parameters are those of :meth:`easyrpc.proxy.EasyRpcProxy.create`
        (``interface=AsyncServerA``: the async ``Protocol`` of ``easyrpc stubgen``). A call
        alone in flight busy-polls for its reply on the event loop itself, so
        ``busy_poll`` is also the longest the loop is held per call (100 µs by default);
        pass ``busy_poll=0`` where no other task may wait even that long.
        """
        if interface is not None:
            from .._interface import check_interface

            check_interface(interface)
        return await cls._open([(origin_host, int(origin_port), origin_path)], server_secret, options, kwargs,
                               interface)

    @classmethod
    async def create_many(
        cls,
        endpoints: Sequence[EndpointSpec],
        server_secret: str | bytes,
        *,
        options: ClientOptions | None = None,
        **kwargs: Any,
    ) -> EasyRpcProxy:
        """Connect to the first of several servers that answers, off the event loop; fail
        over on a drop (see :meth:`easyrpc.proxy.EasyRpcProxy.create_many`)."""
        return await cls._open(endpoints, server_secret, options, kwargs, None)  # type: ignore[no-any-return]

    @classmethod
    async def _open(cls, endpoints: Sequence[EndpointSpec], server_secret: str | bytes,
                    options: ClientOptions | None, kwargs: dict[str, Any], interface: Any) -> Any:
        engine = Engine(endpoints, server_secret, client_options(options, kwargs))
        await _off_loop(engine.start, "connect", on_abandon=engine.close)
        return cls(engine, interface)

    def _build(self, spec: FunctionSpec, timeout: float | None,
               metadata: dict[str, str] | None = None) -> Callable[..., Any]:
        engine = self._engine
        icps = engine.options.interceptors
        name = spec.name
        variants = self._variants(spec, timeout, metadata)
        convert = self._result_converter(spec)

        if spec.is_generator:
            def stream(*args: Any, **kwargs: Any) -> AsyncRemoteIterator:
                return AsyncRemoteIterator(
                    open_stream(engine, name, *wire_from_bound(spec, args, kwargs), timeout, metadata), convert)

            return make_function(spec, stream, **variants)

        async def call(*args: Any, **kwargs: Any) -> Any:
            wargs, wkwargs = wire_from_bound(spec, args, kwargs)
            if not icps:
                return await self._call(name, wargs, wkwargs, timeout, metadata)
            obs, meta = start_observed(engine, name, metadata, False, timeout)
            try:
                result = await self._call(name, wargs, wkwargs, timeout, meta)
            except asyncio.CancelledError:
                obs.end(None, True)
                raise
            except BaseException as exc:
                obs.end(exc)
                raise
            obs.end()
            return result

        if convert is not None:
            async def converted(*args: Any, **kwargs: Any) -> Any:
                return convert(await call(*args, **kwargs))

            return make_function(spec, converted, **variants)
        return make_function(spec, call, **variants)

    async def _call(self, name: str, wargs: list[Any], wkwargs: dict[str, Any], timeout: float | None,
                    metadata: dict[str, str] | None) -> Any:
        engine = self._engine
        loop = asyncio.get_running_loop()
        item = LoopCall(engine, loop, loop_inbox(loop))  # this loop reads the reply
        engine.calls.submit(item, name, wargs, wkwargs, timeout, send=False, metadata=metadata)
        try:
            if len(item.payload) < _SEND_OFF_LOOP:
                if self._outbox or engine.in_flight > 1:
                    self._queue_send(loop, item)
                else:  # a lone call goes out at once: one turn of the loop less per call
                    self._send_now(loop, [item])
                    # Once the tasks ready now have run (a gather's other calls among
                    # them), poll for the reply if this call is still alone in flight.
                    if engine.busy_policy is not None:
                        loop.call_soon(engine.role.poll_in_loop, loop)
            else:  # writing megabytes would stall the event loop: write on a helper thread
                await _off_loop(lambda: engine.calls.send_items((item,)), "send")
                engine.role.read_in_loop(loop)
            return await item.future
        except asyncio.CancelledError:
            item.cancel()  # the awaiting task was cancelled: so is the call, on the server too
            raise

    def _queue_send(self, loop: asyncio.AbstractEventLoop, item: LoopCall) -> None:
        # Calls started in one turn of the event loop (a gather of 64, say) go out
        # together: a writer that coalesces. At most _OUTBOX_BATCH wait for the end of
        # the turn, so the server starts on the first ones while the loop still builds
        # the rest (smaller writes let the server start sooner than one write of all).
        if not self._outbox:
            loop.call_soon(self._flush)
        self._outbox.append(item)
        if len(self._outbox) >= _OUTBOX_BATCH:
            self._flush()

    def _flush(self) -> None:
        items, self._outbox = self._outbox, []
        if items:
            self._send_now(asyncio.get_running_loop(), items)

    def _send_now(self, loop: asyncio.AbstractEventLoop, items: list[LoopCall]) -> None:
        self._engine.calls.send_items(items)
        self._engine.role.read_in_loop(loop)

    async def close(self) -> None:
        """Close the connection (off the event loop); pending calls fail with ConnectionLost."""
        await _off_loop(self._engine.close, "close")

    async def __aenter__(self) -> EasyRpcProxy:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
