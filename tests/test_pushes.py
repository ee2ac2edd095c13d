"""Functions a proxy offers are called by the server whenever it likes, until the
connection closes: subscriptions and notifications (API §10), through both clients."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import wait as futures_wait
from typing import Any

import pytest
from flask import Flask

from easyrpc import CallTimeout, ConnectionLost, FunctionNotFound
from easyrpc.server import Caller, EasyRpcServer, caller

from .conftest import SECRET, wait_for


class Hub:
    def __init__(self) -> None:
        self.subscribers: list[Caller] = []
        self.lock = threading.Lock()


def build() -> tuple[Flask, EasyRpcServer, Hub]:
    app = Flask(__name__)
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET)
    subs = Hub()

    @rpc.origin
    def echo(x: Any) -> Any:
        return x

    @rpc.origin
    def subscribe() -> str:
        c = caller()
        with subs.lock:
            subs.subscribers.append(c)
        return c.connection_id

    @rpc.origin
    def publish(event: Any) -> list[Any]:
        with subs.lock:
            targets = list(subs.subscribers)
        return [c.on_event(event) for c in targets]

    @rpc.origin
    async def apublish(event: Any) -> list[Any]:
        return [await c.call("on_event", event) for c in list(subs.subscribers)]

    @rpc.origin
    def ask_unknown() -> list[str]:
        try:
            caller().call("secret_admin_function", 1)
        except FunctionNotFound as exc:
            return [exc.remote_type, str(exc)]
        return []

    @rpc.origin
    def fan_out(cb: Any, n: int) -> list[Any]:
        futures = [cb.submit(i) for i in range(n)]  # a callback's calls in flight together
        return [f.result(10) for f in futures]

    @rpc.origin
    def gen_pushes(n: int) -> Any:
        c = caller()
        for i in range(n):
            yield c.on_event(i)

    return app, rpc, subs


@pytest.fixture
def server(serve: Any) -> Any:
    app, rpc, subs = build()
    served = serve(app, rpc)
    served.subs = subs
    return served


def _offer_collector(p: Any, connect: Any, got: list[Any], *, use_async: bool = False) -> None:
    target = p.proxy if connect.kind == "aio" else p
    if use_async:
        @target.offer(name="on_event")
        async def handler(event: Any) -> str:
            await asyncio.sleep(0)
            got.append(event)
            return f"got {event}"
    else:
        @target.offer
        def on_event(event: Any) -> str:
            got.append(event)
            return f"got {event}"


# async def offered functions belong to easyrpc.aio: the blocking proxy offers plain ones
@pytest.mark.parametrize(("connect", "use_async"), [("sync", False), ("aio", False), ("aio", True)],
                         indirect=["connect"], ids=["sync-plain", "aio-plain", "aio-async"])
def test_the_server_calls_an_offered_function_during_a_call(server: Any, connect: Any, use_async: bool) -> None:
    p = connect(server)
    got: list[Any] = []
    _offer_collector(p, connect, got, use_async=use_async)
    p.subscribe()
    assert p.publish("a") == ["got a"]
    assert p.apublish("b") == ["got b"]
    assert got == ["a", "b"]


def test_the_server_pushes_after_the_call_returned_from_any_thread(server: Any, connect: Any) -> None:
    p1, p2 = connect(server), connect(server)
    got1: list[Any] = []
    got2: list[Any] = []
    _offer_collector(p1, connect, got1)
    _offer_collector(p2, connect, got2)
    p1.subscribe()
    p2.subscribe()
    for c in server.subs.subscribers:  # this test's thread: no call is running
        assert c.on_event({"n": 1}) == "got {'n': 1}"
    assert got1 == got2 == [{"n": 1}]


def test_an_offered_function_called_in_a_stream(server: Any, connect: Any) -> None:
    p = connect(server)
    got: list[Any] = []
    _offer_collector(p, connect, got)
    assert list(p.gen_pushes(3)) == ["got 0", "got 1", "got 2"]


def test_a_name_not_offered_is_refused_without_naming_anything(server: Any, connect: Any) -> None:
    p = connect(server)
    got: list[Any] = []
    _offer_collector(p, connect, got)
    remote_type, message = p.ask_unknown()
    assert remote_type == "FunctionNotFound"
    assert "secret_admin_function" not in message and "on_event" not in message


def test_a_withdrawn_function_can_no_longer_be_called(server: Any, connect: Any) -> None:
    p = connect(server)
    got: list[Any] = []
    _offer_collector(p, connect, got)
    p.subscribe()
    target = p.proxy if connect.kind == "aio" else p
    assert target.withdraw("on_event") is True
    with pytest.raises(FunctionNotFound):
        server.subs.subscribers[0].on_event(1)
    assert got == []


def test_caller_outside_a_served_function_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        caller()


def test_pushing_to_a_closed_connection_fails_at_once(server: Any, connect: Any) -> None:
    p = connect(server, reconnect=False)
    got: list[Any] = []
    _offer_collector(p, connect, got)
    p.subscribe()
    c = server.subs.subscribers[0]
    assert c.connected
    p.close()
    assert wait_for(lambda: not c.connected)
    with pytest.raises(ConnectionLost):
        c.on_event(1)


def test_submit_pushes_to_many_clients_at_once(server: Any, connect: Any) -> None:
    """Ten clients' handlers wait for each other (a barrier): only pushes in flight
    together, not one after the other, let them all through."""
    n = 10
    barrier = threading.Barrier(n, timeout=10)
    proxies = [connect(server) for _ in range(n)]
    for p in proxies:
        target = p.proxy if connect.kind == "aio" else p

        @target.offer(name="on_event")
        def meet(event: Any) -> int:
            return barrier.wait() + event  # raises BrokenBarrierError if the others never come

        p.subscribe()
    futures = [c.on_event.submit(100) for c in server.subs.subscribers]
    assert sorted(f.result(20) for f in futures) == list(range(100, 100 + n))


def _offer_held(p: Any, connect: Any) -> threading.Event:
    """Offer an on_event that answers (its event) only once the returned Event is set; subscribe."""
    release = threading.Event()
    target = p.proxy if connect.kind == "aio" else p

    @target.offer
    def on_event(event: Any) -> Any:
        release.wait(10)
        return event

    p.subscribe()
    return release


def test_a_submitted_push_fails_by_its_time_limit_and_cancels_cleanly(server: Any, connect: Any) -> None:
    p = connect(server)
    release = _offer_held(p, connect)
    c = server.subs.subscribers[0]
    late = c.with_timeout(0.2).on_event.submit(1)
    with pytest.raises(CallTimeout):
        late.result(5)  # nobody waited on it: the connection's timer failed it
    dropped = c.on_event.submit(2)
    assert dropped.cancel() and dropped.cancelled()
    release.set()
    assert c.on_event(3) == 3  # the late answers are dropped; the connection carries on
    assert p.echo("still") == "still"


def test_a_submitted_push_fails_when_the_client_goes(server: Any, connect: Any) -> None:
    p = connect(server, reconnect=False)
    entered = threading.Event()
    target = p.proxy if connect.kind == "aio" else p

    @target.offer
    def on_event(event: Any) -> Any:
        entered.set()
        threading.Event().wait(3)  # never answers in time
        return event

    p.subscribe()
    fut = server.subs.subscribers[0].on_event.submit(1)
    assert entered.wait(10)
    p.close()
    with pytest.raises(ConnectionLost):
        fut.result(10)


def test_a_callback_submitted_many_times_at_once(server: Any, connect: Any) -> None:
    p = connect(server)
    assert p.fan_out(lambda i: i * 2, 5) == [0, 2, 4, 6, 8]


def test_a_submitted_push_runs_its_done_callbacks_off_the_hub(server: Any, connect: Any) -> None:
    """A done-callback is user code, and may push again and wait: never on the thread
    that reads every connection (that would stall them all)."""
    p = connect(server)
    got: list[Any] = []
    _offer_collector(p, connect, got)
    p.subscribe()
    c = server.subs.subscribers[0]
    ran: list[tuple[str, Any]] = []
    done = threading.Event()

    def then(fut: Any) -> None:  # pushes again from the callback, and waits for the answer
        ran.append((threading.current_thread().name, c.on_event("from the callback")))
        done.set()

    c.on_event.submit(1).add_done_callback(then)
    assert done.wait(10)
    assert ran[0][1] == "got from the callback" and not ran[0][0].startswith("easyrpc-hub")
    assert p.echo("ok") == "ok"


def test_a_cancelled_push_counts_as_done_for_wait(server: Any, connect: Any) -> None:
    p = connect(server)
    release = _offer_held(p, connect)
    fut = server.subs.subscribers[0].on_event.submit(1)
    assert fut.cancel()
    done, not_done = futures_wait([fut], timeout=5)
    assert done == {fut} and not not_done
    release.set()


def test_offered_functions_named_like_caller_methods_are_reached_by_call(server: Any, connect: Any) -> None:
    p = connect(server)
    target = p.proxy if connect.kind == "aio" else p

    @target.offer
    def submit(x: Any) -> Any:  # the client's own "submit"
        return ["client submit", x]

    p.subscribe()
    c = server.subs.subscribers[0]
    assert c.call("submit", 1) == ["client submit", 1]
    assert c.submit("submit", 2).result(10) == ["client submit", 2]
    with pytest.raises(TypeError, match="is a str"):
        c.call(5)  # type: ignore[arg-type]  # never a callback's id
