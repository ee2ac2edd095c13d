"""The sans-I/O protocol core shared by the server, the blocking proxy and easyrpc.aio.

Every frame is one JSON object, the *envelope*: ``k`` names the message kind, ``i`` the
request id, and a payload (a function's arguments, result or stream item) lives under
its own key (``a``/``kw``/``v``) and is never inspected. So a function returning
``{'error': 'x'}``, or any string that looks like a marker, is just data.

Parsing validates every field and raises :class:`ProtocolError` (``RemoteProtocolError``
in h11's terms: the peer's fault). This module imports no socket, thread, Flask,
websocket or asyncio code.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from typing import Any, Union

from . import _codec, _values
from .exceptions import ProtocolError, RemoteError, make_remote_error, os_error_details

__all__ = [
    "PROTOCOL_VERSION", "MAX_ID", "encode", "parse_client", "parse_server",
    "error_to_wire", "error_from_wire", "InvalidText",
]

PROTOCOL_VERSION = 1
MAX_ID = 2**53  # ids stay exact in any JSON implementation
MAX_FN_NAME = 200
MAX_REASON = 1000



# --- messages a client sends -------------------------------------------------------------
# Messages are plain (not frozen) dataclasses: they are built for every call, and a frozen
# dataclass's __init__ costs about 3.5x (one object.__setattr__ per field). Nobody changes
# a message once parsed.
@dataclass(slots=True)
class Auth:
    token: str


@dataclass(slots=True)
class Call:
    id: int
    fn: str
    args: list[Any]
    kwargs: dict[str, Any]
    window: int  # stream credit granted up front (0 for plain calls)
    timeout: float | None = None  # the caller's limit, for servers that forward the call
    callbacks: list[tuple[Any, Any, int]] | None = None  # (container, key, callback id) of each


@dataclass(slots=True)
class Cancel:
    id: int


@dataclass(slots=True)
class Credit:
    id: int
    n: int


# --- messages either side sends ----------------------------------------------------------
@dataclass(slots=True)
class Ping:
    token: int


@dataclass(slots=True)
class Pong:
    token: int


# --- messages a server sends -------------------------------------------------------------
@dataclass(slots=True)
class Hello:
    version: int
    nonce: str
    encryption: bool


@dataclass(slots=True)
class Welcome:
    cid: str
    proof: str
    functions: list[Any]


@dataclass(slots=True)
class Refused:
    reason: str
    code: str  # "auth", "version", "encryption", "closing", "protocol"


@dataclass(slots=True)
class Result:
    id: int
    value: Any


@dataclass(slots=True)
class Failure:
    id: int
    error: RemoteError


@dataclass(slots=True)
class Item:
    id: int
    value: Any
    window: int | None = None  # the server's stream window, when it is smaller than asked


@dataclass(slots=True)
class End:
    id: int


@dataclass(slots=True)
class Functions:
    functions: list[Any]


@dataclass(slots=True)
class Notice:
    """The server could not process a message that had no usable id."""

    message: str


@dataclass(slots=True)
class Bye:
    reason: str


ClientMessage = Union[Auth, Call, Cancel, Credit, Ping, Pong]
ServerMessage = Union[Hello, Welcome, Refused, Result, Failure, Item, End, Functions, Notice, Bye, Ping, Pong]


# --- encoding ----------------------------------------------------------------------------
def encode(kind: str, **fields: Any) -> bytes:
    """Encode one envelope. Raises :class:`~easyrpc.SerializationError` for payloads JSON can't carry."""
    fields["k"] = kind
    return _codec.dumps(fields, typed=True)


def encode_call(
    call_id: int, fn: str, args: list[Any], kwargs: dict[str, Any], window: int = 0, timeout: float | None = None,
    other: Any = None,
) -> bytes:
    msg: dict[str, Any] = {"k": "call", "i": call_id, "f": fn, "a": args, "kw": kwargs}
    if window:
        msg["w"] = window
    if timeout is not None:
        msg["t"] = timeout
    # kwargs' own keys are parameter names (str): only a non-empty one needs a look
    return _codec.dumps(msg, keys_in=(args, kwargs) if kwargs else args, typed=True, other=other)


def encode_result(call_id: int, value: Any) -> bytes:
    return _codec.dumps({"k": "ok", "i": call_id, "v": value}, keys_in=value, typed=True)


def encode_item(call_id: int, value: Any, window: int | None = None) -> bytes:
    msg: dict[str, Any] = {"k": "item", "i": call_id, "v": value}
    if window is not None:
        msg["w"] = window
    return _codec.dumps(msg, keys_in=value, typed=True)


def encode_failure(call_id: int, error: dict[str, Any]) -> bytes:
    return _codec.dumps({"k": "err", "i": call_id, "e": error}, keys_in=None, typed=True)


# --- errors ------------------------------------------------------------------------------
def error_to_wire(exc: BaseException, include_traceback: bool = True) -> dict[str, Any]:
    """Describe an exception raised by a served function (a forwarded one passes through).

    An ``OSError`` also carries its ``errno``, ``strerror`` and file names under ``os``.
    """
    passed = error_passthrough(exc)
    if passed is not None:
        return passed
    cls = type(exc)
    if cls.__module__ == "builtins" or cls.__module__.startswith("easyrpc"):
        name = cls.__qualname__  # builtins and easyrpc's own errors go by their bare names
    else:
        name = f"{cls.__module__}.{cls.__qualname__}"
    tb = "".join(traceback.format_exception(cls, exc, exc.__traceback__)) if include_traceback else ""
    try:
        message = str(exc)
    except Exception as str_exc:  # noqa: BLE001 - a broken __str__ must not lose the error
        message = f"<str() failed: {type(str_exc).__name__}>"
    return _with_os_details({"type": name, "message": message, "traceback": tb}, exc)


def _with_os_details(wire: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    details = os_error_details(exc)
    if details:
        for key in ("filename", "filename2"):  # any object: keep what JSON carries as itself
            value = details.get(key)
            if isinstance(value, (bytes, bytearray)):
                details[key] = os.fsdecode(bytes(value))
            elif value is not None and type(value) not in (str, int):
                details[key] = str(value)
        if type(details.get("errno")) is not int:
            details.pop("errno", None)
        if not isinstance(details.get("strerror"), str):
            details.pop("strerror", None)
        wire["os"] = details
    return wire


def error_wire(remote_type: str, message: str) -> dict[str, str]:
    """An error raised by easyrpc itself on the server (no traceback)."""
    return {"type": remote_type, "message": message, "traceback": ""}


def error_passthrough(exc: BaseException) -> dict[str, Any] | None:
    """The description of an error that came from another server (forwarded calls)."""
    if isinstance(exc, RemoteError):
        return _with_os_details(
            {"type": exc.remote_type, "message": exc.remote_message, "traceback": exc.remote_traceback}, exc)
    return None


def error_from_wire(obj: Any) -> RemoteError:
    """Build the :class:`RemoteError` a peer described; malformed descriptions are a ProtocolError."""
    if not isinstance(obj, dict):
        raise ProtocolError("error description must be an object")
    rtype, message, tb = obj.get("type"), obj.get("message", ""), obj.get("traceback", "")
    if not isinstance(rtype, str) or not isinstance(message, str) or not isinstance(tb, str):
        raise ProtocolError("error description has wrong field types")
    details = obj.get("os")
    if details is not None and not (
        isinstance(details, dict)
        and type(details.get("errno", 0)) in (int, type(None))
        and isinstance(details.get("strerror", ""), str)
        and all(type(details.get(k, "")) in (str, int) for k in ("filename", "filename2"))
    ):
        raise ProtocolError("error description has a malformed 'os' field")
    return make_remote_error(rtype[:MAX_FN_NAME], message, tb, details)


# --- parsing -----------------------------------------------------------------------------
class InvalidText(ProtocolError):
    """A message that is not UTF-8: in a text frame, the WebSocket close code 1007."""


def load(data: bytes | str) -> dict[str, Any]:
    try:
        obj = _codec.loads(data)  # decodes the bytes: the one UTF-8 check a text frame gets
    except UnicodeDecodeError as exc:
        raise InvalidText(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except ValueError as exc:
        raise ProtocolError(f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object")
    return obj


def _int(obj: dict[str, Any], key: str, low: int = 0, high: int = MAX_ID) -> int:
    value = obj.get(key)
    if type(value) is not int or not low <= value < high:
        raise ProtocolError(f"field {key!r} must be an integer in [{low}, {high})")
    return value


def _str(obj: dict[str, Any], key: str, limit: int = MAX_REASON) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"field {key!r} must be a string of at most {limit} characters")
    return value


def request_id(obj: Any) -> int | None:
    """The valid request id of a (possibly malformed) message, if it has one."""
    if isinstance(obj, dict):
        value = obj.get("i")
        if type(value) is int and 0 <= value < MAX_ID:
            return value
    return None


def parse_client(data: bytes | str) -> ClientMessage:
    """Parse a message sent by a client; :class:`ProtocolError` if it is malformed."""
    return parse_client_obj(load(data))


_MARKS = _values.MARKS
_CALL_PAYLOAD = frozenset(("a", "kw"))
_VALUE_PAYLOAD = frozenset(("v",))
_ERROR_PAYLOAD = frozenset(("e",))
_FUNCTIONS_PAYLOAD = frozenset(("fs",))


def _typed(obj: dict[str, Any], payload: frozenset[str]) -> None:
    """Give the values marked in the envelope their types back (:mod:`easyrpc._values`).

    Called only for a message that has marks (``"x" in obj``: the one look a message
    without typed values pays).
    """
    _values.raise_marked(obj, obj[_values.MARKS], payload)


def parse_client_obj(obj: dict[str, Any]) -> ClientMessage:
    kind = obj.get("k")
    if kind == "call":
        callbacks = None
        if _MARKS in obj:
            callbacks = _values.callback_places(obj, _CALL_PAYLOAD)
            _typed(obj, _CALL_PAYLOAD)
        args = obj.get("a", [])
        kwargs = obj.get("kw", {})
        if not isinstance(args, list):
            raise ProtocolError("field 'a' must be a list")
        if not isinstance(kwargs, dict):
            raise ProtocolError("field 'kw' must be an object")
        window = obj.get("w", 0)
        if type(window) is not int or not 0 <= window <= 1_000_000:
            raise ProtocolError("field 'w' must be a small non-negative integer")
        timeout = obj.get("t")
        if timeout is not None and (type(timeout) not in (int, float) or not 0 < timeout <= 1e9):
            raise ProtocolError("field 't' must be a positive number of seconds")
        return Call(_int(obj, "i"), _str(obj, "f", MAX_FN_NAME), args, kwargs, window,
                    float(timeout) if timeout is not None else None, callbacks)
    if kind == "cancel":
        return Cancel(_int(obj, "i"))
    if kind == "credit":
        return Credit(_int(obj, "i"), _int(obj, "n", 1, 1_000_001))
    if kind == "ping":
        return Ping(_int(obj, "t"))
    if kind == "pong":
        return Pong(_int(obj, "t"))
    if kind == "auth":
        return Auth(_str(obj, "token", 4096))
    raise ProtocolError(f"unknown message kind {str(kind)[:50]!r}")


def parse_server(data: bytes | str) -> ServerMessage:
    """Parse a message sent by a server; :class:`ProtocolError` if it is malformed."""
    obj = load(data)
    kind = obj.get("k")
    if kind == "ok":
        if "v" not in obj:
            raise ProtocolError("result without a value")
        if _MARKS in obj:
            _typed(obj, _VALUE_PAYLOAD)
        return Result(_int(obj, "i"), obj["v"])
    if kind == "item":
        if "v" not in obj:
            raise ProtocolError("item without a value")
        if _MARKS in obj:
            _typed(obj, _VALUE_PAYLOAD)
        window = obj.get("w")
        if window is not None and (type(window) is not int or not 1 <= window <= 1_000_000):
            raise ProtocolError("field 'w' must be a small positive integer")
        return Item(_int(obj, "i"), obj["v"], window)
    if kind == "err":
        if _MARKS in obj:
            _typed(obj, _ERROR_PAYLOAD)
        return Failure(_int(obj, "i"), error_from_wire(obj.get("e")))
    if kind == "end":
        return End(_int(obj, "i"))
    if kind == "ping":
        return Ping(_int(obj, "t"))
    if kind == "pong":
        return Pong(_int(obj, "t"))
    if kind == "funcs":
        funcs = obj.get("fs")
        if not isinstance(funcs, list):
            raise ProtocolError("field 'fs' must be a list")
        if _MARKS in obj:
            _typed(obj, _FUNCTIONS_PAYLOAD)
        return Functions(funcs)
    if kind == "hello":
        enc = obj.get("enc")
        if not isinstance(enc, bool):
            raise ProtocolError("field 'enc' must be a boolean")
        return Hello(_int(obj, "v", 0, 1 << 31), _str(obj, "nonce", 200), enc)
    if kind == "welcome":
        funcs = obj.get("fs")
        if not isinstance(funcs, list):
            raise ProtocolError("field 'fs' must be a list")
        if _MARKS in obj:
            _typed(obj, _FUNCTIONS_PAYLOAD)
        return Welcome(_str(obj, "cid", 200), _str(obj, "proof", 4096), funcs)
    if kind == "refused":
        return Refused(_str(obj, "reason"), _str(obj, "code", 50))
    if kind == "notice":
        return Notice(_str(obj, "msg"))
    if kind == "bye":
        return Bye(_str(obj, "reason"))
    raise ProtocolError(f"unknown message kind {str(kind)[:50]!r}")
