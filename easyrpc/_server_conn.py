"""One server-side connection: handshake, the read loop, call dispatch and streams.

The Flask-Sock handler thread runs :meth:`ServerConnection.run`: it authenticates the
peer, then reads messages and hands calls to the server's bounded worker pool (plain and
generator functions) or its event loop thread (``async def`` functions), so a slow call
never blocks the rest. Replies are written whole, under one send lock per connection.

flask-sock wraps each connection in a ``simple_websocket.Server``, which starts a thread
that reads the socket through wsproto; profiles put that parsing at 35-45 % of the
server's CPU per call. :func:`install_socket_owner` keeps that thread from starting on
easyrpc's routes (other routes are untouched), and the handler thread reads the socket
itself with ``_transport.FrameReader``. If an application replaces
``SOCK_SERVER_OPTIONS`` after ``init_app``, simple-websocket's thread runs and delivers
messages through an inbox instead; both paths share everything after the framing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from simple_websocket import ConnectionClosed

from . import _protocol as proto
from ._frames import OP_BINARY, OP_TEXT, frame_header
from ._handshake import FrameCipher, new_nonce
from ._pool import PoolClosed
from ._spin import busy_policy
from ._transport import OP_CLOSE, OP_PING, OP_PONG, FrameError, FrameReader, Writable, write_items
from .exceptions import AuthenticationError, ProtocolError, SerializationError

if TYPE_CHECKING:
    from flask import Flask

    from .server import EasyRpcServer

__all__ = ["CallPace", "InlineWatch", "ServerConnection", "SocketOwner", "install_socket_owner"]

_SMALL_FRAME = 1 << 16
_RECEIVE_BYTES = 1 << 18
_CLOSE_WAIT = 1.0  # how long a closing connection waits for the peer's close frame
_QUEUE_LIMIT = 4 << 20  # bytes queued behind a writer before senders wait
_INLINE_LIMIT = 0.002  # a call run by the reading thread for longer hands reading over
_WATCH_IDLE = 0.05  # the watchdog sleeps after this long without an inline call
_RELAY_TICK = 0.05  # how often a relay that waits for data checks if it can hand back
_SOLO_STREAK = 3  # calls in a row alone on their connection before they run inline
_FAST_CALL = 0.001  # a run of a plain function this short (wall time) counts as fast
_FAST_SCORE = 8  # a function whose score is this high runs inline among other calls
_FAST_CAP = 16  # the score's top: a fast run adds 1, a slow one takes 8 away
# The watchdog's shortest sleep: it looks at most as often as a fixed half-limit tick
# would (calls just short of the limit on many connections), and takes over by 1.5 limits.
_WATCH_MIN_SLEEP = _INLINE_LIMIT / 2
# What a served function may raise, reported to its caller. Off the main thread a
# SystemExit or KeyboardInterrupt comes from the function itself (signals reach only
# the main thread): it ends the call, never the worker, loop or connection thread
# running it. On the main thread (a WSGI server without threads) it may be a signal's,
# and goes on up once the caller has its answer.
_FUNCTION_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


def _function_errors() -> type[BaseException] | tuple[type[BaseException], ...]:
    """The errors to report to the caller, here (the ``except`` clause calls it only when one is raised)."""
    return Exception if threading.current_thread() is threading.main_thread() else _FUNCTION_ERRORS


class CallPace:
    """How one served plain function has been running: a score of its recent run times.

    A run under ``_FAST_CALL`` adds 1 (up to ``_FAST_CAP``), a longer one takes 8 away.
    While the score is at least ``_FAST_SCORE`` (8 fast runs from the start), a call of
    the function runs inline on the reading thread even while other calls are in flight
    on the connection: no hand-off to a worker and back (the watchdog still hands
    reading over if one runs long). Two slow runs in a row send its calls back to the
    pool until it has been fast again; one slow run among fast ones (a run held up by
    another thread holding the GIL) does not. Not locked: a lost update moves the score
    by one run, no more.
    """

    __slots__ = ("score",)

    def __init__(self) -> None:
        self.score = 0

    @property
    def fast(self) -> bool:
        return self.score >= _FAST_SCORE

    def record(self, seconds: float) -> None:
        score = self.score
        self.score = min(score + 1, _FAST_CAP) if seconds < _FAST_CALL else max(score - 8, 0)


def _refused_at_shutdown(call_id: int) -> bytes:
    """The reply to a call or stream the server's closed pool or loop cannot run."""
    return proto.encode_failure(call_id, proto.error_wire("ServerBusy", "the server is shutting down"))


class SocketOwner:
    """Stands in for simple-websocket's reader thread on easyrpc's routes: never started,
    so the connection's handler thread owns the socket."""

    def __init__(self) -> None:
        self.name = "easyrpc (handler thread reads)"

    def start(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return False


def install_socket_owner(app: Flask) -> None:
    """Make flask-sock's connections on ``easyrpc:*`` endpoints of *app* start no reader
    thread (``SOCK_SERVER_OPTIONS['thread_class']``, wrapping any class already set)."""
    from flask import has_request_context, request

    options = app.config.setdefault("SOCK_SERVER_OPTIONS", {})
    base = options.get("thread_class")
    if getattr(base, "easyrpc_socket_owner", False):
        return

    def thread_class(*args: Any, **kwargs: Any) -> Any:
        if has_request_context() and str(request.endpoint or "").startswith("easyrpc:"):
            return SocketOwner()
        return (base or threading.Thread)(*args, **kwargs)

    thread_class.easyrpc_socket_owner = True  # type: ignore[attr-defined]
    options["thread_class"] = thread_class


class _Stop(Exception):
    """Internal: the connection must end."""


class _AuthTimeout(_Stop):
    """Internal: the peer did not authenticate in time."""


# close codes a peer may send that we echo back (RFC 6455 §7.4.1); others get 1000
_ECHO_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011))


class _Call:
    """A plain or async call in flight."""

    __slots__ = ("future", "cancelled")

    def __init__(self) -> None:
        self.future: Future[Any] | None = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True  # a plain call still queued for a worker will not start
        if self.future is not None:
            self.future.cancel()


class _Stream:
    """A generator streaming items under credit-based flow control.

    The consumer grants credit (``window`` up front, then ``credit`` messages as it
    consumes), so at most that many items are ever produced ahead of it. The pump runs
    only while it has credit: an idle stream holds no worker thread.
    """

    def __init__(self, conn: ServerConnection, call_id: int, gen: Any, is_async: bool, credit: int) -> None:
        self.conn = conn
        self.id = call_id
        self.gen = gen
        self.is_async = is_async
        self.credit = credit
        self.lock = threading.Lock()
        self.running = False
        self.finished = False
        self.cancelled = False
        self.future: Future[Any] | None = None

    def start(self) -> None:
        with self.lock:
            self.running = True
        self._schedule()

    def _schedule(self) -> None:
        server = self.conn.server
        try:
            if self.is_async:
                loop = server.event_loop()  # first: a refusal must not leave a coroutine unawaited
                self.future = asyncio.run_coroutine_threadsafe(self._pump_async(), loop)
            else:
                server.executor().submit(self._pump_sync)
        except PoolClosed:  # the server has closed its pool and loop: close the generator here
            self._close_here()

    def _close_here(self) -> None:
        with self.lock:
            waited_for = not self.cancelled  # else the caller let go of it: nothing to say
            self.cancelled = True
        try:
            if self.gen is not None:
                if self.is_async:
                    asyncio.run(self.gen.aclose())
                else:
                    self.gen.close()
        except Exception:  # noqa: BLE001 - a generator failing to close: log it, the stream ends
            self.conn.log.exception("stream %s: closing its generator failed", self.id)
        self._finish(_refused_at_shutdown(self.id) if waited_for else None)

    def add_credit(self, n: int) -> None:
        with self.lock:
            self.credit = min(self.credit + n, self.conn.server.stream_window_max)
            if self.running or self.finished:
                return
            self.running = True
        self._schedule()

    def cancel(self) -> None:
        with self.lock:
            if self.finished or self.cancelled:
                return
            self.cancelled = True
            running = self.running
            self.running = True
        if running:
            if self.is_async and self.future is not None:
                self.future.cancel()  # interrupts the pending __anext__
            return  # the sync pump sees the flag after its current item
        self._schedule()  # an idle pump: run once to close the generator

    def _take(self) -> bool:
        with self.lock:
            if self.cancelled:
                return False
            if self.credit <= 0:
                self.running = False
                return False
            self.credit -= 1
            return True

    def _finish(self, payload: bytes | None) -> None:
        with self.lock:
            self.finished = True
            self.running = False
        self.conn.finish(self.id, self, payload)

    def _pump_sync(self) -> None:
        try:
            while self._take():
                try:
                    item = next(self.gen)
                except StopIteration:
                    self._finish(proto.encode("end", i=self.id))
                    return
                except _function_errors() as exc:  # the function's error goes to its caller
                    self._finish(self.conn.failure(self.id, exc))
                    return
                self.conn.send(self._item(item))
            if self.cancelled:
                self.gen.close()
                self._finish(None)
        except _ItemError as exc:
            self.gen.close()
            self._finish(exc.payload)
        except Exception:  # top of a worker task: log, never lose the stream silently
            self.conn.log.exception("stream %s failed", self.id)
            self._finish(proto.encode_failure(self.id, proto.error_wire("InternalError", "stream failed")))

    async def _pump_async(self) -> None:
        try:
            while self._take():
                try:
                    item = await self.gen.__anext__()
                except StopAsyncIteration:
                    self._finish(proto.encode("end", i=self.id))
                    return
                except _function_errors() as exc:  # the function's error goes to its caller
                    self._finish(self.conn.failure(self.id, exc))
                    return
                await asyncio.wrap_future(self.conn.server.executor().run(self.conn.send, self._item(item)))
            if self.cancelled:
                await self.gen.aclose()
                self._finish(None)
        except asyncio.CancelledError:
            await self.gen.aclose()
            self._finish(None)
        except _ItemError as exc:
            await self.gen.aclose()
            self._finish(exc.payload)
        except Exception:  # top of a loop task: log, never lose the stream silently
            self.conn.log.exception("stream %s failed", self.id)
            self._finish(proto.encode_failure(self.id, proto.error_wire("InternalError", "stream failed")))

    def _item(self, item: Any) -> bytes:
        try:
            return proto.encode_item(self.id, item)
        except SerializationError as exc:
            raise _ItemError(proto.encode_failure(
                self.id, proto.error_wire("SerializationError", f"a stream item cannot be sent: {exc}"))) from None


class _ItemError(Exception):
    def __init__(self, payload: bytes) -> None:
        super().__init__("item cannot be encoded")
        self.payload = payload


class InlineWatch:
    """Server-wide: has reading taken over on connections whose reading thread runs a
    call for longer than ``_INLINE_LIMIT``.

    A connection's reading thread runs a plain call itself when the connection has
    nothing else in flight and nothing more received. That saves handing the call to a
    worker and the thread switches that go with it: strace counted 12 futex calls per
    sequential call on the server with the hand-off, under 1 without. A call that runs
    long must not keep the connection's other messages waiting: this thread wakes when
    the earliest call running inline reaches the limit (or, with none running, a limit
    later, so a call that starts meanwhile is not missed; never sooner than half a
    limit after its last look) and, for a call past the limit, starts the connection's
    relay thread, which reads (handing calls to the pool) until the reading thread is
    free again. The thread runs only while inline
    calls happen: after ``_WATCH_IDLE`` without one it ends, and the next one starts it.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._active: set[ServerConnection] = set()
        self._begun = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._last: threading.Thread | None = None  # joined by close(), even if it is ending
        self.ticks = 0  # how many times it has looked (for tests and benchmarks)

    @property
    def idle(self) -> bool:
        """True while no watchdog thread runs (no inline call for ``_WATCH_IDLE``)."""
        return self._thread is None

    def watch(self, conn: ServerConnection) -> None:
        """*conn*'s reading thread has just started a call inline (``conn.inline_since``)."""
        with self._lock:
            self._active.add(conn)
            self._begun += 1
            if self._thread is None and not self._closed:
                self._thread = self._last = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            self._watch_calls()
        finally:
            with self._lock:  # however it ends, the next inline call starts another
                if self._thread is threading.current_thread():
                    self._thread = None

    def _watch_calls(self) -> None:
        # It sleeps until the earliest running call reaches the limit, or a whole limit
        # when none runs: a call that starts meanwhile is seen before it is due.
        begun, begun_at = -1, time.monotonic()
        wait = _INLINE_LIMIT
        while not self._stop.wait(wait):
            now = time.monotonic()
            wait = _INLINE_LIMIT
            late: list[tuple[ServerConnection, float]] = []
            with self._lock:
                self.ticks += 1
                for conn in list(self._active):
                    since = conn.inline_since
                    if since is None:
                        self._active.discard(conn)  # re-added by its next inline call
                    elif now - since >= _INLINE_LIMIT:
                        late.append((conn, since))
                        self._active.discard(conn)
                    else:
                        wait = min(wait, since + _INLINE_LIMIT - now)
                if self._begun != begun:
                    begun, begun_at = self._begun, now
                idle = now - begun_at >= _WATCH_IDLE and not self._active and not late
                if idle:
                    self._thread = None  # the next inline call starts another
            for conn, since in late:
                try:
                    conn.take_over(since)
                except Exception:  # noqa: BLE001 - one connection's failure must not stop the watchdog
                    conn.log.exception("connection %s: no relay for a long call (it holds up that connection)",
                                       conn.cid)
            if idle:
                return
            # measured from this look, not from after take_over (starting a thread can wait)
            wait = max(now + wait - time.monotonic(), _WATCH_MIN_SLEEP)

    def close(self) -> None:
        """Stop the watchdog thread and join it."""
        with self._lock:
            self._closed = True
            self._thread = None
            thread = self._last
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)


class _Inbox(list):  # type: ignore[type-arg]
    """Stands in for simple-websocket's input buffer once a peer is authenticated.

    simple-websocket's reader thread appends each complete message to ``input_buffer``
    and wakes the handler thread, which would then hand calls on to a worker: two
    hand-offs per message. The inbox handles the message on the reader thread instead
    (parsing, and queueing calls to the pool), keeping order and saving one hand-off.
    """

    def __init__(self, conn: ServerConnection) -> None:
        super().__init__()
        self._conn = conn

    def append(self, data: bytes | str) -> None:
        self._conn.deliver(data)


class _CloseSignal(threading.Event):
    """Stands in for simple-websocket's wake-up event once the inbox reads messages.

    simple-websocket sets it after every message (nobody waits on it any more) and when
    the socket closes; only the latter matters, and it stops the connection's watcher.
    """

    def __init__(self, conn: ServerConnection) -> None:
        super().__init__()
        self._conn = conn

    def set(self) -> None:
        if not self._conn.ws.connected:
            self._conn._stop.set()


class ServerConnection:
    """The server's side of one WebSocket connection."""

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
        self.owned = isinstance(getattr(ws, "thread", None), SocketOwner)
        self._tick = max(0.02, min(1.0, server.ping_interval / 2, server.ping_timeout / 2))
        self._frames = FrameReader(self.sock, server.preauth_max_message, masked=True, tick=self._tick,
                                   on_tick=self._on_tick, busy=busy_policy(server.busy_poll))
        self._auth_deadline = 0.0
        self._closed_at: float | None = None
        self.namespace = ""
        self.cid = ""
        self._send_lock = threading.Lock()  # the queue of frames and the closed flag
        self._writer_done = threading.Condition(self._send_lock)
        self._out: list[Writable] = []
        self._writing = False
        self._writer_waited = False  # threads wait for the writer (room, or its end)
        self._out_bytes = 0
        self._reader = 0  # the thread reading the socket (owned path), which never waits to send
        self._handler = 0  # the handler thread, once it reads the owned socket
        self._role = threading.Condition(threading.Lock())  # who reads: the handler thread or the relay
        self._taken = False  # the relay reads while the handler thread runs a call
        self._ended = False  # the relay saw the connection end
        self._relays: list[threading.Thread] = []  # one per takeover; the last may still run
        self.inline_since: float | None = None  # when the handler thread's call started
        self._solo = 0  # calls in a row that were alone on this connection
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._tasks: dict[int, _Call | _Stream] = {}
        self._cipher: FrameCipher | None = None
        self._closed = False
        self._ping_token = 0
        self._ping_pending = False
        self._last_seen = time.monotonic()
        self._last_sent = self._last_ping = self._last_seen  # when our last write ended; our last ping
        self._stop = threading.Event()
        self._inbox_lock = threading.Lock()
        self._push_lock = threading.Lock()  # the welcome, then pushed function lists, in order
        self._welcomed = False
        self._ready = False
        self._early: list[bytes | str] = []

    # --- lifecycle ---------------------------------------------------------------------
    def run(self) -> None:
        """Serve this connection until it closes (runs on the Flask-Sock handler thread)."""
        try:
            if not self._handshake():
                return
            self.log.info("connection %s opened from %s (namespace %s)", self.cid, self.peer, self.namespace)
            try:
                if self.owned:
                    self._read_owned()
                else:
                    self._release_early()
                    self._watch()
            finally:
                self.server.remove_connection(self)
                self._abandon_all()
                self.log.info("connection %s closed", self.cid)
        except ConnectionClosed:
            pass
        finally:
            self.server.remove_connection(self)  # also if the handshake failed after adding it
            self.close(1000, "")
            self._teardown()

    def _teardown(self) -> None:
        if self.owned:  # as simple-websocket's thread would: close the socket
            self._closed = True
            self.ws.connected = False
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # unblocks a send stuck on a silent peer
            except OSError:
                pass
            with self._role:
                self._ended = True
                self._role.notify_all()
                relays, self._relays = self._relays, []
            for relay in relays:
                relay.join(_CLOSE_WAIT)  # it reads no more: the socket is shut down
            with self._send_lock:
                if self._writing:  # the writer fails fast on the shut-down socket
                    self._writer_waited = True
                    self._writer_done.wait(_CLOSE_WAIT)
                self.sock.close()
            return
        thread = getattr(self.ws, "thread", None)
        if thread is None:
            return
        thread.join(1.0)
        if thread.is_alive():  # the peer never answered our close frame
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            thread.join(1.0)

    def close(self, code: int = 1000, reason: str = "", bye: str | None = None) -> None:
        """Close the connection (idempotent); *bye* tells the proxy why, first (once it
        has been welcomed: before that the proxy expects the welcome, and the close frame
        alone tells it)."""
        if bye is not None and self._welcomed:
            self.send(proto.encode("bye", reason=bye))
        def close_frame(sock: socket.socket) -> None:  # simple-websocket writes it (its state)
            try:
                self.ws.close(code, reason)
            except OSError:
                raise
            except Exception:  # noqa: BLE001 - closed already (ConnectionClosed, wsproto's state)
                pass

        with self._send_lock:
            if self._closed:
                return
            self._closed = True
            self._closed_at = time.monotonic()
            self._out.append(close_frame)  # after everything queued before it
            write = self._become_writer()
        if write:
            self._write_queued()
        self._stop.set()

    def _kill(self) -> None:
        """Drop the socket at once (keepalive expiry, broken encryption)."""
        with self._send_lock:
            self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._stop.set()

    # --- sending -----------------------------------------------------------------------
    # Writes are combined: a thread with a frame queues it and, if no thread is writing,
    # becomes the writer and writes the queue, with whatever others queue meanwhile, in
    # as few ``sendall`` calls as it can. A lone reply goes out at once, as before;
    # replies that finish together on several workers share one write.
    def send(self, payload: bytes) -> bool:
        """Send one message whole, in order; False if the connection is closed."""
        with self._send_lock:
            # A big frame is written by its own thread, never left to a writer that may be
            # the reading thread; and the queue is bounded (back-pressure on a peer that
            # does not read). The reading thread itself never waits here.
            if self._writing and threading.get_ident() != self._reader and (
                    len(payload) >= _SMALL_FRAME or self._out_bytes >= _QUEUE_LIMIT):
                while self._writing and not self._closed:
                    self._writer_waited = True
                    self._writer_done.wait(1.0)
                    if len(payload) < _SMALL_FRAME and self._out_bytes < _QUEUE_LIMIT:
                        break
            if self._closed:
                return False
            if self._cipher is not None:  # sealed in queue order: the counters stay in step
                self._append(OP_BINARY, self._cipher.seal(payload))
            else:
                self._append(OP_TEXT, payload)
            if not self._become_writer():
                return True  # the writer sends it
        return self._write_queued()

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        """Send one control frame (a pong), unless the connection is closed."""
        with self._send_lock:
            if self._closed:
                return
            self._append(opcode, payload)
            if not self._become_writer():
                return
        self._write_queued()

    def _become_writer(self) -> bool:
        """(Under the send lock.) True if the caller must now write the queue: nobody is."""
        if self._writing:
            return False
        self._writing = True
        return True

    def _append(self, opcode: int, data: bytes) -> None:
        self._out_bytes += len(data)
        header = frame_header(opcode, len(data))
        if len(data) < _SMALL_FRAME:
            self._out.append(header + data)
        else:  # not joined: a big payload is written as it is, never copied
            self._out.append(header)
            self._out.append(data)

    def _write_queued(self) -> bool:
        """Write the queue until it is empty (this thread is the writer); False on failure."""
        try:
            return self._write_all()
        except BaseException:  # an unexpected error: never leave the queue without a writer
            with self._send_lock:
                self._writing = False
                self._writer_done.notify_all()
            raise

    def _write_all(self) -> bool:
        ok = True
        while True:
            with self._send_lock:
                items, self._out, self._out_bytes = self._out, [], 0
                if not items:
                    self._writing = False
                if self._writer_waited:  # senders waiting for room, or for the writer to end
                    self._writer_waited = False
                    self._writer_done.notify_all()
                if not items:
                    return ok
            try:
                write_items(self.sock, items, _SMALL_FRAME)
                self._last_sent = time.monotonic()
            except OSError as exc:
                if ok:
                    self.log.info("connection %s: send failed (%s)", self.cid, type(exc).__name__)
                ok = False
                with self._send_lock:
                    self._closed = True
                    self._out = [item for item in self._out if not isinstance(item, bytes)]
                self._stop.set()

    def failure(self, call_id: int, exc: BaseException) -> bytes:
        return proto.encode_failure(call_id, proto.error_to_wire(exc, self.server.send_tracebacks))

    def push_functions(self) -> None:
        """Send the functions on offer now (after the welcome, which carries them until then)."""
        with self._push_lock:
            if self._welcomed:
                self.send(proto.encode("funcs", fs=self.server.get_registered_functions(self.namespace)))

    # --- handshake ---------------------------------------------------------------------
    def _handshake(self) -> bool:
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
                self.close(exc.code, "bad frame")
                return False
            except (OSError, _Stop):
                return False
        else:
            data = self.ws.receive(timeout=max(0.0, deadline - time.monotonic()))
        if data is None:
            self.log.warning("peer %s did not authenticate within %.1f s; closed", self.peer, server.auth_timeout)
            self.close(1008, "authentication timeout")
            return False
        try:
            msg = proto.parse_client(data)
            if not isinstance(msg, proto.Auth):
                raise ProtocolError("expected an auth message")
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
        if not server.add_connection(self):
            self.close(1001, "server shutting down")
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
            self.ws.input_buffer = _Inbox(self)
            self.ws.event = _CloseSignal(self)
            self._early.extend(early)
        if not self.send(welcome):  # the welcome goes out in clear; later frames are sealed
            return False
        if server.encryption_enabled:
            self._cipher = server.secret.frame_cipher(nonce, client_nonce, is_server=True)
        self._welcomed = True
        return True

    def _release_early(self) -> None:
        """The handshake is complete: handle what arrived meanwhile, then go direct."""
        with self._inbox_lock:
            for data in self._early:
                if not self._handle_message(data, isinstance(data, bytes)):
                    break
            self._early.clear()
            self._ready = True

    def _refuse(self, code: str, reason: str) -> bool:
        self.log.warning("refused peer %s: %s", self.peer, reason)
        self.send(proto.encode("refused", code=code, reason=reason))
        self.close(1008, "refused")
        return False

    # --- reading -----------------------------------------------------------------------
    def _keepalive(self) -> bool:
        """Ping a quiet peer, drop a silent one; False once dropped.

        Only silence counts: any byte received is a sign of life, a big message still
        arriving included (its sender's pong would wait behind it). We also ping when we
        have sent nothing for ``ping_interval``, so a peer sending us a big message hears
        from us while its own ping waits behind that message. (On the simple-websocket path only whole
        messages are seen.)
        """
        server = self.server
        now = time.monotonic()
        silent = now - max(self._last_seen, self._frames.last_recv)
        if silent >= server.ping_interval + server.ping_timeout:
            self.log.warning("connection %s silent for %.1f s; dropped", self.cid, silent)
            self._kill()
            return False
        quiet = now - self._last_sent >= server.ping_interval and now - self._last_ping >= server.ping_interval
        if (silent >= server.ping_interval and not self._ping_pending) or quiet:
            self._ping_pending = True
            self._ping_token += 1
            self._last_ping = now
            self.send(proto.encode("ping", t=self._ping_token))
        return True

    def _on_tick(self) -> None:
        """The owned socket was quiet for a tick: enforce deadlines and keepalive."""
        if self._closed:
            now = time.monotonic()
            if self._closed_at is None:
                self._closed_at = now
            elif now - self._closed_at >= _CLOSE_WAIT:
                raise _Stop  # the peer never answered our close frame
        elif not self.cid:
            if time.monotonic() >= self._auth_deadline:
                raise _AuthTimeout
        elif not self._keepalive():
            raise _Stop

    def _receive_first(self) -> bytes | None:
        """The first message on an owned socket (the auth), None on a timeout or close."""
        frames = self._frames
        while True:
            msg = frames.pop()
            if msg is None:
                try:
                    frames.fill()
                except _AuthTimeout:
                    return None
                continue
            opcode, data = msg
            if opcode == OP_CLOSE:
                raise _Stop
            if opcode not in (OP_PING, OP_PONG):
                return data
            if opcode == OP_PING:
                self._send_frame(OP_PONG, data)

    def _read_owned(self) -> None:
        """Read the owned socket on this (the handler) thread until the connection ends."""
        self._handler = self._reader = threading.get_ident()
        self._read_frames(relay=False)

    def _read_frames(self, *, relay: bool) -> bool:
        """Read and handle frames until the connection ends (False) or, for the relay,
        until the handler thread's call is over and nothing is buffered (True)."""
        frames = self._frames
        try:
            while True:
                msg = frames.pop()
                if msg is None:
                    if not relay:
                        if not self._tasks:  # nothing running: a sequential caller's next call is due
                            frames.busy_poll()
                        frames.fill()  # its ticks run _on_tick
                    elif self.inline_since is None:
                        return True  # hand reading back
                    elif frames.wait_readable(_RELAY_TICK):
                        frames.fill()
                    else:
                        self._on_tick()
                    continue
                if not self._on_message(*msg):
                    return False
                msg = None  # do not keep a huge frame alive
        except FrameError as exc:
            self.log.warning("connection %s: %s; closed", self.cid, exc)
            self.close(exc.code, "bad frame")
        except (OSError, _Stop):
            pass  # the peer is gone, or we dropped it
        return False

    def _on_message(self, opcode: int, data: bytes) -> bool:
        """Handle one frame read from the owned socket; False once the connection ends."""
        now = self._last_seen = time.monotonic()
        self._ping_pending = False
        if self._closed and now - (self._closed_at or now) >= _CLOSE_WAIT:
            return False  # a peer that keeps talking after our close frame
        if opcode == OP_PING:
            self._send_frame(OP_PONG, data)
        elif opcode == OP_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1000
            self.close(code if code in _ECHO_CODES or 3000 <= code <= 4999 else 1000, "")
            return False
        elif opcode != OP_PONG:
            return self._handle_message(data, opcode == OP_BINARY)
        return True

    # A plain call read by the handler thread runs right there (see InlineWatch) when the
    # connection is used sequentially (this call and the last _SOLO_STREAK - 1 found
    # nothing else in flight and nothing more received), or when its function has been
    # fast (CallPace): concurrent calls of fast functions then cost no hand-off either.
    # Other concurrent calls go to the pool (and do not keep the watchdog ticking). If
    # an inline call runs long, a relay thread takes over reading and hands calls to the
    # pool until the handler thread is done and the socket has nothing buffered; then
    # the handler thread reads again. One thread reads at a time.
    def _may_inline(self, pace: CallPace) -> bool:
        if threading.get_ident() != self._handler:
            return False
        if len(self._tasks) != 1 or not self._frames.drained():
            self._solo = 0
        else:
            self._solo += 1
        return (pace.fast or self._solo >= _SOLO_STREAK) and not self._taken and not self._closed

    def _run_inline(self, call_id: int, task: _Call, fn: Callable[..., Any], pace: CallPace,
                    args: list[Any], kwargs: dict[str, Any]) -> None:
        self._reader = 0  # while it runs a call, this thread waits for room to send like any other
        self.inline_since = time.monotonic()
        self.server.inline_watch().watch(self)
        try:
            self._run_sync(call_id, task, fn, pace, args, kwargs)
        finally:
            with self._role:
                self.inline_since = None
                while self._taken and not self._ended:  # the relay reads: wait for it to hand back
                    self._role.wait()
                self._reader = threading.get_ident()
        if self._ended:
            raise _Stop  # the relay saw the connection end

    def take_over(self, since: float) -> None:
        """(Watchdog.) The inline call started at *since* runs long: a relay reads now."""
        with self._role:
            if self.inline_since != since or self._taken or self._ended:
                return
            self._taken = True
            relay = threading.Thread(target=self._relay_run, name=f"easyrpc-relay-{self.cid[:8]}", daemon=True)
            self._relays = [t for t in self._relays if t.is_alive()] + [relay]
        try:
            relay.start()
        except BaseException:  # no thread to be had: nobody will hand back, the handler reads on
            with self._role:
                self._taken = False
                self._relays.remove(relay)
                self._role.notify_all()
            raise

    def _relay_run(self) -> None:
        """Read until the handler thread can again (one thread per takeover)."""
        with self._role:
            self._reader = threading.get_ident()
            ended = self._ended
        try:
            ended = ended or not self._read_frames(relay=True)
        except Exception:  # noqa: BLE001 - top of the relay thread: log, end the connection
            self.log.exception("connection %s: reading failed", self.cid)
            ended = True
        finally:
            with self._role:
                self._taken = False
                self._ended = self._ended or ended
                self._role.notify_all()
        if ended:
            # The handler thread ends the connection once its call returns; what must
            # not wait for that happens now.
            self._stop.set()
            self.server.remove_connection(self)
            self._abandon_all()

    def _watch(self) -> None:
        """Keepalive and close detection, on the handler thread, while the inbox reads."""
        # A closing socket wakes us through _CloseSignal at once; the tick only paces
        # keepalive (and catches a close simple-websocket signals before marking it).
        while not self._closed and self.ws.connected:
            if self._stop.wait(self._tick) or not self._keepalive():
                return

    def deliver(self, data: bytes | str) -> None:
        """Handle one complete message, on simple-websocket's reader thread (str: text)."""
        self._last_seen = time.monotonic()
        self._ping_pending = False
        if not self._ready:
            with self._inbox_lock:
                if not self._ready:  # the handshake is still finishing: keep order
                    self._early.append(data)
                    return
        self._handle_message(data, isinstance(data, bytes))

    def _handle_message(self, data: bytes | str, binary: bool) -> bool:
        """Handle one message; False once the connection must end."""
        try:
            self._on_frame(data, binary)
        except _Stop:
            self._stop.set()
            return False
        except Exception:  # this runs on simple-websocket's thread: never let it die
            self.log.exception("connection %s: failed to handle a message", self.cid)
        return True

    def _on_frame(self, data: bytes | str, binary: bool) -> None:
        if self._cipher is not None:
            if not binary or isinstance(data, str):
                self.log.warning("connection %s: clear-text frame on an encrypted connection; closed", self.cid)
                self.close(1008, "encryption required")
                raise _Stop
            try:
                data = self._cipher.open(data)
            except ProtocolError as exc:
                self.log.warning("connection %s: %s; closed", self.cid, exc)
                self.close(1008, "bad frame")
                raise _Stop from None
        elif binary:
            self._notice("binary frames are not accepted on this connection")
            return
        obj: Any = None
        try:
            obj = proto.load(data)
            msg = proto.parse_client_obj(obj)
        except ProtocolError as exc:
            rid = proto.request_id(obj)
            with self._lock:
                known = rid is not None and rid in self._tasks
            if rid is not None and not known and isinstance(obj, dict) and obj.get("k") == "call":
                self.send(proto.encode_failure(rid, proto.error_wire("ProtocolError", f"invalid request: {exc}")))
            else:
                self._notice(f"invalid message: {exc}")
            return
        if isinstance(msg, proto.Call):
            self._start_call(msg)
        elif isinstance(msg, proto.Cancel):
            self._cancel(msg.id)
        elif isinstance(msg, proto.Credit):
            with self._lock:
                task = self._tasks.get(msg.id)
            if isinstance(task, _Stream):
                task.add_credit(msg.n)
        elif isinstance(msg, proto.Ping):
            self.send(proto.encode("pong", t=msg.token))
        elif isinstance(msg, proto.Pong):
            pass
        else:
            self._notice("already authenticated")

    def _notice(self, message: str) -> None:
        self.log.warning("connection %s: %s", self.cid, message)
        self.send(proto.encode("notice", msg=message))

    # --- calls -------------------------------------------------------------------------
    def _start_call(self, msg: proto.Call) -> None:
        server = self.server
        reg = server.functions_for(self.namespace).get(msg.fn)
        task: _Call | _Stream
        with self._lock:
            if msg.id in self._tasks:
                duplicate = True
            else:
                duplicate = False
                busy = len(self._tasks) >= server.max_in_flight
                if reg is not None and not busy:
                    task = _Call() if reg.kind in ("sync", "async", "builtin", "remote") else _Stream(
                        self, msg.id, None, reg.kind == "agen", min(msg.window or 1, server.stream_window_max))
                    self._tasks[msg.id] = task
        if duplicate:
            self._notice(f"request id {msg.id} is already in flight; call ignored")
            return
        if busy:
            self.send(proto.encode_failure(msg.id, proto.error_wire(
                "ServerBusy", f"too many calls in flight on this connection (limit {server.max_in_flight})")))
            return
        if reg is None:
            self.send(proto.encode_failure(msg.id, proto.error_wire(
                "FunctionNotFound", f"no function named {msg.fn!r} in this namespace")))
            return
        try:
            self._dispatch(msg, reg, task)
        except PoolClosed:  # the server closed its pool and loop meanwhile
            self.finish(msg.id, task, _refused_at_shutdown(msg.id))

    def _dispatch(self, msg: proto.Call, reg: Any, task: _Call | _Stream) -> None:
        server = self.server
        if reg.kind == "builtin":
            self.finish(msg.id, task, proto.encode_result(msg.id, server.get_registered_functions(self.namespace)))
        elif reg.kind == "sync":
            assert isinstance(task, _Call)
            if self._may_inline(reg.pace):
                self._run_inline(msg.id, task, reg.func, reg.pace, msg.args, msg.kwargs)
            else:
                server.executor().submit(self._run_sync, msg.id, task, reg.func, reg.pace, msg.args, msg.kwargs)
        elif reg.kind == "remote":
            assert isinstance(task, _Call) and reg.link is not None
            reg.link.forward(self, msg, task)
        elif reg.kind == "async":
            assert isinstance(task, _Call)
            loop = server.event_loop()  # first: a refusal must not leave a coroutine unawaited
            task.future = asyncio.run_coroutine_threadsafe(
                self._run_async(msg.id, task, reg.func, msg.args, msg.kwargs), loop)
        else:
            assert isinstance(task, _Stream)
            try:
                task.gen = reg.func(*msg.args, **msg.kwargs)
            except Exception as exc:  # noqa: BLE001 - binding errors go to the caller
                self.finish(msg.id, task, self.failure(msg.id, exc))
                return
            task.start()

    def _result(self, call_id: int, fn: Callable[..., Any], value: Any) -> bytes:
        try:
            return proto.encode_result(call_id, value)
        except SerializationError as exc:
            return proto.encode_failure(call_id, proto.error_wire(
                "SerializationError", f"the result of {getattr(fn, '__name__', '?')} cannot be sent: {exc}"))

    def _run_sync(self, call_id: int, task: _Call, fn: Callable[..., Any], pace: CallPace,
                  args: list[Any], kwargs: dict[str, Any]) -> None:
        if task.cancelled:
            return  # cancelled (or timed out) while it waited for a worker
        payload: bytes | None = None
        started = time.perf_counter()
        try:
            payload = self._result(call_id, fn, fn(*args, **kwargs))
        except _function_errors() as exc:  # the function's error goes to its caller
            payload = self.failure(call_id, exc)
        finally:
            pace.record(time.perf_counter() - started)
            if payload is None:  # SystemExit or the like: the caller still gets an answer
                payload = proto.encode_failure(call_id, proto.error_wire("InternalError", "the call did not complete"))
            self.finish(call_id, task, payload)

    async def _run_async(
        self, call_id: int, task: _Call, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        try:
            payload = self._result(call_id, fn, await fn(*args, **kwargs))
        except asyncio.CancelledError:
            self.finish(call_id, task, None)
            raise
        except _function_errors() as exc:  # the function's error goes to its caller
            payload = self.failure(call_id, exc)
        await asyncio.wrap_future(self.server.executor().run(self.finish, call_id, task, payload))

    def finish(self, call_id: int, task: _Call | _Stream, payload: bytes | None) -> None:
        """A call or stream ended: forget it and send its last message, if still wanted."""
        with self._lock:
            if self._tasks.get(call_id) is not task:
                return  # cancelled meanwhile: nobody waits for this reply
            del self._tasks[call_id]
            if not self._tasks:
                self._idle.notify_all()
        if payload is not None:
            self.send(payload)

    def _cancel(self, call_id: int) -> None:
        with self._lock:
            task = self._tasks.get(call_id)
            if isinstance(task, _Call):
                del self._tasks[call_id]
                if not self._tasks:
                    self._idle.notify_all()
        if task is not None:
            task.cancel()

    def _abandon_all(self) -> None:
        """The peer is gone: cancel what can be cancelled, close every generator."""
        with self._lock:
            tasks = list(self._tasks.values())
            self._tasks = {k: v for k, v in self._tasks.items() if isinstance(v, _Stream)}
            if not self._tasks:
                self._idle.notify_all()
        for task in tasks:
            task.cancel()

    # --- introspection and shutdown ----------------------------------------------------
    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._tasks)

    @property
    def stream_count(self) -> int:
        with self._lock:
            return sum(1 for t in self._tasks.values() if isinstance(t, _Stream))

    def drain(self, deadline: float) -> None:
        """Wait (until *deadline*, monotonic) for calls in flight to finish."""
        with self._idle:
            while self._tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._idle.wait(remaining)
