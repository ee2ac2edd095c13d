"""One server-side connection: its messages, calls and streams, and its keepalive.

The Flask-Sock handler thread runs :meth:`ServerConnection.run`: it authenticates the
peer (:mod:`.handshake`, reading the socket itself under the auth deadline), then hands
the connection to the process's hub (:mod:`easyrpc._net.hub`), which reads it from then
on alongside every other connection, and waits until the connection ends. Calls go to
the worker pool (plain and generator functions) or the event loop thread (``async
def``), or run on the spot on the hub's leader when that saves a hand-off: a sequential
caller, or a function that has been fast (:class:`~.tasks.CallPace`).

Two other readers remain, each for a reason: a TLS socket is read by its handler
thread, and simple-websocket's thread reads when an application replaced flask-sock's
``SOCK_SERVER_OPTIONS`` after ``init_app``. Who reads, writing and closing are
:mod:`.conn_io`'s; everything after the framing is here, shared.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

from simple_websocket import ConnectionClosed

from .. import _protocol as proto
from .._core.callbacks import CallbackFailure, CallbackResult
from .._core.close_codes import INVALID_UTF8, NORMAL
from .._core.keepalive import Drop, Keepalive
from .._core.session import BadText, Notice, Run, Send, ServerSession
from ..exceptions import ProtocolError, RemoteError
from .callers import Outgoing
from .calls import Calls
from .conn_io import ConnectionIO
from .handshake import Stop
from .tasks import CallTask, StreamTask

if TYPE_CHECKING:
    from ..server import EasyRpcServer

__all__ = ["ServerConnection"]

_FAILURE_PREFIX = b'{"k":"err"'  # how _protocol.encode_failure's messages begin


def failure_of(payload: proto.Encoded) -> RemoteError | None:
    """The error in a reply built by ``encode_failure`` (None for any other message): what
    the server's interceptors are told a call ended with. (A message with binary parts is
    never a failure.)"""
    if not isinstance(payload, bytes) or not payload.startswith(_FAILURE_PREFIX):
        return None
    try:
        return proto.error_from_wire(proto.load(payload).get("e"))
    except ProtocolError:
        return None


class ServerConnection(ConnectionIO):
    """The server's side of one WebSocket connection."""

    def __init__(self, server: EasyRpcServer, ws: Any) -> None:
        super().__init__(server, ws)
        self._lock = threading.Lock()  # the task table
        self._idle = threading.Condition(self._lock)  # the last call ended (drain waits)
        self._draining = 0  # threads in drain(): only then is the end of the last call told
        # the calls in flight and the rules for new ones (sans-I/O), under self._lock
        self._session: ServerSession[CallTask | StreamTask, Any] = ServerSession(
            lambda name: server.functions_for(self.namespace, self.access).get(name), server.max_in_flight)
        self._tasks = self._session.tasks
        self._keepalive_policy = Keepalive(server.ping_interval, server.ping_timeout, time.monotonic())
        self._calls = Calls(self)
        self.outgoing = Outgoing(self)  # the server's calls to this client: callbacks, pushes

    # --- lifecycle ---------------------------------------------------------------------
    def run(self) -> None:
        """Serve this connection until it closes (runs on the Flask-Sock handler thread)."""
        try:
            if not self.handshake():
                return
            self.log.info("connection %s opened from %s (namespace %s, identity %s)", self.cid, self.peer,
                          self.namespace, "-" if self.identity is None else repr(self.identity))
            try:
                if not self.owned:
                    self.release_early()
                    self._watch()
                elif isinstance(self.sock, ssl.SSLSocket):
                    self._read_here()
                else:
                    self._serve_from_hub()
            finally:
                self._end()
                self.server.remove_connection(self)
                self._abandon_all()
                self.log.info("connection %s closed", self.cid)
        except ConnectionClosed:
            pass
        finally:
            self.server.remove_connection(self)  # also if the handshake failed after adding it
            self.close(NORMAL, "")
            self._teardown()

    # --- messages ----------------------------------------------------------------------
    def alive(self) -> None:
        """Bytes arrived: the peer is alive, whatever it is sending."""
        self._keepalive_policy.received(time.monotonic())

    def _keepalive(self, now: float) -> bool:
        """Ping a quiet peer, drop a silent one (the rules: ``_core.keepalive``); False
        once dropped. Bytes of a big frame received inside a read count as life too
        (``FrameReader.last_recv``). On the inbox path only whole messages are seen.
        """
        self.outgoing.expire(now)  # (the same timer) our own requests past their time limit
        policy = self._keepalive_policy
        policy.sent(self._writer.last_sent)  # noted by whichever thread wrote
        action = policy.due(now, self._frames.last_recv)
        if isinstance(action, Drop):
            self.log.warning("connection %s silent for %.1f s; dropped", self.cid, action.silent)
            self._kill()
            return False
        if action is not None:
            self.send(proto.encode("ping", t=action.token))
        return True

    def handle_message(self, data: bytes | str, binary: bool) -> bool:
        """Handle one message; False once the connection must end."""
        try:
            self._on_frame(data, binary)
        except Stop:
            self._done.set()
            return False
        except Exception:  # noqa: BLE001 - a bug handling one message must not end the connection
            self.log.exception("connection %s: failed to handle a message", self.cid)
        return True

    def _on_frame(self, data: bytes | str, binary: bool) -> None:
        plain = self.open_frame(data, binary)
        if plain is None:
            return
        with self._lock:
            action = self._session.receive(plain)
        if isinstance(action, Run):
            self._calls.start(action.call, action.reg)
        elif isinstance(action, Send):
            self.send(action.payload)
        elif isinstance(action, Notice):
            self.notice(action.message)
        elif isinstance(action, (CallbackResult, CallbackFailure)):
            self.outgoing.settle(action)
        elif isinstance(action, proto.Cancel):
            self._cancel(action.id)
        elif isinstance(action, proto.Credit):
            with self._lock:
                task = self._tasks.get(action.id)
            if isinstance(task, StreamTask):
                task.add_credit(action.n)
        elif isinstance(action, BadText):
            if self.cipher is not None:  # the plaintext of a binary frame: our protocol's error
                self.notice(f"invalid message: {action.reason}")
                return
            self.log.warning("connection %s: text frame %s; closed", self.cid, action.reason)
            self.close(*INVALID_UTF8)
            raise Stop

    def notice(self, message: str) -> None:
        self.log.warning("connection %s: %s", self.cid, message)
        self.send(proto.encode("notice", msg=message))

    def failure(self, call_id: int, exc: BaseException) -> bytes:
        return proto.encode_failure(call_id, proto.error_to_wire(exc, self.server.send_tracebacks))

    # --- calls in flight ---------------------------------------------------------------
    def finish(self, call_id: int, task: CallTask | StreamTask, payload: proto.Encoded | None) -> None:
        """A call or stream ended: forget it and send its last message, if still wanted."""
        if task.obs is not None:  # the server's interceptors see how it ended
            if payload is None or task.cancelled:
                task.obs.end(None, True)
            else:
                task.obs.end(failure_of(payload))
        if self.outgoing.scopes:  # its callbacks expire first
            self.outgoing.end(call_id)
        with self._lock:
            if not self._session.finished(call_id, task):
                return  # cancelled meanwhile: nobody waits for this reply
            if not self._tasks and self._draining:
                self._idle.notify_all()
        if payload is not None:
            self.send(payload)

    def _cancel(self, call_id: int) -> None:
        with self._lock:
            task = self._tasks.get(call_id)
            if isinstance(task, CallTask):
                del self._tasks[call_id]
                if not self._tasks and self._draining:
                    self._idle.notify_all()
        if task is not None:
            task.cancel()
            if task.obs is not None:
                task.obs.end(None, True)
        if self.outgoing.scopes:
            self.outgoing.end(call_id)

    def _abandon_all(self) -> None:
        """The peer is gone: cancel what can be cancelled, close every generator; what
        waits for the client's callbacks fails at once."""
        self.outgoing.close(f"connection {self.cid} closed")
        with self._lock:
            tasks = [t for t in self._tasks.values() if t is not None]
            for call_id in [k for k, v in self._tasks.items() if not isinstance(v, StreamTask)]:
                del self._tasks[call_id]  # a stream stays until its generator is closed
            if not self._tasks and self._draining:
                self._idle.notify_all()
        for task in tasks:
            task.cancel()
            if task.obs is not None:
                task.obs.end(None, True)

    # --- introspection and shutdown ----------------------------------------------------
    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._tasks)

    @property
    def stream_count(self) -> int:
        with self._lock:
            return sum(1 for t in self._tasks.values() if isinstance(t, StreamTask))

    def drain(self, deadline: float) -> None:
        """Wait (until *deadline*, monotonic) for calls in flight to finish."""
        with self._idle:
            self._draining += 1
            try:
                while self._tasks:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._idle.wait(remaining)
            finally:
                self._draining -= 1
