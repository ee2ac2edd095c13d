"""JSON at any depth: the iterative encoder and decoder :mod:`._codec` falls back on.

The stdlib's C encoder and decoder recurse, so they raise ``RecursionError`` near depth
1,000; these use an explicit stack instead, with the same output and the same rules
(:mod:`._codec`'s: keys as JSON writes them, no ``NaN`` or infinities). Sans-I/O.
"""

from __future__ import annotations

import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from json.encoder import encode_basestring
from typing import Any

from . import _values
from ._values import key_text as _key_text
from .exceptions import SerializationError

__all__ = ["decode_deep", "encode_deep"]


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return str(encode_basestring(value))
    if value is None or isinstance(value, (int, float)):  # bool is an int
        return _key_text(value)  # the same text as a key's
    raise _values.Extended(f"Object of type {type(value).__name__} is not JSON serializable")


def encode_deep(obj: Any) -> str:
    """Iterative encoder with the stdlib's output and circular-reference check."""
    out: list[str] = []
    # Each frame: (iterator over items, is_dict, container id); "first" tracked by out position.
    stack: list[tuple[Any, bool, int]] = []
    on_stack: set[int] = set()
    pending: list[Any] = [obj]
    while True:
        if pending:
            value = pending.pop()
            if isinstance(value, (list, tuple, dict)):
                ident = id(value)
                if ident in on_stack:
                    raise SerializationError("cannot encode as JSON: Circular reference detected")
                on_stack.add(ident)
                if isinstance(value, dict):
                    out.append("{")
                    stack.append((iter(value.items()), True, ident))
                else:
                    out.append("[")
                    stack.append((iter(value), False, ident))
                first = True
            else:
                out.append(_scalar_text(value))
                first = False
        else:
            first = False
        if not stack:
            return "".join(out)
        # advance the innermost container
        while stack:
            items, is_dict, ident = stack[-1]
            try:
                item = next(items)
            except StopIteration:
                stack.pop()
                on_stack.discard(ident)
                out.append("}" if is_dict else "]")
                first = False
                continue
            if not first:
                out.append(",")
            if is_dict:
                key, item = item
                out.append(str(encode_basestring(_key_text(key))))
                out.append(":")
            pending.append(item)
            break
        else:
            return "".join(out)


_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def _read_key(text: str, pos: int, scanstring: Any) -> tuple[str, int]:
    """The object key at *pos*, and where its value starts (past ``:`` and whitespace)."""
    if not text.startswith('"', pos):
        raise ValueError(f"expected a key at {pos}")
    key, pos = scanstring(text, pos + 1)
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if not text.startswith(":", pos):
        raise ValueError(f"expected ':' at {pos}")
    return key, _WS.match(text, pos + 1).end()  # type: ignore[union-attr]


def decode_deep(text: str, scanstring: Any = scanstring) -> Any:
    """Iterative JSON decoder accepting what :func:`loads` accepts (JSON: no ``NaN`` or
    infinities), at any depth."""
    stack: list[Any] = []  # containers under construction
    keys: list[Any] = []  # pending key for dict frames (None for lists)
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    n = len(text)
    result: Any = None
    have_result = False
    while True:
        if pos >= n:
            raise ValueError("unexpected end of JSON text")
        ch = text[pos]
        value: Any
        if ch == "{":
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            if text.startswith("}", pos):
                pos += 1
                value = {}
            else:
                key, pos = _read_key(text, pos, scanstring)
                stack.append({})
                keys.append(key)
                continue
        elif ch == "[":
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            if text.startswith("]", pos):
                pos += 1
                value = []
            else:
                stack.append([])
                keys.append(None)
                continue
        elif ch == '"':
            value, pos = scanstring(text, pos + 1)
        elif text.startswith("null", pos):
            value, pos = None, pos + 4
        elif text.startswith("true", pos):
            value, pos = True, pos + 4
        elif text.startswith("false", pos):
            value, pos = False, pos + 5
        else:
            m = _NUMBER.match(text, pos)
            if m is None:
                raise ValueError(f"unexpected character at {pos}")
            integer, frac, exp = m.groups()
            value = float(integer + (frac or "") + (exp or "")) if frac or exp else int(integer)
            pos = m.end()
        # attach value to its parent, then close as many containers as end here
        while True:
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if not stack:
                result, have_result = value, True
                break
            parent = stack[-1]
            if isinstance(parent, dict):
                parent[keys[-1]] = value
            else:
                parent.append(value)
            closer = "}" if isinstance(parent, dict) else "]"
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
                if isinstance(parent, dict):
                    keys[-1], pos = _read_key(text, pos, scanstring)
                break
            if text.startswith(closer, pos):
                pos += 1
                value = stack.pop()
                keys.pop()
                continue
            raise ValueError(f"expected ',' or {closer!r} at {pos}")
        if have_result:
            if pos != n:
                raise ValueError(f"extra data at {pos}")
            return result
