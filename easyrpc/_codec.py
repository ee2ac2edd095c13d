"""JSON codec: the stdlib's C codec for normal data, an iterative one for any depth.

The C encoder and decoder recurse, so they raise ``RecursionError`` near depth 1,000.
§5 promises no nesting limit, so on ``RecursionError`` both directions fall back to the
iterative implementations of :mod:`easyrpc._deep_json`, which use an explicit stack.
Sans-I/O: no sockets, no threads.

Messages (``typed=True``) also carry the typed values of :mod:`easyrpc._values`: the C
encoder's hook raises on the first value it does not know, and only then is the message
copied with its typed values in their wire forms and marked.

Two rules JSON alone does not give:

* Keys. JSON object keys are text, so ``int``, ``float``, ``bool`` and ``None`` keys
  travel as JSON writes them (``1`` as ``"1"``, ``True`` as ``"true"``) and arrive as
  strings. A dict two of whose keys turn into the same text (``{1: 'a', '1': 'b'}``)
  would lose a value on arrival: it is refused with :class:`SerializationError`.
* Surrogates. Text goes out as UTF-8 with every character as itself; surrogate code
  points (which UTF-8 cannot carry) go out as ``\\uXXXX`` escapes. A JSON decoder joins
  an escaped high surrogate and the escaped low one after it into one character, as
  the JSON standard says, so ``'\\ud83d\\ude00'`` (two code points) would arrive as
  ``'\\U0001f600'``. A message holding such a pair therefore starts with a tab (JSON
  whitespace, so any decoder still reads it), which tells :func:`loads` not to join
  escaped surrogates in it: only surrogate code points are ever escaped there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from . import _values
from ._deep_json import decode_deep as _decode_deep
from ._deep_json import encode_deep as _encode_deep
from ._parts import PARTS, Packed
from ._values import key_text as _key_text
from .exceptions import SerializationError

__all__ = ["dumps", "dumps_parts", "loads"]

def _no_default(obj: Any) -> Any:
    raise _values.Extended(f"Object of type {type(obj).__name__} is not JSON serializable")


# The C encoder, built once: JSONEncoder.encode() rebuilds it on every call, which is
# half the cost of encoding a small message. No circular-reference markers (a shared
# markers dict would make concurrent encodes of one object look circular): a cycle
# recurses into RecursionError, and the iterative encoder then reports it.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_fast = (
    _c_make_encoder(None, _no_default, json.encoder.c_encode_basestring,  # type: ignore[attr-defined]
                    None, ":", ",", False, False, False)
    if _c_make_encoder is not None else None
)
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_no_default)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # RFC 8259 has no NaN or infinities: the encoder never writes them


_decoder = json.JSONDecoder(parse_constant=_no_constant)
_scan_once = _decoder.scan_once  # type: ignore[attr-defined]


_WHOLE: Any = object()


def dumps(obj: Any, *, keys_in: Any = _WHOLE, typed: bool = False) -> bytes:
    """Encode *obj* as compact UTF-8 JSON; raise :class:`SerializationError` if JSON can't carry it.

    *keys_in* is the part of *obj* whose dicts may have keys that are not ``str`` (by
    default all of it): the protocol passes the payload, as it builds the envelope itself.
    With *typed*, *obj* is an envelope (a dict): values with a wire form of their own
    (``datetime``, ``UUID``, a dataclass...) are sent as such and marked in it
    (:mod:`easyrpc._values`); without, they are refused like any value JSON can't carry.
    Binary values are refused: see :func:`dumps_parts`.
    """
    data = _dumps(obj, keys_in, typed, None, None)
    assert isinstance(data, bytes)
    return data


def dumps_parts(obj: Any, *, keys_in: Any = _WHOLE,
                other: Callable[[Any], tuple[str, Any] | None] | None = None) -> bytes | Packed:
    """Encode the envelope *obj* like ``dumps(obj, typed=True)``; if it holds binary
    values (``bytes``, ``bytearray``, ``memoryview``), as a :class:`~easyrpc._parts.Packed`
    message whose parts are views of them, not copies (:mod:`easyrpc._parts`). *other*
    marks further values (``_values.lower``'s: a client's callables)."""
    if _fast is not None:  # every message: the common case (plain JSON) inline
        try:
            text = "".join(_fast(obj, 0))
        except (_values.Extended, RecursionError, TypeError, ValueError):
            return _dumps(obj, keys_in, True, [], other)  # typed or binary values, deep nesting, errors
        keys = obj if keys_in is _WHOLE else keys_in
        if type(keys) not in _SCALARS:
            _check_keys(keys)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return _escape_surrogates(text)
    return _dumps(obj, keys_in, True, [], other)


def _dumps(obj: Any, keys_in: Any, typed: bool, parts: list[memoryview] | None,
           other: Callable[[Any], tuple[str, Any] | None] | None) -> bytes | Packed:
    try:
        text = _text(obj)
    except _values.Extended as exc:
        if not typed:
            raise SerializationError(f"cannot encode as JSON: {exc}") from None
        obj, marks = _values.lower(obj, parts, other)
        if marks:
            obj[_values.MARKS] = marks
        if parts:
            obj[PARTS] = [p.nbytes for p in parts]
        text, keys_in = _text(obj), _WHOLE
    _check_keys(obj if keys_in is _WHOLE else keys_in)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = _escape_surrogates(text)
    return Packed(data, parts) if parts else data


def _text(obj: Any) -> str:
    try:
        return "".join(_fast(obj, 0)) if _fast is not None else _encoder.encode(obj)
    except RecursionError:
        return _encode_deep(obj)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"cannot encode as JSON: {exc}") from None


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON text (bytes must be UTF-8); raise ``ValueError`` on malformed input."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    if not isinstance(data, str):
        data = str(data, "utf-8")  # no intermediate copy; UnicodeDecodeError is a ValueError
    try:
        # The C scanner alone: a message as easyrpc writes it (no whitespace around it)
        # needs none of decode()'s whitespace skipping.
        obj, end = _scan_once(data, 0)
    except StopIteration:  # leading whitespace (or the mark), or malformed
        obj, end = None, -1
    except RecursionError:
        return _decode_deep(data)
    if end == len(data):
        return obj
    if data.startswith(_EXACT_MARK):
        return _decode_deep(data, _scanstring_exact)
    try:
        return _decoder.decode(data)  # other whitespace, or the error for malformed text
    except RecursionError:
        return _decode_deep(data)


# --- keys --------------------------------------------------------------------------------
_SCALARS = frozenset((str, int, float, bool, type(None)))


def _check_keys(obj: Any) -> None:
    """Refuse a dict two of whose keys become the same JSON key (after a successful encode).

    Only a dict with a key that is not a ``str`` can hold two such keys. A recursive walk
    of the containers is the fastest for the small values most calls carry (about 0.15 µs
    for three ints); deep nesting takes the iterative walk.
    """
    if type(obj) in _SCALARS:
        return
    try:
        _walk_keys(obj)
    except RecursionError:
        _walk_keys_deep(obj)


def _walk_keys(obj: Any) -> None:
    t = type(obj)
    if t is dict:
        for key in obj:
            if type(key) is not str:
                _check_dict_keys(obj)
                break
        values: Any = obj.values()
    elif t is list or t is tuple:
        values = obj
    else:  # a subclass of dict, list or tuple (the encoder takes them), or any other type
        _walk_keys_deep(obj)
        return
    for value in values:
        if type(value) not in _SCALARS:
            _walk_keys(value)


def _walk_keys_deep(obj: Any) -> None:
    todo = [obj]
    while todo:
        value = todo.pop()
        if isinstance(value, dict):
            if any(type(key) is not str for key in value):
                _check_dict_keys(value)
            todo.extend(value.values())
        elif isinstance(value, (list, tuple)):
            todo.extend(value)


def _check_dict_keys(value: dict[Any, Any]) -> None:
    seen: dict[str, Any] = {}
    for key in value:
        text = _key_text(key)
        if text in seen:
            raise SerializationError(
                f"cannot encode as JSON: keys {seen[text]!r} and {key!r} of one dict are both "
                f"the JSON key {text!r} (JSON object keys are text)")
        seen[text] = key


# --- surrogates --------------------------------------------------------------------------
_EXACT_MARK = "\t"
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_ESCAPE = re.compile(r'\\(?:u([0-9a-fA-F]{4})|(.))', re.DOTALL)
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _escape_surrogates(text: str) -> bytes:
    # Surrogate code points occur in the encoded text only inside strings, as themselves
    # (the encoder escapes only quotes, backslashes and control characters).
    escaped = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    if _SURROGATE_PAIR.search(text):
        escaped = _EXACT_MARK + escaped
    return escaped.encode("utf-8")


def _unescape(match: re.Match[str]) -> str:
    code, char = match.groups()
    return chr(int(code, 16)) if code is not None else _SIMPLE_ESCAPES[char]


def _scanstring_exact(text: str, end: int) -> tuple[str, int]:
    """``scanstring``, but every ``\\uXXXX`` escape is one code point (surrogates never joined)."""
    value, stop = scanstring(text, end)  # validates the string and finds its end
    raw = text[end:stop - 1]
    if "\\u" in raw:
        value = _ESCAPE.sub(_unescape, raw)
    return value, stop
