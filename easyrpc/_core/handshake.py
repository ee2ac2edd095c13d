"""The handshake's two ends as state machines, without I/O (``docs/protocol.md`` §4).

A driver feeds each end the frames or messages that arrive (and, on the server, the
time) and does what the answer says: send a message, close with a code, or go on with
the connection open. The machines never touch a socket or read the clock; the proofs
themselves (JWTs) are done by a :class:`Credentials` object, :class:`easyrpc._handshake.Secret`
in easyrpc.

Client, :class:`ClientHandshake`::

    AWAIT_HELLO --hello--> AWAIT_WELCOME --welcome--> OPEN
                                         --refused--> REFUSED
    (anything out of turn, a version or encryption mismatch, a bad proof: FAILED, raised)

Server, :class:`ServerHandshake` (the ``hello`` is its first message)::

    HELLO_SENT --good auth--> AUTHENTICATED --welcome()--> OPEN
               --bad auth---> REFUSED
               --deadline---> TIMED_OUT
               --close frame, invalid UTF-8; shutting_down()--> FAILED

Events are small frozen dataclasses (as h11's). The server's end events say how the
connection closes (``close``, from :mod:`.close_codes`; None: the peer closed, answer
nothing more). A server that misbehaves makes :class:`ClientHandshake` raise (a
:class:`~easyrpc.exceptions.ProtocolError` for speaking out of turn, an
:class:`~easyrpc.exceptions.AuthenticationError` for a mismatch or a bad proof).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Union

from .. import _protocol as proto
from ..exceptions import AuthenticationError, ProtocolError
from .cipher import FrameCipher, new_nonce
from .close_codes import AUTH_TIMEOUT, INVALID_UTF8, REFUSED, SHUTTING_DOWN, Close
from .frames import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT
from .identity import ServerKeys

__all__ = [
    "Credentials", "ClientState", "ServerState", "ClientHandshake", "ServerHandshake",
    "SendAuth", "Opened", "Refused", "Pong", "Authenticated", "TimedOut", "Failed", "PeerClosed", "valid_nonce",
]

_MAX_CLAIM_TEXT = 40  # of a claim quoted in a refusal: the reason stays far below MAX_REASON
_NONCE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


def _close_detail(payload: bytes) -> str:
    """`` (1001 'server shutting down')`` for a close frame's body, ``''`` without a code."""
    if len(payload) < 2:
        return ""
    reason = payload[2:125].decode("utf-8", "replace")
    code = int.from_bytes(payload[:2], "big")
    return f" ({code} {reason!r})" if reason else f" ({code})"


def valid_nonce(nonce: object) -> bool:
    """A nonce either end may send: 16 to 128 URL-safe base64 characters (``new_nonce``
    makes 44)."""
    return isinstance(nonce, str) and 16 <= len(nonce) <= 128 and _NONCE_CHARS.issuperset(nonce)


class Credentials(Protocol):
    """The proofs of the shared secret (:class:`easyrpc._handshake.Secret`)."""

    def client_token(self, server_nonce: str, client_nonce: str, namespace: str, encryption: bool,
                     client_id: str | None = None) -> str: ...
    def check_server_proof(self, proof: str, server_nonce: str, client_nonce: str, cid: str) -> None: ...
    def check_client_token(self, token: str, server_nonce: str) -> dict[str, Any]: ...
    def server_proof(self, server_nonce: str, client_nonce: str, cid: str) -> str: ...
    def frame_cipher(self, server_nonce: str, client_nonce: str, is_server: bool) -> FrameCipher: ...


class ClientState(enum.Enum):
    AWAIT_HELLO = "await hello"
    AWAIT_WELCOME = "await welcome"
    OPEN = "open"
    REFUSED = "refused"
    FAILED = "failed"


class ServerState(enum.Enum):
    HELLO_SENT = "hello sent"
    AUTHENTICATED = "authenticated"
    OPEN = "open"
    REFUSED = "refused"
    TIMED_OUT = "timed out"
    FAILED = "failed"


# --- events ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendAuth:
    """(Client.) Send *payload*, the ``auth`` message."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Opened:
    """(Client.) Welcomed: the connection id, the function descriptions, the cipher
    (None without encryption)."""

    cid: str
    functions: list[Any]
    cipher: FrameCipher | None


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused the client: a ``refused`` message's *code* and *reason*. The
    server sends :attr:`message`, then closes with :attr:`close`."""

    code: str  # "protocol", "auth", "version", "encryption"
    reason: str
    close: ClassVar[Close] = REFUSED

    @property
    def message(self) -> bytes:
        return proto.encode("refused", code=self.code, reason=self.reason)


@dataclass(frozen=True, slots=True)
class Pong:
    """(Server.) Answer a ping before the auth with a pong carrying *payload*."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Authenticated:
    """(Server.) The token is good: the peer's *namespace*, the connection id given
    to it and the *identity* proved (``_core.identity``; None: the shared secret only).
    Register the connection, then send :meth:`ServerHandshake.welcome`."""

    namespace: str
    cid: str
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class TimedOut:
    """(Server.) No auth within *after* seconds of the hello: close with :attr:`close`."""

    after: float
    close: ClassVar[Close] = AUTH_TIMEOUT


@dataclass(frozen=True, slots=True)
class Failed:
    """(Server.) The connection ends without a ``refused``: close with *close*; *why*
    is for the log."""

    close: Close
    why: str


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """(Server.) The peer sent a close frame before authenticating: end quietly."""

    close: ClassVar[None] = None


ClientEvent = Union[SendAuth, Opened, Refused]
ServerEvent = Union[Authenticated, Refused, TimedOut, Failed, PeerClosed]


# --- the client --------------------------------------------------------------------------
class ClientHandshake:
    """The client's end: answers the ``hello`` with an ``auth``, checks the ``welcome``."""

    def __init__(self, credentials: Credentials, namespace: str, encryption: bool, client_id: str | None = None) -> None:
        self.state = ClientState.AWAIT_HELLO
        self._credentials = credentials
        self._client_id = client_id
        self._namespace = namespace
        self._encryption = encryption
        self._server_nonce = ""
        self._client_nonce = ""

    def receive_frame(self, opcode: int, payload: bytes) -> ClientEvent:
        """One frame from the server (control frames are the transport's business)."""
        if opcode == OP_CLOSE:
            self.state = ClientState.FAILED
            raise ProtocolError(f"the server closed the connection during the handshake{_close_detail(payload)}")
        if opcode != OP_TEXT:
            self.state = ClientState.FAILED
            raise ProtocolError("expected a text frame during the handshake")
        return self.receive(payload)

    def receive(self, data: bytes | str) -> ClientEvent:
        """One message from the server (the text of a text frame)."""
        state = self.state
        try:
            msg = proto.parse_server(data)
            if state is ClientState.AWAIT_HELLO:
                return self._hello(msg)
            if state is ClientState.AWAIT_WELCOME:
                return self._reply(msg)
        except (ProtocolError, AuthenticationError):
            self.state = ClientState.FAILED
            raise
        raise ProtocolError(f"a handshake message in state {state.value}")

    def _hello(self, hello: proto.ServerMessage) -> SendAuth:
        if not isinstance(hello, proto.Hello):
            raise ProtocolError("the server did not start the handshake")
        if hello.version != proto.PROTOCOL_VERSION:
            raise AuthenticationError(
                f"protocol version mismatch: server speaks {hello.version}, this proxy {proto.PROTOCOL_VERSION}")
        if hello.encryption != self._encryption:
            theirs = "enabled" if hello.encryption else "disabled"
            ours = "enabled" if self._encryption else "disabled"
            raise AuthenticationError(f"encryption mismatch: the server has encryption {theirs}, this proxy {ours}")
        if not valid_nonce(hello.nonce):  # it salts the frame keys
            raise ProtocolError("the server's nonce is not 16 to 128 URL-safe characters")
        self._server_nonce, self._client_nonce = hello.nonce, new_nonce()
        token = self._credentials.client_token(self._server_nonce, self._client_nonce, self._namespace, self._encryption,
                                               self._client_id)
        self.state = ClientState.AWAIT_WELCOME
        return SendAuth(proto.encode("auth", token=token))

    def _reply(self, reply: proto.ServerMessage) -> Opened | Refused:
        if isinstance(reply, proto.Refused):
            self.state = ClientState.REFUSED
            return Refused(reply.code, reply.reason)
        if not isinstance(reply, proto.Welcome):
            raise ProtocolError("unexpected reply to authentication")
        sn, cn = self._server_nonce, self._client_nonce
        self._credentials.check_server_proof(reply.proof, sn, cn, reply.cid)
        cipher = self._credentials.frame_cipher(sn, cn, is_server=False) if self._encryption else None
        self.state = ClientState.OPEN
        return Opened(reply.cid, reply.functions, cipher)


# --- the server --------------------------------------------------------------------------
class ServerHandshake:
    """The server's end: the ``hello`` (:attr:`hello`, to send first), the peer's
    ``auth`` by :attr:`deadline` (*now* + *auth_timeout*, on the driver's clock), then
    the ``welcome`` or the refusal.

    With *keys* the token's ``id`` claim picks the secret it is checked with (and the
    proof and frame keys use that one); without, *credentials* check every token.
    *peer_identity* is the TLS client certificate's subject, the identity of a token
    that names no id."""

    def __init__(self, credentials: Credentials | None, encryption: bool, auth_timeout: float, now: float, *,
                 keys: ServerKeys | None = None, peer_identity: str | None = None) -> None:
        if credentials is None and keys is None:
            raise ValueError("a server handshake needs credentials or keys")
        self.state = ServerState.HELLO_SENT
        self._credentials: Credentials = credentials  # type: ignore[assignment]  # chosen by keys if None
        self._keys = keys
        self._peer_identity = peer_identity
        self.identity: str | None = None
        self._encryption = encryption
        self._auth_timeout = auth_timeout
        self.deadline = now + auth_timeout
        self._nonce = new_nonce()
        self._client_nonce = ""
        self.namespace = ""
        self.cid = ""
        self.hello = proto.encode("hello", v=proto.PROTOCOL_VERSION, nonce=self._nonce, enc=encryption)

    def expired(self, now: float) -> bool:
        """Whether the auth deadline has passed at *now* without an auth."""
        return self.state is ServerState.HELLO_SENT and now >= self.deadline

    def tick(self, now: float) -> TimedOut | None:
        """The auth deadline, looked at *now*: :class:`TimedOut` once it has passed."""
        if self.expired(now):
            self.state = ServerState.TIMED_OUT
        return TimedOut(self._auth_timeout) if self.state is ServerState.TIMED_OUT else None

    def receive_frame(self, opcode: int, payload: bytes, now: float) -> ServerEvent | Pong | None:
        """One frame from the peer before the auth: a ping gets a :class:`Pong`, a pong
        nothing (None), a close frame :class:`PeerClosed`; a data frame is the auth."""
        timed_out = self.tick(now)
        if timed_out is not None:
            return timed_out
        if opcode == OP_CLOSE:
            self.state = ServerState.FAILED
            return PeerClosed()
        if opcode == OP_PING:
            return Pong(payload)
        if opcode == OP_PONG:
            return None
        return self.receive(payload, now)

    def receive(self, data: bytes | str, now: float) -> ServerEvent:
        """The peer's first message (text or binary: both carry the auth), at *now*."""
        timed_out = self.tick(now)
        if timed_out is not None:
            return timed_out
        if self.state is not ServerState.HELLO_SENT:
            raise RuntimeError(f"the handshake is over ({self.state.value})")
        try:
            msg = proto.parse_client(data)
            if not isinstance(msg, proto.Auth):
                raise ProtocolError("expected an auth message")
        except proto.InvalidText as exc:
            self.state = ServerState.FAILED
            return Failed(INVALID_UTF8, f"{exc} before authenticating")
        except ProtocolError as exc:
            return self._refuse("protocol", f"handshake failed: {exc}")
        try:
            if self._keys is None:
                claims, identity = self._credentials.check_client_token(msg.token, self._nonce), self._peer_identity
            else:
                claims, self._credentials, identity = self._keys.verify(msg.token, self._nonce, self._peer_identity)
        except AuthenticationError as exc:
            return self._refuse("auth", str(exc))
        version = claims.get("v")
        if type(version) is not int or version != proto.PROTOCOL_VERSION:  # not True, not 1.0
            claimed = repr(version)
            if len(claimed) > _MAX_CLAIM_TEXT:
                claimed = claimed[:_MAX_CLAIM_TEXT] + "..."
            return self._refuse(
                "version", f"protocol version {claimed} is not supported; server speaks {proto.PROTOCOL_VERSION}")
        if not valid_nonce(claims["cn"]):  # it salts the frame keys: ASCII, as the server's
            return self._refuse("protocol", "handshake failed: the client nonce must be 16 to 128 URL-safe characters")
        if claims["enc"] != self._encryption:
            state = "enabled" if self._encryption else "disabled"
            return self._refuse("encryption", f"encryption mismatch: the server has encryption {state}")
        self._client_nonce = claims["cn"]
        self.namespace = claims["ns"]
        self.identity = identity
        self.cid = uuid.uuid4().hex
        self.state = ServerState.AUTHENTICATED
        return Authenticated(self.namespace, self.cid, identity)

    def _refuse(self, code: str, reason: str) -> Refused:
        self.state = ServerState.REFUSED
        return Refused(code, reason)

    def welcome(self, functions: list[Any]) -> bytes:
        """The ``welcome`` to send (always in clear) with *functions*, the descriptions on
        offer now; the connection is open. Seal what follows with :meth:`cipher`."""
        if self.state is not ServerState.AUTHENTICATED:
            raise RuntimeError(f"no welcome in state {self.state.value}")
        proof = self._credentials.server_proof(self._nonce, self._client_nonce, self.cid)
        self.state = ServerState.OPEN
        return proto.encode("welcome", cid=self.cid, proof=proof, fs=functions)

    def cipher(self) -> FrameCipher | None:
        """The server's frame cipher once open (None without encryption)."""
        if self.state is not ServerState.OPEN:
            raise RuntimeError(f"no cipher in state {self.state.value}")
        if not self._encryption:
            return None
        return self._credentials.frame_cipher(self._nonce, self._client_nonce, is_server=True)

    def shutting_down(self) -> Close:
        """The server is closing and takes no new connection: how to close this one."""
        self.state = ServerState.FAILED
        return SHUTTING_DOWN
