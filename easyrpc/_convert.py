"""Annotations that convert: a served function's arguments are turned into the types its
parameters declare before it runs, or refused. Sans-I/O.

The conversion and validation are pydantic's (v2): a :class:`Plan` is built once, when the
function is registered, with one pydantic validator per annotated parameter, so a call
pays only for what its parameters declare. A function without annotations, or annotated
``Any``/``object`` only, has no plan, costs nothing and does not import pydantic.

Values arrive as JSON carries them (plus the typed values of ``_values``), so each
validator runs in pydantic's lax Python mode, where an object becomes a dataclass,
``TypedDict``, ``NamedTuple`` or model, an array a tuple or a set, an ISO string a
``datetime``, a value an ``Enum`` member; with two changes, made to pydantic's own core
schema (:func:`_json_like`) so that it behaves as its JSON mode does with JSON's types:
``int``, ``float``, ``bool`` and ``str`` are strict (no string becomes a number, no bool
or float an integer, no number a bool; an int passes for a float), except as dict keys,
which JSON writes as text; and a ``Callable`` is not checked (pydantic would refuse
anything not callable). Unknown keys of a dataclass or ``TypedDict`` are ignored
(pydantic's default). pydantic models keep their own configuration.

An annotation pydantic cannot build a validator for (a plain class of the user's, or a
``typing.TypedDict`` before Python 3.12, which pydantic refuses) is not checked: the
value passes as it arrived, as for an unannotated parameter.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import ArgumentError

if TYPE_CHECKING:
    from pydantic_core import SchemaValidator, ValidationError

__all__ = ["Plan", "plan_for"]

log = logging.getLogger("easyrpc.server")

_P = inspect.Parameter
_UNCHECKED: tuple[Any, ...] = (_P.empty, Any, object)
_STRICT_SCALARS = frozenset({"int", "float", "bool", "str"})


def _json_like(node: Any, key: str | None = None) -> Any:
    """A copy of pydantic core schema *node* with JSON's rules for JSON's types (see above).

    Generic over the schema's dicts and lists: it knows only the schema types it changes.
    """
    if isinstance(node, list):
        return [_json_like(item, key) for item in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "model":  # a pydantic model: validated as its author configured it
        return node
    if kind == "callable":  # what arrives for a Callable is easyrpc's business, not checked
        return {"type": "any"}
    out = {k: _json_like(v, k if k == "keys_schema" else key) for k, v in node.items()}
    if kind in _STRICT_SCALARS and key != "keys_schema":
        out["strict"] = True
    return out


def _validator(annotation: Any, where: str) -> SchemaValidator | None:
    """pydantic's validator for *annotation*, or None if pydantic cannot build one."""
    from pydantic import PydanticSchemaGenerationError, PydanticUserError, TypeAdapter
    from pydantic_core import SchemaValidator

    try:
        schema = TypeAdapter(annotation).core_schema
        return SchemaValidator(_json_like(schema))
    except PydanticSchemaGenerationError:  # a class pydantic does not know: not checked
        log.debug("%s: annotation %r is not converted", where, annotation)
    except PydanticUserError as exc:
        log.warning("%s: annotation %r is not converted: %s", where, annotation, str(exc).splitlines()[0])
    except Exception as exc:  # noqa: BLE001 - any annotation pydantic refuses stays unchecked, not fatal
        log.warning("%s: annotation %r is not converted (%s: %s)", where, annotation, type(exc).__name__, exc)
    return None


def _got(value: Any) -> str:
    if value is None or not isinstance(value, (str, int, float)):
        return type(value).__name__
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _where(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as Python would write it: ``.points[0].y``, ``['my key']``.

    A field and a dict key look alike in pydantic's ``loc`` (both are text): each is written
    ``.name`` when it is an identifier. A union's errors start with the member they are for.
    """
    return "".join(f"[{s}]" if isinstance(s, int) else " (key)" if s == "[key]" else f".{s}" if s.isidentifier()
                   else f"[{s!r}]" for s in loc)


def _describe(exc: ValidationError) -> str:
    """What was wrong, and where: one part per error pydantic reports, ``; `` between them."""
    parts = []
    for err in exc.errors(include_url=False):
        where = _where(err["loc"])
        got = f", got {_got(err['input'])}" if err["type"] not in ("missing", "extra_forbidden") else ""
        parts.append(f"{'at ' + where + ': ' if where else ''}{err['msg']}{got}")
    return "; ".join(parts)


Converter = Callable[[Any], Any]


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
        from pydantic_core import ValidationError

        try:
            return conv(value)
        except ValidationError as exc:
            raise ArgumentError(f"{self._fn}() argument {name!r}{_sep(exc)}{_describe(exc)}") from None
        except RecursionError:
            raise ArgumentError(f"{self._fn}() argument {name!r}: nested too deeply to convert") from None
        except Exception as exc:  # noqa: BLE001 - a record's own check (__post_init__...) refused it
            raise ArgumentError(f"{self._fn}() argument {name!r}: {type(exc).__name__}: {exc}") from None


def _sep(exc: ValidationError) -> str:
    return " " if exc.error_count() == 1 and exc.errors()[0]["loc"] else ": "


def plan_for(func: Callable[..., Any], name: str) -> Plan | None:
    """The conversion plan of *func* (served as *name*), or None if it has nothing to convert."""
    try:
        sig = inspect.signature(func, eval_str=True)
    except Exception as exc:  # noqa: BLE001 - an annotation that does not resolve: none is checked
        log.warning("annotations of %s cannot be resolved (%s): its arguments are not converted", name, exc)
        return None
    convs: dict[str, Converter | None] = {}
    for p in sig.parameters.values():
        annotation = p.annotation
        if any(annotation is u for u in _UNCHECKED):
            convs[p.name] = None
            continue
        validator = _validator(annotation, f"{name}() parameter {p.name!r}")
        convs[p.name] = validator.validate_python if validator is not None else None
    if all(c is None for c in convs.values()):
        return None
    positional: list[tuple[str, Converter | None]] = []
    named: dict[str, Converter | None] = {}
    var_positional = var_keyword = None
    for p in sig.parameters.values():
        conv = convs[p.name]
        if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
            positional.append((p.name, conv))
        if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY):
            named[p.name] = conv
        if p.kind is _P.VAR_POSITIONAL and conv is not None:
            var_positional = (p.name, conv)
        if p.kind is _P.VAR_KEYWORD and conv is not None:
            var_keyword = (p.name, conv)
    return Plan(name, positional, named, var_positional, var_keyword)
