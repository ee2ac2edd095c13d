"""The rules of an authenticated server connection's messages, without I/O.

Given a client message (its text, after decryption), :class:`ServerSession` says what to
do: run a call, cancel or credit a running one, or send an answer (a pong, or a call's
refusal: an invalid request, no such function, too many calls in flight, a duplicate
id). It keeps the table of calls in flight, keyed by request id, with whatever object
the I/O layer runs each call as. The I/O layer (``easyrpc._server.connection``) runs
the calls, sends the replies and serialises access with one lock (this is not
thread-safe). No socket, thread, Flask or websocket code here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union

from .. import _protocol as proto
from ..exceptions import ProtocolError
from .callbacks import CallbackFailure, CallbackResult, parse_client

__all__ = ["BadText", "Notice", "Run", "Send", "ServerSession", "not_found"]

T = TypeVar("T")  # what the I/O layer runs a call as
R = TypeVar("R")  # a function's registration


# not frozen: built for every call, and a frozen dataclass's __init__ costs 3.5x
@dataclass(slots=True)
class Run(Generic[R]):
    """Run *call* (of the function registered as *reg*); its id is reserved: hand the
    running task to :meth:`ServerSession.started`."""

    call: proto.Call
    reg: R


@dataclass(slots=True)
class Send:
    """Send *payload* to the peer (a pong, or the refusal of a call)."""

    payload: proto.Encoded


@dataclass(slots=True)
class Notice:
    """Tell the peer (a ``notice``) and log it: a message that had no usable id."""

    message: str


@dataclass(slots=True)
class BadText:
    """The message is not UTF-8 (in a text frame: close the connection with 1007)."""

    reason: str


def not_found(call_id: int, name: str) -> bytes:
    """The refusal of a call to a function the connection does not have (or may not call:
    the same words, so a refusal tells nothing more)."""
    return proto.encode_failure(call_id, proto.error_wire("FunctionNotFound", f"no function named {name!r} in this namespace"))


# a cancel, a credit or an answer to the server's cb is handed on as the message itself
Action = Union[Run[Any], Send, Notice, proto.Cancel, proto.Credit, CallbackResult, CallbackFailure, BadText, None]


class ServerSession(Generic[T, R]):
    """One authenticated connection's calls in flight and the rules for new ones.

    *lookup* finds a function by name in the connection's namespace (None: no such
    function); at most *max_in_flight* calls run at once.
    """

    def __init__(self, lookup: Callable[[str], R | None], max_in_flight: int) -> None:
        self._lookup = lookup
        self.max_in_flight = max_in_flight
        self.tasks: dict[int, T | None] = {}  # None: reserved by a Run not started yet

    def receive(self, plain: bytes | str) -> Action:
        """What to do about one message from the peer."""
        obj: Any = None
        try:
            obj = proto.load(plain)
            msg = parse_client(obj)
        except proto.InvalidText as exc:
            return BadText(str(exc))
        except ProtocolError as exc:
            rid = proto.request_id(obj)
            if rid is not None and rid not in self.tasks and isinstance(obj, dict) and obj.get("k") == "call":
                return Send(proto.encode_failure(rid, proto.error_wire("ProtocolError", f"invalid request: {exc}")))
            return Notice(f"invalid message: {exc}")
        if isinstance(msg, proto.Call):
            return self._call(msg)
        if isinstance(msg, (proto.Cancel, proto.Credit, CallbackResult, CallbackFailure)):
            return msg
        if isinstance(msg, proto.Ping):
            return Send(proto.encode("pong", t=msg.token))
        if isinstance(msg, proto.Pong):
            return None
        return Notice("already authenticated")

    def _call(self, msg: proto.Call) -> Action:
        if msg.id in self.tasks:
            return Notice(f"request id {msg.id} is already in flight; call ignored")
        if len(self.tasks) >= self.max_in_flight:
            return Send(proto.encode_failure(msg.id, proto.error_wire(
                "ServerBusy", f"too many calls in flight on this connection (limit {self.max_in_flight})")))
        reg = self._lookup(msg.fn)
        if reg is None:
            return Send(not_found(msg.id, msg.fn))
        self.tasks[msg.id] = None
        return Run(msg, reg)

    def started(self, call_id: int, task: T) -> None:
        """The call of a :class:`Run` runs as *task*."""
        self.tasks[call_id] = task

    def finished(self, call_id: int, task: T) -> bool:
        """*task* ended: forget it; False if it had been forgotten (cancelled) already."""
        if call_id not in self.tasks or self.tasks[call_id] is not task:
            return False
        del self.tasks[call_id]
        return True
