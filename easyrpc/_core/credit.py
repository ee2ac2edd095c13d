"""Stream credit, both ends, without I/O: how far a generator may run ahead of its consumer.

A generator call asks for a *window* with the call (``w``). The server sends an item
only while it holds credit (:class:`SendCredit`): the window granted up front, then
what ``credit`` messages give back. The consumer counts the items it takes
(:class:`ReceiveCredit`) and gives their slots back in one ``credit`` once they make
half the window. A server whose ``stream_window_max`` is below the window asked for
grants less, and says so with the first item (``w``), so that the consumer grants
back after half of *that* (docs/protocol.md, credit).
"""

from __future__ import annotations

__all__ = ["ReceiveCredit", "SendCredit"]


class SendCredit:
    """The server's side of one stream: items it may still send."""

    __slots__ = ("credit", "most", "_announce")

    def __init__(self, asked: int, most: int) -> None:
        self.most = most  # the server's stream_window_max
        self.credit = min(asked or 1, most)
        # told to the consumer with the first item, when smaller than what it asked for
        self._announce: int | None = self.credit if self.credit < asked else None

    def take(self) -> bool:
        """Spend one credit for an item about to be sent; False if there is none."""
        if self.credit <= 0:
            return False
        self.credit -= 1
        return True

    def grant(self, n: int) -> None:
        """The consumer gave *n* slots back (never more than the window in all)."""
        self.credit = min(self.credit + n, self.most)

    def announce(self) -> int | None:
        """The window to tell the consumer with this item: the first item only, and only
        when it is smaller than asked."""
        window, self._announce = self._announce, None
        return window


class ReceiveCredit:
    """The consumer's side of one stream: items taken whose slots are not given back yet."""

    __slots__ = ("window", "_taken")

    def __init__(self, window: int) -> None:
        self.window = window
        self._taken = 0

    def limit(self, window: int) -> None:
        """The server sends at most *window* ahead: grant after half of that, not half
        of the window asked for, or the stream stalls with the server out of credit."""
        self.window = min(self.window, window)

    def took(self) -> int:
        """The consumer took an item: how many slots to give back now (0: none yet)."""
        taken = self._taken + 1
        if taken < max(1, self.window // 2):
            self._taken = taken
            return 0
        self._taken = 0
        return taken
