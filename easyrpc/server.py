"""The easyrpc server: plain Python functions offered over a Flask-Sock WebSocket route.

Example::

    from flask import Flask
    from easyrpc.server import EasyRpcServer

    app = Flask(__name__)
    rpc = EasyRpcServer(app, '/ws/server_a', server_secret='abcd1234')

    @rpc.origin
    def good_func_a(a, b, c):
        return {"good_func_a": [a, b, c]}
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._client.endpoints import EndpointSpec
from ._client.options import ClientOptions, client_options
from ._core.close_codes import SHUTTING_DOWN
from ._core.identity import ON_BEHALF_OF, Access
from ._net.hub import hub
from ._pool import PoolClosed, WorkerPool
from ._server.access import Credentials, Identities
from ._server.callers import Caller, Offered, RemoteCallback, caller
from ._server.loop import LoopThread
from ._server.registry import Registered, Registry
from ._server.tracking import Tracked
from ._spin import DEFAULT_BUSY_POLL, check_window
from .interceptors import CallInfo, Interceptor, Outcome, call_context, checked

if TYPE_CHECKING:
    from flask import Flask

    from ._handshake import Secret
    from ._links import ServerLink
    from ._server.connection import ServerConnection

__all__ = ["Access", "CallInfo", "Caller", "EasyRpcServer", "Interceptor", "ON_BEHALF_OF", "Offered", "Outcome",
           "RemoteCallback", "call_context", "caller"]

F = TypeVar("F", bound=Callable[..., Any])
_log = logging.getLogger("easyrpc.server")


def _without_extensions(view: Callable[..., Any]) -> Callable[..., Any]:
    """*view* (flask-sock's upgrade) with the client's extension offers hidden from it.

    simple-websocket accepts permessage-deflate whenever a client offers it (browsers
    and the ``websockets`` library do), but easyrpc's frames are never compressed and
    its reader refuses compressed ones: declined at the upgrade, the client sends plain
    frames (RFC 6455 §9.1: a server may accept none of the offered extensions)."""
    from flask import request

    @functools.wraps(view)
    def upgrade(*args: Any, **kwargs: Any) -> Any:
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return view(*args, **kwargs)

    return upgrade


class EasyRpcServer(Identities, Tracked):
    """Serve registered functions to easyrpc proxies over a WebSocket route of a Flask app.

    Args:
        app: the Flask app, or ``None`` to attach later with :meth:`init_app`.
        path: the WebSocket route, e.g. ``'/ws/server_a'``.
        server_secret: the shared secret proxies must prove they know (None: only
            *credentials* are accepted).
        credentials: client credentials, each an identity: ``{client_id: secret}``, or
            a function ``lookup(client_id) -> secret | None`` called at each handshake
            (keys rotate and revoke while the server runs). A proxy proves one with
            ``create(..., client_id=..., server_secret=<its secret>)``.
        access: what each identity (a client id, or a TLS client certificate's subject)
            may call, ``{identity: Access(...)}``; ``'*'`` stands for every identity not
            listed (the shared secret's included); an identity with no entry may call
            nothing. ``None``: everyone may call everything.
        trusted_relays: identities of relaying servers trusted to name the caller they
            relay for (metadata ``easyrpc-on-behalf-of``); from others it is ignored.
        encryption_enabled: encrypt every frame after the handshake (AES-GCM); proxies
            must enable it too.
        max_workers: threads running plain and generator functions (bounded pool).
        max_in_flight: calls one connection may have running; more are refused with
            :class:`~easyrpc.exceptions.ServerBusy`.
        max_message_size: largest message accepted after authentication (``None``: no limit).
        auth_timeout: seconds a new socket has to authenticate before it is closed.
        preauth_max_message: largest frame accepted before authentication.
        ping_interval: seconds of silence after which the server pings a connection.
        ping_timeout: seconds more of silence after which a connection is dropped.
        send_tracebacks: include remote tracebacks in error replies.
        stream_window_max: the most items a generator may run ahead of its consumer.
        busy_poll: seconds (at most 0.01) a connection with no call running polls its
            socket for the next request before its thread sleeps: a sequential caller's
            next call then finds the server awake. One thread per process polls at a
            time, and a connection backs off by itself when requests come further apart;
            ``0`` never polls.
        interceptors: :class:`~easyrpc.interceptors.Interceptor` objects that see every
            call and stream this server runs (forwarded ones included), in order; they
            may refuse calls or add metadata. Served functions read their call through
            :func:`call_context`.
    """

    def __init__(
        self,
        app: Flask | None,
        path: str,
        server_secret: str | bytes | None = None,
        *,
        credentials: Credentials | None = None,
        access: Mapping[str, Access] | None = None,
        trusted_relays: Collection[str] = (),
        encryption_enabled: bool = False,
        max_workers: int = 32,
        max_in_flight: int = 1024,
        max_message_size: int | None = None,
        auth_timeout: float = 10.0,
        preauth_max_message: int = 8192,
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
        send_tracebacks: bool = True,
        stream_window_max: int = 1024,
        busy_poll: float = DEFAULT_BUSY_POLL,
        interceptors: Sequence[Interceptor] = (),
    ) -> None:
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        self.busy_poll = check_window(busy_poll)
        self.path = path
        self.encryption_enabled = encryption_enabled
        self.max_in_flight = max_in_flight
        self.max_message_size = max_message_size
        self.auth_timeout = auth_timeout
        self.preauth_max_message = preauth_max_message
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.send_tracebacks = send_tracebacks
        self.stream_window_max = stream_window_max
        self.interceptors: tuple[Interceptor, ...] = checked(interceptors)
        self._init_identities(server_secret, credentials, access, trusted_relays)
        self.log = logging.getLogger(f"easyrpc.server.{path.strip('/').replace('/', '.') or 'root'}")
        self._lock = threading.Lock()
        self._connections: set[ServerConnection] = set()
        self.server_id = uuid.uuid4().hex  # identifies this server in forwarded routes
        self._registry = Registry(self.server_id, self.log)
        self._closing = False
        self._closed = False
        self._max_workers = max_workers
        self._pool: WorkerPool | None = None
        self._loop = LoopThread("easyrpc-server-loop")
        self.app: Flask | None = None
        if app is not None:
            self.init_app(app)

    # --- wiring ------------------------------------------------------------------------
    def init_app(self, app: Flask) -> None:
        """Attach the WebSocket route to *app* (the Flask app-factory pattern).

        Also sets ``app.config['SOCK_SERVER_OPTIONS']['thread_class']`` (wrapping any
        class set there) so that easyrpc's connections read their sockets on their own
        handler thread; other flask-sock routes keep simple-websocket's reader thread.
        """
        from flask_sock import Sock

        from ._server.connection import ServerConnection
        from ._server.owner import install_socket_owner

        if self.app is not None:
            raise RuntimeError(f"EasyRpcServer {self.path} is already attached to an app")
        self.app = app
        install_socket_owner(app)

        def handler(ws: Any) -> None:
            ServerConnection(self, ws).run()

        handler.__name__ = f"easyrpc_{self.path}"
        endpoint = f"easyrpc:{self.path}"
        Sock(app).route(self.path, endpoint=endpoint)(handler)
        app.view_functions[endpoint] = _without_extensions(app.view_functions[endpoint])
        self.log.info("serving easyrpc on %s", self.path)

    # --- registration ------------------------------------------------------------------
    @overload
    def origin(self, func: F, *, namespace: str = ..., name: str | None = ..., tags: Iterable[str] = ...) -> F: ...

    @overload
    def origin(self, func: None = ..., *, namespace: str = ..., name: str | None = ...,
               tags: Iterable[str] = ...) -> Callable[[F], F]: ...

    def origin(
        self, func: F | None = None, *, namespace: str = "DEFAULT", name: str | None = None, tags: Iterable[str] = ()
    ) -> F | Callable[[F], F]:
        """Register a function; usable bare (``@rpc.origin``) or with options.

        Returns the function unchanged, so it stays callable locally and decorators stack.
        """
        if func is None:
            def decorator(f: F) -> F:
                self.register(f, namespace=namespace, name=name, tags=tags)
                return f
            return decorator
        self.register(func, namespace=namespace, name=name, tags=tags)
        return func

    def register(self, func: Callable[..., Any], *, namespace: str = "DEFAULT", name: str | None = None,
                 tags: Iterable[str] = ()) -> None:
        """Register *func* under *name* (default: its ``__name__``) in *namespace*; *tags*
        are what an :class:`Access` may allow it by.

        Connected proxies of that namespace (and of groups containing it) are told at once.
        """
        tagset = frozenset([tags] if isinstance(tags, str) else tags)
        if not all(isinstance(t, str) and t for t in tagset):
            raise TypeError("tags must be non-empty strings")
        name = self._registry.register(func, namespace, name, tagset)
        self.log.info("registered function %s in namespace %s", name, namespace)
        self._push_functions(namespace)

    def create_namespace_group(self, group: str, *namespaces: str) -> None:
        """Offer the union of *namespaces* under the name *group*.

        Where two namespaces have a function of the same name, the one listed first wins
        (a warning is logged).
        """
        self._registry.create_group(group, namespaces)
        self.log.info("namespace group %s = %s", group, ", ".join(namespaces))
        self._push_functions(group)

    def functions_for(self, namespace: str, access: Access | None = None) -> dict[str, Registered]:
        """The functions a connection of *namespace* (a namespace or group) may call with
        *access* (None: all)."""
        return self._registry.functions_for(namespace, access)

    # --- links to other servers ---------------------------------------------------------
    def create_server_proxy(
        self,
        origin_host: str,
        origin_port: int,
        origin_path: str,
        server_secret: str | bytes,
        *,
        local_namespace: str | None = None,
        options: ClientOptions | None = None,
        **kwargs: Any,
    ) -> ServerLink:
        """Link to another easyrpc server and offer its *namespace*'s functions here.

        *options* and keywords are the client's (:class:`~easyrpc.proxy.ClientOptions`:
        ``namespace``, ``timeout``, ``ping_interval``, ``max_backoff``, ...); the link
        always reconnects. The functions appear in *local_namespace* (default: the
        linked *namespace*) with their
        signatures; calls, generators, errors, timeouts and cancellation pass through.
        The link connects in the background and reconnects with backoff; while it is
        down its functions are withdrawn from this server's proxies. Local functions
        take precedence over forwarded ones of the same name, and earlier links over
        later ones (a warning is logged).
        """
        return self.create_server_proxy_many([(origin_host, int(origin_port), origin_path)], server_secret,
                                             local_namespace=local_namespace, options=options, **kwargs)

    def create_server_proxy_many(
        self,
        endpoints: Sequence[EndpointSpec],
        server_secret: str | bytes,
        *,
        local_namespace: str | None = None,
        options: ClientOptions | None = None,
        **kwargs: Any,
    ) -> ServerLink:
        """As :meth:`create_server_proxy`, to the first of several servers that answers
        (replicas offering the same functions with the same secret), failing over to the
        next when the link drops: *endpoints* as for
        :meth:`EasyRpcProxy.create_many <easyrpc.proxy.EasyRpcProxy.create_many>`
        (``ws://``/``wss://`` URLs or ``(host, port, path)``; ``endpoint_order``)."""
        from ._links import ServerLink

        link = ServerLink(self, endpoints, server_secret, local_namespace, client_options(options, kwargs))
        with self._lock:
            if self._closing:
                raise RuntimeError("the server is closed")
            self._registry.add_link(link)
        self.log.info("linking to %s (namespace %s)", link.url, link.namespace)
        link.start()
        return link

    def set_forwarded(self, link: ServerLink, offered: dict[str, dict[str, Any]]) -> None:
        """Replace the functions *link* offers (called by the link as its origin changes)."""
        if self._registry.set_forwarded(link, offered):
            self._push_functions(link.local_namespace)

    def get_registered_functions(self, namespace: str = "DEFAULT", access: Access | None = None) -> list[dict[str, Any]]:
        """Descriptions (name, namespace, signature, docstring...) of *namespace*'s
        functions (those *access* allows)."""
        return [reg.description for reg in self.functions_for(namespace, access).values()]

    def _push_functions(self, namespace: str) -> None:
        with self._lock:
            targets = [c for c in self._connections if self._registry.sees(c.namespace, namespace)]
        for conn in targets:
            conn.push_functions()

    # --- execution resources -----------------------------------------------------------
    def executor(self) -> WorkerPool:
        """The bounded worker pool for plain and generator functions (created on first use).

        Raises PoolClosed once the server has closed it: nothing starts threads again.
        """
        with self._lock:
            if self._pool is None:
                if self._closed:
                    raise PoolClosed("the server is closed")
                self._pool = WorkerPool(self._max_workers)
            return self._pool

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop thread's loop, for ``async def`` functions (started on first use).

        Raises PoolClosed once the server has closed it.
        """
        if self._closed:
            raise PoolClosed("the server is closed")
        return self._loop.get()

    @property
    def secret(self) -> Secret | None:
        """The shared secret (None: only client credentials), wrapped so that it never
        shows in logs or reprs."""
        return self.keys.shared

    def close(self, grace: float = 5.0) -> None:
        """Stop serving: refuse new connections, let calls in flight finish for up to
        *grace* seconds, tell proxies the server is going away, close every connection,
        and stop the worker threads. Idempotent."""
        with self._lock:
            self._closing = True
            conns = list(self._connections)
        for link in self._registry.take_links():  # forgotten first: a closing link withdraws nothing
            link.close()
        deadline = time.monotonic() + grace
        for conn in conns:
            conn.drain(deadline)
        for conn in conns:
            conn.close(*SHUTTING_DOWN, bye=SHUTTING_DOWN.reason)
        with self._lock:
            pool, self._pool = self._pool, None
            self._closed = True  # from here on no pool or loop is built again
        if pool is not None:
            # Queued calls are dropped; running ones cannot be interrupted: wait for them
            # only as long as the grace period allows.
            busy = pool.shutdown(deadline)
            if busy:
                self.log.warning("%d worker threads still run functions after the grace period; "
                                 "they end when those functions return", busy)
        self._loop.close()
        for conn in conns:  # closed: each ends when its peer answers, or after the close wait
            conn.wait_ended(max(0.0, deadline - time.monotonic()) + 2.0)
        hub().join_if_idle(2.0)  # the hub's threads end with the process's last connection
        self.log.info("easyrpc server on %s closed", self.path)
