"""Signature export (server) and validated import (client). Sans-I/O.

A function travels as a plain JSON description. Importing one never imports or evaluates
anything that came off the wire: names must be plain identifiers, parameter kinds come
from a fixed set, and annotations stay text, shown through :class:`Text`. A default
travels as its text and, when the wire carries it as itself (JSON values, and the typed
values of :mod:`easyrpc._values`), also as its value, which the proxy's signature shows;
other defaults show as their text.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import inspect
import keyword
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["FunctionSpec", "Text", "callable_kind", "describe_function", "spec_from_description", "is_identifier"]

MAX_NAME = 200
MAX_TEXT = 2000
MAX_DOC = 65536
MAX_PARAMS = 256

_KINDS: dict[str, Any] = {
    "POSITIONAL_ONLY": inspect.Parameter.POSITIONAL_ONLY,
    "POSITIONAL_OR_KEYWORD": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "VAR_POSITIONAL": inspect.Parameter.VAR_POSITIONAL,
    "KEYWORD_ONLY": inspect.Parameter.KEYWORD_ONLY,
    "VAR_KEYWORD": inspect.Parameter.VAR_KEYWORD,
}


class Text:
    """A default value or annotation shown as the text the server sent, never evaluated."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Text) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def is_identifier(name: object) -> bool:
    """True for a plain, non-keyword Python identifier of sane length."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME
        and name.isidentifier()
        and name.isascii()
        and not keyword.iskeyword(name)
    )


def _annotation_text(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        return annotation
    try:
        return inspect.formatannotation(annotation)
    except Exception:  # noqa: BLE001 - a broken __repr__ is the annotation's, not a reason to refuse
        return _no_repr(annotation)


def _default_text(default: Any) -> str:
    # Defaults are shown, never sent (the server applies its own): a default whose repr
    # raises is no reason to refuse the function, so it shows as a placeholder.
    try:
        return repr(default)
    except Exception:  # noqa: BLE001 - any error of user code in __repr__
        return _no_repr(default)


def _no_repr(value: Any) -> str:
    return f"<{type(value).__qualname__} object (repr() failed)>"


_ITSELF = frozenset((str, int, bool, type(None), dt.date, dt.timedelta, uuid.UUID, Decimal))
MAX_DEFAULT_DEPTH = 32


def travels_as_itself(value: Any, depth: int = 0) -> bool:
    """True if *value* arrives as an equal value of its own type (so a signature may show it).

    Tuples (which arrive as lists), sets, records and other objects do not; a datetime or
    time does only with no time zone or a fixed offset (``datetime.timezone``).
    """
    t = type(value)
    if t in _ITSELF:
        return True
    if t is float:
        return math.isfinite(value)
    if t is dt.datetime or t is dt.time:
        return value.tzinfo is None or type(value.tzinfo) is dt.timezone
    if depth >= MAX_DEFAULT_DEPTH:
        return False
    if t is list:
        return all(travels_as_itself(v, depth + 1) for v in value)
    if t is dict:
        return all(type(k) is str and travels_as_itself(v, depth + 1) for k, v in value.items())
    return False


def callable_kind(func: Callable[..., Any]) -> str:
    """``'sync'``, ``'async'``, ``'gen'`` or ``'agen'``: how calling *func* must be run.

    Looks through ``functools.partial`` and, for an object with ``__call__``, at that
    method, so an instance whose ``__call__`` is ``async def`` (or a generator) is
    served as such.
    """
    target: Any = func
    while isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isroutine(target) or isinstance(target, type)) and callable(target):
        target = type(target).__call__
    if inspect.isasyncgenfunction(target):
        return "agen"
    if inspect.isgeneratorfunction(target):
        return "gen"
    if inspect.iscoroutinefunction(target):
        return "async"
    return "sync"


def _short(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_function(func: Callable[..., Any], name: str, namespace: str) -> dict[str, Any]:
    """The JSON description of *func* that proxies are built from."""
    sig = inspect.signature(func)
    params = []
    for p in sig.parameters.values():
        entry: dict[str, Any] = {"name": p.name, "kind": p.kind.name}
        if p.default is not inspect.Parameter.empty:
            text = _default_text(p.default)
            entry["default"] = _short(text)
            if len(text) <= MAX_TEXT and travels_as_itself(p.default):
                entry["value"] = copy.deepcopy(p.default)  # the description must not follow a mutated default
        ann = _annotation_text(p.annotation)
        if ann is not None:
            entry["annotation"] = _short(ann)
        params.append(entry)
    run = callable_kind(func)
    desc: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "kind": "generator" if run in ("gen", "agen") else "function",
        "is_async": run in ("async", "agen"),
        "doc": _short(inspect.getdoc(func) or "", MAX_DOC),
        "parameters": params,
    }
    ret = _annotation_text(sig.return_annotation)
    if ret is not None:
        desc["return_annotation"] = _short(ret)
    desc["signature"] = _display_signature(desc)
    return desc


@dataclass(frozen=True)
class FunctionSpec:
    """A validated remote function: its name, kind, doc and signatures.

    ``signature`` is for display (``Text`` defaults and annotations); ``call_signature``
    has the same names and kinds with every default set to :data:`OMITTED`, so local
    binding behaves as the origin's and omitted arguments are never sent.
    """

    name: str
    namespace: str
    is_generator: bool
    doc: str
    signature: inspect.Signature
    call_signature: inspect.Signature
    annotations: dict[str, str]
    description: dict[str, Any]


class _Omitted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<omitted>"


OMITTED: Any = _Omitted()


def _text_field(entry: dict[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValueError(f"{key} must be text of at most {MAX_TEXT} characters")
    return value


def spec_from_description(desc: Any) -> FunctionSpec:
    """Validate a description from the wire and build its :class:`FunctionSpec`.

    Raises ``ValueError`` for anything malformed; nothing in *desc* is evaluated.
    """
    if not isinstance(desc, dict):
        raise ValueError("function description must be an object")
    name = desc.get("name")
    if not isinstance(name, str) or not is_identifier(name):
        raise ValueError(f"invalid function name {str(name)[:50]!r}")
    namespace = desc.get("namespace", "")
    if not isinstance(namespace, str) or len(namespace) > MAX_NAME:
        raise ValueError("invalid namespace")
    kind = desc.get("kind")
    if kind not in ("function", "generator"):
        raise ValueError(f"invalid function kind for {name}")
    doc = desc.get("doc") or ""
    if not isinstance(doc, str) or len(doc) > MAX_DOC:
        raise ValueError(f"invalid doc for {name}")
    raw_params = desc.get("parameters")
    if not isinstance(raw_params, list) or len(raw_params) > MAX_PARAMS:
        raise ValueError(f"invalid parameters for {name}")
    shown: list[inspect.Parameter] = []
    bound: list[inspect.Parameter] = []
    annotations: dict[str, str] = {}
    for entry in raw_params:
        if not isinstance(entry, dict):
            raise ValueError(f"invalid parameter for {name}")
        pname = entry.get("name")
        if not isinstance(pname, str) or not is_identifier(pname):
            raise ValueError(f"invalid parameter name in {name}")
        pkind = _KINDS.get(entry.get("kind"))  # type: ignore[arg-type]
        if pkind is None:
            raise ValueError(f"invalid parameter kind in {name}")
        default = _text_field(entry, "default")
        ann = _text_field(entry, "annotation")
        if ann is not None:
            annotations[pname] = ann
        empty = inspect.Parameter.empty
        shown_default: Any = empty
        if default is not None:
            value = entry.get("value", empty)
            shown_default = value if value is not empty and travels_as_itself(value) else Text(default)
        shown.append(inspect.Parameter(
            pname, pkind,
            default=shown_default,
            annotation=Text(ann) if ann is not None else empty,
        ))
        bound.append(inspect.Parameter(pname, pkind, default=OMITTED if default is not None else empty))
    ret = _text_field(desc, "return_annotation")
    if ret is not None:
        annotations["return"] = ret
    # Signature() checks order, duplicates and default placement: ValueError if wrong.
    signature = inspect.Signature(shown, return_annotation=Text(ret) if ret is not None else inspect.Signature.empty)
    call_signature = inspect.Signature(bound)
    return FunctionSpec(
        name=name, namespace=namespace, is_generator=kind == "generator", doc=doc,
        signature=signature, call_signature=call_signature, annotations=annotations,
        description=desc,
    )


def _display_signature(desc: dict[str, Any]) -> str:
    return str(spec_from_description({**desc, "signature": ""}).signature)


def wire_from_bound(spec: FunctionSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Arrange arguments that a makefun-built function has already bound for the wire.

    makefun passes named parameters by keyword and only positional-only and variadic
    ones positionally, with :data:`OMITTED` for defaults not given; the common case
    needs no second binding. A positional :data:`OMITTED` (a default skipped before a
    later argument) takes the general path.
    """
    for value in args:
        if value is OMITTED:
            return wire_arguments(spec, args, kwargs)
    for value in kwargs.values():
        if value is OMITTED:
            return list(args), {k: v for k, v in kwargs.items() if v is not OMITTED}
    return list(args), kwargs


def wire_arguments(spec: FunctionSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Bind a call locally (``TypeError`` as a local call would) and arrange it for the wire.

    Omitted arguments are not sent, so the server applies its own defaults.
    """
    bound = spec.call_signature.bind(*args, **kwargs)
    params = spec.call_signature.parameters
    var_positional = any(
        params[n].kind is inspect.Parameter.VAR_POSITIONAL and v for n, v in bound.arguments.items()
    )
    out_args: list[Any] = []
    out_kwargs: dict[str, Any] = {}
    for pname, value in bound.arguments.items():
        kind = params[pname].kind
        if value is OMITTED:
            continue
        if kind is inspect.Parameter.POSITIONAL_ONLY:
            out_args.append(value)
        elif kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            if var_positional:
                out_args.append(value)
            else:
                out_kwargs[pname] = value
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            out_args.extend(value)
        elif kind is inspect.Parameter.KEYWORD_ONLY:
            out_kwargs[pname] = value
        else:
            out_kwargs.update(value)
    return out_args, out_kwargs
