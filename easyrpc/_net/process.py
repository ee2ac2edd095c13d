"""One object per process: the hub, the client's dispatcher.

Each is made on first use and forgotten in a forked child, whose copy would name
threads that do not exist there (and, for the hub, the parent's selector).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerProcess"]

T = TypeVar("T")


class PerProcess(Generic[T]):
    """The process's one instance of what *factory* makes."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._obj: T | None = None
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def get(self) -> T:
        """The instance (made now if this process has none)."""
        with self._lock:
            if self._obj is None:
                self._obj = self._factory()
            return self._obj

    def _forget(self) -> None:
        self._obj = None
        self._lock = threading.Lock()  # a thread that held it in the parent does not exist here
