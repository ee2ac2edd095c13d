"""A server connection's first steps: hello, the peer's auth, welcome or refusal.

The handler thread runs the handshake itself, reading the socket under the auth
deadline with small frame limits (an unauthenticated peer gets nothing else); the
tokens and their checks are :mod:`easyrpc._handshake`'s. Once the peer is welcomed its
connection is read by the hub (or, see :mod:`.connection`, by another reader).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from .. import _protocol as proto
from .._core.close_codes import (
    AUTH_TIMEOUT,
    BAD_SEAL,
    ENCRYPTION_REQUIRED,
    INVALID_UTF8,
    NORMAL,
    REFUSED,
    SHUTTING_DOWN,
    bad_frame,
)
from .._core.frames import OP_CLOSE, OP_PING, OP_PONG, FrameError
from .._handshake import FrameCipher, new_nonce
from .._net.green import reading_socket
from .._spin import busy_policy
from .._transport import FrameReader
from ..exceptions import AuthenticationError, ProtocolError
from .owner import CloseSignal, Inbox

if TYPE_CHECKING:
    from ..server import EasyRpcServer

__all__ = ["Handshake", "Stop"]

_RECEIVE_BYTES = 1 << 18  # simple-websocket's recv size, once the inbox reads


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
        self._auth_deadline = 0.0
        self.namespace = ""
        self.cid = ""
        self.cipher: FrameCipher | None = None
        self.welcomed = False
        self._push_lock = threading.Lock()  # the welcome, then pushed function lists, in order
        self._inbox_lock = threading.Lock()
        self._ready = False
        self._early: list[bytes | str] = []

    # what the connection provides
    owned: bool

    def send(self, payload: bytes) -> bool:
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
        if not self.cid and time.monotonic() >= self._auth_deadline:
            raise _AuthTimeout

    # --- the handshake -----------------------------------------------------------------
    def handshake(self) -> bool:
        """Authenticate the peer and welcome it; False if it is refused or gone."""
        server = self.server
        self.ws.max_message_size = server.preauth_max_message
        deadline = self._auth_deadline = time.monotonic() + server.auth_timeout
        nonce = new_nonce()
        if not self.send(proto.encode("hello", v=proto.PROTOCOL_VERSION, nonce=nonce, enc=server.encryption_enabled)):
            return False
        if self.owned:
            try:
                data = self._receive_first()
            except FrameError as exc:
                self.log.warning("peer %s: %s before authenticating; closed", self.peer, exc)
                self.close(*bad_frame(exc.code))
                return False
            except (OSError, Stop):
                return False
        else:
            data = self.ws.receive(timeout=max(0.0, deadline - time.monotonic()))
        if data is None:
            self.log.warning("peer %s did not authenticate within %.1f s; closed", self.peer, server.auth_timeout)
            self.close(*AUTH_TIMEOUT)
            return False
        try:
            msg = proto.parse_client(data)
            if not isinstance(msg, proto.Auth):
                raise ProtocolError("expected an auth message")
        except proto.InvalidText as exc:
            self.log.warning("peer %s: %s before authenticating; closed", self.peer, exc)
            self.close(*INVALID_UTF8)
            return False
        except ProtocolError as exc:
            return self._refuse("protocol", f"handshake failed: {exc}")
        try:
            claims = server.secret.check_client_token(msg.token, nonce)
        except AuthenticationError as exc:
            return self._refuse("auth", str(exc))
        if claims.get("v") != proto.PROTOCOL_VERSION:
            return self._refuse(
                "version", f"protocol version {claims.get('v')!r} is not supported; server speaks {proto.PROTOCOL_VERSION}")
        if claims["enc"] != server.encryption_enabled:
            state = "enabled" if server.encryption_enabled else "disabled"
            return self._refuse("encryption", f"encryption mismatch: the server has encryption {state}")
        self.namespace = claims["ns"]
        self.cid = uuid.uuid4().hex
        proof = server.secret.server_proof(nonce, claims["cn"], self.cid)
        # Added before its function list is taken: a function registered from now on is
        # pushed to it (push_functions waits for the welcome, which the list goes out in).
        if not server.add_connection(self):  # type: ignore[arg-type]
            self.close(*SHUTTING_DOWN)
            return False
        with self._push_lock:
            return self._welcome(nonce, claims["cn"], proof)

    def _welcome(self, nonce: str, client_nonce: str, proof: str) -> bool:
        """(Under the push lock.) Send the welcome with the functions on offer now."""
        server = self.server
        welcome = proto.encode("welcome", cid=self.cid, proof=proof, fs=server.get_registered_functions(self.namespace))
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
        if server.encryption_enabled:
            self.cipher = server.secret.frame_cipher(nonce, client_nonce, is_server=True)
        self.welcomed = True
        return True

    def _refuse(self, code: str, reason: str) -> bool:
        self.log.warning("refused peer %s: %s", self.peer, reason)
        self.send(proto.encode("refused", code=code, reason=reason))
        self.close(*REFUSED)
        return False

    def _receive_first(self) -> bytes | None:
        """The first message on an owned socket (the auth), None on a timeout or close."""
        frames = self._frames
        while True:
            # Absolute from the upgrade: quiet ticks alone would let a peer that sends a
            # byte or a ping now and then hold the socket (and a WSGI thread) for ever.
            if time.monotonic() >= self._auth_deadline:
                return None
            msg = frames.pop()
            if msg is None:
                try:
                    frames.fill()
                except _AuthTimeout:
                    return None
                continue
            opcode, data = msg
            if opcode == OP_CLOSE:
                raise Stop
            if opcode not in (OP_PING, OP_PONG):
                return data
            if opcode == OP_PING:
                self.send_control(OP_PONG, data)

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
        """Send the functions on offer now (after the welcome, which carries them until then)."""
        with self._push_lock:
            if self.welcomed:
                self.send(proto.encode("funcs", fs=self.server.get_registered_functions(self.namespace)))

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
        if binary:
            self.notice("binary frames are not accepted on this connection")
            return None
        return data
