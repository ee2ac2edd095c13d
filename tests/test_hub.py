"""The per-process I/O hub on loopback: many connections at the cost of one.

One hub thread reads every connection of a process (server and client): a connection
that dies mid-frame frees its waiting handler thread at once; many connections each get
their own replies; one proxy among hundreds reconnects alone; and the client's threads
do not grow with its proxies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from easyrpc.proxy import EasyRpcProxy

from .apps import build_app
from .conftest import SECRET, Served, wait_for
from .faults import Relay
from .rawpeer import RawPeer, masked_frame_header

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(serve: Callable[..., Served]) -> Served:
    app, rpc, _ = build_app()
    served = serve(app, rpc)
    served.rpc = rpc  # type: ignore[attr-defined]
    return served


def _handler_threads() -> list[threading.Thread]:
    """Werkzeug's request threads: one per open WebSocket, waiting for it to end."""
    return [t for t in threading.enumerate() if "process_request_thread" in t.name and t.is_alive()]


def test_a_connection_that_dies_mid_frame_frees_its_handler_thread_at_once(server: Served) -> None:
    rpc = server.rpc  # type: ignore[attr-defined]
    before = len(_handler_threads())
    peer = RawPeer(server.port)
    try:
        peer.authenticate(SECRET)
        assert wait_for(lambda: rpc.connection_count == 1)
        assert len(_handler_threads()) == before + 1
        header, mask = masked_frame_header(4 << 20)  # a 4 MiB frame, of which 64 KiB arrive
        assert peer.send(header + mask + b"x" * (64 << 10))
    finally:
        peer.close()
    start = time.monotonic()
    assert wait_for(lambda: rpc.connection_count == 0 and len(_handler_threads()) == before, timeout=3)
    assert time.monotonic() - start < 1.5  # noticed at once, not at a keepalive deadline (40 s)


def test_a_slow_call_on_one_connection_delays_no_other_connection(server: Served, open_proxy: Any) -> None:
    slow, other = open_proxy(server), open_proxy(server)
    for _ in range(4):
        slow.echo(0)  # a sequential streak: slow's next plain call runs on the hub's leader
    fut = slow.slow.submit(2.0)
    started = time.monotonic()
    assert [other.echo(i) for i in range(20)] == list(range(20))
    assert time.monotonic() - started < 1.0
    assert not fut.done()
    assert fut.result(10) == 2.0


def test_512_connections_each_get_their_own_replies(server: Served) -> None:
    proxies: list[EasyRpcProxy] = []
    try:
        for _ in range(512):
            proxies.append(EasyRpcProxy.create(server.host, server.port, "/ws/test", server_secret=SECRET))
        results: list[Any] = [None] * len(proxies)
        errors: list[BaseException] = []

        def call(k: int) -> None:
            try:
                results[k] = [proxies[j].echo({"j": j, "k": k}) for j in range(k, len(proxies), 8)]
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(k,), name=f"test-caller-{k}") for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors[:3]
        for k in range(8):
            assert results[k] == [{"j": j, "k": k} for j in range(k, len(proxies), 8)]
        easyrpc = {t.name.rstrip("0123456789") for t in threading.enumerate() if t.name.startswith("easyrpc-")}
        # the client's threads do not grow with its proxies (the server, in this process
        # too, runs its own workers and the hub it shares)
        assert not any(name.startswith("easyrpc-reader") for name in easyrpc), easyrpc
    finally:
        for p in proxies:
            p.close()


@pytest.fixture
def relay(server: Served) -> Iterator[Relay]:
    r = Relay(server.port)
    yield r
    r.close()


def test_one_proxy_among_500_reconnects_alone(server: Served, relay: Relay) -> None:
    others: list[EasyRpcProxy] = []
    lone = EasyRpcProxy.create(relay.host, relay.port, "/ws/test", server_secret=SECRET)
    try:
        for _ in range(500):
            others.append(EasyRpcProxy.create(server.host, server.port, "/ws/test", server_secret=SECRET))
        ids = [p.connection_id for p in others]
        lone_id = lone.connection_id
        relay.cut()  # only the relayed proxy's connection drops
        assert wait_for(lambda: lone.connected and lone.connection_id != lone_id, timeout=10)
        assert lone.echo("back") == "back"
        assert [p.connection_id for p in others] == ids  # nobody else reconnected
        assert all(p.echo(i) == i for i, p in enumerate(others))
        # the reconnecting thread has ended: the hub reads the new connection
        assert wait_for(lambda: not any(t.name == "easyrpc-reader" for t in threading.enumerate()), timeout=5)
    finally:
        lone.close()
        for p in others:
            p.close()
