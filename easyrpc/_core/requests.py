"""A client connection's requests, without I/O: the table, the replies, the limits.

The client's I/O layer (``easyrpc._client``) keeps what waits for each reply (a
blocking caller, a future, an awaitable, a stream) in a :class:`RequestTable`, asks
:func:`reply_of` what a message from the server means for it, and takes a request's
deadline from :func:`call_deadline`. It holds the locks and wakes the threads; nothing
here does. A stream's credit is :mod:`.credit`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .. import _protocol as proto
from ..exceptions import RemoteError

__all__ = ["Reply", "RequestTable", "call_deadline", "reply_of"]

T = TypeVar("T")


class RequestTable(Generic[T]):
    """Request ids and what waits for their replies (not locked: its owner locks it).

    Ids count up from 1 and wrap before ``MAX_ID`` (exact in any JSON implementation);
    an id is reused only once its request has left the table.
    """

    __slots__ = ("_items", "_next_id", "max_in_flight")

    def __init__(self, max_in_flight: int = proto.MAX_ID) -> None:
        self._items: dict[int, T] = {}
        self._next_id = 1
        self.max_in_flight = max_in_flight

    @property
    def full(self) -> bool:
        """No room for another request (``max_in_flight`` are in flight)."""
        return len(self._items) >= self.max_in_flight

    def add(self, item: T) -> int:
        """Register *item*; its new request id."""
        items = self._items
        if len(items) >= proto.MAX_ID - 1:  # (bounds the search below)
            raise RuntimeError("no request id is free")
        call_id = self._next_id
        while call_id in items:  # a request old enough to meet a wrapped id still waits
            call_id = call_id + 1 if call_id + 1 < proto.MAX_ID else 1
        self._next_id = call_id + 1 if call_id + 1 < proto.MAX_ID else 1
        items[call_id] = item
        return call_id

    def get(self, call_id: int) -> T | None:
        return self._items.get(call_id)

    def remove(self, call_id: int, item: T) -> bool:
        """Drop *item*'s request; False if *call_id* is not *item*'s (any more)."""
        if self._items.get(call_id) is not item:
            return False
        del self._items[call_id]
        return True

    def take(self, keep: Any = None) -> list[T]:
        """Remove and return every request, or those for which ``keep(item)`` is false."""
        if keep is None:
            taken = list(self._items.values())
            self._items.clear()
            return taken
        taken = [it for it in self._items.values() if not keep(it)]
        self._items = {i: it for i, it in self._items.items() if keep(it)}
        return taken

    def values(self) -> list[T]:
        return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._items))


# not frozen: built for every call, and a frozen dataclass's __init__ costs 3.5x
@dataclass(slots=True)
class Reply:
    """What a message from the server means for the request *call_id*.

    *value* is a result or a stream item; *error* a call's or a stream's failure;
    *final*: the request is over (it leaves the table once its waiter is settled);
    *item*: a stream item; *ended*: a stream's end (final, with no error).
    *window*: the most stream items the server will send ahead (a stream's first item).
    """

    call_id: int
    value: Any = None
    error: RemoteError | None = None
    final: bool = True
    item: bool = False
    ended: bool = False
    window: int | None = None


def reply_of(msg: proto.ServerMessage) -> Reply | None:
    """The reply *msg* carries, or None if it concerns no request."""
    if isinstance(msg, proto.Result):
        return Reply(msg.id, msg.value)
    if isinstance(msg, proto.Item):
        return Reply(msg.id, msg.value, final=False, item=True, window=msg.window)
    if isinstance(msg, proto.Failure):
        return Reply(msg.id, error=msg.error)
    if isinstance(msg, proto.End):
        return Reply(msg.id, ended=True)
    return None


def call_deadline(now: float, limit: float | None, *, stream: bool, connected: bool,
                  connect_timeout: float) -> tuple[float | None, bool]:
    """A request's deadline (monotonic; None: none) and whether it is only the wait
    for a connection (it is lifted once the request is sent).

    A call's *limit* counts from now. A stream's limit applies to each item (its
    iterator enforces it), not to the request. A request without a limit of its own
    waits for a connection at most *connect_timeout*.
    """
    if limit is not None and not stream:
        return now + limit, False
    if not connected:
        return now + connect_timeout, True
    return None, False
