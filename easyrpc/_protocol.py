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

from dataclasses import dataclass
from typing import Any, Union

from . import _codec, _parts, _values
from ._core.metadata import check_metadata
from ._error_wire import error_from_wire, error_passthrough, error_to_wire, error_wire
from ._parts import Packed
from .exceptions import ProtocolError, RemoteError

__all__ = [
    "PROTOCOL_VERSION", "MAX_ID", "encode", "parse_client", "parse_server",
    "error_to_wire", "error_from_wire", "error_wire", "error_passthrough", "InvalidText", "Encoded",
]

Encoded = Union[bytes, Packed]  # an encoded message: JSON text, or one with binary parts

PROTOCOL_VERSION = 2  # 2: messages with binary parts (a version-1 peer would not answer them)
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
    metadata: dict[str, str] | None = None  # the call's metadata (``m``), None when it has none
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
    metadata: dict[str, str] | None = None, other: Any = None,
) -> Encoded:
    msg: dict[str, Any] = {"k": "call", "i": call_id, "f": fn, "a": args, "kw": kwargs}
    if window:
        msg["w"] = window
    if timeout is not None:
        msg["t"] = timeout
    if metadata:
        msg["m"] = metadata
    # kwargs' own keys are parameter names (str): only the values need a look
    keys_in = (args, kwargs) if args and kwargs else kwargs if kwargs else args
    return _codec.dumps_parts(msg, keys_in=keys_in, other=other)


def encode_result(call_id: int, value: Any) -> Encoded:
    return _codec.dumps_parts({"k": "ok", "i": call_id, "v": value}, keys_in=value)


def encode_item(call_id: int, value: Any, window: int | None = None) -> Encoded:
    msg: dict[str, Any] = {"k": "item", "i": call_id, "v": value}
    if window is not None:
        msg["w"] = window
    return _codec.dumps_parts(msg, keys_in=value)


def encode_failure(call_id: int, error: dict[str, Any]) -> bytes:
    return _codec.dumps({"k": "err", "i": call_id, "e": error}, keys_in=None, typed=True)


# --- parsing -----------------------------------------------------------------------------
class InvalidText(ProtocolError):
    """A message that is not UTF-8: in a text frame, the WebSocket close code 1007."""


_PARTS_KEY: Any = object()  # where load keeps a message's binary parts (no JSON key is one)


def load(data: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """The envelope of one message: JSON text, or one with binary parts (:mod:`easyrpc._parts`),
    whose parts :func:`_typed` puts in place."""
    packed = None
    if _parts.is_packed(data):
        packed = data
        data, start = _parts.split(data)  # type: ignore[arg-type]
    try:
        obj = _codec.loads(data)  # decodes the bytes: the one UTF-8 check a text frame gets
    except UnicodeDecodeError as exc:
        raise InvalidText(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except ValueError as exc:
        raise ProtocolError(f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object")
    if packed is not None:  # checked with the marks (the message's id is known by then)
        obj[_PARTS_KEY] = (packed, start)
        obj.setdefault(_MARKS, {})  # parts with no place are refused there
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
    """Give the values marked in the envelope their types back (:mod:`easyrpc._values`),
    and the binary parts their places.

    Called only for a message that has marks (``"x" in obj``: the one look a message
    without typed values pays).
    """
    packed = obj.pop(_PARTS_KEY, None)
    parts = None
    if packed is not None:
        parts = _parts.take(packed[0], packed[1], obj.get(_parts.PARTS))
    _values.raise_marked(obj, obj[_values.MARKS], payload, parts)


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
        meta = check_metadata(obj["m"], ProtocolError, "field 'm'") if "m" in obj else None
        return Call(_int(obj, "i"), _str(obj, "f", MAX_FN_NAME), args, kwargs, window,
                    float(timeout) if timeout is not None else None, meta or None, callbacks)
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
