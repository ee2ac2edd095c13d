"""What a proxy does with what the server sends, whoever holds the reading role.

Frames are taken from the connection's ``FrameReader``; control frames are answered
here, messages opened (on an encrypted connection) and parsed, and replies handed to
the request waiting for them (what a message means for a request is the core's rule:
``easyrpc._core.requests.reply_of``). Keepalive for the proxy runs here too, from the
process's dispatcher.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import websocket

from .. import _protocol as proto
from .._core.callbacks import Callback, CallbackCancel, parse_server
from .._core.close_codes import echo_code
from .._core.keepalive import Drop
from .._core.requests import Reply, reply_of
from .._signature import FunctionSpec, spec_from_description
from .._transport import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, FrameReader
from ..exceptions import ProtocolError
from .calls import CALLS, ClientStream
from .sock import shutdown

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Inbound"]

log = logging.getLogger("easyrpc.proxy")


class Inbound:
    """The handling of one proxy's incoming frames and messages."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def handle_buffered(self, ws: websocket.WebSocket, frames: FrameReader,
                        deadline: float | None = None) -> str | None:
        """Handle every complete message received so far; the reason if one ends the
        connection. A big frame arriving is read until *deadline* (monotonic; None: no
        limit), then left half-read for the next reader."""
        while (msg := frames.pop(deadline)) is not None:
            reason = self.on_message(ws, *msg)
            if reason is not None:
                return reason
        return None

    def why_lost(self, exc: Exception) -> str:
        """Why reading failed, as the reason a connection ended."""
        if isinstance(exc, ProtocolError):
            log.warning("bad frame from %s: %s; dropping the connection", self.engine.url, exc)
            return f"protocol error: {exc}"
        return f"connection lost ({type(exc).__name__})"

    def on_message(self, ws: websocket.WebSocket, opcode: int, data: bytes) -> str | None:
        """Handle one frame or message; the reason if it ends the connection."""
        link = self.engine.link
        if link is None or link.ws is not ws:
            return "the connection was replaced"
        if link.keepalive.ping_pending:  # silence is measured from frames.last_recv (see keepalive)
            link.keepalive.received(time.monotonic())
        if opcode == OP_PING:
            link.writer.send(OP_PONG, bytes(data[:125]))
            return None
        if opcode == OP_PONG:
            return None
        if opcode == OP_CLOSE:
            link.send_close(echo_code(data))  # RFC 6455 §5.5.1: answered in kind; the server waits for it
            return "the server closed the connection"
        cipher = link.cipher
        if cipher is not None:
            if opcode != OP_BINARY:
                raise ProtocolError("clear-text frame on an encrypted connection")
            data = cipher.open(data)
        msg = parse_server(data)
        if isinstance(msg, (Callback, CallbackCancel)):  # the server calls one of ours
            self.engine.callbacks.on_message(msg, link)
            return None
        reply = reply_of(msg)
        if reply is not None:
            self.answer(reply)
            return None
        if isinstance(msg, proto.Bye):
            log.info("server %s is going away: %s", self.engine.url, msg.reason)
            link.send_close()  # its close frame follows: ours crosses it
            return f"the server is going away: {msg.reason}"
        if isinstance(msg, proto.Ping):
            self.engine.send_quiet(proto.encode("pong", t=msg.token))
        elif isinstance(msg, proto.Functions):
            self.set_functions(msg.functions)
        elif isinstance(msg, proto.Notice):
            log.warning("server %s: %s", self.engine.url, msg.message)
        elif not isinstance(msg, proto.Pong):
            log.warning("unexpected %s message from %s", type(msg).__name__, self.engine.url)
        return None

    def answer(self, reply: Reply) -> None:
        """Hand *reply* to the request waiting for it.

        Settled first, removed after: a thread interrupted in between (Ctrl-C in a
        blocking caller that reads) leaves the request in the table, where the dropped
        connection's clean-up finds it, never a call that nobody will settle.
        """
        engine = self.engine
        item = engine.calls.table.get(reply.call_id)  # one dict lookup: atomic, no lock needed
        if item is None:
            return
        if isinstance(item, ClientStream):
            if reply.item:
                if reply.window is not None:
                    item.limit_window(reply.window)
                item.push(reply.value)
            else:
                item.end(reply.error)
        elif isinstance(item, CALLS):
            if reply.item:
                return  # a stream's item for a plain call: ignored (its reply still comes)
            error: BaseException | None = reply.error
            if reply.ended and error is None:
                error = ProtocolError(f"call {reply.call_id}: the server ended a stream, not a call")
            engine.resolve(item, reply.value, error)
        if reply.final:
            engine.calls.done(reply.call_id, item)

    def set_functions(self, descriptions: list[Any]) -> None:
        """The server's function list (welcome, or pushed): the proxy's functions now."""
        specs: dict[str, FunctionSpec] = {}
        for desc in descriptions:
            try:
                spec = spec_from_description(desc)
            except ValueError as exc:
                log.warning("ignored a function description from %s: %s", self.engine.url, exc)
                continue
            specs[spec.name] = spec
        self.engine.functions = specs
        self.engine.notify("function-list")

    def keepalive(self, now: float) -> None:
        """(Dispatcher.) Ping a quiet server, drop a silent one (the rules: ``_core.keepalive``)."""
        engine = self.engine
        link = engine.link
        if link is None or not engine.connected:
            return
        policy = link.keepalive
        policy.sent(link.writer.last_sent)
        action = policy.due(now, link.frames.last_recv)
        if isinstance(action, Drop):
            log.warning("no reply from %s for %.1f s; reconnecting", engine.url, action.silent)
            shutdown(link.ws)
        elif action is not None:
            engine.send_quiet(proto.encode("ping", t=action.token))
