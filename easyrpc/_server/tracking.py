"""The connections a server holds open, and what they are doing (a base class of
:class:`~easyrpc.server.EasyRpcServer`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import ServerConnection

__all__ = ["Tracked"]


class Tracked:
    """The authenticated connections of a server (under the server's lock)."""

    # what the server provides
    _lock: threading.Lock
    _connections: set[ServerConnection]
    _closing: bool

    def add_connection(self, conn: ServerConnection) -> bool:
        """Track an authenticated connection; False once the server is closing."""
        with self._lock:
            if self._closing:
                return False
            self._connections.add(conn)
            return True

    def remove_connection(self, conn: ServerConnection) -> None:
        """Forget a connection that has ended."""
        with self._lock:
            self._connections.discard(conn)

    def _open_connections(self) -> list[ServerConnection]:
        with self._lock:
            return list(self._connections)

    @property
    def connection_count(self) -> int:
        """Authenticated connections currently open."""
        with self._lock:
            return len(self._connections)

    @property
    def active_calls(self) -> int:
        """Calls and streams running on behalf of connected proxies."""
        return sum(c.in_flight for c in self._open_connections())

    @property
    def send_backlog(self) -> int:
        """Bytes of replies queued to send, over every connection (a peer that does not
        read makes its connection's backlog grow up to a bound, then waits)."""
        return sum(c.send_backlog for c in self._open_connections())

    @property
    def active_streams(self) -> int:
        """Generator streams whose server-side state is still held."""
        return sum(c.stream_count for c in self._open_connections())
