"""easyrpc: call functions that live in another process or host as if they were local.

A Flask app serves plain functions with :class:`easyrpc.server.EasyRpcServer`; clients
connect with :class:`easyrpc.proxy.EasyRpcProxy` (blocking) or
:class:`easyrpc.aio.EasyRpcProxy` (asyncio) and get callables with the real signatures.
"""

from .exceptions import (
    ArgumentError,
    AuthenticationError,
    CallbackExpired,
    CallRefused,
    CallTimeout,
    ConnectionLost,
    EasyRpcError,
    FunctionNotFound,
    ProtocolError,
    RemoteArgumentError,
    RemoteCallbackExpired,
    RemoteCallRefused,
    RemoteError,
    RemoteSerializationError,
    SerializationError,
    ServerBusy,
)

__version__ = "0.1.0"

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
    "__version__",
]
