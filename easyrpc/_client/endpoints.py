"""Where a proxy connects: one endpoint, or several it fails over between.

``EasyRpcProxy.create_many([...])`` gives a proxy several endpoints (``ws://`` or
``wss://`` URLs, or ``(host, port, path)`` tuples). It connects to the first that
answers, in the given order or (``endpoint_order='random'``) in an order shuffled once
per proxy, so that a crowd of proxies spreads over the servers. After a drop, each
reconnection round tries the endpoints in turn starting with the one *after* the one
that dropped (that one comes last), so a proxy fails over at once and stays on the
endpoint that answered until it drops in turn.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ENDPOINT_ORDERS", "Endpoint", "EndpointSpec", "Endpoints", "parse_endpoints"]

ENDPOINT_ORDERS = ("in-order", "random")
EndpointSpec = str | tuple[str, int, str]  # a ws:// or wss:// URL, or (host, port, path)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One server address: ``ws(s)://host:port/path``."""

    host: str
    port: int
    path: str
    tls: bool

    @property
    def url(self) -> str:
        hostpart = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{'wss' if self.tls else 'ws'}://{hostpart}:{self.port}{self.path}"


def endpoint(host: str, port: int, path: str, tls: bool) -> Endpoint:
    """An :class:`Endpoint` from its parts (ValueError if one is invalid)."""
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer from 1 to 65535, not {port!r}")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path must be a string starting with '/', not {path!r}")
    return Endpoint(host, port, path, tls)


def parse_endpoints(items: Iterable[EndpointSpec], tls: bool) -> list[Endpoint]:
    """Endpoints from ``ws://`` / ``wss://`` URLs or ``(host, port, path)`` tuples.

    A tuple is ``wss`` when *tls* (an ``ssl_context`` was given). A ``ws://`` URL with
    an ``ssl_context`` is refused (ValueError): say ``wss://`` for TLS.
    """
    if isinstance(items, (str, bytes)):
        raise TypeError("endpoints must be a list of URLs or (host, port, path) tuples, not one string")
    found: list[Endpoint] = []
    for item in items:
        if isinstance(item, str):
            found.append(_from_url(item, tls))
        elif isinstance(item, tuple) and len(item) == 3:
            found.append(endpoint(item[0], item[1], item[2], tls))
        else:
            raise TypeError(f"an endpoint is a ws:// or wss:// URL or a (host, port, path) tuple, not {item!r}")
    if not found:
        raise ValueError("no endpoints given")
    return found


def _from_url(url: str, tls: bool) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    if parts.scheme == "ws" and tls:
        raise ValueError(f"{url!r}: a ws:// URL with an ssl_context (use wss:// for TLS)")
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return endpoint(parts.hostname, port, path, parts.scheme == "wss")


class Endpoints:
    """A proxy's endpoints and which one it is (or was last) connected to."""

    def __init__(self, endpoints: Sequence[Endpoint], order: str, rng: random.Random | None = None) -> None:
        self._list = list(endpoints)
        if order == "random":
            (rng or random.Random()).shuffle(self._list)
        self._lock = threading.Lock()
        self._current = 0  # (under _lock) the endpoint connected to, or to try first
        self._next = 0  # (under _lock) where the next round starts

    def __len__(self) -> int:
        return len(self._list)

    @property
    def all(self) -> list[Endpoint]:
        """Every endpoint, in the order they are tried from the start."""
        return list(self._list)

    @property
    def current(self) -> Endpoint:
        """The endpoint connected to (or, before the first connection, the first to try)."""
        with self._lock:
            return self._list[self._current]

    def round(self) -> list[Endpoint]:
        """The endpoints to try in one connection round, in turn: after a drop, the one
        after the endpoint that dropped first, and that one last."""
        with self._lock:
            start = self._next
        return self._list[start:] + self._list[:start]

    def connected(self, ep: Endpoint) -> None:
        """*ep* answered: it is current, and the next round starts after it."""
        with self._lock:
            self._current = self._list.index(ep)
            self._next = (self._current + 1) % len(self._list)
