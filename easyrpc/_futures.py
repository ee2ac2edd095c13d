"""A future that tells someone when it is cancelled."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["CancelHook"]


class CancelHook(Future[Any]):
    """A ``concurrent.futures.Future`` whose *on_cancel* runs once a ``cancel()`` has
    succeeded: the request it stands for is withdrawn on the far side too (a relayed
    call's upstream call, a server's call to its client). Mix it in before another
    Future class to wrap that class's own ``cancel``."""

    on_cancel: Callable[[], None] | None = None

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        if self.on_cancel is not None:
            self.on_cancel()
        return True
