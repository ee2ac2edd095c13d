"""Calls in the other direction, without I/O: callbacks and offered functions.

A client may pass a callable as an argument, at any depth: the encoder puts a
*callback id* at its place and marks the place in the envelope's ``x`` under the tag
``callback`` (``"x": {"callback": [["kw", "progress"]]}``), as it marks typed values.
The server then calls it with a ``cb`` message (``"f"``: that id) and the client
answers ``cbok`` or ``cberr``. A client may also *offer* functions by name, which the
server may call the same way (``"f"``: the name) for as long as the connection lasts.

:class:`CallbackTable` is the client's side of the rules: callback ids (unique per proxy,
so they survive a reconnect before the call is sent), which call each belongs to (it
lives as long as that call or stream), the functions offered, and the answer to a ``cb``
that names nothing known. What reads the marks of a ``call`` on the
server is ``_values.callback_places``. Not thread-safe: the driver locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union

from .. import _codec, _values
from .. import _protocol as proto
from ..exceptions import ProtocolError, RemoteError

__all__ = ["Callback", "CallbackCancel", "CallbackFailure", "CallbackResult", "CallbackTable",
           "encode_callback", "encode_callback_failure", "encode_callback_result", "not_found",
           "parse_client", "parse_server"]

MAX_CALLBACK_ID = proto.MAX_ID

T = TypeVar("T")  # what the driver keeps for a callable (the callable, its loop...)
OwnerT = TypeVar("OwnerT")  # the call a callback belongs to


# --- messages ----------------------------------------------------------------------------
@dataclass(slots=True)
class Callback:
    """``cb`` (server to client): call a callback (*target*: its id) or an offered function (a name)."""

    id: int  # the server's own request id
    target: int | str
    args: list[Any]
    kwargs: dict[str, Any]
    timeout: float | None = None


@dataclass(slots=True)
class CallbackCancel:
    """``cbcancel`` (server to client): the server stopped waiting for its ``cb`` *id*."""

    id: int


@dataclass(slots=True)
class CallbackResult:
    """``cbok`` (client to server): the answer to the server's ``cb`` *id*."""

    id: int
    value: Any


@dataclass(slots=True)
class CallbackFailure:
    """``cberr`` (client to server): the callback raised, or there was nothing to call."""

    id: int
    error: RemoteError


def encode_callback(request_id: int, target: int | str, args: list[Any], kwargs: dict[str, Any],
                    timeout: float | None) -> bytes:
    msg: dict[str, Any] = {"k": "cb", "i": request_id, "f": target, "a": args, "kw": kwargs}
    if timeout is not None:
        msg["t"] = timeout
    return _codec.dumps(msg, keys_in=(args, kwargs), typed=True)


def encode_callback_result(request_id: int, value: Any) -> bytes:
    return _codec.dumps({"k": "cbok", "i": request_id, "v": value}, keys_in=value, typed=True)


def encode_callback_failure(request_id: int, error: dict[str, Any]) -> bytes:
    return _codec.dumps({"k": "cberr", "i": request_id, "e": error}, keys_in=None, typed=True)


_ARGS = frozenset(("a", "kw"))
_VALUE = frozenset(("v",))
_ERROR = frozenset(("e",))


def parse_client(obj: dict[str, Any]) -> proto.ClientMessage | CallbackResult | CallbackFailure:
    """A decoded client message: ``cbok`` and ``cberr`` here, the rest as ``_protocol`` parses it."""
    kind = obj.get("k")
    if kind == "cbok":
        if "v" not in obj:
            raise ProtocolError("callback result without a value")
        if _values.MARKS in obj:
            _values.raise_marked(obj, obj[_values.MARKS], _VALUE)
        return CallbackResult(_id(obj), obj["v"])
    if kind == "cberr":
        if _values.MARKS in obj:
            _values.raise_marked(obj, obj[_values.MARKS], _ERROR)
        return CallbackFailure(_id(obj), proto.error_from_wire(obj.get("e")))
    return proto.parse_client_obj(obj)


ServerMessage = Union[proto.ServerMessage, Callback, CallbackCancel]


def parse_server(data: bytes | str) -> ServerMessage:
    """A message from the server: ``cb`` and ``cbcancel`` here, the rest as ``_protocol`` parses it."""
    try:
        return proto.parse_server(data)  # replies, the usual case, cost nothing more
    except ProtocolError:
        obj = proto.load(data)
        kind = obj.get("k")
        if kind == "cb":
            return _callback(obj)
        if kind == "cbcancel":
            return CallbackCancel(_id(obj))
        raise


def _id(obj: dict[str, Any]) -> int:
    value = obj.get("i")
    if type(value) is not int or not 0 <= value < proto.MAX_ID:
        raise ProtocolError(f"field 'i' must be an integer in [0, {proto.MAX_ID})")
    return value


def _callback(obj: dict[str, Any]) -> Callback:
    if _values.MARKS in obj:
        _values.raise_marked(obj, obj[_values.MARKS], _ARGS)
    target = obj.get("f")
    if not ((type(target) is int and 0 <= target < MAX_CALLBACK_ID)
            or (isinstance(target, str) and len(target) <= proto.MAX_FN_NAME)):
        raise ProtocolError("field 'f' of a cb must be a callback id or a function name")
    args = obj.get("a", [])
    kwargs = obj.get("kw", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ProtocolError("fields 'a' and 'kw' must be an array and an object")
    timeout = obj.get("t")
    if timeout is not None and (type(timeout) not in (int, float) or not 0 < timeout <= 1e9):
        raise ProtocolError("field 't' must be a positive number of seconds")
    return Callback(_id(obj), target, args, kwargs, float(timeout) if timeout is not None else None)


# --- rules ---------------------------------------------------------------------------------
def not_found(ref: int | str) -> tuple[str, str]:
    """The error type and message of a ``cb`` for nothing this client has (or still has).

    An offered name is not echoed back, and nothing else offered is listed.
    """
    if isinstance(ref, int):
        return "CallbackExpired", "the callback is no longer available (its call has ended)"
    return "FunctionNotFound", "the client offers no function of that name"


class CallbackTable(Generic[T, OwnerT]):
    """A client's callbacks (by id, each with the call it came with) and offered functions."""

    __slots__ = ("_by_id", "_by_owner", "_next", "offered")

    def __init__(self) -> None:
        self._by_id: dict[int, T] = {}
        self._by_owner: dict[int, list[int]] = {}  # id(owner) -> its callback ids
        self._next = 1
        self.offered: dict[str, T] = {}

    def register(self, entry: T, owner: OwnerT) -> int:
        """A new callback id for *entry*, passed with the call *owner*."""
        cb_id = self._next
        while cb_id in self._by_id:  # (after wrapping) an old callback still lives
            cb_id = cb_id + 1 if cb_id + 1 < MAX_CALLBACK_ID else 1
        self._next = cb_id + 1 if cb_id + 1 < MAX_CALLBACK_ID else 1
        self._by_id[cb_id] = entry
        self._by_owner.setdefault(id(owner), []).append(cb_id)
        return cb_id

    def release(self, owner: OwnerT) -> int:
        """*owner*'s call is over: its callbacks are gone. How many there were."""
        ids = self._by_owner.pop(id(owner), ())
        for cb_id in ids:
            self._by_id.pop(cb_id, None)
        return len(ids)

    def has_owners(self) -> bool:
        return bool(self._by_owner)

    def offer(self, name: str, entry: T) -> None:
        self.offered[name] = entry

    def withdraw(self, name: str) -> bool:
        return self.offered.pop(name, None) is not None

    def find(self, ref: int | str) -> T | None:
        """What a ``cb`` names: a callback (an id) or an offered function (a name)."""
        if isinstance(ref, int):
            return self._by_id.get(ref)
        return self.offered.get(ref)

    def __len__(self) -> int:
        return len(self._by_id)

