"""No call hangs, none is lost or cross-delivered: faults injected on loopback (API §2, §5)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import wait
from typing import Any

import pytest
import websocket

from easyrpc import CallTimeout, ConnectionLost, ServerBusy
from easyrpc._core.frames import OP_CLOSE, FrameParser
from easyrpc.proxy import EasyRpcProxy

from .apps import build_app
from .conftest import SECRET, wait_for
from .faults import Relay, ServerProcess


@pytest.fixture
def server(serve: Any) -> Any:
    app, rpc, counter = build_app()
    served = serve(app, rpc)
    served.counter = counter
    served.rpc = rpc
    return served


@pytest.fixture
def relay(server: Any) -> Iterator[Relay]:
    r = Relay(server.port)
    yield r
    r.close()


@pytest.fixture
def process() -> Iterator[ServerProcess]:
    proc = ServerProcess(0)
    yield proc
    proc.stop()


def test_killed_server_fails_calls_in_flight_at_once_then_reconnects(process: ServerProcess, connect: Any) -> None:
    p = connect(process, path="/ws/test")
    assert p.echo(1) == 1
    fn = p.proxy.echo if connect.kind == "aio" else p.echo  # a proxy held from before
    errors: list[BaseException] = []
    failed_at: list[float] = []

    def slow_call() -> None:
        try:
            p.slow(10)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)
            failed_at.append(time.monotonic())

    t = threading.Thread(target=slow_call)
    t.start()
    time.sleep(0.3)  # let the call reach the server
    killed_at = time.monotonic()
    process.kill()
    t.join(5)
    assert errors and isinstance(errors[0], ConnectionLost)
    assert failed_at[0] - killed_at < 1.0
    process.start()  # same port
    assert wait_for(lambda: p.echo("back") == "back" if _connected(p) else False, timeout=10)
    if connect.kind == "aio":
        assert p.run(fn("old proxy")) == "old proxy"
    else:
        assert fn("old proxy") == "old proxy"


def _connected(p: Any) -> bool:
    return bool((p.proxy if hasattr(p, "proxy") else p).connected)


def test_tcp_drop_without_close_frame_fails_in_flight_calls(relay: Relay, server: Any, connect: Any) -> None:
    p = connect(relay)
    assert p.echo(1) == 1
    errors: list[BaseException] = []

    def call() -> None:
        try:
            p.slow(5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    assert wait_for(lambda: server.rpc.active_calls == 1, timeout=3)
    cut_at = time.monotonic()
    relay.cut()
    t.join(5)
    assert errors and isinstance(errors[0], ConnectionLost)
    assert time.monotonic() - cut_at < 1.0
    assert wait_for(lambda: _connected(p), timeout=10)
    assert p.echo("again") == "again"


def test_stalled_server_is_detected_by_keepalive(process: ServerProcess) -> None:
    p = EasyRpcProxy.create("127.0.0.1", process.port, "/ws/test", server_secret=SECRET,
                            ping_interval=0.3, ping_timeout=0.3, connect_timeout=1.0)
    try:
        assert p.echo(1) == 1
        fut = p.slow.submit(0.1)
        fut.result(5)
        process.stop_signal()
        stopped_at = time.monotonic()
        fut = p.echo.submit("never answered")
        with pytest.raises(ConnectionLost):
            fut.result(5)
        assert time.monotonic() - stopped_at < 2.0  # ~0.6 s keepalive + a tick
        process.cont_signal()
        assert wait_for(lambda: p.connected, timeout=10)
        assert p.echo("resumed") == "resumed"
    finally:
        p.close()


def test_calls_while_reconnecting_wait_then_fail_clearly(process: ServerProcess) -> None:
    p = EasyRpcProxy.create("127.0.0.1", process.port, "/ws/test", server_secret=SECRET, connect_timeout=0.5)
    try:
        assert p.echo(1) == 1
        process.kill()
        assert wait_for(lambda: not p.connected, timeout=3)
        start = time.monotonic()
        with pytest.raises(CallTimeout):
            p.echo("no server")
        assert 0.3 < time.monotonic() - start < 2.0
        fut = p.echo.with_timeout(10).submit("queued")  # made while reconnecting, sent on reconnect
        process.start()
        assert fut.result(10) == "queued"
    finally:
        p.close()


def test_server_silent_client_is_dropped_by_server_keepalive(serve: Any) -> None:
    app, rpc, _ = build_app(ping_interval=0.2, ping_timeout=0.3)
    served = serve(app, rpc)
    from easyrpc import _protocol as proto
    from easyrpc._handshake import Secret, new_nonce

    ws = websocket.create_connection(f"ws://127.0.0.1:{served.port}/ws/test", timeout=5)
    try:
        hello = proto.parse_server(ws.recv())
        assert isinstance(hello, proto.Hello)
        ws.send(proto.encode("auth", token=Secret(SECRET).client_token(hello.nonce, new_nonce(), "DEFAULT", False)))
        assert isinstance(proto.parse_server(ws.recv()), proto.Welcome)
        assert wait_for(lambda: rpc.connection_count == 1, timeout=2)
        # never answer the server's pings: it must give up on us
        assert wait_for(lambda: rpc.connection_count == 0, timeout=3)
    finally:
        ws.close()


def test_graceful_shutdown_lets_short_calls_finish_and_fails_long_ones_fast(serve: Any) -> None:
    app, rpc, _ = build_app()
    served = serve(app, rpc)
    p = EasyRpcProxy.create("127.0.0.1", served.port, "/ws/test", server_secret=SECRET, reconnect=False)
    try:
        short = p.slow.submit(0.3)
        long = p.aslow.submit(30)
        time.sleep(0.1)
        start = time.monotonic()
        rpc.close(grace=1.0)
        assert short.result(5) == 0.3  # finished within the grace period
        with pytest.raises(ConnectionLost, match="going away"):
            long.result(5)
        assert time.monotonic() - start < 2.5
    finally:
        p.close()


def test_server_refuses_calls_past_its_in_flight_cap(serve: Any) -> None:
    app, rpc, _ = build_app(max_in_flight=2)
    served = serve(app, rpc)
    with EasyRpcProxy.create("127.0.0.1", served.port, "/ws/test", server_secret=SECRET) as p:
        futs = [p.aslow.submit(0.5) for _ in range(2)]
        assert wait_for(lambda: rpc.active_calls == 2, timeout=2)
        with pytest.raises(ServerBusy):
            p.echo(1)
        assert [f.result(5) for f in futs] == [0.5, 0.5]
        assert p.echo(2) == 2


def test_client_in_flight_cap_makes_calls_wait_not_fail(server: Any) -> None:
    with EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET, max_in_flight=2) as p:
        results: list[float] = []
        threads = [threading.Thread(target=lambda: results.append(p.slow(0.2))) for _ in range(6)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == [0.2] * 6
        assert time.monotonic() - start >= 0.55  # 3 waves of 2


def test_flood_of_clients_nothing_lost_duplicated_or_cross_delivered(server: Any) -> None:
    clients, calls = 20, 500
    proxies = [EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET) for _ in range(clients)]
    bad: list[str] = []
    seen: dict[int, int] = {}
    lock = threading.Lock()
    try:
        def run(c: int) -> None:
            p = proxies[c]
            futs = []
            for i in range(calls):
                futs.append((i, p.echo.submit([c, i])))
                if len(futs) >= 50:
                    _check(c, futs)
                    futs = []
            _check(c, futs)

        def _check(c: int, futs: list[Any]) -> None:
            wait([f for _, f in futs], timeout=30)
            for i, f in futs:
                got = f.result(0)
                if got != [c, i]:
                    bad.append(f"client {c} call {i} got {got}")
                with lock:
                    seen[c * calls + i] = seen.get(c * calls + i, 0) + 1

        threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for p in proxies:
            p.close()
    assert bad == []
    assert len(seen) == clients * calls and set(seen.values()) == {1}


def test_list_nested_100000_deep_round_trips(server: Any, connect: Any) -> None:
    p = connect(server)
    value: list[Any] = []
    cur = value
    for _ in range(100_000):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    out = p.echo(value)
    depth = 0
    while out:
        out = out[0]
        depth += 1
    assert depth == 100_000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_100_mb_string_round_trips(server: Any, connect: Any) -> None:
    p = connect(server)
    big = "x" * (100 * 1024 * 1024)
    assert p.echo(big) == big


def test_a_stalled_consumer_blocks_only_its_own_connection(relay: Relay, server: Any) -> None:
    """A client that stops reading while big replies are owed stalls only itself; others carry on."""
    stalled = EasyRpcProxy.create(relay.host, relay.port, "/ws/test", server_secret=SECRET, ping_interval=60)
    healthy = EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET)
    try:
        relay.stall_downstream()
        big = "z" * 4_000_000
        futs = [stalled.echo.submit(big) for _ in range(4)]  # ~16 MB owed to a peer that reads nothing
        for i in range(200):
            assert healthy.echo(i) == i
        assert list(healthy.count_up(50)) == list(range(50))
        assert not all(f.done() for f in futs)  # the stalled side really was stuck meanwhile
        relay.resume()
        assert all(f.result(30) == big for f in futs)  # and nothing was lost meanwhile
    finally:
        stalled.close()
        healthy.close()


def test_server_close_is_bounded_by_its_grace_period(serve: Any) -> None:
    """close(grace) returns after about grace seconds even while a plain function still runs."""
    app, rpc, _ = build_app()
    served = serve(app, rpc)
    with EasyRpcProxy.create("127.0.0.1", served.port, "/ws/test", server_secret=SECRET, reconnect=False) as p:
        fut = p.slow.submit(2.0)
        assert wait_for(lambda: rpc.active_calls == 1, timeout=2)
        start = time.monotonic()
        rpc.close(grace=0.3)
        assert time.monotonic() - start < 1.2
        with pytest.raises(ConnectionLost):
            fut.result(5)


def test_a_cancelled_future_counts_as_done_for_wait_and_as_completed(server: Any) -> None:
    """cancel() notifies: concurrent.futures.wait() and as_completed() see the future done."""
    from concurrent.futures import as_completed

    with EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET) as p:
        fut = p.aslow.submit(5)
        assert fut.cancel() and fut.cancel()
        done, not_done = wait([fut], timeout=1)
        assert done == {fut} and not not_done
        assert list(as_completed([fut], timeout=1)) == [fut]
        assert wait_for(lambda: server.counter.count("aslow.cancelled") == 1, timeout=2)


def test_finished_calls_are_not_kept_alive_until_their_deadline(server: Any) -> None:
    """A call with a time limit that has finished is freed at once, with its request and result."""
    import gc
    import weakref

    with EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET, timeout=60) as p:
        fut = p.echo.submit("x" * 1_000_000)
        assert len(fut.result(10)) == 1_000_000
        assert fut.payload == b""  # the sent request is not kept
        ref = weakref.ref(fut)
        del fut
        gc.collect()
        assert ref() is None


def test_server_closing_during_a_handshake_sends_no_bye_before_the_welcome(
        serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection is registered before its welcome goes out; a server.close() in that
    window must not send 'bye' (a message for welcomed proxies) ahead of the welcome."""
    app, rpc, _ = build_app()
    served = serve(app, rpc)
    in_welcome = threading.Event()
    closed = threading.Event()
    orig = rpc.get_registered_functions

    def slow(namespace: str = "DEFAULT", access: Any = None) -> Any:
        if threading.current_thread().name.startswith("Thread") and not in_welcome.is_set():
            in_welcome.set()  # the handshake thread, after add_connection, before the welcome
            closed.wait(5)
        return orig(namespace, access)

    monkeypatch.setattr(rpc, "get_registered_functions", slow)
    closer = threading.Thread(target=lambda: (in_welcome.wait(5), rpc.close(grace=0), closed.set()),
                              name="test-closer", daemon=True)
    closer.start()
    with pytest.raises(ConnectionError) as info:
        EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret=SECRET, reconnect=False)
    closer.join(5)
    assert in_welcome.is_set()
    assert "unexpected reply" not in str(info.value), info.value


def test_an_idle_stream_at_server_close_starts_no_new_threads(serve: Any) -> None:
    """Closing the server closes an idle generator without building a new worker pool."""
    app, rpc, _ = build_app()
    served = serve(app, rpc)
    before = {t.ident for t in threading.enumerate()}
    p = EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret=SECRET, reconnect=False,
                            stream_window=2)
    try:
        it = p.forever()
        assert next(it) == 0
        assert wait_for(lambda: rpc.active_streams == 1)
        rpc.close(grace=0.2)
        assert wait_for(lambda: rpc.connection_count == 0)
    finally:
        p.close()

    def leaked() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t.name.startswith("easyrpc-") and t.ident not in before and t.is_alive()
                and not t.name.startswith(("easyrpc-dispatch", "easyrpc-reader"))]

    assert wait_for(lambda: not leaked(), timeout=3), leaked()


def test_a_call_on_a_proxy_that_lost_its_connection_for_good_fails_at_once(serve: Any) -> None:
    """reconnect=False: once the connection is gone, a new call is ConnectionLost at once,
    not a wait for a connection that never comes (CallTimeout after its limit)."""
    app, rpc, _ = build_app()
    served = serve(app, rpc)
    p = EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret=SECRET, reconnect=False)
    try:
        assert p.good_func_a(1, 5, 7)
        rpc.close(grace=0)
        assert wait_for(lambda: not p.connected)
        start = time.monotonic()
        with pytest.raises(ConnectionLost):
            p.good_func_a.with_timeout(3)(1, 5, 7)
        assert time.monotonic() - start < 1
        with pytest.raises(ConnectionLost):
            p.good_func_a.submit(1, 5, 7).result(3)
    finally:
        p.close()


def _client_frames(up: bytes) -> list[tuple[int, bytes]]:
    """The frames a client sent after its HTTP upgrade request, unmasked, in order."""
    _, _, frames = bytes(up).partition(b"\r\n\r\n")
    parser = FrameParser(masked=True)
    parser.feed(frames)
    out = []
    while (msg := parser.next_message()) is not None:
        out.append((msg[0], bytes(msg[1])))
    return out


def test_the_client_answers_a_servers_closing_handshake_with_its_own_close_frame(serve: Any) -> None:
    """RFC 6455 §5.5.1: a server that closes (here: shutting down, a bye and then its close
    frame) gets the client's close frame back before the client drops the connection."""
    app, rpc, _ = build_app()
    served = serve(app, rpc)
    relay = Relay(served.port, record=True)
    try:
        with EasyRpcProxy.create("127.0.0.1", relay.port, "/ws/test", server_secret=SECRET, reconnect=False) as p:
            assert p.echo(1) == 1
            assert relay.recorded is not None
            assert all(op != OP_CLOSE for op, _ in _client_frames(relay.recorded["up"]))
            rpc.close(grace=1.0)
            assert wait_for(lambda: any(op == OP_CLOSE for op, _ in _client_frames(relay.recorded["up"])), 5)
            with pytest.raises(ConnectionLost, match="going away"):
                p.echo(2)
        closes = [body for op, body in _client_frames(relay.recorded["up"]) if op == OP_CLOSE]
        assert len(closes) == 1 and int.from_bytes(closes[0][:2], "big") == 1000  # once, a normal close
    finally:
        relay.close()
