"""Shared fixtures: real Flask-Sock servers on 127.0.0.1 and both clients.

* ``serve(app)`` starts a threaded Werkzeug server for a Flask app on a free loopback
  port and stops it (by its own handle) at teardown.
* ``client`` is parametrised over the blocking proxy and ``easyrpc.aio`` (driven through
  :class:`AioAdapter`), so every behavioural test runs against both.
* Every test fails if it leaves ``easyrpc-*`` threads running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from easyrpc._net.hub import hub
from easyrpc._transport import FrameReader
from easyrpc.aio import EasyRpcProxy as AioProxy
from easyrpc.proxy import EasyRpcProxy, engine_of
from easyrpc.server import EasyRpcServer

SECRET = "abcd1234"
# Every secret a test gives a server or a proxy: no log line of the run may contain one
# (``watch_secret`` adds a test's own; the run's check is ``secret_never_logged``).
WATCHED_SECRETS: set[str] = {SECRET}


def watch_secret(*secrets: str) -> None:
    """Add *secrets* to those no log line of the run may contain."""
    WATCHED_SECRETS.update(secrets)


class Served:
    """A running loopback server."""

    def __init__(self, app: Flask, httpd: BaseWSGIServer, thread: threading.Thread, rpcs: list[EasyRpcServer]) -> None:
        self.app = app
        self.httpd = httpd
        self.thread = thread
        self.rpcs = rpcs
        self.host = "127.0.0.1"
        self.port = httpd.server_port

    def stop(self) -> None:
        for rpc in self.rpcs:
            rpc.close(grace=1.0)
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def start_server(app: Flask, rpcs: list[EasyRpcServer], port: int = 0) -> Served:
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-httpd", daemon=True)
    thread.start()
    return Served(app, httpd, thread, rpcs)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """Start servers for Flask apps; each is stopped at teardown."""
    running: list[Served] = []

    def _serve(app: Flask, *rpcs: EasyRpcServer, port: int = 0) -> Served:
        served = start_server(app, list(rpcs), port)
        running.append(served)
        return served

    yield _serve
    for served in reversed(running):
        served.stop()


class AioAdapter:
    """Drives an ``easyrpc.aio`` proxy from a test thread through its own event loop.

    ``adapter.f(...)`` awaits ``proxy.f(...)`` on the loop; generator functions return a
    blocking iterator that awaits ``__anext__`` item by item. The adapter's loop thread is
    a test thread, not an ``easyrpc-*`` one.
    """

    kind = "aio"

    def __init__(self, loop: asyncio.AbstractEventLoop, proxy: AioProxy) -> None:
        self.loop = loop
        self.proxy = proxy

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = self.run(_invoke(fn, args, kwargs))
            if hasattr(result, "__anext__"):
                return _SyncIter(self, result)
            return result

        call.__wrapped__ = fn  # type: ignore[attr-defined]
        return call

    def __getattr__(self, name: str) -> Any:
        return self._wrap(getattr(self.proxy, name))

    def __getitem__(self, name: str) -> Any:
        return self._wrap(self.proxy[name])

    def __contains__(self, name: str) -> bool:
        return name in self.proxy

    @property
    def proxy_funcs(self) -> dict[str, Callable[..., Any]]:
        return {name: self._wrap(fn) for name, fn in self.proxy.proxy_funcs.items()}

    def close(self) -> None:
        self.run(self.proxy.close())


async def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    if asyncio.iscoroutine(result):
        return await result
    return result


class _SyncIter:
    def __init__(self, adapter: AioAdapter, it: Any) -> None:
        self.adapter = adapter
        self.it = it

    def __iter__(self) -> _SyncIter:
        return self

    def __next__(self) -> Any:
        try:
            return self.adapter.run(self.it.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self.adapter.run(self.it.aclose())


@pytest.fixture(scope="session")
def aio_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-aio-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture(params=["sync", "aio"])
def connect(request: pytest.FixtureRequest, aio_loop: asyncio.AbstractEventLoop) -> Iterator[Callable[..., Any]]:
    """``connect(served, path, **kw)``: a proxy of the parametrised kind, closed at teardown."""
    opened: list[Any] = []

    def _connect(served: Served, path: str = "/ws/test", secret: str = SECRET, **kwargs: Any) -> Any:
        if request.param == "sync":
            proxy: Any = EasyRpcProxy.create(served.host, served.port, path, server_secret=secret, **kwargs)
        else:
            aproxy = asyncio.run_coroutine_threadsafe(
                AioProxy.create(served.host, served.port, path, server_secret=secret, **kwargs), aio_loop).result(30)
            proxy = AioAdapter(aio_loop, aproxy)
        opened.append(proxy)
        return proxy

    _connect.kind = request.param  # type: ignore[attr-defined]
    yield _connect
    for proxy in opened:
        proxy.close()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves easyrpc-* threads running after its fixtures are torn down."""
    before = {t.ident for t in threading.enumerate()}
    yield
    # autouse: set up first, so torn down after the test's own fixtures
    deadline = time.monotonic() + 5
    while True:
        # The hub's threads run while it serves any connection (a module-scoped server's,
        # say), and its leader may change during a test: they leak only once it serves none.
        hub_busy = hub().peer_count > 0
        leaked = [t.name for t in threading.enumerate()
                  if t.name.startswith("easyrpc-") and t.ident not in before and t.is_alive()
                  and not (hub_busy and t.name.startswith("easyrpc-hub-"))]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"threads left running: {leaked}"


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll *predicate* until true or *timeout*; returns its last value (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def server_readers(monkeypatch: pytest.MonkeyPatch) -> weakref.WeakSet[FrameReader]:
    """The server-side socket readers built from now on (``FrameReader(masked=True)``: a
    server reads the client's masked frames), each as long as its connection holds it:
    how a test finds a server connection's reader without reaching into the connection."""
    readers: weakref.WeakSet[FrameReader] = weakref.WeakSet()
    init = FrameReader.__init__

    def recording_init(self: FrameReader, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if kwargs.get("masked"):
            readers.add(self)

    monkeypatch.setattr(FrameReader, "__init__", recording_init)
    return readers


async def loop_reader(proxy: AioProxy, timeout: float = 5.0) -> Any:
    """The running loop's reader of *proxy*, once it holds the reading role (bounded).

    The reader thread hands the role to a loop only after it has settled the loop's
    call, so the awaiting task can resume before the hand-over: make calls until the
    loop has it, and fail if it never gets it within *timeout* s."""

    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while True:
        role = engine_of(proxy).loop_reader
        if role is not None and role.loop is loop:
            return role
        assert time.monotonic() < deadline, \
            f"the loop never got the reading role (it is {engine_of(proxy).reading_role!r})"
        assert await proxy.echo(0) == 0


class _SecretWatch(logging.Handler):
    """Sees every log record of the whole run, at every level, and notes any that shows a watched secret."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot format cannot leak through us either
            return
        if any(secret in text for secret in WATCHED_SECRETS):
            self.leaks.append(text[:300])


@pytest.fixture(scope="session", autouse=True)
def secret_never_logged() -> Iterator[None]:
    """No log line of the whole test run contains a watched secret (checked at the end of the run)."""
    watch = _SecretWatch()
    watch.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(exc_text)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(watch)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(watch)
    root.setLevel(old_level)
    assert not watch.leaks, f"the secret appeared in {len(watch.leaks)} log lines, e.g. {watch.leaks[0]}"


# --- proxies and raw sockets closed after the test ---------------------------------------
@pytest.fixture
def open_proxy() -> Iterator[Callable[..., EasyRpcProxy]]:
    opened: list[EasyRpcProxy] = []

    def _open(served: Served, **kwargs: Any) -> EasyRpcProxy:
        proxy = EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret=SECRET, **kwargs)
        opened.append(proxy)
        return proxy

    yield _open
    for proxy in opened:
        proxy.close()


@pytest.fixture
def raw_sockets() -> Iterator[list[websocket.WebSocket]]:
    sockets: list[websocket.WebSocket] = []
    yield sockets
    for ws in sockets:
        with contextlib.suppress(Exception):
            ws.close(timeout=0.2)
        with contextlib.suppress(Exception):
            ws.shutdown()
