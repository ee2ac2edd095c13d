"""Results as an interface types them: ``EasyRpcProxy.create(..., interface=Cls)``.

*Cls* is a class whose methods are annotated, usually a ``Protocol`` written by ``easyrpc
stubgen``. A proxy created with it converts each function's result (each item, for a
remote generator typed ``Iterator[T]`` or ``AsyncIterator[T]``) to the method's return
annotation with pydantic, by the rules arguments convert by on the server
(:mod:`easyrpc._convert`): a dataclass result, which travels as a dict, arrives as the
interface's dataclass. A result that does not fit raises :class:`SerializationError`.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import logging
import typing
from collections.abc import Callable
from typing import Any

from ._convert import _describe, _validator
from .exceptions import SerializationError

__all__ = ["check_interface", "result_converter"]

log = logging.getLogger("easyrpc.client")

_ITERATORS = frozenset({collections.abc.Iterator, collections.abc.Iterable, collections.abc.Generator,
                        collections.abc.AsyncIterator, collections.abc.AsyncIterable, collections.abc.AsyncGenerator})


def check_interface(interface: Any) -> type:
    """*interface* if it is a class; ``TypeError`` otherwise."""
    if not isinstance(interface, type):
        raise TypeError(f"interface must be a class (a Protocol written by easyrpc stubgen), not {interface!r}")
    return interface


@functools.lru_cache(maxsize=4096)
def result_converter(interface: type, name: str, is_generator: bool) -> Callable[[Any], Any] | None:
    """What converts the result (or, for a generator, each item) of *name* as *interface*
    annotates it; None where nothing is to convert."""
    method = getattr(interface, name, None)
    if not inspect.isfunction(method):
        return None
    try:
        annotation = typing.get_type_hints(method).get("return", Any)
    except Exception as exc:  # noqa: BLE001 - an interface whose annotations do not resolve converts nothing
        log.warning("%s.%s: return annotation not resolved (%s): results are not converted",
                    interface.__name__, name, exc)
        return None
    if is_generator:
        if typing.get_origin(annotation) not in _ITERATORS:
            return None
        args = typing.get_args(annotation)
        annotation = args[0] if args else Any
    if annotation is Any or annotation is object:
        return None
    validator = _validator(annotation, f"{interface.__name__}.{name}() result")
    if validator is None:
        return None
    where = f"{name}() result{' item' if is_generator else ''}"
    owner = interface.__name__

    def convert(value: Any) -> Any:
        from pydantic_core import ValidationError

        try:
            return validator.validate_python(value)
        except ValidationError as exc:
            raise SerializationError(f"{where} does not match {owner}: {_describe(exc)}") from None

    return convert
