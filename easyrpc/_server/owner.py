"""Who reads a flask-sock connection's socket on easyrpc's routes.

flask-sock wraps each connection in a ``simple_websocket.Server``, which starts a thread
that reads the socket through wsproto, a large share of the server's CPU per call in
profiles. :func:`install_socket_owner` keeps that thread from starting on
easyrpc's routes (other routes are untouched): easyrpc reads the socket itself. If an
application replaces ``SOCK_SERVER_OPTIONS`` after ``init_app``, simple-websocket's thread
runs and delivers messages through an :class:`Inbox` instead.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from .connection import ServerConnection

__all__ = ["CloseSignal", "Inbox", "SocketOwner", "install_socket_owner"]


class SocketOwner:
    """Stands in for simple-websocket's reader thread on easyrpc's routes: never started,
    so the connection's handler thread owns the socket."""

    def __init__(self) -> None:
        self.name = "easyrpc (handler thread reads)"

    def start(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return False


def install_socket_owner(app: Flask) -> None:
    """Make flask-sock's connections on ``easyrpc:*`` endpoints of *app* start no reader
    thread (``SOCK_SERVER_OPTIONS['thread_class']``, wrapping any class already set)."""
    from flask import has_request_context, request

    options = app.config.setdefault("SOCK_SERVER_OPTIONS", {})
    base = options.get("thread_class")
    if getattr(base, "easyrpc_socket_owner", False):
        return

    def thread_class(*args: Any, **kwargs: Any) -> Any:
        if has_request_context() and str(request.endpoint or "").startswith("easyrpc:"):
            return SocketOwner()
        return (base or threading.Thread)(*args, **kwargs)

    thread_class.easyrpc_socket_owner = True  # type: ignore[attr-defined]
    options["thread_class"] = thread_class


class Inbox(list):  # type: ignore[type-arg]
    """Stands in for simple-websocket's input buffer once a peer is authenticated.

    simple-websocket's reader thread appends each complete message to ``input_buffer``
    and wakes the handler thread, which would then hand calls on to a worker: two
    hand-offs per message. The inbox handles the message on the reader thread instead
    (parsing, and queueing calls to the pool), keeping order and saving one hand-off.
    """

    def __init__(self, conn: ServerConnection) -> None:
        super().__init__()
        self._conn = conn

    def append(self, data: bytes | str) -> None:
        self._conn.deliver(data)


class CloseSignal(threading.Event):
    """Stands in for simple-websocket's wake-up event once the inbox reads messages.

    simple-websocket sets it after every message (nobody waits on it any more) and when
    the socket closes; only the latter matters, and it stops the connection's watcher.
    """

    def __init__(self, conn: ServerConnection) -> None:
        super().__init__()
        self._conn = conn

    def set(self) -> None:
        if not self._conn.ws.connected:
            self._conn.peer_gone()
