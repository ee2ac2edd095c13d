"""Where frame building used to live; it is in :mod:`easyrpc._core.frames` now.

Kept as re-exports so that code written against the old location still imports.
"""

from __future__ import annotations

from ._core.frames import OP_BINARY, OP_CLOSE, OP_TEXT, close_payload, frame_header

__all__ = ["OP_TEXT", "OP_BINARY", "OP_CLOSE", "close_payload", "frame_header"]
