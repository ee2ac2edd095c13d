"""Servers that offer each other's functions: chains, cycles, faults, chaining (API §7)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from easyrpc import CallTimeout, FunctionNotFound, RemoteError
from easyrpc.aio import EasyRpcProxy as AioProxy
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer

from .apps import Counter
from .conftest import SECRET, Served, start_server, wait_for

PATH = "/ws/node"


def node(name: str, counter: Counter | None = None) -> tuple[Flask, EasyRpcServer]:
    app = Flask(f"node-{name}")
    rpc = EasyRpcServer(app, PATH, server_secret=SECRET)

    def whoami() -> str:
        return name

    rpc.origin(whoami, name=f"whoami_{name}")
    if counter is not None:
        @rpc.origin
        def c_echo(value: Any, *, tag: str = "c") -> Any:
            """C's echo."""
            return [tag, value]

        @rpc.origin
        def c_count(n: int) -> Iterator[int]:
            yield from range(n)

        @rpc.origin
        def c_fail() -> None:
            raise KeyError("from C")

        @rpc.origin
        async def c_slow(seconds: float) -> float:
            counter.hit("c_slow.start")
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                counter.hit("c_slow.cancelled")
                raise
            return seconds
    return app, rpc


class Cluster:
    def __init__(self) -> None:
        self.running: list[Served] = []

    def start(self, app: Flask, rpc: EasyRpcServer, port: int = 0) -> Served:
        served = start_server(app, [rpc], port)
        self.running.append(served)
        return served

    def stop(self, served: Served) -> None:
        served.stop()
        self.running.remove(served)

    def close(self) -> None:
        for served in reversed(self.running):
            served.stop()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.close()


def link(rpc: EasyRpcServer, to: Served, **kw: Any) -> Any:
    return rpc.create_server_proxy("127.0.0.1", to.port, PATH, SECRET, max_backoff=0.2, **kw)


def chain(cluster: Cluster) -> tuple[Served, Served, Served, EasyRpcServer, Counter]:
    """A <- B <- C: B offers C's functions, A offers B's; returns the three and C's server."""
    counter = Counter()
    c_app, c_rpc = node("c", counter)
    c = cluster.start(c_app, c_rpc)
    b_app, b_rpc = node("b")
    b = cluster.start(b_app, b_rpc)
    link(b_rpc, c)
    a_app, a_rpc = node("a")
    a = cluster.start(a_app, a_rpc)
    link(a_rpc, b)
    return a, b, c, c_rpc, counter


def test_a_client_of_a_calls_c_through_b(cluster: Cluster) -> None:
    a, b, c, c_rpc, counter = chain(cluster)
    with EasyRpcProxy.create("127.0.0.1", a.port, PATH, server_secret=SECRET, timeout=10) as p:
        assert wait_for(lambda: "c_echo" in p and "whoami_b" in p, timeout=5)
        assert str(inspect.signature(p.c_echo)) == "(value: Any, *, tag: str = 'c') -> Any"
        assert p.c_echo.__doc__ == "C's echo."
        assert p.c_echo(5, tag="x") == ["x", 5]
        assert p.whoami_c() == "c" and p.whoami_b() == "b" and p.whoami_a() == "a"
        assert list(p.c_count(200)) == list(range(200))
        with pytest.raises(KeyError) as info:
            p.c_fail()
        assert isinstance(info.value, RemoteError) and "from C" in info.value.remote_message
        # new functions on C reach A's clients by push, within a second
        c_rpc.origin(lambda: "late", name="c_late")
        start = time.monotonic()
        assert wait_for(lambda: "c_late" in p, timeout=3)
        assert time.monotonic() - start < 1.0
        assert p.c_late() == "late"


def test_timeouts_and_cancellation_propagate_along_the_chain(cluster: Cluster) -> None:
    a, b, c, c_rpc, counter = chain(cluster)
    with EasyRpcProxy.create("127.0.0.1", a.port, PATH, server_secret=SECRET, timeout=0.3) as p:
        assert wait_for(lambda: "c_slow" in p, timeout=5)
        with pytest.raises(CallTimeout):
            p.c_slow(10)
        assert wait_for(lambda: counter.count("c_slow.cancelled") == 1, timeout=1.5)

    async def cancel_from_aio() -> None:
        ap = await AioProxy.create("127.0.0.1", a.port, PATH, server_secret=SECRET)
        try:
            task = asyncio.create_task(ap.c_slow(10))
            await asyncio.to_thread(wait_for, lambda: counter.count("c_slow.start") == 2, 3.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(wait_for, lambda: counter.count("c_slow.cancelled") == 2, 1.5)
        finally:
            await ap.close()

    asyncio.run(asyncio.wait_for(cancel_from_aio(), 20))


def test_a_cycle_neither_loops_nor_echoes(cluster: Cluster) -> None:
    a_app, a_rpc = node("a")
    a = cluster.start(a_app, a_rpc)
    b_app, b_rpc = node("b")
    b = cluster.start(b_app, b_rpc)
    link(a_rpc, b)
    link(b_rpc, a)
    assert wait_for(lambda: {"whoami_a", "whoami_b"} <= {f["name"] for f in a_rpc.get_registered_functions()}
                    and {"whoami_a", "whoami_b"} <= {f["name"] for f in b_rpc.get_registered_functions()}, timeout=5)
    a_view = a_rpc.functions_for("DEFAULT")
    b_view = b_rpc.functions_for("DEFAULT")
    assert a_view["whoami_a"].link is None  # A's own function, not its echo from B
    assert b_view["whoami_b"].link is None
    assert a_view["whoami_b"].description["route"] == [b_rpc.server_id, a_rpc.server_id]
    # Views are cached until an offer changes: the same object after a while means no
    # re-offers are bouncing between the two servers.
    time.sleep(0.3)
    assert a_rpc.functions_for("DEFAULT") is a_view and b_rpc.functions_for("DEFAULT") is b_view
    with EasyRpcProxy.create("127.0.0.1", a.port, PATH, server_secret=SECRET, timeout=5) as p:
        assert p.whoami_b() == "b" and p.whoami_a() == "a"


def test_link_drop_withdraws_functions_and_restore_brings_them_back(cluster: Cluster) -> None:
    a, b, c, c_rpc, counter = chain(cluster)
    with EasyRpcProxy.create("127.0.0.1", a.port, PATH, server_secret=SECRET, timeout=5) as p:
        assert wait_for(lambda: "c_echo" in p, timeout=5)
        held = p.c_echo
        port_b = b.port
        cluster.stop(b)  # B goes down
        assert wait_for(lambda: "c_echo" not in p and "whoami_b" not in p, timeout=2)
        start = time.monotonic()
        with pytest.raises(FunctionNotFound):
            held(1)
        assert time.monotonic() - start < 1.0  # fails fast, no hang
        b2_app, b2_rpc = node("b")
        cluster.start(b2_app, b2_rpc, port=port_b)  # B is back on the same port
        link(b2_rpc, c)
        restored = time.monotonic()
        assert wait_for(lambda: "c_echo" in p, timeout=10)
        assert held(2) == ["c", 2]
        assert time.monotonic() - restored < 5


def test_an_origin_function_chains_to_another_server(cluster: Cluster) -> None:
    counter = Counter()
    c_app, c_rpc = node("c", counter)
    c = cluster.start(c_app, c_rpc)
    a_app, a_rpc = node("a")
    to_c = EasyRpcProxy.create("127.0.0.1", c.port, PATH, server_secret=SECRET, timeout=5)

    @a_rpc.origin
    def via_c(value: Any) -> Any:
        return {"via": to_c.c_echo(value)}

    @a_rpc.origin
    async def via_c_async(value: Any) -> Any:
        ap = await AioProxy.create("127.0.0.1", c.port, PATH, server_secret=SECRET)
        try:
            return {"via": await ap.c_echo(value, tag="aio")}
        finally:
            await ap.close()

    a = cluster.start(a_app, a_rpc)
    try:
        with EasyRpcProxy.create("127.0.0.1", a.port, PATH, server_secret=SECRET, timeout=10) as p:
            assert p.via_c(3) == {"via": ["c", 3]}
            assert p.via_c_async(4) == {"via": ["aio", 4]}
    finally:
        to_c.close()


def replica(name: str) -> tuple[Flask, EasyRpcServer]:
    """A replica of one service: the same function, answering with its own name."""
    app = Flask(f"replica-{name}")
    rpc = EasyRpcServer(app, PATH, server_secret=SECRET)

    @rpc.origin
    def served_by() -> str:
        return name

    return app, rpc


def test_a_link_to_replicas_fails_over_to_the_next(cluster: Cluster) -> None:
    one = cluster.start(*replica("one"))
    two = cluster.start(*replica("two"))
    b_app, b_rpc = node("b")
    b = cluster.start(b_app, b_rpc)
    link_ = b_rpc.create_server_proxy_many([("127.0.0.1", one.port, PATH), f"ws://127.0.0.1:{two.port}{PATH}"],
                                           SECRET, max_backoff=0.2)
    with EasyRpcProxy.create("127.0.0.1", b.port, PATH, server_secret=SECRET, timeout=5) as p:
        assert wait_for(lambda: "served_by" in p, timeout=5)
        assert p.served_by() == "one"  # the first that answers
        cluster.stop(one)

        def two_answers() -> bool:
            try:
                return bool(p.served_by() == "two")
            except (AttributeError, FunctionNotFound, ConnectionError):  # withdrawn while the link reconnects
                return False

        assert wait_for(two_answers, timeout=10)  # the link moved to the next replica
        assert link_.url == f"ws://127.0.0.1:{two.port}{PATH}"  # and says where it is
