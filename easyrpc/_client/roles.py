"""What the engine and its reader thread share about the reading role."""

from __future__ import annotations

from typing import Any

__all__ = ["READER", "STEP_ASIDE"]

READER: Any = object()  # the reader holds the reading role: the hub, or a TLS connection's thread
STEP_ASIDE = 0.05  # how long the reader leaves a freed role to blocking callers before taking it
