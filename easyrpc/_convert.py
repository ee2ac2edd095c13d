"""Annotations that convert: a served function's arguments are turned into the types its
parameters declare before it runs, or refused. Sans-I/O.

A :class:`Plan` is built once, when the function is registered: one converter per
annotated parameter, each a small closure over its type's parts, so a call pays only for
what its parameters declare (a function without annotations, or annotated ``Any``, has
no plan at all and costs nothing). Conversion is strict in the way JSON needs: a
string in ISO form may become a ``datetime``, an object a dataclass, an array a tuple;
but no string becomes a number and no bool an integer (an int passes for ``float``, as
itself, as typing's numeric tower says).

Understood: ``bool``, ``int``, ``float``, ``str``, ``None``; ``datetime``, ``date``,
``time``, ``timedelta``, ``UUID``, ``Decimal``; ``list``/``set``/``frozenset``/``tuple``
and their ``typing``/``collections.abc`` forms; ``dict``/``Mapping``; ``Optional`` and
unions; ``Literal``; ``Annotated``; ``NewType``; ``Enum``; dataclasses, ``TypedDict``,
``NamedTuple``; pydantic models (their own ``model_validate``). Any other annotation is
not checked: the value passes as it arrived.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import datetime as dt
import enum
import inspect
import logging
import types
import typing
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from .exceptions import ArgumentError

__all__ = ["Plan", "plan_for"]

log = logging.getLogger("easyrpc.server")

Converter = Callable[[Any], Any]
_P = inspect.Parameter


class _Mismatch(Exception):
    """A value that does not fit; ``steps`` say where, innermost last once reversed."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.steps: list[str] = []


def _got(value: Any) -> str:
    if value is None or not isinstance(value, (str, int, float)):
        return type(value).__name__
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__qualname__
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_name(a) for a in typing.get_args(tp))
    return inspect.formatannotation(tp)


def _fail(expected: str, value: Any) -> typing.NoReturn:
    raise _Mismatch(f"expected {expected}, got {_got(value)}")


def _at(step: str, conv: Converter, value: Any) -> Any:
    try:
        return conv(value)
    except _Mismatch as exc:
        exc.steps.append(step)
        raise


# --- scalars -------------------------------------------------------------------------------
def _exact(cls: type, check: Callable[[Any], bool]) -> Converter:
    def conv(value: Any) -> Any:
        if check(value):
            return value
        _fail(cls.__name__, value)
    return conv


def _to_float(value: Any) -> Any:
    # an int is a float for typing's numeric tower (PEP 484): it stays the int it is
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    _fail("float", value)


def _parsed(cls: type, parse: Callable[[Any], Any], accepts: tuple[type, ...] = (str,)) -> Converter:
    """A typed value arrives as itself (marked on the wire); its text form is parsed too."""
    def conv(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, accepts) and not isinstance(value, bool):
            try:
                return parse(value)
            except (ValueError, TypeError, InvalidOperation):
                pass
        _fail(cls.__name__, value)
    return conv


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


_SCALARS: dict[Any, Converter] = {
    bool: _exact(bool, lambda v: v is True or v is False),
    int: _exact(int, lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: _to_float,
    str: _exact(str, lambda v: isinstance(v, str)),
    type(None): _exact(type(None), lambda v: v is None),
    dt.datetime: _parsed(dt.datetime, dt.datetime.fromisoformat),
    dt.date: _parsed(dt.date, dt.date.fromisoformat),
    dt.time: _parsed(dt.time, dt.time.fromisoformat),
    dt.timedelta: _parsed(dt.timedelta, lambda v: dt.timedelta(seconds=v), (int, float)),
    uuid.UUID: _parsed(uuid.UUID, uuid.UUID),
    Decimal: _parsed(Decimal, _decimal, (str, int, float)),
}


# --- containers ----------------------------------------------------------------------------
def _sequence(item: Converter | None, build: Callable[[Any], Any] | None, expected: str) -> Converter:
    def conv(value: Any) -> Any:
        if not isinstance(value, (list, tuple, set, frozenset)) or (build is None and isinstance(value, (set, frozenset))):
            _fail(expected, value)
        if item is not None:
            i = 0
            out = []
            try:
                for i, v in enumerate(value):  # noqa: B007 - i says where, on failure
                    out.append(item(v))
            except _Mismatch as exc:
                exc.steps.append(f"[{i}]")
                raise
            value = out
        elif build is None and type(value) is list:
            return value
        return build(value) if build is not None else list(value)
    return conv


def _fixed_tuple(items: list[Converter | None], expected: str) -> Converter:
    def conv(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            _fail(expected, value)
        if len(value) != len(items):
            raise _Mismatch(f"expected {expected} ({len(items)} items), got {len(value)} items")
        return tuple(v if c is None else _at(f"[{i}]", c, v) for i, (c, v) in enumerate(zip(items, value, strict=True)))
    return conv


def _mapping(key: Converter | None, val: Converter | None, expected: str) -> Converter:
    def conv(value: Any) -> Any:
        if not isinstance(value, dict):
            _fail(expected, value)
        if key is None and val is None:
            return value
        return {
            (k if key is None else _at(f"[{k!r}] (key)", key, k)): (v if val is None else _at(f"[{k!r}]", val, v))
            for k, v in value.items()
        }
    return conv


def _int_key(value: Any) -> Any:
    # JSON object keys are text: an int key arrives as its digits
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    return _SCALARS[int](value)


# --- choices -------------------------------------------------------------------------------
def _union(members: list[Any], convs: list[Converter], expected: str) -> Converter:
    exact = tuple(m for m in members if m in (bool, int, float, str, type(None)))

    def conv(value: Any) -> Any:
        if type(value) in exact:  # already one of the plain types it may be: as is
            return value
        errors = []
        for c in convs:
            try:
                return c(value)
            except _Mismatch as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        _fail(expected, value)
    return conv


def _literal(values: tuple[Any, ...]) -> Converter:
    expected = "one of " + ", ".join(repr(v) for v in values)

    def conv(value: Any) -> Any:
        for lit in values:
            if type(lit) is type(value) and lit == value:
                return lit
            if isinstance(lit, enum.Enum) and lit.value == value and type(lit.value) is type(value):
                return lit
        _fail(expected, value)
    return conv


def _enum(cls: type[enum.Enum]) -> Converter:
    def conv(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls(tuple(value) if isinstance(value, list) else value)
        except (ValueError, TypeError):
            members = ", ".join(repr(m.value) for m in cls)
            _fail(f"a {cls.__qualname__} value ({members})", value)
    return conv


# --- records -------------------------------------------------------------------------------
def _hints(cls: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:  # noqa: BLE001 - an unresolvable annotation is not checked, not fatal
        log.warning("annotations of %s cannot be resolved (%s): its fields are not converted", _name(cls), exc)
        return {}


def _fields_of(fields: dict[str, Converter | None], value: dict[str, Any], known: Any) -> dict[str, Any]:
    out = {}
    k = None
    try:
        for k, v in value.items():
            if k in fields:
                conv = fields[k]
                out[k] = v if conv is None else conv(v)
            elif k not in known:
                unexpected, k = k, None  # the object's fault, not the field's
                raise _Mismatch(f"unexpected field {unexpected!r}")
    except _Mismatch as exc:
        if k is not None:
            exc.steps.append(f".{k}")
        raise
    return out


def _dataclass(cls: type, memo: dict[Any, Converter | None]) -> Converter:
    hints = _hints(cls)
    all_fields = dataclasses.fields(cls)
    init = [f for f in all_fields if f.init]
    fields = {f.name: _build(hints[f.name], memo) if f.name in hints else None for f in init}
    required = [f.name for f in init
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    known = {f.name for f in all_fields}  # a field the constructor does not take is ignored

    def conv(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            _fail(f"{cls.__qualname__} (an object of its fields)", value)
        for name in required:
            if name not in value:
                raise _Mismatch(f"{cls.__qualname__}: missing field {name!r}")
        kwargs = _fields_of(fields, value, known)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise _Mismatch(f"{cls.__qualname__}: {exc}") from None
    return conv


def _typeddict(cls: Any, memo: dict[Any, Converter | None]) -> Converter:
    hints = _hints(cls)
    fields = {k: _build(t, memo) for k, t in hints.items()}
    required = sorted(getattr(cls, "__required_keys__", hints.keys()))

    def conv(value: Any) -> Any:
        if not isinstance(value, dict):
            _fail(f"{cls.__qualname__} (an object)", value)
        for name in required:
            if name not in value:
                raise _Mismatch(f"{cls.__qualname__}: missing key {name!r}")
        return _fields_of(fields, value, ())
    return conv


def _namedtuple(cls: Any, memo: dict[Any, Converter | None]) -> Converter:
    hints = _hints(cls)
    names: tuple[str, ...] = cls._fields
    convs = [_build(hints[n], memo) if n in hints else None for n in names]
    required = len(names) - len(cls._field_defaults)

    def conv(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - set(names)
            if unknown:
                raise _Mismatch(f"unexpected field {sorted(unknown)[0]!r}")
            value = [value[n] for n in names if n in value] if all(n in value for n in names[:required]) else None
            if value is None:
                raise _Mismatch(f"{cls.__qualname__}: missing fields")
        if not isinstance(value, (list, tuple)):
            _fail(f"{cls.__qualname__} (an array or object)", value)
        if not required <= len(value) <= len(names):
            raise _Mismatch(f"{cls.__qualname__}: expected {required} to {len(names)} items, got {len(value)}")
        return cls(*(v if c is None else _at(f".{n}", c, v) for n, c, v in zip(names, convs, value, strict=False)))
    return conv


def _pydantic(cls: Any) -> Converter:
    def conv(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate(value)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            errors = getattr(exc, "errors", None)
            what = str(exc)
            if callable(errors):  # one line per error: where, and what pydantic says
                what = "; ".join(f"{'.'.join(str(s) for s in e.get('loc', ()))}: {e.get('msg')}" for e in errors())
            raise _Mismatch(f"{cls.__qualname__}: {what}") from None
    return conv


# --- building ------------------------------------------------------------------------------
_SEQUENCES = {list: None, cabc.Sequence: None, cabc.MutableSequence: None, cabc.Iterable: None,
              cabc.Collection: None, set: set, cabc.Set: set, cabc.MutableSet: set, frozenset: frozenset}
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)


def _build(tp: Any, memo: dict[Any, Converter | None]) -> Converter | None:
    """The converter for annotation *tp*, or None where values pass as they are."""
    try:
        if tp in memo:
            return memo[tp]
    except TypeError:  # an unhashable annotation: not checked
        return None
    memo[tp] = _later(tp, memo)  # a type that refers to itself reaches this one
    conv = _make(tp, memo)
    memo[tp] = conv
    return conv


def _later(tp: Any, memo: dict[Any, Converter | None]) -> Converter:
    def conv(value: Any) -> Any:
        real = memo[tp]
        return value if real is None else real(value)
    return conv


def _make(tp: Any, memo: dict[Any, Converter | None]) -> Converter | None:
    if tp is Any or tp is object or isinstance(tp, typing.TypeVar) or tp is inspect.Parameter.empty:
        return None
    if tp is None:
        tp = type(None)
    supertype = getattr(tp, "__supertype__", None)  # NewType
    if supertype is not None:
        return _build(supertype, memo)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _build(args[0], memo)
    expected = _name(tp)
    if origin is typing.Union or origin is types.UnionType:
        convs = [_build(a, memo) for a in args]
        if any(c is None for c in convs):
            return None  # a member that is not checked: any value may be that one
        return _union(list(args), [c for c in convs if c is not None], expected)
    if origin is typing.Literal:
        return _literal(args)
    if origin in _SEQUENCES or (origin is None and tp in (list, set, frozenset)):
        build = _SEQUENCES[origin if origin is not None else tp]
        return _sequence(_build(args[0], memo) if args else None, build, expected)
    if origin is tuple or tp is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return _sequence(_build(args[0], memo) if args else None, tuple, expected)
        if args == ((),):
            return _fixed_tuple([], expected)
        return _fixed_tuple([_build(a, memo) for a in args], expected)
    if origin in _MAPPINGS or tp in _MAPPINGS:
        key = _build(args[0], memo) if args else None
        if args and args[0] is int:
            key = _int_key
        elif args and args[0] is str:
            key = None  # JSON object keys are text
        return _mapping(key, _build(args[1], memo) if args else None, expected)
    if origin is not None or not isinstance(tp, type):
        return None  # Callable, Protocol, a forward reference left as text...
    if tp in _SCALARS:
        return _SCALARS[tp]
    if issubclass(tp, enum.Enum):
        return _enum(tp)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, memo)
    if typing.is_typeddict(tp):
        return _typeddict(tp, memo)
    if issubclass(tp, tuple) and hasattr(tp, "_fields"):
        return _namedtuple(tp, memo)
    if hasattr(tp, "model_validate") and hasattr(tp, "model_dump"):
        return _pydantic(tp)
    return None


# --- per function --------------------------------------------------------------------------
class Plan:
    """How one function's arguments are converted; built once, at registration."""

    __slots__ = ("_fn", "_positional", "_named", "_var_positional", "_var_keyword")

    def __init__(self, fn: str, positional: list[tuple[str, Converter | None]], named: dict[str, Converter | None],
                 var_positional: tuple[str, Converter] | None, var_keyword: tuple[str, Converter] | None) -> None:
        self._fn = fn
        self._positional = positional
        self._named = named
        self._var_positional = var_positional
        self._var_keyword = var_keyword

    def __call__(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The converted arguments; :class:`ArgumentError` naming the parameter if one does not fit.

        Arguments that do not bind (too many, unknown names) pass unconverted: calling the
        function raises its own ``TypeError`` for them, as before.
        """
        out_args = list(args)
        positional = self._positional
        for i, value in enumerate(args):
            if i < len(positional):
                name, conv = positional[i]
            elif self._var_positional is not None:
                name, conv = self._var_positional
            else:
                break
            if conv is not None:
                out_args[i] = self._convert(name, conv, value)
        out_kwargs = dict(kwargs)
        for key, value in kwargs.items():
            if key in self._named:
                conv = self._named[key]
                name = key
            elif self._var_keyword is not None:
                name, conv = self._var_keyword
                name = f"{key} (**{name})"
            else:
                continue
            if conv is not None:
                out_kwargs[key] = self._convert(name, conv, value)
        return out_args, out_kwargs

    def _convert(self, name: str, conv: Converter, value: Any) -> Any:
        try:
            return conv(value)
        except _Mismatch as exc:
            where = "".join(reversed(exc.steps))
            raise ArgumentError(f"{self._fn}() argument {name!r}{' at ' + where if where else ''}: {exc.what}") from None
        except RecursionError:
            raise ArgumentError(f"{self._fn}() argument {name!r}: nested too deeply to convert") from None
        except Exception as exc:  # noqa: BLE001 - a record's own check (__post_init__...) refused it
            raise ArgumentError(f"{self._fn}() argument {name!r}: {type(exc).__name__}: {exc}") from None


def plan_for(func: Callable[..., Any], name: str) -> Plan | None:
    """The conversion plan of *func* (served as *name*), or None if it has nothing to convert."""
    try:
        sig = inspect.signature(func, eval_str=True)
    except Exception as exc:  # noqa: BLE001 - an annotation that does not resolve: none is checked
        log.warning("annotations of %s cannot be resolved (%s): its arguments are not converted", name, exc)
        return None
    memo: dict[Any, Converter | None] = {}
    positional: list[tuple[str, Converter | None]] = []
    named: dict[str, Converter | None] = {}
    var_positional = var_keyword = None
    for p in sig.parameters.values():
        conv = _build(p.annotation, memo)
        if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
            positional.append((p.name, conv))
        if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY):
            named[p.name] = conv
        if p.kind is _P.VAR_POSITIONAL and conv is not None:
            var_positional = (p.name, conv)
        if p.kind is _P.VAR_KEYWORD and conv is not None:
            var_keyword = (p.name, conv)
    if all(c is None for _, c in positional) and all(c is None for c in named.values()) \
            and var_positional is None and var_keyword is None:
        return None
    return Plan(name, positional, named, var_positional, var_keyword)
