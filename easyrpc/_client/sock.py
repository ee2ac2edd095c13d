"""Small helpers on a websocket-client connection's socket."""

from __future__ import annotations

import socket

import websocket

__all__ = ["shutdown", "sock_of"]


def sock_of(ws: websocket.WebSocket) -> socket.socket:
    """The connection's socket; OSError if it is closed."""
    sock = ws.sock
    if sock is None:
        raise OSError("the socket is closed")
    return sock


def shutdown(ws: websocket.WebSocket) -> None:
    """Unblock a reader stuck in recv (close() alone does not)."""
    sock = ws.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
