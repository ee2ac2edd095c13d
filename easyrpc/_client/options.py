"""A client connection's options, in one place: both proxies and server links take them.

``EasyRpcProxy.create(..., timeout=2.0)`` (either client) and
``rpc.create_server_proxy(..., ping_interval=5)`` accept any field below as a keyword,
or a whole :class:`ClientOptions` as ``options=`` (keywords then override it).
"""

from __future__ import annotations

import dataclasses
import math
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._core.identity import check_client_id
from .._core.metadata import check_metadata
from .._spin import DEFAULT_BUSY_POLL, check_window
from ..interceptors import Interceptor, checked
from .endpoints import ENDPOINT_ORDERS

__all__ = ["ClientOptions", "client_options"]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How a client connects and calls.

    Attributes:
        namespace: the namespace (or namespace group) whose functions to use.
        client_id: the identity to prove (with ``server_secret`` being that id's own
            secret, one of the server's ``credentials``); None: prove the shared secret.
        encryption_enabled: encrypt every frame (the server must enable it too).
        timeout: default time limit per call in seconds (``None``: no limit).
        ssl_context: connect with ``wss://`` using this context.
        connect_timeout: limit for connecting, and for a call waiting for a
            reconnection when it has no time limit of its own.
        ping_interval, ping_timeout: keepalive; a server silent for their sum is
            treated as gone.
        reconnect: reconnect in the background after a drop.
        max_backoff: the longest wait between two reconnection attempts (seconds).
        max_in_flight: calls in flight after which new calls wait.
        stream_window: items a generator may run ahead of its consumer.
        busy_poll: seconds (at most 0.01) a call alone in flight polls the socket for
            its reply before its thread sleeps: it saves the wake-up of an idle CPU,
            which dominates a loopback call's time on a virtual machine. Backs off by
            itself when replies take longer; ``0`` never polls.
        metadata: metadata sent with every call (a mapping of strings to strings; a
            call's own, ``p.f.with_metadata({...})``, is merged over it).
        interceptors: :class:`~easyrpc.interceptors.Interceptor` objects that see
            every call and stream, in order; they may refuse calls (locally, nothing
            sent) or add metadata.
        endpoint_order: with several endpoints (``create_many``), ``'in-order'``
            tries them as given; ``'random'`` in an order shuffled once per proxy
            (spreads many proxies over the servers).
    """

    namespace: str = "DEFAULT"
    client_id: str | None = None
    encryption_enabled: bool = False
    timeout: float | None = None
    ssl_context: ssl.SSLContext | None = None
    connect_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    reconnect: bool = True
    max_backoff: float = 5.0
    max_in_flight: int = 10_000
    stream_window: int = 64
    busy_poll: float = DEFAULT_BUSY_POLL
    metadata: Mapping[str, str] | None = field(default=None, hash=False)
    interceptors: Sequence[Interceptor] = ()
    endpoint_order: str = "in-order"

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or not self.namespace:
            raise ValueError("namespace must be a non-empty string")
        if self.client_id is not None:
            check_client_id(self.client_id)
        if self.timeout is not None and not _positive(self.timeout):
            raise ValueError(f"timeout must be a positive number of seconds or None, not {self.timeout!r}")
        for name in ("connect_timeout", "ping_interval", "ping_timeout", "max_backoff"):
            if not _positive(getattr(self, name)):
                raise ValueError(f"{name} must be a positive number of seconds, not {getattr(self, name)!r}")
        for name in ("max_in_flight", "stream_window"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        check_window(self.busy_poll)
        if self.endpoint_order not in ENDPOINT_ORDERS:
            raise ValueError(f"endpoint_order must be one of {', '.join(map(repr, ENDPOINT_ORDERS))}, "
                             f"not {self.endpoint_order!r}")
        if self.metadata is not None:  # a private copy: a caller's later changes are not sent
            meta = dict(self.metadata) if isinstance(self.metadata, Mapping) else self.metadata
            object.__setattr__(self, "metadata", check_metadata(meta) or None)
        object.__setattr__(self, "interceptors", checked(self.interceptors))


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def client_options(options: ClientOptions | None, overrides: dict[str, Any]) -> ClientOptions:
    """*options* (default: the defaults) with *overrides* (keywords named as its fields);
    a ``TypeError`` names an unknown keyword, as a function call would."""
    base = options if options is not None else ClientOptions()
    if not overrides:
        return base
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ClientOptions)})
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r} (client options: "
                        f"{', '.join(f.name for f in dataclasses.fields(ClientOptions))})")
    return dataclasses.replace(base, **overrides)
