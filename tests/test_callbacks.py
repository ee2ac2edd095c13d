"""Callables passed as arguments are called back in the client (API §10), through both clients."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask

from easyrpc import CallbackExpired, CallTimeout, ConnectionLost, RemoteError, SerializationError
from easyrpc.server import EasyRpcServer, RemoteCallback

from .conftest import SECRET, wait_for


class Kept:
    """What the server functions keep between calls, for the tests to look at."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.errors: list[BaseException] = []
        self.started = threading.Event()
        self.ended = threading.Event()
        self.ended_at = 0.0
        self.threads: list[str] = []


def build() -> tuple[Flask, EasyRpcServer, Kept]:
    app = Flask(__name__)
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET)
    kept = Kept()

    @rpc.origin
    def echo(x: Any) -> Any:
        return x

    @rpc.origin
    def apply(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kept.threads.append(threading.current_thread().name)
        return fn(*args, **kwargs)

    @rpc.origin
    async def aapply(fn: Callable[..., Any], *args: Any) -> Any:
        return await fn(*args)

    @rpc.origin
    def apply_nested(spec: dict[str, Any]) -> list[Any]:
        return [spec["steps"][0]["run"](1), spec["steps"][1][0](2), spec["plain"]]

    @rpc.origin
    def count_back(n: int, report: Callable[[int], Any]) -> int:
        for i in range(n):
            report(i)
        return n

    @rpc.origin
    def gen_back(n: int, report: Callable[[int], Any]) -> Any:
        for i in range(n):
            yield report(i)

    @rpc.origin
    def reenter(depth: int, cb: Callable[[int], int]) -> int:
        return 0 if depth == 0 else cb(depth) + 1

    @rpc.origin
    def keep(cb: Callable[..., Any]) -> bool:
        kept.callbacks.append(cb)
        return isinstance(cb, RemoteCallback)

    @rpc.origin
    def call_kept() -> str:
        try:
            kept.callbacks[-1]()
        except CallbackExpired as exc:
            return f"{type(exc).__name__}: {exc}"
        return "called"

    @rpc.origin
    def catch(cb: Callable[[], Any]) -> list[Any]:
        try:
            cb()
        except ValueError as exc:
            return [getattr(exc, "remote_type", None), isinstance(exc, RemoteError), str(exc)]
        return []

    @rpc.origin
    def timed(cb: RemoteCallback, limit: float) -> str:
        try:
            cb.with_timeout(limit)()
        except CallTimeout as exc:
            return type(exc).__name__
        return "answered"

    @rpc.origin
    def wait_on(cb: Callable[[], Any]) -> Any:
        kept.started.set()
        try:
            return cb()
        except BaseException as exc:
            kept.errors.append(exc)
            raise
        finally:
            kept.ended_at = time.monotonic()
            kept.ended.set()

    return app, rpc, kept


@pytest.fixture
def server(serve: Any) -> Any:
    app, rpc, kept = build()
    served = serve(app, rpc)
    served.kept = kept
    served.rpc = rpc
    return served


def test_a_callable_argument_is_called_back_and_its_result_returned(server: Any, connect: Any) -> None:
    p = connect(server)
    assert p.apply(lambda a, b=0: a * 10 + b, 4, b=2) == 42
    assert p.echo("plain calls still work") == "plain calls still work"


def test_an_async_def_callback_runs_and_its_result_returns(server: Any, connect: Any) -> None:
    p = connect(server)

    async def twice(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    assert p.apply(twice, 21) == 42


def test_callbacks_at_any_depth_of_the_arguments(server: Any, connect: Any) -> None:
    p = connect(server)
    spec = {"steps": [{"run": lambda x: x + 100}, (lambda x: x * 7,)], "plain": {"callback": [1]}}
    assert p.apply_nested(spec) == [101, 14, {"callback": [1]}]


def test_typed_values_travel_into_and_out_of_a_callback(server: Any, connect: Any) -> None:
    import datetime as dt
    import uuid

    p = connect(server)
    when = dt.datetime(2024, 1, 2, 3, 4, 5)
    seen: list[Any] = []

    def back(value: Any) -> Any:
        seen.append(value)
        return uuid.UUID(int=5)

    assert p.apply(back, when) == uuid.UUID(int=5)
    assert seen == [when]


def test_a_callback_many_times_in_one_call(server: Any, connect: Any) -> None:
    p = connect(server)
    got: list[int] = []
    assert p.count_back(50, got.append) == 50
    assert got == list(range(50))


def test_a_stream_keeps_its_callback_for_every_item(server: Any, connect: Any) -> None:
    p = connect(server)
    assert list(p.gen_back(5, lambda i: i * i)) == [0, 1, 4, 9, 16]


def test_a_callback_that_raises_arrives_typed_on_the_server(server: Any, connect: Any) -> None:
    p = connect(server)

    def bad() -> None:
        raise ValueError("no such thing")

    assert p.catch(bad) == ["ValueError", True, "ValueError: no such thing"]


def test_an_uncaught_callback_error_travels_back_to_the_caller(server: Any, connect: Any) -> None:
    p = connect(server)

    def bad() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError) as info:
        p.apply(bad)
    assert isinstance(info.value, RemoteError)


def test_a_callback_called_after_its_call_ended_raises_callback_expired(server: Any, connect: Any) -> None:
    p = connect(server)
    assert p.keep(lambda: 1) is True
    assert p.call_kept().startswith("CallbackExpired: ")
    assert p.echo(1) == 1


@pytest.mark.parametrize("depth", [1, 5, 10])
def test_a_callback_that_calls_the_server_again_does_not_deadlock(server: Any, connect: Any, depth: int) -> None:
    """Plain callbacks through the blocking proxy, async ones through easyrpc.aio."""
    p = connect(server)
    if connect.kind == "sync":
        def cb(d: int) -> int:
            return int(p.reenter(d - 1, cb))

        assert p.reenter(depth, cb) == depth
    else:
        async def acb(d: int) -> int:
            return int(await p.proxy.reenter(d - 1, acb))

        assert p.reenter(depth, acb) == depth


def test_many_threads_reentering_at_once_do_not_run_out_of_threads(server: Any, open_proxy: Any) -> None:
    """More nested callbacks at once than either side's pool has threads (client 8, server
    32): blocking re-entry, so the blocking proxy (aio re-enters with async def callbacks)."""
    p = open_proxy(server)

    def cb(d: int) -> int:
        return int(p.reenter(d - 1, cb))

    with ThreadPoolExecutor(8) as ex:
        assert list(ex.map(lambda _: p.reenter(6, cb), range(8))) == [6] * 8


def test_a_slow_callback_holds_up_no_other_call(server: Any, connect: Any) -> None:
    p = connect(server)
    release = threading.Event()
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(p.apply, lambda: release.wait(10))
        assert wait_for(lambda: bool(server.kept.threads))
        t0 = time.monotonic()
        for i in range(20):
            assert p.echo(i) == i
        assert time.monotonic() - t0 < 2.0
        release.set()
        assert fut.result(10) is True


def test_a_call_with_callbacks_runs_on_a_worker_not_on_the_hub(server: Any, connect: Any) -> None:
    p = connect(server)
    for _ in range(6):  # sequential calls alone on the connection would run on the spot
        p.apply(lambda: None)
    assert all(name.startswith("easyrpc-worker-") for name in server.kept.threads), server.kept.threads


def test_a_callback_past_the_calls_time_limit_ends_on_the_server_too(server: Any, connect: Any) -> None:
    """The callback's limit is the call's own: the server's wait ends by its own timeout
    or by the caller's cancel, whichever comes first, never later."""
    p = connect(server, timeout=0.3)
    release = threading.Event()
    t0 = time.monotonic()
    with pytest.raises(CallTimeout):
        p.wait_on(lambda: release.wait(5))
    assert server.kept.ended.wait(5)
    assert server.kept.ended_at - t0 < 1.5
    assert isinstance(server.kept.errors[0], (CallTimeout, CallbackExpired))
    release.set()
    assert p.echo(2) == 2


def test_a_callback_with_its_own_time_limit_times_out_on_the_server(server: Any, connect: Any) -> None:
    p = connect(server)
    release = threading.Event()
    assert p.timed(lambda: release.wait(5), 0.2) == "CallTimeout"
    release.set()
    assert p.echo(3) == 3


def test_a_client_gone_while_the_server_waits_fails_the_call_at_once(server: Any, connect: Any) -> None:
    p = connect(server, reconnect=False)
    release = threading.Event()
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(p.wait_on, lambda: release.wait(10))
        assert server.kept.started.wait(5)
        t0 = time.monotonic()
        p.close()
        assert server.kept.ended.wait(5)
        assert server.kept.ended_at - t0 < 1.0
        assert isinstance(server.kept.errors[0], ConnectionLost)
        with pytest.raises(ConnectionLost):
            fut.result(5)
    release.set()


def test_a_value_a_callback_cannot_return_is_refused_typed(server: Any, connect: Any) -> None:
    p = connect(server)
    with pytest.raises(SerializationError):
        p.apply(lambda: {1, 2})


def test_a_non_callable_object_is_still_refused_locally(server: Any, connect: Any) -> None:
    p = connect(server)
    with pytest.raises(SerializationError):
        p.echo(object())


def test_100_concurrent_calls_each_calling_back_100_times_all_complete(server: Any, connect: Any) -> None:
    p = connect(server)
    counts = [0] * 100
    lock = threading.Lock()

    def counter(k: int) -> Callable[[int], None]:
        def report(i: int) -> None:
            with lock:
                assert counts[k] == i
                counts[k] += 1
        return report

    if connect.kind == "sync":
        with ThreadPoolExecutor(100) as ex:
            results = list(ex.map(lambda k: p.count_back(100, counter(k)), range(100)))
    else:
        async def all_of() -> list[int]:
            return list(await asyncio.gather(*(p.proxy.count_back(100, counter(k)) for k in range(100))))

        results = p.run(all_of(), timeout=60)
    assert results == [100] * 100
    assert counts == [100] * 100


def test_async_origin_functions_await_their_callbacks(server: Any, connect: Any) -> None:
    p = connect(server)
    assert p.aapply(lambda x: x + 1, 41) == 42


def test_a_callback_passed_through_a_chain_runs_in_the_client(serve: Any, connect: Any) -> None:
    """A client of A passes a callback to a function that lives on C, through B's link."""
    c_app = Flask("c")
    c_rpc = EasyRpcServer(c_app, "/ws/test", server_secret=SECRET)

    @c_rpc.origin
    def c_apply(fn: Callable[..., Any], n: int) -> list[Any]:
        return [fn(i) for i in range(n)]

    @c_rpc.origin
    def c_raise(fn: Callable[[], Any]) -> str:
        try:
            fn()
        except LookupError as exc:
            return f"caught {getattr(exc, 'remote_type', '?')}"
        return "no error"

    c = serve(c_app, c_rpc)
    b_app = Flask("b")
    b_rpc = EasyRpcServer(b_app, "/ws/test", server_secret=SECRET)
    b = serve(b_app, b_rpc)
    b_rpc.create_server_proxy("127.0.0.1", c.port, "/ws/test", SECRET, max_backoff=0.2)
    a_app = Flask("a")
    a_rpc = EasyRpcServer(a_app, "/ws/test", server_secret=SECRET)
    a = serve(a_app, a_rpc)
    a_rpc.create_server_proxy("127.0.0.1", b.port, "/ws/test", SECRET, max_backoff=0.2)
    p = connect(a)
    assert wait_for(lambda: "c_apply" in p and "c_raise" in p, timeout=5)
    assert p.c_apply(lambda i: i * 3, 4) == [0, 3, 6, 9]

    def missing() -> None:
        raise IndexError("gone")

    assert p.c_raise(missing) == "caught IndexError"
