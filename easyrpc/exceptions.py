"""The one exception hierarchy of easyrpc.

::

    EasyRpcError
    ├── AuthenticationError            wrong secret, mismatched encryption or protocol
    ├── ProtocolError                  the peer broke the protocol
    ├── ConnectionLost (ConnectionError)   socket closed with calls in flight, or proxy closed
    ├── CallTimeout (TimeoutError)     a call ran past its limit
    ├── SerializationError (TypeError) a value JSON cannot carry
    └── RemoteError                    the function raised on the server
        ├── FunctionNotFound           no such function in this connection's namespace
        └── ServerBusy                 the server refused the call (too many in flight)

A :class:`RemoteError` whose remote type is a builtin exception is also an instance of
that builtin, so ``except KeyError:`` catches a ``KeyError`` raised on the server.
"""

from __future__ import annotations

import builtins
import threading
from typing import Any

__all__ = [
    "AuthenticationError",
    "CallTimeout",
    "ConnectionLost",
    "EasyRpcError",
    "FunctionNotFound",
    "ProtocolError",
    "RemoteError",
    "SerializationError",
    "ServerBusy",
]


class EasyRpcError(Exception):
    """Base class of every error easyrpc raises."""


class AuthenticationError(EasyRpcError):
    """The handshake failed: wrong secret, mismatched encryption or protocol version."""


class ProtocolError(EasyRpcError):
    """The peer sent something the protocol does not allow."""


class ConnectionLost(EasyRpcError, ConnectionError):
    """The connection closed while the call was in flight, or the proxy is closed."""


class CallTimeout(EasyRpcError, TimeoutError):
    """The call did not complete within its time limit."""


class SerializationError(EasyRpcError, TypeError):
    """A value cannot be carried as JSON."""


class RemoteError(EasyRpcError):
    """The remote function raised an exception.

    Attributes:
        remote_type: the remote exception's type name (``'KeyError'``, ``'mod.MyError'``).
        remote_message: ``str()`` of the remote exception.
        remote_traceback: the remote traceback as text (may be empty).
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = "") -> None:
        # BaseException.__init__ directly: builtin mix-ins (KeyError, OSError,
        # UnicodeError...) have constructors with their own argument rules.
        BaseException.__init__(self, remote_type, remote_message)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.remote_message}" if self.remote_message else self.remote_type

    def __reduce__(self) -> Any:
        return (_rebuild_remote_error, (self.remote_type, self.remote_message, self.remote_traceback))


class FunctionNotFound(RemoteError):
    """The server has no function of that name in this connection's namespace."""


class ServerBusy(RemoteError):
    """The server refused the call because the connection has too many calls in flight."""


_SPECIAL: dict[str, type[RemoteError]] = {
    "FunctionNotFound": FunctionNotFound,
    "ServerBusy": ServerBusy,
}
_mixins: dict[str, type[RemoteError]] = {}
_mixins_lock = threading.Lock()


def _remote_class(remote_type: str) -> type[RemoteError]:
    special = _SPECIAL.get(remote_type)
    if special is not None:
        return special
    builtin = getattr(builtins, remote_type, None) if remote_type.isidentifier() else None
    if not (isinstance(builtin, type) and issubclass(builtin, Exception)):
        return RemoteError
    with _mixins_lock:
        cls = _mixins.get(remote_type)
        if cls is None:
            try:
                cls = type(f"Remote{remote_type}", (RemoteError, builtin), {"__module__": __name__})
                cls("probe", "probe")
            except (TypeError, ValueError):  # incompatible layout or constructor: plain RemoteError
                cls = RemoteError
            _mixins[remote_type] = cls
        return cls


def make_remote_error(remote_type: str, remote_message: str, remote_traceback: str = "") -> RemoteError:
    """Build the :class:`RemoteError` for a remote exception, mixing in its builtin type."""
    return _remote_class(remote_type)(remote_type, remote_message, remote_traceback)


def _rebuild_remote_error(remote_type: str, remote_message: str, remote_traceback: str) -> RemoteError:
    return make_remote_error(remote_type, remote_message, remote_traceback)
