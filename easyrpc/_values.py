"""Values that keep their type on the wire: marked out of band, never guessed. Sans-I/O.

``datetime``, ``date``, ``time``, ``timedelta``, ``UUID`` and ``Decimal`` travel as a JSON
string (an integer for ``timedelta``) at their place in the payload, and the envelope
says which places hold which type: ``"x": {"datetime": [["v", 0, "when"]], ...}``, each
path from the envelope's root (object keys as strings, array indices as integers). The
payload itself holds nothing but data, so no user value can look like a marker: a
string that looks like a date stays a string, and a user dict ``{"$dt": "..."}`` is just
that dict. A message with no such value has no ``x`` and costs nothing more: the C
encoder meets a value it does not know only when there is one, and the receiver looks
for ``x`` once per message.

Values that are records rather than scalars are sent as the data they hold, for the
other side to rebuild: a dataclass as an object of its fields, an ``Enum`` member as its
value, a pydantic model as its ``model_dump()`` (a ``NamedTuple`` is a tuple, an array).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from ._parts import as_part
from .exceptions import ProtocolError, SerializationError

__all__ = ["MARKS", "BYTES", "CALLBACK", "lower", "raise_marked", "callback_places", "Extended"]

MARKS = "x"  # the envelope key of the marks
BYTES = "bytes"  # the tag of binary values: each travels as its part's index (:mod:`easyrpc._parts`)
CALLBACK = "callback"  # the tag of a client's callable among a call's arguments (easyrpc._core.callbacks)
_BINARY = (bytes, bytearray, memoryview)


class Extended(Exception):
    """Raised by the C encoder's hook: the value holds something JSON has no type for."""


def _timedelta_wire(value: dt.timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


# type -> (tag, the wire form); subclasses are found through _ORDER
_TO_WIRE: dict[type, tuple[str, Callable[[Any], Any]]] = {
    dt.datetime: ("datetime", dt.datetime.isoformat),
    dt.date: ("date", dt.date.isoformat),
    dt.time: ("time", dt.time.isoformat),
    dt.timedelta: ("timedelta", _timedelta_wire),
    uuid.UUID: ("uuid", str),
    Decimal: ("decimal", str),
}
_ORDER = (dt.datetime, dt.date, dt.time, dt.timedelta, uuid.UUID, Decimal)  # datetime is a date: first


def _tagged(value: Any) -> tuple[str, Callable[[Any], Any]] | None:
    found = _TO_WIRE.get(type(value))
    if found is None:
        for cls in _ORDER:
            if isinstance(value, cls):
                return _TO_WIRE[cls]
    return found


def _timedelta_from(value: Any) -> dt.timedelta:
    if type(value) is not int:
        raise ValueError("a timedelta travels as an integer of microseconds")
    return dt.timedelta(microseconds=value)


def _uuid_from(value: str) -> uuid.UUID:
    if len(value) != 36:
        raise ValueError("a UUID travels in its 36-character form")
    return uuid.UUID(value)


def _decimal_from(value: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value[:50]!r}") from None


_FROM_WIRE: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "datetime": (str, dt.datetime.fromisoformat),
    "date": (str, dt.date.fromisoformat),
    "time": (str, dt.time.fromisoformat),
    "timedelta": (int, _timedelta_from),
    "uuid": (str, _uuid_from),
    "decimal": (str, _decimal_from),
}

_JSON = frozenset((str, int, float, bool, type(None)))


def _record(value: Any) -> tuple[bool, Any]:
    """(True, the data) for a value sent as the data it holds; (False, None) otherwise."""
    if isinstance(value, enum.Enum):
        return True, value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return True, {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(type(value), "model_dump", None)  # a pydantic (v2) model
    if dump is not None and hasattr(type(value), "model_validate"):
        return True, dump(value)
    return False, None


def float_text(value: float) -> str:
    """A float as JSON writes it; :class:`SerializationError` for NaN and infinities."""
    if value != value or value in (float("inf"), float("-inf")):
        raise SerializationError(f"cannot encode as JSON: out of range float value {value!r}")
    return float.__repr__(value)


def key_text(key: Any) -> str:
    """The JSON object key a dict key becomes (the encoder's rule)."""
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return float_text(key)
    raise SerializationError(f"cannot encode as JSON: keys must be str, int, float, bool or None, not {type(key).__name__}")


def lower(obj: Any, parts: list[memoryview] | None = None,
          other: Callable[[Any], tuple[str, Any] | None] | None = None) -> tuple[Any, dict[str, list[list[Any]]]]:
    """A JSON-only copy of *obj* and the marks of the typed values in it.

    Binary values (``bytes``, ``bytearray``, ``memoryview``) are appended to *parts*
    (views, not copies) and replaced by their index; without *parts* they are refused.
    Iterative (any depth). Raises :class:`SerializationError` for a value that has no
    wire form or a circular reference. *other* gives the (tag, wire form) of values
    that are neither typed values nor records (a client's callables), or None.
    """
    marks: dict[str, list[list[Any]]] = {}
    path: list[Any] = []  # the steps to the innermost container being copied
    holder: list[Any] = [None]
    # a frame: the items left (target key, path step, value), the copy they go to, the
    # id of the container being copied, and whether its step is on the path
    stack: list[tuple[Any, Any, int, bool]] = [(iter(((0, None, obj),)), holder, 0, False)]
    on_path: set[int] = set()
    while stack:
        items, target, ident, stepped = stack[-1]
        for key, step, value in items:
            while True:  # a record gives way to its data, a typed value to its wire form
                t = type(value)
                if t in _JSON or isinstance(value, (dict, list, tuple, str, int, float)):
                    break
                if isinstance(value, _BINARY):
                    if parts is None:
                        raise SerializationError(f"cannot encode as JSON: {t.__name__} cannot travel here")
                    parts.append(as_part(value))
                    value = len(parts) - 1
                    marks.setdefault(BYTES, []).append(path + [step] if step is not None else list(path))
                    break
                tagged = _tagged(value)
                if tagged is not None:
                    tag, wire = tagged
                    value = wire(value)
                    marks.setdefault(tag, []).append(path + [step] if step is not None else list(path))
                    break
                is_record, data = _record(value)
                if not is_record:
                    extra = other(value) if other is not None else None
                    if extra is not None:
                        tag, value = extra
                        marks.setdefault(tag, []).append(path + [step] if step is not None else list(path))
                        break
                    raise SerializationError(
                        f"cannot encode as JSON: Object of type {t.__name__} is not JSON serializable")
                value = data
            if not isinstance(value, (dict, list, tuple)):
                target[key] = value
                continue
            vid = id(value)
            if vid in on_path:
                raise SerializationError("cannot encode as JSON: Circular reference detected")
            copy: Any
            if isinstance(value, dict):
                copy = {}
                sub: Any = ((k, key_text(k), v) for k, v in value.items())
            else:
                copy = [None] * len(value)
                sub = ((i, i, v) for i, v in enumerate(value))
            target[key] = copy
            on_path.add(vid)
            if step is not None:
                path.append(step)
            stack.append((sub, copy, vid, step is not None))
            break  # into the container; this frame's items resume after it
        else:
            stack.pop()
            on_path.discard(ident)
            if stepped:
                path.pop()
    return holder[0], marks


def raise_marked(obj: dict[str, Any], marks: Any, roots: frozenset[str],
                 parts: list[bytes] | None = None) -> None:
    """Turn the marked places of a decoded envelope into their typed values, in place.

    Each path must start at one of *roots* (the message's payload fields) and lead to a
    value of its tag's JSON type; a ``bytes`` mark, to the index of one of *parts* (the
    message's binary parts, each used exactly once), which arrives as ``bytes``.
    Anything else is a :class:`ProtocolError`.
    """
    if not isinstance(marks, dict):
        raise ProtocolError(f"field {MARKS!r} must be an object")
    used: set[int] = set()
    for tag, paths in marks.items():
        decoder: tuple[type, Callable[[Any], Any]] | None
        if tag == BYTES:
            decoder = (int, _part_builder(parts or [], used))
        else:
            decoder = _FROM_WIRE.get(tag)
        if decoder is None:
            raise ProtocolError(f"unknown value type {str(tag)[:50]!r} in field {MARKS!r}")
        json_type, build = decoder
        if not isinstance(paths, list):
            raise ProtocolError(f"the paths of {tag!r} values must be an array")
        for p in paths:
            if not isinstance(p, list) or not p or p[0] not in roots:
                raise ProtocolError(f"a {tag} path must be a non-empty array starting at a payload field")
            parent: Any = obj
            for step in p[:-1]:
                parent = _step(parent, step)[0]
            parent, last = _step(parent, p[-1])[1:]
            value = parent[last]
            if type(value) is not json_type:
                raise ProtocolError(f"a {tag} value must travel as a JSON {json_type.__name__}")
            try:
                parent[last] = build(value)
            except (ValueError, TypeError, OverflowError) as exc:
                raise ProtocolError(f"malformed {tag} value: {str(exc)[:100]}") from None
    if parts and len(used) != len(parts):
        raise ProtocolError(f"{len(parts) - len(used)} of the message's {len(parts)} binary parts have no place")


def _part_builder(parts: list[bytes], used: set[int]) -> Callable[[int], bytes]:
    def build(index: int) -> bytes:
        if not 0 <= index < len(parts):
            raise ValueError(f"part {index} does not exist (the message has {len(parts)})")
        if index in used:
            raise ValueError(f"part {index} has two places")
        used.add(index)
        return parts[index]
    return build


def _step(parent: Any, step: Any) -> tuple[Any, Any, Any]:
    """(child, parent, step) after checking that *step* leads somewhere in *parent*."""
    if type(parent) is dict and type(step) is str:
        if step in parent:
            return parent[step], parent, step
    elif type(parent) is list and type(step) is int and 0 <= step < len(parent):
        return parent[step], parent, step
    raise ProtocolError(f"a path in field {MARKS!r} leads nowhere (at {str(step)[:50]!r})")


def callback_places(obj: dict[str, Any], roots: frozenset[str]) -> list[tuple[Any, Any, int]] | None:
    """Take the ``callback`` marks out of a decoded ``call``'s marks: for each, the
    container, the key and the callback id found there (None: there are none).

    Each path must start at one of *roots* and lead to an integer id below 2**53;
    anything else is a :class:`ProtocolError`. The typed values' marks stay.
    """
    marks = obj.get(MARKS)
    if not isinstance(marks, dict) or CALLBACK not in marks:
        return None
    paths = marks.pop(CALLBACK)
    if not isinstance(paths, list) or not paths:
        raise ProtocolError("the paths of callbacks must be a non-empty array")
    places: list[tuple[Any, Any, int]] = []
    for p in paths:
        if not isinstance(p, list) or len(p) < 2 or p[0] not in roots:
            raise ProtocolError("a callback path must start at a call's arguments")
        parent: Any = obj
        for step in p[:-1]:
            parent = _step(parent, step)[0]
        value, parent, last = _step(parent, p[-1])
        if type(value) is not int or not 0 <= value < 2**53:
            raise ProtocolError("a callback travels as an integer id")
        places.append((parent, last, value))
    return places
