"""What the blocking and async proxies share: the live function table and its access.

Each remote function becomes a real Python function, built by makefun from a validated
:class:`~easyrpc._signature.FunctionSpec` (names checked as identifiers, no wire text
ever compiled or evaluated), so arguments bind exactly as for a local call and
``help()`` shows the origin's signature.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from makefun import create_function

from ._client import Engine
from ._client.observed import merged_metadata
from ._core.metadata import check_metadata
from ._signature import FunctionSpec, wire_arguments

__all__ = ["ProxyBase", "FunctionMap", "engine_of", "make_function"]

MODULE = "easyrpc.remote"


def _makefun_can_compile(spec: FunctionSpec) -> bool:
    """False if a name would collide with the names makefun's generated code uses.

    makefun's code calls the implementation as the global ``_func_impl_`` (a parameter
    of that name shadows it; ``_func_`` is refused outright), refers to protected
    defaults and hints as globals ``DEFAULT_<param>``, ``HINT_<param>`` and
    ``RETURNHINT``, and deletes the function's and each parameter's name from those
    globals before it compiles.
    """
    for name in (spec.name, *spec.call_signature.parameters):
        if name in _MAKEFUN_NAMES or name.startswith(_MAKEFUN_PREFIXES):
            return False
    return True


_MAKEFUN_NAMES = frozenset({"_func_impl_", "_func_", "RETURNHINT"})
_MAKEFUN_PREFIXES = ("DEFAULT_", "HINT_")


def _binding_function(spec: FunctionSpec, impl: Callable[..., Any]) -> Callable[..., Any]:
    """What makefun builds, without compiling anything: binds with ``spec.call_signature``
    first (the local ``TypeError``), then calls *impl* with the wire's arguments."""
    if inspect.iscoroutinefunction(impl):
        async def acall(*args: Any, **kwargs: Any) -> Any:
            wargs, wkwargs = wire_arguments(spec, args, kwargs)
            return await impl(*wargs, **wkwargs)

        return acall

    def call(*args: Any, **kwargs: Any) -> Any:
        wargs, wkwargs = wire_arguments(spec, args, kwargs)
        return impl(*wargs, **wkwargs)

    return call


def make_function(spec: FunctionSpec, impl: Callable[..., Any], **attrs: Any) -> Callable[..., Any]:
    """A function with *spec*'s name, doc and signature that calls *impl*.

    makefun compiles only the call signature (validated identifiers, defaults replaced by
    one private sentinel); the displayed signature, with the server's text for defaults
    and annotations, is attached as ``__signature__``. Where a name would collide with
    makefun's own, a function that binds the arguments itself stands in: slower by one
    ``Signature.bind``, and an async one raises its ``TypeError`` where it is awaited
    (still before anything is sent), as it must stay an ``async def`` for
    ``inspect.iscoroutinefunction``.
    """
    fn: Callable[..., Any]
    if _makefun_can_compile(spec):
        fn = create_function(
            spec.call_signature, impl, func_name=spec.name, qualname=spec.name,
            doc=spec.doc, module_name=MODULE, add_source=False, add_impl=False)
    else:
        fn = _binding_function(spec, impl)
        fn.__name__ = fn.__qualname__ = spec.name
        fn.__doc__ = spec.doc
        fn.__module__ = MODULE
    fn.__signature__ = spec.signature  # type: ignore[attr-defined]
    fn.__annotations__ = dict(spec.annotations)
    for key, value in attrs.items():
        setattr(fn, key, value)
    return fn


class FunctionMap(Mapping[str, Callable[..., Any]]):
    """A live, read-only view of a proxy's remote functions by name."""

    def __init__(self, proxy: ProxyBase) -> None:
        self._proxy = proxy

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self._proxy._function(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._proxy._engine.functions))

    def __len__(self) -> int:
        return len(self._proxy._engine.functions)

    def __contains__(self, name: object) -> bool:
        return name in self._proxy._engine.functions

    def __repr__(self) -> str:
        return repr(dict(self))


def engine_of(proxy: ProxyBase) -> Engine:
    """The engine behind *proxy* (either client): for diagnostics and tests.

    Its read-only views tell how the connection is served: ``url``, ``cid``,
    ``connected``, ``closed``, ``in_flight`` (calls and streams waiting),
    ``reading_role`` (who reads the socket now: ``'hub'``, ``'reader-thread'``,
    ``'caller'``, ``'loop'`` or ``'none'``), ``reading_thread``, ``loop_reader`` and
    ``busy_policy`` (the busy-poll hits and misses). A proxy's own attributes are its
    remote functions, so these live here rather than on the proxy.
    """
    return proxy._engine


class ProxyBase:
    """Function access shared by :class:`easyrpc.proxy.EasyRpcProxy` and ``easyrpc.aio``'s."""

    _engine: Engine

    def __init__(self, engine: Engine, interface: type | None = None) -> None:
        self._engine = engine
        self._interface = interface  # create(..., interface=Cls): results convert as Cls annotates them
        self._built: dict[str, tuple[FunctionSpec, Callable[..., Any]]] = {}
        self._built_lock = threading.Lock()
        self._offer_loop: asyncio.AbstractEventLoop | None = None  # easyrpc.aio: where async ones run

    def offer(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Let the server call *fn* (by *name*, default its ``__name__``) until the proxy closes.

        ``@p.offer``, ``@p.offer(name='on_event')`` or ``p.offer(fn)``; returns *fn*
        unchanged. On the server, an origin function gets ``easyrpc.server.caller()``
        and calls ``caller.on_event(...)``, now or later (a subscription's pushes). The
        server can call nothing else of this client. Plain functions run on the proxy's
        callback threads; with ``easyrpc.aio``, ``async def`` ones on the proxy's loop.
        """
        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            key = name if name is not None else getattr(func, "__name__", None)
            if not isinstance(key, str) or not key:
                raise ValueError("an offered function needs a name")
            self._engine.callbacks.offer(key, func, self._offer_loop)
            return func

        return register if fn is None else register(fn)

    def withdraw(self, name: str) -> bool:
        """Stop offering the function *name* (later calls of it fail on the server); False if not offered."""
        return self._engine.callbacks.withdraw(name)

    def _build(self, spec: FunctionSpec, timeout: float | None,
               metadata: dict[str, str] | None = None) -> Callable[..., Any]:
        raise NotImplementedError

    def _result_converter(self, spec: FunctionSpec) -> Callable[[Any], Any] | None:
        """What converts *spec*'s results (a generator's items) as the interface says; None: nothing."""
        if self._interface is None:
            return None
        from ._interface import result_converter

        return result_converter(self._interface, spec.name, spec.is_generator)

    def _variants(self, spec: FunctionSpec, timeout: float | None,
                  metadata: dict[str, str] | None) -> dict[str, Callable[..., Any]]:
        """``with_timeout`` and ``with_metadata`` of a function built with *timeout* and
        *metadata*: each gives the same function with one of them changed (composable:
        ``p.f.with_metadata(m).with_timeout(t)``); metadata merges over what it had."""
        return {
            "with_timeout": lambda t: self._build(spec, t, metadata),
            "with_metadata": lambda m: self._build(spec, timeout, merged_metadata(metadata, check_metadata(dict(m)))),
        }

    def _function(self, name: str) -> Callable[..., Any]:
        spec = self._engine.functions.get(name)
        if spec is None:
            raise KeyError(name)
        with self._built_lock:
            cached = self._built.get(name)
            if cached is not None and cached[0] is spec:
                return cached[1]
        fn = self._build(spec, None, self._engine.options.metadata)  # type: ignore[arg-type]
        with self._built_lock:
            self._built[name] = (spec, fn)
        return fn

    @property
    def proxy_funcs(self) -> FunctionMap:
        """The remote functions by name (a live mapping: it follows the server's list)."""
        return FunctionMap(self)

    # Any, not Callable: a remote function also has .submit, .with_timeout and .with_metadata
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._function(name)
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no remote function {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return self._function(name)

    def __contains__(self, name: object) -> bool:
        return name in self._engine.functions

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._engine.functions))

    @property
    def connected(self) -> bool:
        """True while the WebSocket is up (False while reconnecting or after close)."""
        return self._engine.connected

    @property
    def connection_id(self) -> str:
        """The id the server assigned to the current connection."""
        return self._engine.cid

    def __repr__(self) -> str:
        state = "closed" if self._engine.closed else ("connected" if self._engine.connected else "reconnecting")
        return f"<{type(self).__name__} {self._engine.url} namespace={self._engine.namespace!r} {state}>"
