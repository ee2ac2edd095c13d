"""The types of a served function's annotations, described for typed clients. Sans-I/O.

At registration the server resolves a function's annotations (as :mod:`easyrpc._convert`
does) and adds to its description, beside each annotation's display text, its *type*:
the annotation written as a Python expression in a fixed vocabulary, which a client can
check node by node without evaluating anything (``easyrpc stubgen`` does):

* builtins by name (``int``, ``list``, ``None``...);
* the modules ``typing``, ``collections.abc``, ``datetime``, ``uuid`` and ``decimal`` by
  dotted name (``typing.Any``, ``collections.abc.Iterator[int]``, ``datetime.date``);
* ``X | Y`` for unions and ``Optional``; ``typing.Literal[...]`` of str, int, bool, bytes
  and None; ``Annotated`` as its first argument; a ``NewType`` as its supertype;
* the named types it uses (dataclasses, ``TypedDict``, ``NamedTuple``, ``Enum``) by a key
  of the description's ``types``, which describes each of them (fields, members).

An annotation outside that vocabulary (a plain class, a TypeVar, a generic class of the
user's) gets no type. See docs/protocol.md §11.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import decimal
import enum
import inspect
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any

from typing_extensions import is_typeddict

from ._signature import MAX_TEXT, is_identifier, travels_as_itself

__all__ = ["BUILTIN_TYPES", "MAX_TYPES", "TYPE_MODULES", "add_types"]

BUILTIN_TYPES = frozenset({
    "int", "float", "str", "bool", "bytes", "bytearray", "memoryview", "complex", "object",
    "list", "dict", "set", "frozenset", "tuple", "type",
})
TYPE_MODULES: dict[str, Any] = {
    "typing": typing, "collections.abc": collections.abc, "datetime": datetime, "uuid": uuid, "decimal": decimal,
}
MAX_TYPES = 256
_FACTORIES = {list: "list", dict: "dict", set: "set", frozenset: "frozenset", tuple: "tuple"}


class _Unsupported(Exception):
    """An annotation outside the vocabulary."""


def _text(annotation: Any) -> str:
    try:
        return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    except Exception:  # noqa: BLE001 - a broken __repr__ is the annotation's
        return "?"


def _own_doc(cls: type) -> str:
    """*cls*'s docstring, unless it is one that dataclass, NamedTuple or Enum wrote."""
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str) or doc.startswith(cls.__name__ + "(") or doc == "An enumeration.":
        return ""
    return inspect.cleandoc(doc)


class TypeWriter:
    """Writes annotations as types, collecting the named types they use in ``types``."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}
        self._keys: dict[type, str] = {}

    def write(self, annotation: Any) -> str | None:
        """*annotation*'s type, or None if it is outside the vocabulary."""
        try:
            text = self._expr(annotation)
        except (_Unsupported, RecursionError):
            return None
        return text if len(text) <= MAX_TEXT else None

    def _expr(self, ann: Any) -> str:
        if ann is None or ann is type(None):
            return "None"
        if ann is Any:
            return "typing.Any"
        if ann is Ellipsis:
            return "..."
        if isinstance(ann, typing.NewType):
            return self._expr(ann.__supertype__)
        origin = typing.get_origin(ann)
        if origin is None:
            if isinstance(ann, type):
                return self._class(ann)
            raise _Unsupported
        args = typing.get_args(ann)
        if origin is typing.Annotated:
            return self._expr(args[0])
        if origin is typing.Union or origin is types.UnionType:
            return " | ".join(self._expr(a) for a in args)
        if origin is typing.Literal:
            if not all(type(a) in (str, int, bool, bytes, type(None)) for a in args):
                raise _Unsupported
            return f"typing.Literal[{', '.join(repr(a) for a in args)}]"
        base = self._class(origin) if isinstance(origin, type) else None
        if base is None or base in self.types:  # a generic class of the user's
            raise _Unsupported
        if not args:
            return base
        if origin is collections.abc.Callable:
            listed = args[0] if isinstance(args[0], list) else args[:-1]
            params = "..." if args[0] is Ellipsis else f"[{', '.join(self._expr(a) for a in listed)}]"
            return f"{base}[{params}, {self._expr(args[-1])}]"
        return f"{base}[{', '.join(self._expr(a) for a in args)}]"

    def _class(self, cls: type) -> str:
        if cls.__module__ == "builtins" and cls.__name__ in BUILTIN_TYPES:
            return cls.__name__
        for module_name, module in TYPE_MODULES.items():
            if getattr(module, cls.__name__, None) is cls:
                return f"{module_name}.{cls.__name__}"
        return self._named(cls)

    def _named(self, cls: type) -> str:
        key = self._keys.get(cls)
        if key is not None:
            return key
        if dataclasses.is_dataclass(cls):
            kind = "dataclass"
        elif is_typeddict(cls):
            kind = "typeddict"
        elif issubclass(cls, tuple) and hasattr(cls, "_fields"):
            kind = "namedtuple"
        elif issubclass(cls, enum.Enum):
            kind = "enum"
        else:
            raise _Unsupported
        if len(self.types) >= MAX_TYPES or not is_identifier(cls.__name__):
            raise _Unsupported
        key, n = cls.__name__, 1
        while key in self.types:
            n += 1
            key = f"{cls.__name__}_{n}"
        self._keys[cls] = key
        entry: dict[str, Any] = {"kind": kind, "doc": _own_doc(cls)}
        self.types[key] = entry  # before its fields: a recursive type refers to itself
        try:
            entry.update(self._body(cls, kind))
        except (_Unsupported, NameError, TypeError, AttributeError):
            del self.types[key], self._keys[cls]
            raise _Unsupported from None
        return key

    def _body(self, cls: type, kind: str) -> dict[str, Any]:
        if kind == "enum":
            members = []
            for member in typing.cast("type[enum.Enum]", cls):
                value = member.value
                if type(value) not in (str, int, float, bool) or not travels_as_itself(value):
                    raise _Unsupported
                members.append({"name": member.name, "value": value})
            base = "str" if issubclass(cls, str) else "int" if issubclass(cls, int) else None
            return {"base": base, "members": members}
        hints = typing.get_type_hints(cls)
        fields: list[dict[str, Any]] = []
        if kind == "dataclass":
            for f in dataclasses.fields(cls):
                entry = self._field(f.name, hints.get(f.name, Any), f.type)
                if f.default is not dataclasses.MISSING:
                    self._default(entry, f.default)
                elif f.default_factory is not dataclasses.MISSING:
                    entry["default"] = "<factory>"
                    factory = _FACTORIES.get(f.default_factory)  # type: ignore[call-overload]
                    if factory is not None:
                        entry["factory"] = factory
                fields.append(entry)
            return {"fields": fields}
        if kind == "namedtuple":
            defaults = getattr(cls, "_field_defaults", {})
            for name in cls._fields:  # type: ignore[attr-defined]
                entry = self._field(name, hints.get(name, Any), hints.get(name, Any))
                if name in defaults:
                    self._default(entry, defaults[name])
                fields.append(entry)
            return {"fields": fields}
        required = getattr(cls, "__required_keys__", frozenset(hints))
        for name, hint in hints.items():
            entry = self._field(name, hint, hint)
            entry["required"] = name in required
            fields.append(entry)
        return {"fields": fields}

    def _field(self, name: str, hint: Any, shown: Any) -> dict[str, Any]:
        if not is_identifier(name):
            raise _Unsupported
        entry: dict[str, Any] = {"name": name, "annotation": _text(shown)[:MAX_TEXT]}
        written = self.write(hint)
        if written is not None:
            entry["type"] = written
        return entry

    def _default(self, entry: dict[str, Any], default: Any) -> None:
        text = _text_of_default(default)
        entry["default"] = text[:MAX_TEXT]
        if isinstance(default, enum.Enum):
            try:
                entry["member"] = f"{self._named(type(default))}.{default.name}"
            except _Unsupported:
                pass
        elif len(text) <= MAX_TEXT and travels_as_itself(default):
            entry["value"] = default


def _text_of_default(default: Any) -> str:
    try:
        return repr(default)
    except Exception:  # noqa: BLE001 - any error of user code in __repr__
        return f"<{type(default).__qualname__} object>"


def add_types(desc: dict[str, Any], func: Callable[..., Any]) -> None:
    """Add the ``type`` of each annotated parameter, ``return_type`` and ``types`` to *desc*.

    ``types`` is always added (maybe empty): it tells a client that a missing ``type``
    means "outside the vocabulary", not "from a server before types". Annotations that do
    not resolve (``inspect.signature(eval_str=True)`` fails) add no ``type``.
    """
    desc["types"] = {}
    try:
        sig = inspect.signature(func, eval_str=True)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: described as text only
        return
    writer = TypeWriter()
    for entry, param in zip(desc["parameters"], sig.parameters.values(), strict=False):
        if param.annotation is not inspect.Parameter.empty:
            written = writer.write(param.annotation)
            if written is not None:
                entry["type"] = written
    if sig.return_annotation is not inspect.Signature.empty:
        written = writer.write(sig.return_annotation)
        if written is not None:
            desc["return_type"] = written
    desc["types"] = writer.types
