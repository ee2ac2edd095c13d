"""A raw-socket WebSocket client for tests that must break the rules on purpose.

``websocket-client`` sends only well-formed frames and picks its own upgrade headers;
a hostile or unusual peer needs the bytes by hand. :class:`RawPeer` opens a plain TCP
socket to a loopback server, sends the HTTP upgrade itself (with any extra headers) and
keeps the 101 response's status and headers; then it writes whatever bytes a test builds
(:func:`frame`: any opcode, flags, mask or declared length, fragments, one byte at a time
with :meth:`RawPeer.dribble`) and reads the server's frames with a parser of its own (not
easyrpc's, which is under test), down to the close code.

API::

    mask_bytes(data, mask, offset=0) -> bytes            # XOR with a 4-byte key
    frame(opcode, payload=b"", *, fin=True, rsv=0, masked=True, declared=None) -> bytes
    masked_frame_header(length, opcode=0x1, fin=True) -> (header, mask)   # 64-bit form
    close_body(code, reason=b"") -> bytes                # a close frame's payload
    closed_code(payload) -> int                          # the code in one (1005 if none)
    auth_message(hello, secret, namespace="DEFAULT") -> str   # easyrpc's auth, built by hand

    peer = RawPeer(port, "/ws/test", headers={"Sec-WebSocket-Extensions": "..."})
    peer.status, peer.headers             # 101, {lower-cased name: value}
    peer.send(data) -> bool               # sendall; False once the server dropped us
    peer.send_frame(opcode, payload, **frame_kwargs) -> bool
    peer.send_text(text) -> bool          # one masked text frame
    peer.dribble(data, every) -> int      # a byte at a time, *every* s apart, until closed
    peer.recv_frame(timeout) -> Frame     # the next frame (control frames included)
    peer.recv_json(timeout) -> dict       # the next text frame, as JSON
    peer.authenticate(secret) -> dict     # hello -> auth -> the server's reply
    peer.closed_with(within) -> Closed    # the frames before the end and the close code
    peer.close()                          # also: with RawPeer(...) as peer:

Every wait is bounded: ``recv_frame`` raises ``TimeoutError``; ``closed_with`` fails the
test if the server has not ended the connection within *within* seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
PROTOCOL_VERSION = 2  # docs/protocol.md §9


def mask_bytes(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """*data* XORed with the 4-byte *mask*, starting *offset* bytes into the payload."""
    return bytes(b ^ mask[(offset + i) % 4] for i, b in enumerate(data))


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True,
          declared: int | None = None) -> bytes:
    """One frame built by hand (any flags, masked or not) for a parser to judge.

    *declared* writes that number into the 64-bit length field instead of the payload's
    length (a frame that lies about its size, or sets the field's top bit)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if masked else 0
    if declared is not None:
        head = struct.pack("!BBQ", b0, bit | 127, declared)
    elif n < 126:
        head = bytes((b0, bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_bytes(payload, key, 0)


def masked_frame_header(length: int, opcode: int = OP_TEXT, fin: bool = True) -> tuple[bytes, bytes]:
    """A client frame header declaring *length* payload bytes (64-bit form); returns (header, mask)."""
    mask = os.urandom(4)
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | 127]) + struct.pack("!Q", length) + mask, mask


def close_body(code: int, reason: bytes = b"") -> bytes:
    """The payload of a close frame: the code (any 16-bit number) and raw reason bytes."""
    return struct.pack("!H", code) + reason


def closed_code(payload: bytes) -> int:
    """The code in a close frame's payload (1005, "no status", for an empty one)."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


def auth_message(hello: dict[str, Any], secret: str, namespace: str = "DEFAULT") -> str:
    """easyrpc's ``auth`` message answering *hello*, built from the documented token format."""
    key = hmac.new(secret.encode(), b"easyrpc/v1/auth", hashlib.sha256).digest()
    now = int(time.time())
    nonce = base64.urlsafe_b64encode(os.urandom(32)).decode()
    claims = {"v": PROTOCOL_VERSION, "sn": hello["nonce"], "cn": nonce, "ns": namespace, "enc": False,
              "iat": now, "exp": now + 30}
    return json.dumps({"k": "auth", "token": jwt.encode(claims, key, algorithm="HS256")})


@dataclass(frozen=True)
class Frame:
    """One frame as it came off the wire (unmasked)."""

    fin: bool
    opcode: int
    payload: bytes


@dataclass
class Closed:
    """How a connection ended: the frames received before, and the close frame's code
    (1005 for a close frame without one; None if the socket ended with no close frame)."""

    frames: list[Frame] = field(default_factory=list)
    code: int | None = None


class RawPeer:
    """A WebSocket client on a raw TCP socket to ``127.0.0.1:port`` (see the module docstring)."""

    def __init__(self, port: int, path: str = "/ws/test", headers: dict[str, str] | None = None,
                 host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._buf:
            self._fill(deadline)
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # --- writing ---------------------------------------------------------------------------
    def send(self, data: bytes) -> bool:
        """sendall raw bytes; False if the server has already dropped the socket."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> bool:
        return self.send(frame(opcode, payload, **kwargs))

    def send_text(self, text: str) -> bool:
        return self.send(frame(OP_TEXT, text.encode()))

    def dribble(self, data: bytes, every: float) -> int:
        """Send *data* one byte at a time, *every* seconds apart, until all is sent or the
        server sends something (its close) or drops the socket; returns the bytes sent.
        Nothing received is lost: read it afterwards with :meth:`recv_frame`."""
        for sent in range(len(data)):
            if not self.send(data[sent:sent + 1]):
                return sent
            readable, _, _ = select.select([self.sock], [], [], every)
            if readable:
                return sent + 1
        return len(data)

    # --- reading ---------------------------------------------------------------------------
    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("nothing more arrived in time")
        self.sock.settimeout(remaining)
        data = self.sock.recv(1 << 16)  # TimeoutError when nothing comes
        if not data:
            raise ConnectionError("the server closed the socket")
        self._buf += data

    def _need(self, n: int, deadline: float) -> None:
        while len(self._buf) < n:
            self._fill(deadline)

    def recv_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame, control frames included. Raises ``TimeoutError`` after
        *timeout* s, ``ConnectionError`` (or another ``OSError``) when the socket ends."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self._buf[0], self._buf[1]
        length, head = b1 & 0x7F, 2
        if length == 126:
            self._need(4, deadline)
            length, head = struct.unpack("!H", self._buf[2:4])[0], 4
        elif length == 127:
            self._need(10, deadline)
            length, head = struct.unpack("!Q", self._buf[2:10])[0], 10
        key = b""
        if b1 & 0x80:
            self._need(head + 4, deadline)
            key, head = self._buf[head:head + 4], head + 4
        self._need(head + length, deadline)
        payload, self._buf = self._buf[head:head + length], self._buf[head + length:]
        return Frame(bool(b0 & 0x80), b0 & 0x0F, mask_bytes(payload, key) if key else payload)

    def recv_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, which must be a text frame holding a JSON object."""
        got = self.recv_frame(timeout)
        assert got.opcode == OP_TEXT, got
        msg = json.loads(got.payload)
        assert isinstance(msg, dict), msg
        return msg

    def authenticate(self, secret: str, namespace: str = "DEFAULT") -> dict[str, Any]:
        """Read the hello, answer with a valid auth; returns the server's reply (the welcome)."""
        hello = self.recv_json()
        assert hello["k"] == "hello", hello
        self.send_text(auth_message(hello, secret, namespace))
        return self.recv_json()

    def closed_with(self, within: float) -> Closed:
        """Read until the server ends the connection; fails the test if it has not within
        *within* seconds. The close frame's code is in the result (see :class:`Closed`)."""
        deadline = time.monotonic() + within
        closed = Closed()
        while True:
            try:
                got = self.recv_frame(deadline - time.monotonic())
            except TimeoutError:
                pytest.fail(f"the server did not close the connection within {within} s "
                            f"(got {closed.frames!r:.300})")
            except OSError:  # EOF or reset with no close frame
                return closed
            if got.opcode == OP_CLOSE:
                closed.code = closed_code(got.payload)
                return closed
            closed.frames.append(got)


# Hostile frames and the close code each calls for: (masked, max_message, data, code).
# One table for the core's FrameParser and for FrameReader over a socket.
BAD_FRAMES = [
    pytest.param(True, None, frame(OP_TEXT, b"hi", masked=False), 1002, id="unmasked-client-frame"),
    pytest.param(False, None, frame(OP_TEXT, b"hi"), 1002, id="masked-server-frame"),
    pytest.param(True, None, frame(OP_TEXT, b"hi", rsv=0x40), 1002, id="rsv1"),
    pytest.param(True, None, frame(OP_TEXT, b"hi", rsv=0x20), 1002, id="rsv2"),
    pytest.param(True, None, frame(OP_TEXT, b"hi", rsv=0x10), 1002, id="rsv3"),
    pytest.param(False, None, frame(OP_PING, b"hi", rsv=0x40, masked=False), 1002, id="rsv1-on-a-ping-server-frame"),
    pytest.param(True, None, frame(0x3, b"hi"), 1002, id="unknown-data-opcode-0x3"),
    pytest.param(True, None, frame(0x7, b"hi", fin=False), 1002, id="unknown-data-opcode-0x7-fragment"),
    pytest.param(True, None, frame(OP_TEXT, b"a", fin=False) + frame(0x5, b"b"), 1002,
                 id="unknown-data-opcode-inside-fragmented"),
    pytest.param(True, None, frame(0xB, b"hi"), 1002, id="reserved-control-opcode-0xB"),
    pytest.param(False, None, frame(0xF, b"hi", masked=False), 1002, id="reserved-control-opcode-0xF-server-frame"),
    pytest.param(True, None, frame(OP_PING, b"p", fin=False), 1002, id="fragmented-ping"),
    pytest.param(True, None, frame(OP_CLOSE, b"\x03\xe8", fin=False), 1002, id="fragmented-close"),
    pytest.param(True, None, frame(OP_PING, b"p" * 126), 1002, id="ping-of-126-bytes"),
    pytest.param(False, None, frame(OP_PONG, b"p" * 126, masked=False), 1002, id="pong-of-126-bytes-server-frame"),
    pytest.param(True, None, frame(OP_CLOSE, b"\x03\xe8" + b"r" * 124), 1002, id="close-of-126-bytes"),
    pytest.param(True, None, frame(OP_CONT, b"orphan"), 1002, id="continuation-without-start"),
    pytest.param(True, None, frame(OP_CONT, b"orphan", fin=False), 1002, id="unfinished-continuation-without-start"),
    pytest.param(True, None, frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), 1002, id="text-inside-fragmented"),
    pytest.param(True, None, frame(OP_BINARY, b"a", fin=False) + frame(OP_PING, b"ok") + frame(OP_BINARY, b"b"), 1002,
                 id="binary-inside-fragmented-after-ping"),
    pytest.param(True, 100, frame(OP_TEXT, b"x" * 101), 1009, id="one-frame-over-max-message"),
    pytest.param(True, 100, frame(OP_BINARY, b"x" * 2, declared=1 << 40), 1009, id="declared-length-over-max-message"),
    pytest.param(True, 100, frame(OP_TEXT, b"x" * 40, fin=False) + frame(OP_CONT, b"x" * 40, fin=False)
                 + frame(OP_CONT, b"x" * 40), 1009, id="fragmented-total-over-max-message"),
    pytest.param(False, 100, frame(OP_TEXT, b"x" * 60, fin=False, masked=False) + frame(OP_CONT, b"x" * 41, masked=False),
                 1009, id="fragmented-server-total-over-max-message"),
    # RFC 6455 §5.2: the 64-bit length's most significant bit must be 0 (whatever the limit)
    pytest.param(True, None, frame(OP_TEXT, b"hi", declared=1 << 63), 1002, id="64-bit-length-msb-set"),
    pytest.param(True, 100, frame(OP_TEXT, b"hi", declared=1 << 63), 1002, id="64-bit-length-msb-set-with-a-limit"),
    pytest.param(False, None, frame(OP_BINARY, b"hi", masked=False, declared=2**64 - 1), 1002,
                 id="64-bit-length-all-ones-server-frame"),
    # §5.5.1, §7.4: a close body is empty or a code a peer may send, then a UTF-8 reason
    *[pytest.param(True, None, frame(OP_CLOSE, close_body(code)), 1002, id=f"close-code-{code}")
      for code in (1005, 1006, 1015, 999, 0, 1004, 1016, 2000, 2999, 5000, 65535)],
    pytest.param(False, None, frame(OP_CLOSE, close_body(1005), masked=False), 1002, id="close-code-1005-server-frame"),
    pytest.param(True, None, frame(OP_CLOSE, b"\x03"), 1002, id="close-body-of-1-byte"),
    pytest.param(True, None, frame(OP_CLOSE, close_body(1000, b"\xff\xfe")), 1002, id="close-reason-not-utf8"),
    pytest.param(True, None, frame(OP_CLOSE, close_body(1000, "\u00e9".encode()[:1])), 1002,
                 id="close-reason-truncated-utf8"),
    pytest.param(False, None, frame(OP_CLOSE, close_body(1001, b"\xed\xa0\x80"), masked=False), 1002,
                 id="close-reason-surrogate-server-frame"),
    pytest.param(False, None, frame(OP_TEXT, b"hi", rsv=0x40, masked=False), 1002, id="rsv1-server-frame"),
    pytest.param(True, None, frame(0x7, b"hi"), 1002, id="unknown-data-opcode-0x7"),
    pytest.param(False, None, frame(OP_CLOSE, b"\x03", masked=False), 1002, id="close-body-of-1-byte-server-frame"),
]
