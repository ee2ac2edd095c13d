"""The client's side of the handshake: hello, auth, then welcome or refusal.

websocket-client reads the two handshake messages frame by frame (nothing after the
welcome is read ahead), so the connection's own reader starts right after it. The rules
are the sans-I/O :class:`~easyrpc._core.handshake.ClientHandshake`'s (tokens:
:mod:`easyrpc._handshake`); this module moves the bytes. The wire is ``docs/protocol.md`` §4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import websocket

from .._core.cipher import FrameCipher
from .._core.handshake import ClientHandshake, Refused, SendAuth
from .._handshake import Secret
from ..exceptions import AuthenticationError

__all__ = ["Welcomed", "client_handshake"]


@dataclass(frozen=True, slots=True)
class Welcomed:
    """What an accepted handshake gives: the connection id, the functions, the cipher."""

    cid: str
    functions: list[Any]
    cipher: FrameCipher | None


def client_handshake(ws: websocket.WebSocket, secret: Secret, namespace: str, encryption: bool,
                     client_id: str | None = None) -> Welcomed:
    """Authenticate on a freshly upgraded *ws* (as *client_id*, if given); AuthenticationError
    if refused or the server cannot prove it knows the secret, ProtocolError if it speaks
    out of turn."""
    hs = ClientHandshake(secret, namespace, encryption, client_id)
    while True:  # two messages at most: the machine raises on anything out of turn
        opcode, data = ws.recv_data()
        event = hs.receive_frame(opcode, bytes(data))
        if isinstance(event, SendAuth):
            ws.send(event.payload)
        elif isinstance(event, Refused):
            raise AuthenticationError(f"the server refused the connection: {event.reason}")
        else:
            return Welcomed(event.cid, event.functions, event.cipher)
