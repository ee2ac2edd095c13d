"""The blocking easyrpc client.

Example::

    from easyrpc.proxy import EasyRpcProxy

    with EasyRpcProxy.create('127.0.0.1', 8090, '/ws/server_a', server_secret='abcd1234') as p:
        p.good_func_a(1, 5, 7)                 # blocks: {'good_func_a': [1, 5, 7]}
        fut = p.good_func_a.submit(1, 5, 7)    # concurrent.futures.Future
        p.good_func_a.with_timeout(2.0)(1, 5, 7)
        for item in p.count_up(3): ...         # generators stream
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar, overload

from ._client import END, BlockingCall, CallFuture, ClientStream, ConvertedFuture, Engine
from ._client.endpoints import EndpointSpec
from ._client.observed import end_with_future, open_stream, start_observed
from ._client.options import ClientOptions, client_options
from ._proxy_base import ProxyBase, engine_of, make_function
from ._signature import FunctionSpec, wire_from_bound

__all__ = ["ClientOptions", "EasyRpcProxy", "RemoteIterator", "engine_of"]

I = TypeVar("I")  # noqa: E741 - the interface a proxy is typed as


class RemoteIterator:
    """Items of a remote generator, as the server yields them.

    ``close()``, ``break`` out of a ``with`` block, or dropping the iterator stops the
    generator on the server.
    """

    def __init__(self, stream: ClientStream, convert: Callable[[Any], Any] | None = None) -> None:
        self._stream = stream
        self._convert = convert

    def __iter__(self) -> RemoteIterator:
        return self

    def __next__(self) -> Any:
        fut = self._stream.next_future()
        try:
            value = fut.result(self._stream.item_timeout)
        except TimeoutError:
            if fut.done():
                raise  # the stream failed with a TimeoutError: CallTimeout or remote
            self._stream.engine.calls.expire(self._stream)
            value = self._stream.next_future().result(0)
        if value is END:
            raise StopIteration
        return value if self._convert is None else self._convert(value)

    def close(self) -> None:
        """Stop the stream and free the server's side."""
        self._stream.close()

    def __enter__(self) -> RemoteIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None and not stream.closed:
            stream.close()


class EasyRpcProxy(ProxyBase):
    """A blocking proxy for the functions of one easyrpc server namespace.

    Create it with :meth:`create`. Remote functions are attributes (``p.f``), items
    (``p['f']``) and ``p.proxy_funcs['f']``; ``'f' in p`` tests for one. A proxy is safe
    to share among threads: all calls share one WebSocket.
    """

    @overload
    @classmethod
    def create(cls, origin_host: str, origin_port: int, origin_path: str, server_secret: str | bytes, *,
               interface: Callable[..., I], options: ClientOptions | None = None, **kwargs: Any) -> I: ...

    @overload
    @classmethod
    def create(cls, origin_host: str, origin_port: int, origin_path: str, server_secret: str | bytes, *,
               interface: None = None, options: ClientOptions | None = None, **kwargs: Any) -> EasyRpcProxy: ...

    @classmethod
    def create(
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
        """Connect, authenticate and fetch the server's functions.

        Args:
            origin_host, origin_port, origin_path: where the server listens.
            server_secret: the secret shared with the server.
            interface: a class whose methods type the functions, usually the ``Protocol``
                ``easyrpc stubgen`` wrote: the proxy is then typed as that class for a type
                checker, and results convert to its return annotations (a dataclass result
                arrives as its dataclass; so do the results of ``.submit()`` futures).
            options: a :class:`~easyrpc.proxy.ClientOptions`; or any of its fields as a
                keyword (``namespace='admin'``, ``timeout=2.0``, ``ssl_context=...``,
                ``connect_timeout``, ``ping_interval``, ``ping_timeout``, ``reconnect``,
                ``max_backoff``, ``max_in_flight``, ``stream_window``, ``busy_poll``,
                ``encryption_enabled``), which override *options*.

        Raises:
            AuthenticationError: wrong secret, or encryption or protocol mismatch.
            ConnectionError: the server cannot be reached.
            TypeError: an unknown keyword; ValueError: an invalid option value.
        """
        if interface is not None:
            from ._interface import check_interface

            check_interface(interface)
        return cls._open([(origin_host, int(origin_port), origin_path)], server_secret, options, kwargs, interface)

    @classmethod
    def create_many(
        cls,
        endpoints: Sequence[EndpointSpec],
        server_secret: str | bytes,
        *,
        options: ClientOptions | None = None,
        **kwargs: Any,
    ) -> EasyRpcProxy:
        """Connect to the first of several servers that answers; fail over on a drop.

        ``EasyRpcProxy.create_many(['ws://h1:8090/ws/a', 'ws://h2:8090/ws/a'],
        server_secret='...')``. *endpoints* are ``ws://`` or ``wss://`` URLs (``wss``
        verifies with ``ssl_context``, or the system's CAs without one) or
        ``(host, port, path)`` tuples (``wss`` when ``ssl_context`` is given); all serve
        the same functions with the same secret. They are tried in turn
        (``endpoint_order='random'``: in an order shuffled once per proxy). After a drop
        the calls in flight fail with ``ConnectionLost`` as with one server (none is
        sent twice), and each reconnection round tries the endpoint after the one that
        dropped first, with the usual backoff between rounds. Other parameters and errors
        as for :meth:`create` (ConnectionError names each endpoint's failure).
        """
        return cls._open(endpoints, server_secret, options, kwargs, None)  # type: ignore[no-any-return]

    @classmethod
    def _open(cls, endpoints: Sequence[EndpointSpec], server_secret: str | bytes, options: ClientOptions | None,
              kwargs: dict[str, Any], interface: Any) -> Any:
        engine = Engine(endpoints, server_secret, client_options(options, kwargs))
        engine.start()
        return cls(engine, interface)

    def _build(self, spec: FunctionSpec, timeout: float | None,
               metadata: dict[str, str] | None = None) -> Callable[..., Any]:
        engine = self._engine
        icps = engine.options.interceptors
        name = spec.name
        variants = self._variants(spec, timeout, metadata)
        convert = self._result_converter(spec)

        if spec.is_generator:
            def stream(*args: Any, **kwargs: Any) -> RemoteIterator:
                return RemoteIterator(open_stream(engine, name, *wire_from_bound(spec, args, kwargs), timeout, metadata),
                                      convert)

            return make_function(spec, stream, **variants)

        def submit(*args: Any, **kwargs: Any) -> CallFuture:
            wargs, wkwargs = wire_from_bound(spec, args, kwargs)
            fut = CallFuture(engine) if convert is None else ConvertedFuture(engine, convert)
            if not icps:
                engine.calls.submit(fut, name, wargs, wkwargs, timeout, metadata=metadata)
                return fut
            obs, meta = start_observed(engine, name, metadata, False, timeout)
            try:
                engine.calls.submit(fut, name, wargs, wkwargs, timeout, metadata=meta)
            except BaseException as exc:
                obs.end(exc)
                raise
            end_with_future(obs, fut)
            return fut

        def call(*args: Any, **kwargs: Any) -> Any:
            wargs, wkwargs = wire_from_bound(spec, args, kwargs)
            if icps:
                return observed(wargs, wkwargs)
            call = BlockingCall(engine)
            engine.calls.submit(call, name, wargs, wkwargs, timeout, metadata=metadata)
            return engine.calls.wait(call, timeout if timeout is not None else engine.timeout)

        def observed(wargs: list[Any], wkwargs: dict[str, Any]) -> Any:
            obs, meta = start_observed(engine, name, metadata, False, timeout)
            try:
                call = BlockingCall(engine)
                engine.calls.submit(call, name, wargs, wkwargs, timeout, metadata=meta)
                result = engine.calls.wait(call, timeout if timeout is not None else engine.timeout)
            except BaseException as exc:
                obs.end(exc)
                raise
            obs.end()
            return result

        if convert is not None:
            def converted(*args: Any, **kwargs: Any) -> Any:
                return convert(call(*args, **kwargs))

            return make_function(spec, converted, submit=make_function(spec, submit), **variants)
        return make_function(spec, call, submit=make_function(spec, submit), **variants)

    def close(self) -> None:
        """Close the connection; calls still pending fail with ConnectionLost. Idempotent."""
        self._engine.close()

    def __enter__(self) -> EasyRpcProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
