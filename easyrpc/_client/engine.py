"""The threaded client engine behind both proxies: one connection and its calls.

``easyrpc.proxy`` and ``easyrpc.aio`` both drive an :class:`Engine`. Callers encode and
send their own requests (through the connection's ``FrameWriter``), so a call costs no
hand-off on the way out. The engine keeps the request table (the core's
``RequestTable``) and the current connection (a :class:`.link.Link`, replaced whole on
reconnect), and settles what waits. The rest is one module each:

- who reads the socket, and the hand-overs between readers: :mod:`.role`;
- what is done with what arrives: :mod:`.inbound`;
- connecting and the handshake: :mod:`.link`, :mod:`.handshake`;
- the reader thread of a TLS connection, which also reconnects: :mod:`.thread_reader`;
- done-callbacks, time limits and keepalive: the process's one dispatcher thread
  (:mod:`.dispatch`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from .. import _protocol as proto
from .._futures import settle_elsewhere
from .._handshake import Secret
from .._net.hub import hub
from .._net.writer import FrameWriter
from .._signature import FunctionSpec
from .._spin import BusyPoll, busy_policy
from .._transport import OP_BINARY, OP_TEXT, FrameReader
from ..exceptions import ConnectionLost
from .callbacks import Callbacks
from .calls import BlockingCall, LoopCall, SettledOnce, settle
from .dispatch import dispatcher
from .endpoints import Endpoints, EndpointSpec, parse_endpoints
from .inbound import Inbound
from .inflight import InFlight
from .link import Link, open_first
from .loops import LOOP_STALL, LoopReader
from .options import ClientOptions
from .role import READER, ReadingRole
from .sock import shutdown
from .thread_reader import ReaderThread

__all__ = ["Engine"]

log = logging.getLogger("easyrpc.proxy")


class Engine:
    """Connection, request table and threads of one proxy."""

    def __init__(self, endpoints: Sequence[EndpointSpec], secret: str | bytes, options: ClientOptions) -> None:
        self.options = options
        self.endpoints = Endpoints(parse_endpoints(endpoints, options.ssl_context is not None), options.endpoint_order)
        self.namespace = options.namespace
        self.timeout = options.timeout  # read on every call
        self._busy = busy_policy(options.busy_poll)  # a lone call polls the socket before sleeping
        self._secret = Secret(secret)
        self._lock = threading.Lock()  # the connection's changes
        self.link: Link | None = None  # the connection, while connected
        # Plain flags, read on every call (read-only outside this class): an Event would
        # cost a method call per read, and nobody waits on them.
        self.connected = False  # a welcomed connection is up
        self.closed = False  # close() began
        self.dispatch = dispatcher()
        # how often the dispatcher runs this proxy's checks (keepalive, a stalled loop)
        self.tick = max(0.05, min(LOOP_STALL, options.ping_interval / 4, options.ping_timeout / 4))
        self.cid = ""
        self.functions: dict[str, FunctionSpec] = {}
        self._listeners: dict[str, list[Callable[[], None]]] = {"function-list": [], "connection-lost": []}
        self.ever_connected = False
        self.calls = InFlight(self)
        self.role = ReadingRole(self)
        self.inbound = Inbound(self)
        self.reader = ReaderThread(self)  # reads a TLS connection, or reconnects
        self.callbacks = Callbacks(self)  # what the server may call: callbacks, offered functions

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Connect and authenticate, then start the threads. Raises on failure."""
        self.connect_once()
        self.start_in_background()

    def close(self) -> None:
        """Close the connection, fail what is pending, join the threads. Idempotent."""
        if self.closed:
            return
        self.closed = True
        with self._lock:
            link = self.link
            self.connected = False
        if link is not None:
            # after the frame being written (ours must not split it); a stuck writer: just drop
            if link.writer.wait_idle(1.0):
                link.send_close()
            shutdown(link.ws)
        self.dispatch.detach(self)
        self.role.closing()
        self.reader.join(5.0)
        if link is not None and link.hub_reader is not None:
            link.hub_reader.detach()
            self.role.reader_gone()
        self.calls.fail_all(ConnectionLost("the proxy is closed"), include_unsent=True)
        self.callbacks.close(time.monotonic() + 2.0)
        self.dispatch.join_if_idle(5.0)  # it ends with the process's last proxy
        hub().join_if_idle(5.0)  # so do the hub's threads, with the last connection of any kind
        if link is not None:
            link.ws.shutdown()  # type: ignore[no-untyped-call]

    @property
    def url(self) -> str:
        """The URL of the endpoint connected to (or last connected to, or to try first)."""
        return self.endpoints.current.url

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call *callback* (on the thread reading) whenever the function list changes."""
        self._listeners["function-list"].append(callback)

    def add_lost_listener(self, callback: Callable[[], None]) -> None:
        """Call *callback* (on the thread reading) whenever the connection drops."""
        self._listeners["connection-lost"].append(callback)

    def notify(self, what: str) -> None:
        """Run the listeners of *what* (``'function-list'`` or ``'connection-lost'``)."""
        for callback in list(self._listeners[what]):
            try:
                callback()
            except Exception:  # a listener's bug must not stop the reader
                log.exception("%s listener failed", what)

    def start_in_background(self) -> None:
        """Serve the connection (the hub reads it) or connect, with retries, in the background."""
        self.dispatch.attach(self)
        link = self.link
        if link is None or link.hub_reader is None:  # not connected, or TLS: a thread's work
            self.reader.start()

    def connect_once(self) -> None:
        """One connection round: the endpoints in turn until one answers and
        authenticates (ConnectionError, AuthenticationError if none does)."""
        link = open_first(self, self.endpoints.round(), self._secret, self._busy)
        self.endpoints.connected(link.endpoint)
        with self._lock:
            self.cid = link.cid
            self.link = link
        # the welcome's list first: a list the server pushes next must not be overwritten by it
        self.inbound.set_functions(link.functions)
        if not self.ever_connected and len(self.functions) <= 1:  # only the builtin list
            log.warning("%s offers no functions in namespace %r (yet, or to this client): is the namespace "
                        "right?", link.endpoint.url, self.namespace)
        if link.hub_reader is not None:
            link.hub_reader.attach()
        self.role.connected()
        self.ever_connected = True
        self.connected = True
        self.calls.flush_unsent()

    # --- sending -----------------------------------------------------------------------
    def send(self, *payloads: proto.Encoded) -> None:
        """Send messages in order (the writer joins small ones into one write; the hub
        never waits, others wait while a big frame is written or too much is queued).
        ConnectionLost if not connected or the write failed."""
        link = self.link
        if link is None or not self.connected:
            raise ConnectionLost("not connected")
        cipher = link.cipher
        seal = None if cipher is None else cipher.seal  # sealed in queue order: the counters stay in step
        opcode = OP_TEXT if cipher is None else OP_BINARY
        if len(payloads) == 1:
            sent = link.writer.send(opcode, payloads[0], seal)
        else:
            sent = link.writer.send_many(opcode, payloads, seal)
        if not sent:
            raise ConnectionLost("not connected")

    def send_quiet(self, payload: bytes) -> None:
        """Send a control message; a lost connection is the reader's to report."""
        try:
            self.send(payload)
        except ConnectionLost:
            pass

    def writer_of(self, frames: FrameReader) -> FrameWriter | None:
        """The writer of the connection *frames* reads, if it is still the current one."""
        link = self.link
        return link.writer if link is not None and link.frames is frames else None

    # --- calls in flight ---------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Calls and streams registered and not yet finished."""
        return len(self.calls.table)

    def resolve(self, fut: Future[Any] | BlockingCall | LoopCall, value: Any, exc: BaseException | None) -> None:
        """Resolve *fut*; its done-callbacks (user code) run on the dispatcher thread.

        A future nobody attached callbacks to is settled right here: settling it runs no
        user code, only wakes its waiter, and skipping the dispatcher saves a thread
        hand-off per call (``easyrpc._futures.settle_elsewhere``).
        """
        if isinstance(fut, SettledOnce):
            fut.settle(value, exc)
            return
        settle_elsewhere(fut, functools.partial(settle, fut, value, exc),
                         lambda _: self.dispatch.settle(fut, value, exc))

    # --- the connection ends -----------------------------------------------------------
    def lost(self, reason: str, frames: FrameReader | None) -> None:
        """The connection (*frames*'s; None: whichever) ended: fail what was sent on it,
        and reconnect unless the proxy does not."""
        with self._lock:
            link = self.link
            if link is None or (frames is not None and link.frames is not frames):
                return  # already handled
            self.connected = False
            self.link = None
        link.writer.close()  # what is queued for the old connection is void
        if link.hub_reader is not None:
            link.hub_reader.detach()
            self.role.reader_gone()
        shutdown(link.ws)
        link.ws.shutdown()  # type: ignore[no-untyped-call]
        url = link.endpoint.url
        if not self.closed:
            log.warning("connection to %s lost: %s", url, reason)
        reconnect = self.options.reconnect
        if not reconnect:
            # later calls fail at once instead of waiting for a connection
            self.calls.gone = f"{url}: {reason} (the proxy does not reconnect)"
        self.calls.fail_all(ConnectionLost(f"{url}: {reason}"), include_unsent=not reconnect)
        self.notify("connection-lost")
        if reconnect and not self.closed:
            self.reader.start()  # a no-op when it runs (a TLS connection's reader reconnects)

    # --- the dispatcher's checks, and what tests and diagnostics read ------------------
    def check(self, now: float) -> None:
        """(Dispatcher, every :attr:`tick`.) Revoke the reading role of an event loop that
        stopped reading; keep the connection alive."""
        self.role.check_loop(now)
        self.inbound.keepalive(now)

    @property
    def reading_role(self) -> str:
        """Who reads the connection now: ``'hub'`` (or ``'reader-thread'`` on TLS),
        ``'caller'`` (a blocking caller reading its own reply), ``'loop'`` (an event
        loop with calls in flight), or ``'none'``."""
        holder = self.role.holder
        if holder is None:
            return "none"
        if holder is READER:
            link = self.link
            return "hub" if link is not None and link.hub_reader is not None else "reader-thread"
        return "loop" if isinstance(holder, LoopReader) else "caller"

    @property
    def reading_thread(self) -> int | None:
        """The ident of the blocking caller reading the connection now, if one is."""
        holder = self.role.holder
        return holder if isinstance(holder, int) else None

    @property
    def loop_reader(self) -> LoopReader | None:
        """The event loop's reading role, while an event loop holds it (not revoked)."""
        holder = self.role.holder
        return holder if isinstance(holder, LoopReader) and not holder.revoked else None

    @property
    def busy_policy(self) -> BusyPoll | None:
        """The busy-poll policy of a lone call (its hits and misses), None if it never polls."""
        return self._busy

