"""Futures easyrpc hands out: one that tells someone when it is cancelled, and settling
one without running its done-callbacks (user code) on a thread that reads sockets."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

Settle = Callable[[], None]

__all__ = ["CancelHook", "settle_elsewhere"]


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


def settle_elsewhere(fut: Future[Any], settle: Settle, elsewhere: Callable[[Settle], None]) -> None:
    """Run *settle* (which completes *fut*) here if *fut* has no done-callbacks, else
    through *elsewhere* (a worker): a callback is user code, and may block or call back
    into easyrpc, which the thread reading every connection must never do. The check and
    the settling hold the future's condition, so a callback added meanwhile either finds
    the future pending (it goes elsewhere) or done (it runs on the adding thread)."""
    with fut._condition:
        if not fut._done_callbacks:  # type: ignore[attr-defined]
            settle()
            return
    elsewhere(settle)
