"""The threaded client engine behind both proxies: one connection and its calls.

``easyrpc.proxy`` and ``easyrpc.aio`` both drive an :class:`Engine`. Callers encode and
send their own requests (through the connection's ``FrameWriter``), so a call costs no
hand-off on the way out.

Reading is a role one thread holds at a time (leader/follower). A blocking call whose
thread finds the role free reads the socket itself until its reply arrives, settling
whatever else arrives meanwhile, so a sequential caller is woken by the kernel, not by
another thread. An event loop running ``easyrpc.aio`` calls takes the role the same way
(``loop.add_reader``) while it has calls in flight, and settles their awaitables without
a thread hand-off. Otherwise *the reader* holds it: the process's I/O hub for a plain
connection (``reader.HubReader``), or the ``easyrpc-reader`` thread for a TLS one; it
reads while futures or streams wait and while the connection is idle (keepalive, pushed
function lists), and steps aside after it has answered a caller that wants to read. The
``easyrpc-reader`` thread also reconnects a dropped proxy. Done-callbacks, time limits
and keepalive run on the process's one dispatcher thread (``dispatch``).
"""

from __future__ import annotations

import asyncio
import logging
import select
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

import websocket

from .. import _protocol as proto
from .._core.frames import close_payload
from .._core.keepalive import Drop, Keepalive
from .._handshake import FrameCipher, Secret
from .._net.hub import hub
from .._net.writer import FrameWriter
from .._signature import FunctionSpec, spec_from_description
from .._spin import BusyPoll, busy_policy
from .._transport import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    frame_bytes,
)
from ..exceptions import (
    AuthenticationError,
    CallTimeout,
    ConnectionLost,
    EasyRpcError,
    ProtocolError,
)
from .calls import CALLS, BlockingCall, ClientStream, LoopCall, Pending, SettledOnce
from .dispatch import dispatcher
from .handshake import client_handshake
from .loops import LoopReader, settle_in_loop
from .options import ClientOptions
from .reader import HubReader
from .roles import READER, STEP_ASIDE
from .sock import shutdown as _shutdown
from .sock import sock_of as _sock_of
from .thread_reader import ReaderThread

__all__ = ["Engine"]

log = logging.getLogger("easyrpc.proxy")

_LOOP_STALL = 0.25  # a loop that leaves readable data this long loses the reading role


class Engine:
    """Connection, handshake, request table and threads of one proxy."""

    def __init__(self, host: str, port: int, path: str, secret: str | bytes, options: ClientOptions) -> None:
        self.options = options
        scheme = "wss" if options.ssl_context is not None else "ws"
        hostpart = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.url = f"{scheme}://{hostpart}:{int(port)}{path}"
        # the options read on hot paths, as plain attributes
        self.namespace = options.namespace
        self.timeout = options.timeout
        self.connect_timeout = options.connect_timeout
        self.ping_interval = options.ping_interval
        self.ping_timeout = options.ping_timeout
        self.reconnect = options.reconnect
        self.max_in_flight = options.max_in_flight
        self.stream_window = options.stream_window
        self._busy = busy_policy(options.busy_poll)  # a lone call polls the socket before sleeping
        self._secret = Secret(secret)
        self._lock = threading.Lock()  # the request table and connection state
        self._room = threading.Condition(self._lock)  # callers waiting for max_in_flight
        self._room_waiters = 0
        # the connection's writer and cipher, replaced together (one assignment) on connect
        self._out: tuple[FrameWriter, FrameCipher | None] | None = None
        self._pending: proto.PendingTable[Pending] = proto.PendingTable()
        self._ws: websocket.WebSocket | None = None
        self._frames: FrameReader | None = None
        self._cipher: FrameCipher | None = None
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._gone: str | None = None  # why the connection ended, once it will not come back
        self._dispatch = dispatcher()
        # how often the dispatcher runs this proxy's checks (keepalive, a stalled loop)
        self.tick = max(0.05, min(_LOOP_STALL, options.ping_interval / 4, options.ping_timeout / 4))
        self._keepalive_policy = Keepalive(options.ping_interval, options.ping_timeout, time.monotonic())  # per connection
        self.cid = ""
        self.functions: dict[str, FunctionSpec] = {}
        self._listeners: list[Callable[[], None]] = []
        self._lost_listeners: list[Callable[[], None]] = []
        self._ever_connected = False
        self._reader = ReaderThread(self)  # reads a TLS connection, or reconnects
        self._hub_reader: HubReader | None = None  # a plain connection's, read by the hub
        # the reading role: None (free), READER, or a blocking caller's thread ident
        self._role_cond = threading.Condition(threading.Lock())
        self._role: Any = None
        self._reader_wanted = True  # (TLS) the reader thread must take the role as soon as free
        self._leader_seen = False  # a caller wanted the role the reader held
        self._loop_wanted: asyncio.AbstractEventLoop | None = None  # ... an event loop, namely

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Connect and authenticate, then start the threads. Raises on failure."""
        self._connect_once()
        self.start_in_background()

    def close(self) -> None:
        """Close the connection, fail what is pending, join the threads. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._lock:
            ws = self._ws
            self._connected.clear()
        out = self._out
        if ws is not None:
            # after the frame being written (ours must not split it); a stuck writer: just drop
            if out is not None and out[0].wait_idle(1.0):
                out[0].send_last(frame_bytes(OP_CLOSE, close_payload(1000, "")))
            _shutdown(ws)
        self._dispatch.detach(self)
        with self._role_cond:
            # Read under the lock: read_in_loop and the reader's hand-over give a loop the
            # role under it too, and only while not closing, so no loop gets it after this.
            role = self._role
            self._role_cond.notify_all()
        if isinstance(role, LoopReader):
            role.revoke()
        self._reader.join(5.0)
        self._detach_hub_reader(None)
        self._fail_all(ConnectionLost("the proxy is closed"), include_unsent=True)
        self._dispatch.join_if_idle(5.0)  # it ends with the process's last proxy
        hub().join_if_idle(5.0)  # so do the hub's threads, with the last connection of any kind
        if ws is not None:
            ws.shutdown()  # type: ignore[no-untyped-call]

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call *callback* (on the thread reading) whenever the function list changes."""
        self._listeners.append(callback)

    def add_lost_listener(self, callback: Callable[[], None]) -> None:
        """Call *callback* (on the thread reading) whenever the connection drops."""
        self._lost_listeners.append(callback)

    def start_in_background(self) -> None:
        """Serve the connection (the hub reads it) or connect, with retries, in the background."""
        self._dispatch.attach(self)
        with self._lock:
            start = self._hub_reader is None  # not connected, or a TLS connection: a thread's work
        if start:
            self._reader.start()

    # --- connecting --------------------------------------------------------------------
    def _connect_once(self) -> None:
        sslopt = {"context": self.options.ssl_context} if self.options.ssl_context is not None else None
        ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True, sslopt=sslopt)
        try:
            ws.connect(self.url, timeout=self.connect_timeout)  # type: ignore[no-untyped-call]
            welcomed = client_handshake(ws, self._secret, self.namespace, self.options.encryption_enabled)
        except AuthenticationError:
            _shutdown(ws)
            ws.shutdown()  # type: ignore[no-untyped-call]
            raise
        except websocket.WebSocketBadStatusException as exc:
            ws.shutdown()  # type: ignore[no-untyped-call]
            raise ConnectionError(f"cannot connect to {self.url}: HTTP {exc.status_code} (is the path right?)") from None
        except (OSError, websocket.WebSocketException, ProtocolError) as exc:
            _shutdown(ws)
            ws.shutdown()  # type: ignore[no-untyped-call]
            raise ConnectionError(f"cannot connect to {self.url}: {exc}") from None
        ws.settimeout(None)
        sock = _sock_of(ws)
        frames = FrameReader(sock, busy=self._busy)
        tls = isinstance(sock, ssl.SSLSocket)
        hub_reader = None if tls else HubReader(self, ws, frames)
        writer = FrameWriter(sock, masked=True, on_error=self._write_failed,
                             # a TLS socket is never written without blocking (nor read by the hub)
                             nonblocking=_never if hub_reader is None else hub().is_leader,
                             want_write=_ignore if hub_reader is None else hub_reader.want_write)
        cipher = welcomed.cipher
        with self._lock:
            self.cid = welcomed.cid
            self._ws = ws
            self._frames = frames
            self._cipher = cipher
            self._out = (writer, cipher)
            self._hub_reader = hub_reader
            self._keepalive_policy = Keepalive(self.ping_interval, self.ping_timeout, time.monotonic())
        # the welcome's list first: a list the server pushes next must not be overwritten by it
        self._set_functions(welcomed.functions)
        if hub_reader is not None:
            hub_reader.attach()
        with self._role_cond:  # read a new connection at once
            if self._role is None:
                self._reader_takes()
            else:
                self._reader_wanted = True
        self._ever_connected = True
        self._connected.set()
        self._flush_unsent()

    def _set_functions(self, descriptions: list[Any]) -> None:
        specs: dict[str, FunctionSpec] = {}
        for desc in descriptions:
            try:
                spec = spec_from_description(desc)
            except ValueError as exc:
                log.warning("ignored a function description from %s: %s", self.url, exc)
                continue
            specs[spec.name] = spec
        self.functions = specs
        _notify(self._listeners, "function-list")

    # --- sending -----------------------------------------------------------------------
    def _send(self, *payloads: bytes) -> None:
        """Send messages in order (the writer joins small ones into one write; the hub
        never waits, others wait while a big frame is written or too much is queued).
        ConnectionLost if not connected or the write failed."""
        out = self._out
        if out is None or not self._connected.is_set():
            raise ConnectionLost("not connected")
        writer, cipher = out
        if cipher is not None:  # sealed in queue order: the counters stay in step
            sent = writer.send_many(OP_BINARY, payloads, cipher.seal)
        else:
            sent = writer.send_many(OP_TEXT, payloads)
        if not sent:
            raise ConnectionLost("not connected")

    def _send_control(self, opcode: int, payload: bytes) -> None:
        """Send a control frame (a pong); a lost connection is the reader's to report."""
        out = self._out
        if out is not None:
            out[0].send(opcode, payload)

    def _write_failed(self, exc: OSError) -> None:
        """A write failed: shut the socket down, so that whoever reads notices the drop."""
        ws = self._ws
        if ws is not None:
            _shutdown(ws)

    def send_quiet(self, payload: bytes) -> None:
        """Send a control message; a lost connection is the reader's to report."""
        try:
            self._send(payload)
        except ConnectionLost:
            pass

    def submit(self, item: Pending, fn: str, args: list[Any], kwargs: dict[str, Any], timeout: float | None,
               *, send: bool = True) -> None:
        """Register *item* (a call or a stream) and send its call.

        Raises SerializationError (nothing sent) if the arguments are not JSON. With
        ``send=False`` the caller sends it later with :meth:`send_items` (easyrpc.aio does,
        off the event loop, for big payloads).
        """
        window = item.window if isinstance(item, ClientStream) else 0
        now = time.monotonic()
        limit = timeout if timeout is not None else self.timeout
        with self._lock:
            if self._closing.is_set():
                raise ConnectionLost("the proxy is closed")
            if self._gone is not None:  # lost, and this proxy does not reconnect
                raise ConnectionLost(self._gone)
            if len(self._pending) >= self.max_in_flight:
                wait_until = now + (limit if limit is not None else self.connect_timeout)
                while len(self._pending) >= self.max_in_flight:
                    remaining = wait_until - time.monotonic()
                    if remaining <= 0 or self._closing.is_set():
                        raise CallTimeout(f"{fn}: too many calls in flight (limit {self.max_in_flight})")
                    self._room_waiters += 1
                    try:
                        self._room.wait(remaining)
                    finally:
                        self._room_waiters -= 1
            call_id = self._pending.add(item)
            item.id = call_id
        is_call = not isinstance(item, ClientStream)
        try:
            item.payload = proto.encode_call(call_id, fn, args, kwargs, window, limit if is_call else None)
        except BaseException:
            self.forget(call_id, item, send_cancel=False)
            raise
        # A call waits for a connection at most connect_timeout when it has no limit.
        # A stream's limit applies per item (its iterator enforces it), not here.
        deadline = now + limit if limit is not None and is_call else None
        if not self._connected.is_set() and deadline is None:
            deadline = now + self.connect_timeout
            item.no_limit = True
        if deadline is not None:
            item.deadline = deadline
            self._dispatch.expire_at(deadline, self, item)
        if send:
            self.send_items((item,))

    def open_stream(self, fn: str, args: list[Any], kwargs: dict[str, Any], timeout: float | None) -> ClientStream:
        """Start a generator call; *timeout* (default: the proxy's) limits each item."""
        stream = ClientStream(self, self.stream_window, timeout if timeout is not None else self.timeout)
        self.submit(stream, fn, args, kwargs, timeout)
        return stream

    def send_items(self, items: Sequence[Pending]) -> None:
        """Send registered calls not sent yet, in as few writes as possible.

        Each is sent once; a call whose request is still unsent while disconnected is
        sent on reconnect (by ``_flush_unsent``). The encoded request is dropped once
        sent, so a big one is not kept alive."""
        with self._lock:
            if not self._connected.is_set():
                return  # sent on reconnect by _flush_unsent
            ready = [it for it in items if not it.sent and self._pending.get(it.id) is it]
            for it in ready:
                it.sent = True
        if ready:
            try:
                payloads = [it.payload for it in ready]
                for it in ready:
                    it.payload = b""
                self._send(*payloads)
            except ConnectionLost:
                pass  # the reader fails in-flight calls when it notices the drop
            if self._role is None and not all(it.leads for it in ready):
                self._want_reader()

    def _want_reader(self) -> None:
        """Make the reader take the free reading role now (something awaits a reply).

        Callers add their request to the table before looking at the role, and a thread
        giving up the role looks at the table after: one of the two always wakes it.
        """
        with self._role_cond:
            if self._role is None:
                self._reader_takes()

    @property
    def in_flight(self) -> int:
        """Calls and streams registered and not yet finished."""
        return len(self._pending)

    def read_in_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let *loop* (the running loop, which just sent calls) read their replies itself.

        If the reader thread holds the role, it hands it over once it has drained what it
        received; on TLS connections (a readable socket may not hold a whole record) the
        reader thread keeps reading.
        """
        role = self._role
        if isinstance(role, LoopReader) and not role.revoked:
            if role.loop is loop:
                return
            if role.loop.is_closed():  # a loop that ended without closing the proxy
                role.revoke()
        with self._role_cond:
            role = self._role
            frames, ws = self._frames, self._ws
            if role is None and frames is not None and ws is not None and self._connected.is_set() \
                    and not self._closing.is_set() and not isinstance(ws.sock, ssl.SSLSocket):
                reader = self._role = LoopReader(self, loop, ws, frames)
                frames.incremental = True
            else:
                if role is READER and not isinstance(ws and ws.sock, ssl.SSLSocket):
                    self._loop_wanted = loop
                    self._leader_seen = True
                elif role is None:
                    self._reader_takes()
                return
        reader.start()

    @property
    def busy_polls(self) -> bool:
        """True if a lone call polls for its reply (``busy_poll`` is not 0)."""
        return self._busy is not None

    def poll_in_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """(easyrpc.aio, a callback on *loop*, which sent a lone call.) If that call is
        still the only one in flight, poll the socket for up to the busy-poll window and
        read the reply here if it comes: the loop's thread stays awake instead of
        sleeping in the selector (see ``_spin``)."""
        role = self._role
        if not isinstance(role, LoopReader) or role.loop is not loop or role.revoked or len(self._pending) != 1:
            return
        # Under the role's lock: once revoked, the reader thread polls the same descriptor
        # (one poll object per connection, which two threads must not use at once).
        if not role.lock.acquire(blocking=False):
            return
        try:
            readable = not role.revoked and role.frames.busy_poll()
        except OSError:  # the socket was closed meanwhile: the connection's end is reported elsewhere
            return
        finally:
            role.lock.release()
        if readable:
            role.on_readable()

    def _release(self, reader: LoopReader) -> None:
        """A loop's reading role ends; the reader thread takes over if anything waits."""
        with self._role_cond:
            if self._role is not reader:
                return
            self._role = None
            reader.frames.incremental = False
            self._role_freed(reader.frames)

    # --- the reader's role (the hub, or a TLS connection's thread) -------------------
    def _reader_takes(self) -> None:
        """(Under the role lock, the role free.) The reader takes the role: the hub reads
        a plain connection from now on; a TLS connection's thread is told to."""
        hub_reader = self._hub_reader
        if hub_reader is None or self._closing.is_set():
            if not self._reader_wanted:
                self._reader_wanted = True
                self._role_cond.notify()
            return
        self._role = READER
        self._reader_wanted = self._leader_seen = False
        hub_reader.frames.incremental = True  # the hub never blocks, in a big frame neither
        hub_reader.watch(True)

    def _role_freed(self, frames: FrameReader) -> None:
        """(Under the role lock.) A holder let the role go: the reader takes it if replies
        are awaited (or the connection changed), else after a while. Not at once: the
        hub takes it when it next runs, so a caller whose call was just answered and
        calls again meanwhile reads its own reply (no thread hand-off for it)."""
        hub_reader = self._hub_reader
        if len(self._pending) or self._frames is not frames:
            if hub_reader is None:
                self._reader_takes()
            else:
                self._reader_wanted = True
                hub_reader.claim_soon()
        elif hub_reader is not None:
            hub_reader.free_since = time.monotonic()

    def reader_claim(self, hub_reader: HubReader) -> None:
        """(Hub.) Take the role if it is free and the reader is wanted."""
        if self._role is None and self._reader_wanted:
            with self._role_cond:
                if self._role is None and self._reader_wanted and self._hub_reader is hub_reader:
                    self._reader_takes()

    @property
    def reading_role(self) -> str:
        """Who reads the connection now: ``'hub'`` (or ``'reader-thread'`` on TLS),
        ``'caller'`` (a blocking caller reading its own reply), ``'loop'`` (an event
        loop with calls in flight), or ``'none'``."""
        role = self._role
        if role is None:
            return "none"
        if role is READER:
            return "hub" if self._hub_reader is not None else "reader-thread"
        return "loop" if isinstance(role, LoopReader) else "caller"

    @property
    def reading_thread(self) -> int | None:
        """The ident of the blocking caller reading the connection now, if one is."""
        role = self._role
        return role if isinstance(role, int) else None

    @property
    def loop_reader(self) -> LoopReader | None:
        """The event loop's reading role, while an event loop holds it (not revoked)."""
        role = self._role
        return role if isinstance(role, LoopReader) and not role.revoked else None

    @property
    def busy_policy(self) -> BusyPoll | None:
        """The busy-poll policy of a lone call (its hits and misses), None if it never polls."""
        return self._busy

    def writer_of(self, frames: FrameReader) -> FrameWriter | None:
        """(Hub.) The writer of the connection *frames* reads, if it is still the current one."""
        out = self._out
        return out[0] if out is not None and self._frames is frames else None

    def reader_holds(self, frames: FrameReader) -> bool:
        """(Hub.) True if the reader holds the role on the connection *frames* reads."""
        return self._role is READER and self._frames is frames

    def reader_handled(self, hub_reader: HubReader) -> None:
        """(Hub, after handling what arrived.) Step aside once a blocking caller has been
        answered and nothing else is in flight, or for an event loop that wants to read."""
        if not self._leader_seen or (self._loop_wanted is None and len(self._pending)):
            return
        handover: LoopReader | None = None
        with self._role_cond:
            if self._role is not READER:
                return
            self._role = None
            hub_reader.watch(False)
            loop, self._loop_wanted = self._loop_wanted, None
            if loop is not None and not loop.is_closed() and not self._closing.is_set():
                handover = self._role = LoopReader(self, loop, hub_reader.ws, hub_reader.frames)
            else:
                self._role_freed(hub_reader.frames)
        if handover is not None:
            try:
                handover.loop.call_soon_threadsafe(handover.start)
            except RuntimeError:  # the loop closed meanwhile
                handover.revoke()

    def reader_tick(self, hub_reader: HubReader, now: float) -> None:
        """(Hub, periodically.) Take the role back once it has been free a while: an idle
        connection is read (keepalive, pushed function lists)."""
        if self._role is None and now - hub_reader.free_since >= STEP_ASIDE:
            with self._role_cond:
                if self._role is None and self._hub_reader is hub_reader:
                    self._reader_takes()

    def _detach_hub_reader(self, frames: FrameReader | None) -> None:
        """Stop the hub reading the connection (*frames*'s, or any): before its socket closes."""
        with self._lock:
            hub_reader = self._hub_reader
            if hub_reader is None or (frames is not None and hub_reader.frames is not frames):
                return
            self._hub_reader = None
        hub_reader.detach()
        with self._role_cond:
            if self._role is READER:
                self._role = None

    # --- blocking callers --------------------------------------------------------------
    def wait(self, call: BlockingCall, limit: float | None) -> Any:
        """Block until *call* (submitted) settles and return its result, reading the
        socket on this thread when no other thread is; CallTimeout after *limit* s,
        counted from :meth:`submit` (a wait there for room under ``max_in_flight``
        included)."""
        if limit is None:
            deadline = None
        else:  # submit set the call's deadline before it waited for room, if it did
            deadline = call.deadline if call.deadline is not None else time.monotonic() + limit
        if not call.settled:
            self._lead(call, deadline)
        if not call.wait_settled(None if deadline is None else max(0.0, deadline - time.monotonic())):
            self.expire(call)  # fails it with CallTimeout unless it has settled meanwhile
            call.wait_settled(None)  # settled now: whoever claimed it releases it at once
        return call.outcome()

    def _lead(self, fut: BlockingCall, deadline: float | None) -> None:
        """Hold the reading role, if it is free, until *fut* settles or *deadline* passes.

        Every wait honours the deadline, in the middle of a big frame too: a reply stuck
        half-way (a stalled link) fails only this call, with CallTimeout, on time. The
        frame is left half-read and the reader thread goes on with it; the connection is
        not dropped for a slow reply. Calls behind the stuck frame wait like any call
        for a reply: they fail at their own limit, or with ConnectionLost once keepalive
        finds the server silent (no byte for ``ping_interval + ping_timeout``).
        """
        with self._role_cond:
            frames, ws = self._frames, self._ws
            if self._role is not None or frames is None or ws is None or not self._connected.is_set():
                if self._role is READER:
                    self._leader_seen = True  # it steps aside once it has answered us
                return  # the thread holding the role settles fut; we wait on it
            self._role = threading.get_ident()
            frames.incremental = False  # a big reply is received straight into its buffer
        reason: str | None = None
        clean = True  # only while waiting for data does an interruption lose nothing
        try:
            try:
                while True:
                    clean = False  # parsing (a big payload is received in pop) and handling
                    reason = self.handle_buffered(ws, frames, deadline)
                    if reason is not None or fut.settled:
                        break
                    clean = True
                    if len(self._pending) == 1:  # fut alone in flight: its reply is due soon
                        frames.busy_poll()
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not frames.wait_readable(remaining):
                            break  # out of time: wait() expires the call
                    frames.fill()
            except (ProtocolError, OSError) as exc:  # OSError includes ConnectionError
                reason = self.why_lost(exc)
            except BaseException:
                if not clean:  # a frame may be half read or handled: start afresh on a new connection
                    _shutdown(ws)
                raise
            if reason is not None and not self._closing.is_set():
                self.lost(reason, frames)
        finally:
            with self._role_cond:
                self._role = None
                self._role_freed(frames)

    def _flush_unsent(self) -> None:
        with self._lock:
            unsent = [self._pending.get(i) for i in self._pending]
        waiting = [item for item in unsent if item is not None and not item.sent]
        for item in waiting:
            if item.no_limit:
                # it waited for the connection; now it may run as long as it needs
                item.deadline = None
        self.send_items(waiting)

    def forget(self, call_id: int, item: Pending, *, send_cancel: bool) -> None:
        """Drop *item* from the request table; tell the server to stop if it was sent."""
        with self._lock:
            if self._pending.get(call_id) is item:
                self._pending.pop(call_id)
                if self._room_waiters:
                    self._room.notify()
            else:
                send_cancel = False
        if send_cancel:
            self.send_quiet(proto.encode("cancel", i=call_id))

    def expire(self, item: Pending) -> None:
        """The call ran past its deadline: fail it with CallTimeout, cancel it remotely."""
        self.forget(item.id, item, send_cancel=item.sent)
        what = "no connection within the time limit" if not item.sent else "no reply within the time limit"
        exc = CallTimeout(f"call {item.id}: {what}")
        if isinstance(item, ClientStream):
            item.end(exc)
        else:
            self.settle(item, None, exc)

    # --- futures -----------------------------------------------------------------------
    def resolve(self, fut: Future[Any] | BlockingCall | LoopCall, value: Any, exc: BaseException | None) -> None:
        """Resolve *fut*; its done-callbacks (user code) run on the dispatcher thread.

        A future nobody attached callbacks to is settled right here: settling it runs no
        user code, only wakes its waiter, and skipping the dispatcher saves a thread
        hand-off per call. The check and the settling happen under the future's own
        condition, so a callback added concurrently either sees the future pending (and
        we queue) or done (and runs in the adding thread), never on this one.
        """
        if isinstance(fut, SettledOnce):
            fut.settle(value, exc)
            return
        cond = fut._condition
        with cond:
            inline = not fut._done_callbacks  # type: ignore[attr-defined]
            if inline:
                self.settle(fut, value, exc)
        if not inline:
            self._dispatch.settle(fut, value, exc)

    # --- reader thread -----------------------------------------------------------------

    def handle_buffered(self, ws: websocket.WebSocket, frames: FrameReader,
                         deadline: float | None = None) -> str | None:
        """Handle every complete message received so far (whoever holds the reading role);
        the reason if one ends the connection. A big frame arriving is read until
        *deadline* (monotonic; None: no limit), then left half-read for the next reader."""
        while (msg := frames.pop(deadline)) is not None:
            reason = self._on_message(ws, *msg)
            if reason is not None:
                return reason
        return None

    def why_lost(self, exc: Exception) -> str:
        """Why reading failed, as the reason a connection ended."""
        if isinstance(exc, ProtocolError):
            log.warning("bad frame from %s: %s; dropping the connection", self.url, exc)
            return f"protocol error: {exc}"
        return f"connection lost ({type(exc).__name__})"

    def _on_message(self, ws: websocket.WebSocket, opcode: int, data: bytes) -> str | None:
        """Handle one message; the reason if it ends the connection."""
        self._keepalive_policy.received(time.monotonic())
        if opcode == OP_PING:
            self._send_control(OP_PONG, bytes(data[:125]))
            return None
        if opcode == OP_PONG:
            return None
        if opcode == OP_CLOSE:
            return "the server closed the connection"
        cipher = self._cipher
        if cipher is not None:
            if opcode != OP_BINARY:
                raise ProtocolError("clear-text frame on an encrypted connection")
            data = cipher.open(data)
        msg = proto.parse_server(data)
        if isinstance(msg, proto.Bye):
            log.info("server %s is going away: %s", self.url, msg.reason)
            return f"the server is going away: {msg.reason}"
        self._handle(msg)
        return None

    def _handle(self, msg: proto.ServerMessage) -> None:
        # Settled first, removed after: a thread interrupted in between (Ctrl-C in a
        # blocking caller that reads) leaves the item in the table, where the dropped
        # connection's _fail_all finds it, never a call that nobody will settle.
        if isinstance(msg, proto.Result):
            item = self._pending.get(msg.id)  # one dict lookup: atomic, no lock needed
            if isinstance(item, CALLS):
                self.resolve(item, msg.value, None)
            self._remove(msg.id, item)
        elif isinstance(msg, proto.Item):
            with self._lock:
                item = self._pending.get(msg.id)
            if isinstance(item, ClientStream):
                if msg.window is not None:
                    item.limit_window(msg.window)
                item.push(msg.value)
        elif isinstance(msg, (proto.Failure, proto.End)):
            with self._lock:
                item = self._pending.get(msg.id)
            error = msg.error if isinstance(msg, proto.Failure) else None
            if isinstance(item, ClientStream):
                item.end(error)
            elif isinstance(item, CALLS) and error is not None:
                self.resolve(item, None, error)
            self._remove(msg.id, item)
        elif isinstance(msg, proto.Ping):
            self.send_quiet(proto.encode("pong", t=msg.token))
        elif isinstance(msg, proto.Pong):
            pass
        elif isinstance(msg, proto.Functions):
            self._set_functions(msg.functions)
        elif isinstance(msg, proto.Notice):
            log.warning("server %s: %s", self.url, msg.message)
        else:
            log.warning("unexpected %s message from %s", type(msg).__name__, self.url)

    def _remove(self, call_id: int, item: Pending | None) -> None:
        """Drop a finished call from the table (if it is still there)."""
        if item is None:
            return
        with self._lock:
            if self._pending.get(call_id) is item:
                self._pending.pop(call_id)
                if self._room_waiters:
                    self._room.notify()

    def lost(self, reason: str, frames: FrameReader | None) -> None:
        with self._lock:
            if frames is not None and self._frames is not frames:
                return  # already handled
            self._connected.clear()
            ws, self._ws = self._ws, None
            old_frames, self._frames = self._frames, None
            self._cipher = None
            out, self._out = self._out, None
        if out is not None:
            out[0].close()  # what is queued for the old connection is void
        if old_frames is not None:
            self._detach_hub_reader(old_frames)
        if ws is not None:
            _shutdown(ws)
            ws.shutdown()  # type: ignore[no-untyped-call]
        if not self._closing.is_set():
            log.warning("connection to %s lost: %s", self.url, reason)
        if not self.reconnect:
            with self._lock:  # later calls fail at once instead of waiting for a connection
                self._gone = f"{self.url}: {reason} (the proxy does not reconnect)"
        self._fail_all(ConnectionLost(f"{self.url}: {reason}"), include_unsent=not self.reconnect)
        _notify(self._lost_listeners, "connection-lost")
        if self.reconnect and not self._closing.is_set():
            self._reader.start()  # a no-op when it runs (a TLS connection's reader reconnects)

    def _fail_all(self, exc: EasyRpcError, *, include_unsent: bool) -> None:
        with self._lock:
            items = [self._pending.get(i) for i in self._pending]
            failed = [it for it in items if it is not None and (it.sent or include_unsent)]
            for it in failed:
                self._pending.pop(it.id)
            self._room.notify_all()
        for it in failed:
            if isinstance(it, ClientStream):
                it.end(exc)
            else:
                self.resolve(it, None, exc)

    # --- the dispatcher's work ----------------------------------------------------------
    def expire_if_due(self, call_id: int, item: Pending) -> None:
        """(Dispatcher.) *item*'s deadline has come: expire it if it still waits."""
        with self._lock:
            live = self._pending.get(call_id) is item and item.deadline is not None
        if live:
            self.expire(item)

    def check(self, now: float) -> None:
        """(Dispatcher, every :attr:`tick`.) Revoke the reading role of an event loop that
        stopped reading; keep the connection alive."""
        role = self._role
        if isinstance(role, LoopReader) and not role.revoked and now - role.last_read > _LOOP_STALL \
                and _readable_now(role.ws):
            # replies wait unread: once is a reply that just arrived, twice (a tick
            # apart, the loop not having read meanwhile) a loop blocked or stopped
            if role.stalled_since is not None and role.last_read < role.stalled_since:
                if role.revoke(wait=False):  # busy reading after all: not stalled
                    role.stalled_since = None
            else:
                role.stalled_since = now
        elif isinstance(role, LoopReader):
            role.stalled_since = None
        self._keepalive(now)

    def _keepalive(self, now: float) -> None:
        """Ping a quiet server, drop a silent one (the rules: ``_core.keepalive``)."""
        frames = self._frames
        if not self._connected.is_set() or frames is None:
            return
        out = self._out
        policy = self._keepalive_policy
        if out is not None:
            policy.sent(out[0].last_sent)
        action = policy.due(now, frames.last_recv)
        if isinstance(action, Drop):
            log.warning("no reply from %s for %.1f s; reconnecting", self.url, action.silent)
            ws = self._ws
            if ws is not None:
                _shutdown(ws)
        elif action is not None:
            self.send_quiet(proto.encode("ping", t=action.token))

    @staticmethod
    def settle(fut: Future[Any] | BlockingCall | LoopCall, value: Any, exc: BaseException | None) -> None:
        if isinstance(fut, SettledOnce):
            fut.settle(value, exc)
            return
        try:
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(value)
        except InvalidStateError:
            return  # cancelled or timed out meanwhile
        bridge = getattr(fut, "loop_bridge", None)
        if bridge is not None:
            settle_in_loop(bridge, value, exc)
        relay = getattr(fut, "on_settle", None)
        if relay is not None:  # easyrpc's own relay (server links), never user code
            relay(fut)


def _never() -> bool:
    return False


def _ignore(_: bool) -> None:
    pass


def _readable_now(ws: websocket.WebSocket) -> bool:
    sock = ws.sock
    if sock is None:
        return False
    poller = select.poll()  # its own poller: the reading thread may be polling too
    try:
        poller.register(sock, select.POLLIN)
    except (OSError, ValueError):
        return False
    return bool(poller.poll(0))


def _notify(listeners: list[Callable[[], None]], what: str) -> None:
    for callback in list(listeners):
        try:
            callback()
        except Exception:  # a listener's bug must not stop the reader
            log.exception("%s listener failed", what)
