"""How errors travel, without I/O: an exception described for the wire, and back.

A served function's exception goes out as ``{"type", "message", "traceback"}`` (and
``os`` for an ``OSError``: errno, strerror, file names); the caller gets a
:class:`~easyrpc.exceptions.RemoteError` that is also the builtin type it names
(:func:`~easyrpc.exceptions.make_remote_error`). docs/protocol.md, errors.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

from .exceptions import ProtocolError, RemoteError, make_remote_error, os_error_details

__all__ = ["MAX_TYPE_NAME", "error_from_wire", "error_passthrough", "error_to_wire", "error_wire"]

MAX_TYPE_NAME = 200  # an error type's name is cut to this many characters


def error_to_wire(exc: BaseException, include_traceback: bool = True) -> dict[str, Any]:
    """Describe an exception raised by a served function (a forwarded one passes through).

    An ``OSError`` also carries its ``errno``, ``strerror`` and file names under ``os``.
    """
    passed = error_passthrough(exc)
    if passed is not None:
        return passed
    cls = type(exc)
    if cls.__module__ == "builtins" or cls.__module__.startswith("easyrpc"):
        name = cls.__qualname__  # builtins and easyrpc's own errors go by their bare names
    else:
        name = f"{cls.__module__}.{cls.__qualname__}"
    tb = "".join(traceback.format_exception(cls, exc, exc.__traceback__)) if include_traceback else ""
    try:
        message = str(exc)
    except Exception as str_exc:  # noqa: BLE001 - a broken __str__ must not lose the error
        message = f"<str() failed: {type(str_exc).__name__}>"
    return _with_os_details({"type": name, "message": message, "traceback": tb}, exc)


def _with_os_details(wire: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    details = os_error_details(exc)
    if details:
        for key in ("filename", "filename2"):  # any object: keep what JSON carries as itself
            value = details.get(key)
            if isinstance(value, (bytes, bytearray)):
                details[key] = os.fsdecode(bytes(value))
            elif value is not None and type(value) not in (str, int):
                details[key] = str(value)
        if type(details.get("errno")) is not int:
            details.pop("errno", None)
        if not isinstance(details.get("strerror"), str):
            details.pop("strerror", None)
        wire["os"] = details
    return wire


def error_wire(remote_type: str, message: str) -> dict[str, str]:
    """An error raised by easyrpc itself on the server (no traceback)."""
    return {"type": remote_type, "message": message, "traceback": ""}


def error_passthrough(exc: BaseException) -> dict[str, Any] | None:
    """The description of an error that came from another server (forwarded calls)."""
    if isinstance(exc, RemoteError):
        return _with_os_details(
            {"type": exc.remote_type, "message": exc.remote_message, "traceback": exc.remote_traceback}, exc)
    return None


def error_from_wire(obj: Any) -> RemoteError:
    """Build the :class:`RemoteError` a peer described; malformed descriptions are a ProtocolError."""
    if not isinstance(obj, dict):
        raise ProtocolError("error description must be an object")
    rtype, message, tb = obj.get("type"), obj.get("message", ""), obj.get("traceback", "")
    if not isinstance(rtype, str) or not isinstance(message, str) or not isinstance(tb, str):
        raise ProtocolError("error description has wrong field types")
    details = obj.get("os")
    if details is not None and not (
        isinstance(details, dict)
        and type(details.get("errno", 0)) in (int, type(None))
        and isinstance(details.get("strerror", ""), str)
        and all(type(details.get(k, "")) in (str, int) for k in ("filename", "filename2"))
    ):
        raise ProtocolError("error description has a malformed 'os' field")
    return make_remote_error(rtype[:MAX_TYPE_NAME], message, tb, details)
