"""The client's side of the handshake: hello, auth, then welcome or refusal.

websocket-client reads the two handshake messages frame by frame (nothing after the
welcome is read ahead), so the connection's own reader starts right after it. The
tokens and their checks are :mod:`easyrpc._handshake`'s; the wire is ``docs/protocol.md`` §4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import websocket

from .. import _protocol as proto
from .._handshake import FrameCipher, Secret, new_nonce
from ..exceptions import AuthenticationError, ProtocolError

__all__ = ["Welcomed", "client_handshake"]


@dataclass(frozen=True, slots=True)
class Welcomed:
    """What an accepted handshake gives: the connection id, the functions, the cipher."""

    cid: str
    functions: list[Any]
    cipher: FrameCipher | None


def client_handshake(ws: websocket.WebSocket, secret: Secret, namespace: str, encryption: bool) -> Welcomed:
    """Authenticate on a freshly upgraded *ws*; AuthenticationError if refused or the
    server cannot prove it knows the secret, ProtocolError if it speaks out of turn."""
    hello = proto.parse_server(_recv_text(ws))
    if not isinstance(hello, proto.Hello):
        raise ProtocolError("the server did not start the handshake")
    if hello.version != proto.PROTOCOL_VERSION:
        raise AuthenticationError(
            f"protocol version mismatch: server speaks {hello.version}, this proxy {proto.PROTOCOL_VERSION}")
    if hello.encryption != encryption:
        theirs = "enabled" if hello.encryption else "disabled"
        ours = "enabled" if encryption else "disabled"
        raise AuthenticationError(f"encryption mismatch: the server has encryption {theirs}, this proxy {ours}")
    client_nonce = new_nonce()
    token = secret.client_token(hello.nonce, client_nonce, namespace, encryption)
    ws.send(proto.encode("auth", token=token))
    reply = proto.parse_server(_recv_text(ws))
    if isinstance(reply, proto.Refused):
        raise AuthenticationError(f"the server refused the connection: {reply.reason}")
    if not isinstance(reply, proto.Welcome):
        raise ProtocolError("unexpected reply to authentication")
    secret.check_server_proof(reply.proof, hello.nonce, client_nonce, reply.cid)
    cipher = secret.frame_cipher(hello.nonce, client_nonce, is_server=False) if encryption else None
    return Welcomed(reply.cid, reply.functions, cipher)


def _recv_text(ws: websocket.WebSocket) -> bytes:
    opcode, data = ws.recv_data()
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        raise ProtocolError("the server closed the connection during the handshake")
    if opcode != websocket.ABNF.OPCODE_TEXT:
        raise ProtocolError("expected a text frame during the handshake")
    return bytes(data)
