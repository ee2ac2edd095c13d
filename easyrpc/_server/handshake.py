"""A server connection's first steps: hello, the peer's auth, welcome or refusal.

The handler thread runs the handshake itself, reading the socket under the auth
deadline with small frame limits (an unauthenticated peer gets nothing else). What to
answer, when, and how to close are the sans-I/O :class:`~easyrpc._core.handshake.ServerHandshake`'s
(tokens: :mod:`easyrpc._handshake`); this module moves the bytes. Once the peer is
welcomed its connection is read by the hub (or, see :mod:`.connection`, by another reader).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _protocol as proto
from .._core.cipher import FrameCipher
from .._core.close_codes import BAD_SEAL, ENCRYPTION_REQUIRED, NORMAL, REVOKED, bad_frame
from .._core.frames import OP_PONG, FrameError
from .._core.handshake import Authenticated, Failed, Pong, Refused, ServerEvent, ServerHandshake, TimedOut
from .._core.identity import Access, subject_of
from .._net.green import reading_socket
from .._parts import is_packed
from .._spin import busy_policy
from .._transport import FrameReader
from ..exceptions import ProtocolError
from .owner import CloseSignal, Inbox, SocketOwner

if TYPE_CHECKING:
    from ..server import EasyRpcServer

__all__ = ["Handshake", "Stop"]

_RECEIVE_BYTES = 1 << 18  # simple-websocket's recv size, once the inbox reads


def _certificate_subject(sock: socket.socket) -> str | None:
    """The subject (CN) of the TLS client certificate the server verified, if any."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    try:
        return subject_of(sock.getpeercert())
    except (OSError, ValueError):
        return None


class Stop(Exception):
    """Internal: the connection must end."""


class _AuthTimeout(Stop):
    """Internal: the peer did not authenticate in time."""


class Handshake:
    """The state a connection has from its first byte, and the handshake that fills it."""

    def __init__(self, server: EasyRpcServer, ws: Any) -> None:
        self.server = server
        self.ws = ws
        self.sock: socket.socket = ws.sock
        self.owned = isinstance(getattr(ws, "thread", None), SocketOwner)  # we read the socket, not simple-websocket
        try:
            # Replies and stream items are small writes that must not wait for the
            # peer's delayed ACK (Nagle): pipelined calls would stall for 40 ms.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # not TCP (a unix socket under gunicorn)
            pass
        environ = getattr(ws, "environ", {}) or {}
        self.peer = f"{environ.get('REMOTE_ADDR', '?')}:{environ.get('REMOTE_PORT', '?')}"
        self.log: logging.Logger = server.log
        # how often deadlines are looked at: keepalive, the close wait, the auth deadline
        self.server_tick = max(0.02, min(1.0, server.ping_interval / 2, server.ping_timeout / 2))
        # (under gevent: a view of the socket whose non-blocking reads never wait, see _net.green)
        self._frames = FrameReader(reading_socket(self.sock), server.preauth_max_message, masked=True,
                                   tick=self.server_tick, on_tick=self.on_tick, busy=busy_policy(server.busy_poll))
        # the handshake's state and rules; the auth deadline runs from here (the upgrade)
        self._hs = ServerHandshake(None, server.encryption_enabled, server.auth_timeout, time.monotonic(),
                                   keys=server.keys, peer_identity=_certificate_subject(self.sock))
        self.namespace = ""
        self.cid = ""
        self.identity: str | None = None  # who the peer proved to be (``_core.identity``)
        self.access: Access | None = None  # what it may call (None: everything)
        # a trusted relay's connection: whether the caller it names may call a function
        self.relayed_for: Callable[[proto.Call, Any], bool] | None = None
        self.cipher: FrameCipher | None = None
        self.welcomed = False
        self._push_lock = threading.Lock()  # the welcome, then pushed function lists, in order
        self._offered: list[Any] | None = None  # the list last sent, for a connection of limited access
        self._inbox_lock = threading.Lock()
        self._ready = False
        self._early: list[bytes | str] = []

    # what the connection provides
    def send(self, payload: proto.Encoded) -> bool:
        raise NotImplementedError

    def send_control(self, opcode: int, payload: bytes) -> None:
        raise NotImplementedError

    def close(self, code: int = NORMAL, reason: str = "", bye: str | None = None) -> None:
        raise NotImplementedError

    def handle_message(self, data: bytes | str, binary: bool) -> bool:
        raise NotImplementedError

    def notice(self, message: str) -> None:
        raise NotImplementedError

    def on_tick(self) -> None:
        """A quiet tick while the handler thread reads: the auth deadline, until welcomed."""
        if self._hs.expired(time.monotonic()):
            raise _AuthTimeout

    # --- the handshake (its rules: _core.handshake) ------------------------------------
    def handshake(self) -> bool:
        """Authenticate the peer and welcome it; False if it is refused or gone."""
        server = self.server
        self.ws.max_message_size = server.preauth_max_message
        hs = self._hs
        if not self.send(hs.hello):
            return False
        if self.owned:
            try:
                event = self._receive_first()
            except FrameError as exc:
                self.log.warning("peer %s: %s before authenticating; closed", self.peer, exc)
                self.close(*bad_frame(exc.code))
                return False
            except (OSError, Stop):
                return False
        else:
            event = self._receive_inbox()
        if not isinstance(event, Authenticated):
            if isinstance(event, Refused):
                self.log.warning("refused peer %s: %s", self.peer, event.reason)
                self.send(event.message)
            elif isinstance(event, TimedOut):
                self.log.warning("peer %s did not authenticate within %.1f s; closed", self.peer, event.after)
            elif isinstance(event, Failed):
                self.log.warning("peer %s: %s; closed", self.peer, event.why)
            if event.close is not None:
                self.close(*event.close)
            return False
        self.namespace, self.cid, self.identity = event.namespace, event.cid, event.identity
        self.access = server.access_of(self.identity)
        self.relayed_for = server.caller_check(self.identity, self.namespace)
        # Added before its function list is taken: a function registered from now on is
        # pushed to it (push_functions waits for the welcome, which the list goes out in).
        if not server.add_connection(self):  # type: ignore[arg-type]
            self.close(*hs.shutting_down())
            return False
        if self.identity is not None and server.keys.revoked(self.identity):
            # revoked between the check of its token and now: revoke() closed the
            # connections it found, this one it may not have seen
            self.close(*REVOKED)
            return False
        with self._push_lock:
            return self._welcome(hs)

    def _welcome(self, hs: ServerHandshake) -> bool:
        """(Under the push lock.) Send the welcome with the functions on offer now."""
        server = self.server
        offer = server.get_registered_functions(self.namespace, self.access)
        if self.access is not None:
            self._offered = offer  # what it knows: a push of the same list says nothing new
        welcome = hs.welcome(offer)
        if self.owned:
            self._frames.max_message = server.max_message_size
        else:
            self.ws.max_message_size = server.max_message_size
            self.ws.receive_bytes = _RECEIVE_BYTES
            # From here on messages are handled as simple-websocket's reader thread
            # delivers them (no hand-off to this thread); until the handshake is done
            # they queue up.
            early = self.ws.input_buffer
            self.ws.input_buffer = Inbox(self)  # type: ignore[arg-type]
            self.ws.event = CloseSignal(self)  # type: ignore[arg-type]
            self._early.extend(early)
        if not self.send(welcome):  # the welcome goes out in clear; later frames are sealed
            return False
        self.cipher = hs.cipher()
        self.welcomed = True
        return True

    def _receive_first(self) -> ServerEvent:
        """Read an owned socket until the handshake has its answer (the auth, the
        deadline, or a close frame), answering pings meanwhile."""
        frames, hs = self._frames, self._hs
        while True:
            # Absolute from the upgrade: quiet ticks alone would let a peer that sends a
            # byte or a ping now and then hold the socket (and a WSGI thread) for ever.
            timed_out = hs.tick(time.monotonic())
            if timed_out is not None:
                return timed_out
            msg = frames.pop()
            if msg is None:
                try:
                    frames.fill()
                except _AuthTimeout:
                    pass  # the next turn's tick says so
                continue
            event = hs.receive_frame(*msg, time.monotonic())
            if isinstance(event, Pong):
                self.send_control(OP_PONG, event.payload)
            elif event is not None:
                return event

    def _receive_inbox(self) -> ServerEvent:
        """The first message as simple-websocket's thread delivers it, by the deadline."""
        hs = self._hs
        while True:
            now = time.monotonic()
            timed_out = hs.tick(now)
            if timed_out is not None:
                return timed_out
            data = self.ws.receive(timeout=hs.deadline - now)
            if data is not None:
                return hs.receive(data, time.monotonic())

    # --- the inbox (simple-websocket's thread reads) -----------------------------------
    def release_early(self) -> None:
        """The handshake is complete: handle what arrived meanwhile, then go direct."""
        with self._inbox_lock:
            for data in self._early:
                if not self.handle_message(data, isinstance(data, bytes)):
                    break
            self._early.clear()
            self._ready = True

    def deliver(self, data: bytes | str) -> None:
        """Handle one complete message, on simple-websocket's reader thread (str: text)."""
        self.alive()
        if not self._ready:
            with self._inbox_lock:
                if not self._ready:  # the handshake is still finishing: keep order
                    self._early.append(data)
                    return
        self.handle_message(data, isinstance(data, bytes))

    def alive(self) -> None:
        raise NotImplementedError

    # --- after the handshake -----------------------------------------------------------
    def push_functions(self) -> None:
        """Send the functions on offer now (after the welcome, which carries them until then).

        A connection whose access is limited is sent a list only when its own changed: it
        must not learn even that a function it may not call came or went."""
        with self._push_lock:
            if self.welcomed:
                offer = self.server.get_registered_functions(self.namespace, self.access)
                if self.access is not None:
                    if offer == self._offered:
                        return
                    self._offered = offer
                self.send(proto.encode("funcs", fs=offer))

    def open_frame(self, data: bytes | str, binary: bool) -> bytes | str | None:
        """A message's plaintext (opened if encrypted); None if it was refused."""
        if self.cipher is not None:
            if not binary or isinstance(data, str):
                self.log.warning("connection %s: clear-text frame on an encrypted connection; closed", self.cid)
                self.close(*ENCRYPTION_REQUIRED)
                raise Stop
            try:
                return self.cipher.open(data)
            except ProtocolError as exc:
                self.log.warning("connection %s: %s; closed", self.cid, exc)
                self.close(*BAD_SEAL)
                raise Stop from None
        if binary != is_packed(data):  # a binary frame holds a message with binary parts, a text frame JSON
            self.notice("a binary frame must hold a message with binary parts (and only it)" if binary
                        else "a message with binary parts must travel in a binary frame")
            return None
        return data
