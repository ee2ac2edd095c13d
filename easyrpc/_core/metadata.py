"""Call metadata's rules: a small mapping of strings to strings sent with a call (``m``).

No I/O here: the protocol parser, the client's options and the command line all check
metadata with :func:`check_metadata`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_META_KEYS", "MAX_META_KEY", "MAX_META_VALUE", "check_metadata"]

MAX_META_KEYS = 32  # call metadata: at most this many keys,
MAX_META_KEY = 64  # each key 1 to 64 characters,
MAX_META_VALUE = 4096  # each value at most 4096 characters


def check_metadata(meta: Any, error: type[Exception] = ValueError, what: str = "metadata") -> dict[str, str]:
    """*meta* if it is valid call metadata (a dict of string keys to string values within
    the limits), else raise *error* saying what is wrong."""
    if not isinstance(meta, dict):
        raise error(f"{what} must be a mapping of strings to strings, not {type(meta).__name__}")
    if len(meta) > MAX_META_KEYS:
        raise error(f"{what} has {len(meta)} keys; at most {MAX_META_KEYS} are allowed")
    for key, value in meta.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_META_KEY:
            raise error(f"{what}: key {str(key)[:80]!r} must be a string of 1 to {MAX_META_KEY} characters")
        if not isinstance(value, str) or len(value) > MAX_META_VALUE:
            shown = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
            raise error(f"{what}: the value of {key!r} must be a string of at most {MAX_META_VALUE} characters"
                        f" (got {shown})")
    return meta
