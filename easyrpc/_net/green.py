"""Sockets of gevent-patched processes, as the hub reads them.

A gevent socket (``gunicorn -k gevent``) is non-blocking underneath, and its ``recv``
waits for readiness cooperatively when the kernel has nothing, *whatever the flags*: a
``recv(n, MSG_DONTWAIT)`` on an idle gevent socket does not raise ``BlockingIOError``, it
parks the calling greenlet until data arrives. The hub's leader reads every connection
with ``MSG_DONTWAIT`` after a readiness event and must never wait on one socket: after
a spurious readiness (which libev, under gevent's selector, may report) it would stop
reading every other connection until that one peer sent something.
:func:`reading_socket` gives such a socket's reader a view whose ``MSG_DONTWAIT`` reads
go to the underlying OS socket (they raise ``BlockingIOError`` as they should); other
reads stay cooperative.
"""

from __future__ import annotations

import _socket
import socket
import ssl
from typing import Any

__all__ = ["reading_socket"]

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class _NonWaitingReads:
    """A gevent socket whose ``MSG_DONTWAIT`` reads never wait (reads only: writes go to
    the socket itself)."""

    __slots__ = ("_sock", "_raw")

    def __init__(self, sock: Any, raw: _socket.socket) -> None:
        self._sock = sock
        self._raw = raw

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags & _DONTWAIT:
            return self._raw.recv(bufsize, flags)
        return bytes(self._sock.recv(bufsize, flags))

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if flags & _DONTWAIT:
            return self._raw.recv_into(buffer, nbytes, flags)
        return int(self._sock.recv_into(buffer, nbytes, flags))


def reading_socket(sock: Any) -> Any:
    """*sock*, or for a gevent socket (not TLS: the hub never reads those) a view of it
    whose ``MSG_DONTWAIT`` reads never wait."""
    if not _DONTWAIT or not type(sock).__module__.startswith("gevent.") or isinstance(sock, ssl.SSLSocket):
        return sock  # (ssl.SSLSocket is gevent's once patched: the TLS reader needs the socket itself)
    raw = getattr(sock, "_sock", None)
    if not isinstance(raw, _socket.socket):
        return sock  # not the layout this knows (gevent's socket wraps the OS socket as ``_sock``)
    return _NonWaitingReads(sock, raw)
