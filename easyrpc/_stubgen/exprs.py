"""What stubgen writes into Python source from a server's descriptions, each piece checked.

The descriptions come off the wire, and the module written from them is imported later,
so nothing of theirs reaches the file unchecked: a type is parsed (never evaluated) and
rebuilt node by node from a fixed vocabulary (:mod:`easyrpc._typeinfo`) before
``ast.unparse`` writes it; a default is written only from a value of a known type; text
(docstrings, comments) is written as a string literal or ``repr()``.
"""

from __future__ import annotations

import ast
import datetime as dt
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .._typeinfo import BUILTIN_TYPES, TYPE_MODULES

__all__ = ["parse_type", "render_value", "doc_literal", "comment_text", "ITERATORS"]

MAX_TYPE_TEXT = 2000
ITERATORS = frozenset(f"{m}.{n}" for m in ("typing", "collections.abc") for n in (
    "Iterator", "Iterable", "Generator", "AsyncIterator", "AsyncIterable", "AsyncGenerator"))


class _Refused(Exception):
    pass


def parse_type(text: Any, names: Mapping[str, str], *, bare_typing: bool = False) -> ast.expr | None:
    """The checked expression of type *text* with named types renamed by *names*, or None.

    *bare_typing* (for the display text of servers that send no ``type``) also accepts
    ``typing``'s names unqualified (``Optional[str]``).
    """
    if not isinstance(text, str) or len(text) > MAX_TYPE_TEXT:
        return None
    try:
        tree = ast.parse(text, mode="eval")
        return _Checker(names, bare_typing).node(tree.body, False)
    except (SyntaxError, ValueError, RecursionError, MemoryError, _Refused):
        return None


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _module_attr(dotted: str) -> bool:
    module_name, _, attr = dotted.rpartition(".")
    module = TYPE_MODULES.get(module_name)
    return module is not None and attr.isidentifier() and not attr.startswith("_") and hasattr(module, attr)


class _Checker:
    def __init__(self, names: Mapping[str, str], bare_typing: bool) -> None:
        self.names = names
        self.bare_typing = bare_typing

    def node(self, node: ast.expr, literal: bool) -> ast.expr:
        if isinstance(node, ast.Constant):
            if node.value is None or node.value is Ellipsis or (literal and type(node.value) in (str, int, bool, bytes)):
                return ast.Constant(node.value)
            raise _Refused
        if isinstance(node, ast.Name):
            if node.id in BUILTIN_TYPES:
                return ast.Name(node.id, ast.Load())
            if node.id in self.names:
                return ast.Name(self.names[node.id], ast.Load())
            if self.bare_typing and _module_attr(f"typing.{node.id}"):
                return ast.Attribute(ast.Name("typing", ast.Load()), node.id, ast.Load())
            raise _Refused
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted is None or not _module_attr(dotted):
                raise _Refused
            return ast.parse(dotted, mode="eval").body
        if isinstance(node, ast.Subscript):
            base = self.node(node.value, False)
            inner = _dotted(base) == "typing.Literal"
            sl = node.slice
            if isinstance(sl, ast.Tuple):
                return ast.Subscript(base, ast.Tuple([self.node(e, inner) for e in sl.elts], ast.Load()), ast.Load())
            return ast.Subscript(base, self.node(sl, inner), ast.Load())
        if isinstance(node, ast.List) and not literal:
            return ast.List([self.node(e, False) for e in node.elts], ast.Load())
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and not literal:
            return ast.BinOp(self.node(node.left, False), ast.BitOr(), self.node(node.right, False))
        raise _Refused


_SCALARS = (str, int, bool, type(None), bytes)


def render_value(value: Any, depth: int = 0) -> str | None:
    """Python source for a default *value* of a known type (as the codec decodes it), else None."""
    t = type(value)
    if t in _SCALARS:
        return repr(value)
    if t is float:
        return repr(value) if math.isfinite(value) else None
    if t in (dt.datetime, dt.time):
        if value.tzinfo is not None and type(value.tzinfo) is not dt.timezone:
            return None
        return repr(value)  # datetime.datetime(...), tzinfo=datetime.timezone(...): the module's own names
    if t in (dt.date, dt.timedelta):
        return repr(value)
    if t is uuid.UUID:
        return f"uuid.UUID({str(value)!r})"
    if t is Decimal:
        return f"decimal.Decimal({str(value)!r})"
    if depth > 32:
        return None
    if t is list:
        items = [render_value(v, depth + 1) for v in value]
        return None if any(i is None for i in items) else f"[{', '.join(items)}]"  # type: ignore[arg-type]
    if t is dict:
        if not all(type(k) is str for k in value):
            return None
        pairs = [(repr(k), render_value(v, depth + 1)) for k, v in value.items()]
        return None if any(v is None for _, v in pairs) else "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    return None


def doc_literal(doc: str, indent: str) -> str:
    """*doc* as a docstring literal indented by *indent*: triple-quoted where that is safe."""
    plain = all(c == "\n" or c.isprintable() for c in doc)
    if plain and "\\" not in doc and '"""' not in doc and not doc.endswith('"'):
        lines = doc.split("\n")
        body = "\n".join([lines[0]] + [indent + line if line else "" for line in lines[1:]])
        return f'"""{body}\n{indent}"""' if len(lines) > 1 else f'"""{body}"""'
    return repr(doc)


def comment_text(text: str, limit: int = 200) -> str:
    """*text* fit for a ``#`` comment: one line, control characters escaped."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
