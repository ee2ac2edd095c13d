"""One connection of a proxy: made in one go, replaced in one go.

:func:`open_link` connects, runs the handshake and builds what the connection is read
and written with. The engine holds the result as one :class:`Link` and swaps it in a
single assignment on (re)connect, so no thread ever sees a socket with another
connection's writer, cipher or keepalive state.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import websocket

from .._core.close_codes import NORMAL
from .._core.frames import OP_CLOSE, close_payload
from .._core.keepalive import Keepalive
from .._handshake import FrameCipher, Secret
from .._net.hub import hub
from .._net.writer import FrameWriter
from .._spin import BusyPoll
from .._transport import FrameReader, frame_bytes
from ..exceptions import AuthenticationError, ProtocolError
from .endpoints import Endpoint
from .handshake import client_handshake
from .reader import HubReader
from .sock import shutdown, sock_of

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Link", "open_first", "open_link"]


@dataclass(frozen=True, eq=False, slots=True)
class Link:
    """An authenticated connection and the objects that read and write it."""

    endpoint: Endpoint
    ws: websocket.WebSocket
    frames: FrameReader
    writer: FrameWriter
    cipher: FrameCipher | None
    hub_reader: HubReader | None  # None: a TLS connection, read by the reader thread
    cid: str
    functions: list[Any]  # the welcome's function descriptions
    keepalive: Keepalive  # this connection's: when to ping, when to give up

    def send_close(self, code: int = NORMAL) -> None:
        """Queue our close frame (*code*, no reason) after what is queued; once: no frame
        goes after it."""
        self.writer.send_last(frame_bytes(OP_CLOSE, close_payload(code, "")))


def open_first(engine: Engine, endpoints: Sequence[Endpoint], secret: Secret, busy: BusyPoll | None) -> Link:
    """Connect *engine*'s proxy to the first of *endpoints* that answers and
    authenticates (tried in turn; stops early if the proxy closes meanwhile).

    If none does: AuthenticationError if one of them refused (a server was reached,
    and that is what to fix), else ConnectionError naming each endpoint's failure."""
    failures: list[str] = []
    refused: AuthenticationError | None = None
    for ep in endpoints:
        if engine.closed:
            break
        try:
            return open_link(engine, ep, secret, busy)
        except AuthenticationError as exc:
            refused = refused or exc
            failures.append(f"{ep.url}: {exc}")
        except ConnectionError as exc:
            failures.append(str(exc))
    if refused is not None and len(endpoints) == 1:
        raise refused
    if refused is not None:
        raise AuthenticationError("; ".join(failures))
    raise ConnectionError("; ".join(failures) or "the proxy is closed")


def open_link(engine: Engine, endpoint: Endpoint, secret: Secret, busy: BusyPoll | None) -> Link:
    """Connect *engine*'s proxy to *endpoint* and authenticate. ConnectionError if the
    server cannot be reached (or the path is wrong), AuthenticationError if it refuses."""
    options, url = engine.options, endpoint.url
    sslopt: dict[str, ssl.SSLContext] | None = None
    if endpoint.tls:  # a wss:// URL without a context of its own: the system's CAs, verified
        sslopt = {"context": options.ssl_context or ssl.create_default_context()}
    ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True, sslopt=sslopt)
    try:
        ws.connect(url, timeout=options.connect_timeout)  # type: ignore[no-untyped-call]
        welcomed = client_handshake(ws, secret, options.namespace, options.encryption_enabled, options.client_id)
    except AuthenticationError:
        shutdown(ws)
        ws.shutdown()  # type: ignore[no-untyped-call]
        raise
    except websocket.WebSocketBadStatusException as exc:
        ws.shutdown()  # type: ignore[no-untyped-call]
        raise ConnectionError(f"cannot connect to {url}: HTTP {exc.status_code} (is the path right?)") from None
    except (OSError, websocket.WebSocketException, ProtocolError) as exc:
        shutdown(ws)
        ws.shutdown()  # type: ignore[no-untyped-call]
        raise ConnectionError(f"cannot connect to {url}: {exc}") from None
    ws.settimeout(None)
    sock = sock_of(ws)
    frames = FrameReader(sock, busy=busy)
    hub_reader = None if isinstance(sock, ssl.SSLSocket) else HubReader(engine, ws, frames)
    writer = FrameWriter(sock, masked=True, on_error=lambda exc: shutdown(ws),
                         # a TLS socket is never written without blocking (nor read by the hub)
                         nonblocking=_never if hub_reader is None else hub().is_leader,
                         want_write=_ignore if hub_reader is None else hub_reader.want_write)
    keepalive = Keepalive(options.ping_interval, options.ping_timeout, time.monotonic())
    return Link(endpoint, ws, frames, writer, welcomed.cipher, hub_reader, welcomed.cid, welcomed.functions, keepalive)


def _never() -> bool:
    return False


def _ignore(_: bool) -> None:
    pass
