"""The one exception hierarchy of easyrpc.

::

    EasyRpcError
    ├── AuthenticationError            wrong secret, mismatched encryption or protocol
    ├── ProtocolError                  the peer broke the protocol
    ├── ConnectionLost (ConnectionError)   socket closed with calls in flight, or proxy closed
    ├── CallTimeout (TimeoutError)     a call ran past its limit
    ├── SerializationError (TypeError) a value JSON cannot carry
    ├── ArgumentError (TypeError)      an argument does not fit its parameter's annotation
    ├── CallRefused                    an interceptor refused the call (raised by it, or locally)
    ├── CallbackExpired                a client's callback called after its call ended
    └── RemoteError                    the function raised on the server
        ├── FunctionNotFound           no such function in this connection's namespace
        ├── ServerBusy                 the server refused the call (too many in flight)
        ├── RemoteSerializationError (SerializationError)   a result JSON cannot carry
        ├── RemoteArgumentError (ArgumentError)   the server refused an argument; the function did not run
        └── RemoteCallRefused (CallRefused)   a server's interceptor refused the call; the function did not run

A :class:`RemoteError` whose remote type is a builtin exception is also an instance of
that builtin, so ``except KeyError:`` catches a ``KeyError`` raised on the server; a
remote ``OSError`` keeps its ``errno``, ``strerror`` and file names. Builtins that steer
control flow are never mixed in: a remote ``StopIteration`` must not end the caller's
loop or generator, nor ``StopAsyncIteration`` its ``async for`` (``SystemExit``,
``KeyboardInterrupt`` and ``GeneratorExit`` are not ``Exception`` subclasses, so they
never were).
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "ArgumentError",
    "AuthenticationError",
    "CallRefused",
    "CallTimeout",
    "CallbackExpired",
    "ConnectionLost",
    "EasyRpcError",
    "FunctionNotFound",
    "ProtocolError",
    "RemoteArgumentError",
    "RemoteCallRefused",
    "RemoteCallbackExpired",
    "RemoteError",
    "RemoteSerializationError",
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


class ArgumentError(EasyRpcError, TypeError):
    """An argument does not fit the annotation of the parameter it was passed for.

    Raised on the server before the function runs; the caller gets a
    :class:`RemoteArgumentError` whose message names the function, the parameter and
    what was wrong.
    """


class CallRefused(EasyRpcError):
    """An interceptor refused the call: the function did not run.

    An interceptor raises it from ``before`` (its message is all the caller learns). A
    client's interceptor refusing raises it locally, before anything is sent; a server's
    reaches the caller as :class:`RemoteCallRefused`, which is also a ``CallRefused``.
    """


class CallbackExpired(EasyRpcError):
    """A callback a client passed was called after the call (or stream) it came with ended.

    Raised on the server, where the callback is called; nothing is sent. A callback the
    client has already let go of answers with a :class:`RemoteError` of this type.
    """


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
        return (_rebuild_remote_error,
                (self.remote_type, self.remote_message, self.remote_traceback, os_error_details(self)))


class FunctionNotFound(RemoteError):
    """The server has no function of that name in this connection's namespace."""


class ServerBusy(RemoteError):
    """The server refused the call because the connection has too many calls in flight."""


class RemoteSerializationError(RemoteError, SerializationError):
    """The server could not send a result or stream item: JSON cannot carry it.

    Also a :class:`SerializationError` (so a ``TypeError``), as for an argument refused locally.
    """


class RemoteCallbackExpired(RemoteError, CallbackExpired):
    """The client no longer had the callback the server called (its call had ended)."""


class RemoteArgumentError(RemoteError, ArgumentError):
    """The server refused an argument that does not fit its parameter's annotation.

    The function did not run. Also an :class:`ArgumentError` (so a ``TypeError``), as a
    wrong argument is for a local call.
    """


class RemoteCallRefused(RemoteError, CallRefused):
    """A server's interceptor refused the call; the function did not run.

    Also a :class:`CallRefused`, so ``except CallRefused:`` catches a refusal from
    either side.
    """


_SPECIAL: dict[str, type[RemoteError]] = {
    "CallRefused": RemoteCallRefused,
    "ArgumentError": RemoteArgumentError,
    "CallbackExpired": RemoteCallbackExpired,
    "FunctionNotFound": FunctionNotFound,
    "ServerBusy": ServerBusy,
    "SerializationError": RemoteSerializationError,
}
# Builtins whose meaning is control flow, not an error: raising one where the caller
# catches it (a for loop, a generator, an async for) would end it silently or crash it.
_NEVER_MIXED = frozenset({"StopIteration", "StopAsyncIteration", "BaseExceptionGroup", "ExceptionGroup"})
_OS_FIELDS = ("errno", "strerror", "filename", "filename2")
# Built once per builtin; no lock (the sans-I/O core imports this module, and no
# threading): racing threads may each build a class, setdefault keeps one for all.
_mixins: dict[str, type[RemoteError]] = {}


def _remote_class(remote_type: str) -> type[RemoteError]:
    special = _SPECIAL.get(remote_type)
    if special is not None:
        return special
    if remote_type in _NEVER_MIXED:
        return RemoteError
    builtin = getattr(builtins, remote_type, None) if remote_type.isidentifier() else None
    if not (isinstance(builtin, type) and issubclass(builtin, Exception)):
        return RemoteError
    cls = _mixins.get(remote_type)
    if cls is None:
        try:
            cls = type(f"Remote{remote_type}", (RemoteError, builtin), {"__module__": __name__})
            cls("probe", "probe")
        except (TypeError, ValueError):  # incompatible layout or constructor: plain RemoteError
            cls = RemoteError
        cls = _mixins.setdefault(remote_type, cls)
    return cls


def make_remote_error(
    remote_type: str, remote_message: str, remote_traceback: str = "", os_details: dict[str, Any] | None = None
) -> RemoteError:
    """Build the :class:`RemoteError` for a remote exception, mixing in its builtin type.

    *os_details* (``errno``, ``strerror``, ``filename``, ``filename2``) are set on an
    ``OSError`` mix-in, as the remote ``OSError`` had them.
    """
    err = _remote_class(remote_type)(remote_type, remote_message, remote_traceback)
    if os_details and isinstance(err, OSError):
        for name in _OS_FIELDS:
            if name in os_details:
                setattr(err, name, os_details[name])
    return err


def os_error_details(exc: BaseException) -> dict[str, Any] | None:
    """An ``OSError``'s ``errno``, ``strerror`` and file names (those set), or None."""
    if not isinstance(exc, OSError):
        return None
    return {name: value for name in _OS_FIELDS if (value := getattr(exc, name)) is not None}


def _rebuild_remote_error(
    remote_type: str, remote_message: str, remote_traceback: str, os_details: dict[str, Any] | None = None
) -> RemoteError:
    return make_remote_error(remote_type, remote_message, remote_traceback, os_details)
