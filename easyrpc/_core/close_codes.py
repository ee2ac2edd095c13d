"""WebSocket close codes (RFC 6455 §7.4): their names, which a peer may send, which the
server echoes, and the closes easyrpc makes (``docs/protocol.md`` §8), in one table.

A close easyrpc makes is a :class:`Close`, a ``(code, reason)`` pair, so a driver
closes with ``conn.close(*AUTH_TIMEOUT)``. No I/O here.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "NORMAL", "GOING_AWAY", "PROTOCOL_ERROR", "UNSUPPORTED_DATA", "INVALID_DATA", "POLICY", "TOO_BIG",
    "MANDATORY_EXTENSION", "INTERNAL_ERROR", "CLOSE_CODES", "ECHOED_CODES", "Close", "may_send", "echo_code",
    "bad_frame", "REFUSED", "AUTH_TIMEOUT", "SHUTTING_DOWN", "ENCRYPTION_REQUIRED", "BAD_SEAL", "INVALID_UTF8", "REVOKED",
]

NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002  # a malformed frame
UNSUPPORTED_DATA = 1003
INVALID_DATA = 1007  # a text message that is not UTF-8
POLICY = 1008  # refused, the auth deadline, encryption broken
TOO_BIG = 1009  # a frame or message over the size limit
MANDATORY_EXTENSION = 1010
INTERNAL_ERROR = 1011

# the codes a peer may send (RFC 6455 §7.4.1 and the IANA registry; 3000-4999 too):
# never 1004-1006 or 1015 (reserved, or only for reporting locally), nor 1016-2999
CLOSE_CODES = frozenset((NORMAL, GOING_AWAY, PROTOCOL_ERROR, UNSUPPORTED_DATA, INVALID_DATA, POLICY, TOO_BIG,
                         MANDATORY_EXTENSION, INTERNAL_ERROR, 1012, 1013, 1014))
# the peer's codes the server sends back in its answering close frame; any other gets NORMAL
ECHOED_CODES = frozenset((NORMAL, GOING_AWAY, PROTOCOL_ERROR, UNSUPPORTED_DATA, INVALID_DATA, POLICY, TOO_BIG,
                          MANDATORY_EXTENSION, INTERNAL_ERROR))


class Close(NamedTuple):
    """A close frame to send: its code and reason."""

    code: int
    reason: str


REFUSED = Close(POLICY, "refused")  # after a ``refused`` message
AUTH_TIMEOUT = Close(POLICY, "authentication timeout")
SHUTTING_DOWN = Close(GOING_AWAY, "server shutting down")
ENCRYPTION_REQUIRED = Close(POLICY, "encryption required")  # a text frame on an encrypted connection
BAD_SEAL = Close(POLICY, "bad frame")  # a sealed frame that fails to open
INVALID_UTF8 = Close(INVALID_DATA, "invalid UTF-8")
REVOKED = Close(POLICY, "credential revoked")  # the server revoked the identity's key


def bad_frame(code: int) -> Close:
    """The close for a malformed (:data:`PROTOCOL_ERROR`) or oversized (:data:`TOO_BIG`)
    frame: the code the frame parser named."""
    return Close(code, "bad frame")


def may_send(code: int) -> bool:
    """Whether a peer may send *code* in its close frame."""
    return code in CLOSE_CODES or 3000 <= code <= 4999


def echo_code(payload: bytes | bytearray) -> int:
    """The code the server answers a peer's close frame (its body, *payload*) with: the
    peer's own code if it is 1000-1003, 1007-1011 or 3000-4999, else :data:`NORMAL`."""
    if len(payload) < 2:
        return NORMAL
    code = int.from_bytes(payload[:2], "big")
    return code if code in ECHOED_CODES or 3000 <= code <= 4999 else NORMAL
