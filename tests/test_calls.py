"""Behaviour of calls through both clients against a real loopback server (API §1, §2, §4, §5)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

import easyrpc
from easyrpc import CallTimeout, FunctionNotFound, RemoteError, SerializationError
from easyrpc._pool import PoolClosed, WorkerPool
from easyrpc.proxy import ClientOptions, EasyRpcProxy, engine_of
from easyrpc.server import EasyRpcServer

from .apps import build_app
from .conftest import SECRET, Served, wait_for


@pytest.fixture
def server(serve: Any) -> Any:
    app, rpc, counter = build_app()
    served = serve(app, rpc)
    served.counter = counter
    return served


def test_basic_call_returns_origin_result(server: Any, connect: Any) -> None:
    p = connect(server)
    assert p.good_func_a(1, 5, 7) == {"good_func_a": [1, 5, 7]}
    assert p.proxy_funcs["good_func_a"](1, 5, 7) == {"good_func_a": [1, 5, 7]}
    assert p["good_func_a"](1, 5, 7) == {"good_func_a": [1, 5, 7]}
    assert p.good_func_c(1, keyword="value") == {"good_func_c": [1, {"keyword": "value"}]}


def test_membership_and_unknown_names(server: Any, connect: Any) -> None:
    p = connect(server)
    assert "good_func_a" in p
    assert "nope" not in p
    with pytest.raises(AttributeError):
        p.nope  # noqa: B018
    with pytest.raises(KeyError):
        p["nope"]
    assert "reset" not in p  # another namespace's function is invisible


def test_flask_routes_live_beside_rpc(server: Any, connect: Any) -> None:
    p = connect(server)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/hello", timeout=5) as resp:
        assert resp.read() == b"plain flask route"
    assert p.echo(3) == 3


def test_signature_name_doc_and_annotations_are_the_origins(server: Any, connect: Any) -> None:
    p = connect(server)
    fn = p.proxy.annotated if connect.kind == "aio" else p.annotated
    assert fn.__name__ == "annotated"
    assert fn.__doc__.startswith("Echo the arguments it was given.")
    assert str(inspect.signature(fn)) == (
        "(x: int, y: Optional[str] = None, *args: float, flag: bool = False, **kw: Any) -> dict[str, Any]")
    good_c = p.proxy.good_func_c if connect.kind == "aio" else p.good_func_c
    assert str(inspect.signature(good_c)) == "(a, **kw)"
    if connect.kind == "aio":
        assert inspect.iscoroutinefunction(fn)


def test_arguments_bind_locally_and_defaults_stay_on_the_server(server: Any, connect: Any) -> None:
    p = connect(server)
    assert p.annotated(1) == {"x": 1, "y": None, "args": [], "flag": False, "kw": {}}
    assert p.annotated(1, "a", 2.5, 3.5, flag=True, z=1) == {
        "x": 1, "y": "a", "args": [2.5, 3.5], "flag": True, "kw": {"z": 1}}
    assert p.posonly(1) == [1, 2, 3]
    assert p.posonly(1, c=9) == [1, 2, 9]
    assert p.posonly(1, 5, 6) == [1, 5, 6]


def test_wrong_arguments_raise_typeerror_and_send_nothing(server: Any, connect: Any) -> None:
    p = connect(server)
    before = server.counter.count("good_func_a")
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        p.good_func_a(1, 5)
    with pytest.raises(TypeError):
        p.good_func_a(1, 5, 7, 8)
    with pytest.raises(TypeError, match="unexpected keyword"):
        p.good_func_a(1, 5, 7, d=1)
    with pytest.raises(TypeError):
        p.posonly(a=1)
    assert p.echo("sync point") == "sync point"  # any call sent earlier has arrived by now
    assert server.counter.count("good_func_a") == before


def test_remote_builtin_error_is_catchable_as_the_builtin(server: Any, connect: Any) -> None:
    p = connect(server)
    with pytest.raises(KeyError) as info:
        p.fail("KeyError", "missing")
    err = info.value
    assert isinstance(err, RemoteError) and isinstance(err, easyrpc.EasyRpcError)
    assert err.remote_type == "KeyError"
    assert err.remote_message == "'missing'"
    assert "raise errors[kind](message)" in err.remote_traceback
    with pytest.raises(ZeroDivisionError):
        p.fail("ZeroDivisionError")
    with pytest.raises(OSError):
        p.fail("OSError")


def test_remote_custom_error_is_a_remote_error_with_its_type(server: Any, connect: Any) -> None:
    p = connect(server)
    with pytest.raises(RemoteError) as info:
        p.fail("custom", "special")
    assert info.value.remote_type == "tests.apps.CustomError"
    assert info.value.remote_message == "special"
    assert p.echo(1) == 1  # the connection carries on


def test_unknown_function_from_server_is_function_not_found(server: Any, connect: Any) -> None:
    p = connect(server)
    # Hand-build a call the local proxy would refuse: another namespace's function.
    engine = engine_of(p.proxy if connect.kind == "aio" else p)
    from easyrpc._client import CallFuture

    fut = CallFuture(engine)
    engine.calls.submit(fut, "reset", [], {}, 5.0)
    with pytest.raises(FunctionNotFound) as info:
        fut.result(5)
    assert "reset" in str(info.value)
    for other in ("good_func_a", "left_only", "get_registered_functions"):
        assert other not in str(info.value)


def test_json_values_round_trip_exactly(server: Any, connect: Any) -> None:
    p = connect(server)
    values: list[Any] = [
        None, False, True, 0, -1, 2**62, 1.5, "", "é\u2603\U0001f600", [], {},
        {"error": "x"}, {"k": "err", "i": 1, "e": {}}, "__easyrpc_end__", ["ok", None, {"v": [1, 2]}],
    ]
    for value in values:
        assert p.echo(value) == value
        assert p.aecho(value) == value
    assert p.echo((1, 2)) == [1, 2]  # tuples arrive as lists, as JSON carries them


def test_unserializable_argument_raises_locally(server: Any, connect: Any) -> None:
    p = connect(server)
    with pytest.raises(SerializationError):
        p.echo({1, 2})
    with pytest.raises(TypeError):  # SerializationError is a TypeError
        p.echo(object())
    with pytest.raises(SerializationError):
        p.echo(float("nan"))
    assert p.echo(1) == 1


def test_unserializable_result_is_a_clear_remote_error(server: Any, connect: Any) -> None:
    p = connect(server)
    with pytest.raises(RemoteError) as info:
        p.unserializable()
    assert info.value.remote_type == "SerializationError"
    assert "unserializable" in info.value.remote_message
    assert p.echo("still fine") == "still fine"


def test_deep_nesting_round_trips(server: Any, connect: Any) -> None:
    p = connect(server)
    depth = 5000
    value: list[Any] = []
    inner = value
    for _ in range(depth):
        nxt: list[Any] = []
        inner.append(nxt)
        inner = nxt
    out = p.echo(value)
    n = 0
    while out:
        out = out[0]
        n += 1
    assert n == depth


def test_async_functions_do_not_block_each_other(server: Any, connect: Any) -> None:
    p = connect(server)
    start = time.monotonic()
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(p.aslow(0.3))) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [0.3] * 10
    assert time.monotonic() - start < 1.5


def test_ten_slow_calls_run_concurrently(server: Any, connect: Any) -> None:
    p = connect(server)
    start = time.monotonic()
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(p.slow(0.3))) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [0.3] * 10
    assert time.monotonic() - start < 1.5  # serial would take 3 s


def test_sixteen_threads_share_one_proxy(server: Any, connect: Any) -> None:
    p = connect(server)
    errors: list[str] = []

    def worker(t: int) -> None:
        for i in range(125):
            got = p.good_func_a(t, i, "x")
            if got != {"good_func_a": [t, i, "x"]}:
                errors.append(f"{t}/{i}: {got}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert server.counter.count("good_func_a") == 16 * 125


def test_builtin_get_registered_functions_lists_this_namespace(server: Any, connect: Any) -> None:
    p = connect(server)
    funcs = {f["name"]: f for f in p.get_registered_functions()}
    assert "good_func_a" in funcs and "get_registered_functions" in funcs
    assert "reset" not in funcs
    assert funcs["annotated"]["signature"].startswith("(x: int")
    assert funcs["annotated"]["doc"].startswith("Echo")
    assert funcs["annotated"]["namespace"] == "DEFAULT"


def test_namespaces_are_isolated_and_groups_unite(server: Any, connect: Any) -> None:
    admin = connect(server, namespace="admin")
    assert admin.reset(force=True) == "reset force=True"
    assert "good_func_a" not in admin
    both = connect(server, namespace="both")
    assert both.left_only() == "left" and both.right_only() == "right"
    assert "reset" not in both


def test_functions_registered_at_runtime_reach_connected_proxies(server: Any, connect: Any) -> None:
    p = connect(server)
    rpc = server.rpcs[0]

    def added_later(x: int) -> int:
        return x * 2

    rpc.origin(added_later)
    assert wait_for(lambda: "added_later" in p, timeout=2)
    assert p.added_later(21) == 42


def test_call_timeout_raises_and_connection_stays_usable(server: Any, connect: Any) -> None:
    p = connect(server, timeout=0.2)
    start = time.monotonic()
    with pytest.raises(CallTimeout):
        p.aslow(5)
    assert time.monotonic() - start < 2
    assert isinstance(CallTimeout("x"), TimeoutError)
    assert wait_for(lambda: server.counter.count("aslow.cancelled") == 1, timeout=2)
    assert p.echo("after") == "after"


def test_options_object_and_keywords_configure_a_proxy(server: Any, connect: Any) -> None:
    """options=ClientOptions(...) works on both clients; a keyword overrides it."""
    p = connect(server, options=ClientOptions(timeout=5.0, namespace="DEFAULT"), timeout=0.2)
    start = time.monotonic()
    with pytest.raises(CallTimeout):
        p.aslow(5)
    assert time.monotonic() - start < 2
    assert p.echo("after") == "after"


def test_unknown_or_invalid_client_options_are_refused_before_connecting(server: Any) -> None:
    with pytest.raises(TypeError, match="timout"):
        EasyRpcProxy.create(server.host, server.port, "/ws/test", SECRET, timout=1.0)
    with pytest.raises(ValueError, match="ping_interval"):
        EasyRpcProxy.create(server.host, server.port, "/ws/test", SECRET, ping_interval=0)
    with pytest.raises(ValueError, match="stream_window"):
        ClientOptions(stream_window=0)


def test_per_call_timeout_override(server: Any, connect: Any) -> None:
    p = connect(server)
    fn = p.proxy.aslow if connect.kind == "aio" else p.aslow
    quick = fn.with_timeout(0.2)
    assert str(inspect.signature(quick)) == str(inspect.signature(fn))
    with pytest.raises(CallTimeout):
        if connect.kind == "aio":
            p.run(quick(5))
        else:
            quick(5)
    assert p.aslow(0.01) == 0.01


def test_close_is_idempotent_and_later_calls_fail(server: Any, connect: Any) -> None:
    p = connect(server)
    p.close()
    p.close()
    with pytest.raises(easyrpc.ConnectionLost):
        p.echo(1)


def test_wrong_secret_fails_fast_with_authentication_error(server: Any, connect: Any) -> None:
    start = time.monotonic()
    with pytest.raises(easyrpc.AuthenticationError):
        connect(server, secret="wrong-secret")
    assert time.monotonic() - start < 1.0


def test_closed_port_fails_fast(connect: Any) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    class Nowhere:
        host = "127.0.0.1"

    Nowhere.port = port  # type: ignore[attr-defined]
    start = time.monotonic()
    with pytest.raises(ConnectionError):
        connect(Nowhere)
    assert time.monotonic() - start < 2


def test_a_function_registered_while_a_proxy_connects_reaches_it(
        serve: Callable[..., Served], open_proxy: Any) -> None:
    """The server takes the welcome's function list only once the connection is
    registered for pushes: a function registered in between is pushed, never lost."""
    app = Flask(__name__)
    rpc = EasyRpcServer(app, "/ws/test", SECRET)

    @rpc.origin
    def first() -> int:
        return 1

    def late() -> int:
        return 2

    original = rpc.get_registered_functions
    raced: list[bool] = []

    def listing(namespace: str = "DEFAULT", access: Any = None) -> list[dict[str, Any]]:
        funcs = original(namespace, access)
        if not raced:  # the welcome's list: register another function right after it
            raced.append(True)
            registrar = threading.Thread(target=rpc.origin, args=(late,), name="test-registrar", daemon=True)
            registrar.start()
            registrar.join(0.3)  # it may wait for the welcome to go out first
        return funcs

    rpc.get_registered_functions = listing  # type: ignore[method-assign]
    served = serve(app, rpc)
    p = open_proxy(served)
    assert raced
    assert wait_for(lambda: "late" in p, timeout=3)
    assert p.late() == 2


def test_a_function_raising_system_exit_fails_only_its_call(serve: Callable[..., Served], connect: Any) -> None:
    """SystemExit or KeyboardInterrupt raised by a served function (plain, async or a
    generator; run inline or on a worker) reaches its caller as a RemoteError of that
    type; the thread that ran it carries on, so every later call is still answered."""
    app = Flask(__name__)
    rpc = EasyRpcServer(app, "/ws/test", SECRET, max_workers=1)

    @rpc.origin
    def quit_now(kind: str) -> None:
        raise SystemExit(3) if kind == "exit" else KeyboardInterrupt()

    @rpc.origin
    async def quit_async() -> None:
        raise SystemExit(4)

    @rpc.origin
    def quit_stream() -> Any:
        yield 1
        raise SystemExit(5)

    @rpc.origin
    def ok(x: int) -> int:
        return x

    p = connect(serve(app, rpc))
    for _ in range(4):  # sequential calls: run by the connection's thread from the third on
        with pytest.raises(RemoteError) as info:
            p.quit_now("exit")
        assert info.value.remote_type == "SystemExit" and not isinstance(info.value, SystemExit)
        assert p.ok(1) == 1
    with pytest.raises(RemoteError) as info:
        p.quit_now("interrupt")
    assert info.value.remote_type == "KeyboardInterrupt"
    # concurrent calls go to the single worker: it must survive each of them
    results = []
    threads = [threading.Thread(target=lambda: results.append(_outcome(p.quit_now, "exit")), name=f"test-quit-{i}")
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["SystemExit"] * 6
    with pytest.raises(RemoteError) as info:
        p.quit_async()
    assert info.value.remote_type == "SystemExit"
    it = iter(p.quit_stream())
    assert next(it) == 1
    with pytest.raises(RemoteError) as info:
        next(it)
    assert info.value.remote_type == "SystemExit"
    assert [p.ok(i) for i in range(3)] == [0, 1, 2]


def _outcome(fn: Callable[..., Any], *args: Any) -> str:
    try:
        fn(*args)
    except RemoteError as exc:
        return exc.remote_type
    return "returned"


def test_on_the_main_thread_system_exit_goes_on_up() -> None:
    """Where a served function runs on the main thread (a WSGI server without threads),
    SystemExit and KeyboardInterrupt may be a signal's: only Exception is reported
    there (the caller still gets an InternalError answer), the rest propagates."""
    from easyrpc._server.tasks import function_errors

    assert function_errors() is Exception  # pytest runs tests on the main thread
    seen: list[Any] = []
    t = threading.Thread(target=lambda: seen.append(function_errors()), name="test-errors")
    t.start()
    t.join(5)
    assert seen == [(Exception, SystemExit, KeyboardInterrupt)]


def test_system_exit_from_an_async_functions_child_task_leaves_the_loop_running(
        serve: Callable[..., Served], connect: Any) -> None:
    """asyncio lets a task's SystemExit out of the loop: one from a task an async
    function started must not end the loop every async function runs on."""
    import asyncio

    app = Flask(__name__)
    rpc = EasyRpcServer(app, "/ws/test", SECRET)

    async def child() -> None:
        raise SystemExit(6)

    @rpc.origin
    async def quit_in_child() -> None:
        await asyncio.gather(child())

    @rpc.origin
    async def still_there(x: int) -> int:
        await asyncio.sleep(0)
        return x

    p = connect(serve(app, rpc), timeout=5)
    with pytest.raises(RemoteError) as info:
        p.quit_in_child()
    assert info.value.remote_type == "SystemExit"
    assert [p.still_there(i) for i in range(3)] == [0, 1, 2]


class ClosingServer(EasyRpcServer):
    """A server caught inside close(), once it has stopped its pool and loop but before
    its connections have closed: what a call that arrives then meets."""

    stopped = False  # set: close() has got that far

    def executor(self) -> WorkerPool:
        """PoolClosed once stopped, as a closed server's."""
        if self.stopped:
            raise PoolClosed("the server is closed")
        return super().executor()

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """PoolClosed once stopped, as a closed server's."""
        if self.stopped:
            raise PoolClosed("the server is closed")
        return super().event_loop()


def test_an_async_call_refused_at_shutdown_builds_no_coroutine_it_drops(
        serve: Callable[..., Served], open_proxy: Any) -> None:
    """An async function or async generator called once the server has closed its loop
    is refused with ServerBusy; no coroutine is built and then left unawaited (a
    RuntimeWarning, an error under this suite's filterwarnings)."""
    app = Flask(__name__)
    rpc = ClosingServer(app, "/ws/test", SECRET)

    @rpc.origin
    async def later() -> int:
        return 1

    @rpc.origin
    async def ticks() -> Any:
        yield 1

    p = open_proxy(serve(app, rpc), timeout=5, reconnect=False)  # the server closes at the end
    rpc.stopped = True
    for call in (p.later, lambda: next(iter(p.ticks()))):
        with pytest.raises(RemoteError) as info:
            call()
        assert info.value.remote_type == "ServerBusy"
    gc.collect()  # a dropped coroutine would warn by now
    rpc.stopped = False
    rpc.close(grace=1.0)  # and a server that has closed is one that refuses so
    for resource in (rpc.executor, rpc.event_loop):
        with pytest.raises(PoolClosed):
            resource()


# --- a blocking call's own settling (no Future: one claim, one raw lock) ------------------
def test_a_blocking_call_is_settled_once_whoever_races_to_settle_it() -> None:
    from easyrpc._client import BlockingCall

    for _ in range(100):  # bounded; each round races 6 settlers on one call
        call = BlockingCall(None)  # type: ignore[arg-type]  # the engine is not used here
        start = threading.Barrier(6)
        won: list[int] = []

        def settle(n: int, call: BlockingCall = call, start: threading.Barrier = start,
                   won: list[int] = won) -> None:
            start.wait(5)
            if call.settle(n, None if n % 2 else CallTimeout(f"settler {n}")):
                won.append(n)

        threads = [threading.Thread(target=settle, args=(n,), name=f"settler-{n}") for n in range(6)]
        for t in threads:
            t.start()
        assert call.wait_settled(5.0)
        for t in threads:
            t.join(5)
        assert len(won) == 1 and call.settled
        if won[0] % 2:
            assert call.outcome() == won[0]
        else:
            with pytest.raises(CallTimeout, match=f"settler {won[0]}"):
                call.outcome()
        assert call.wait_settled(0)  # settled stays settled: a second wait returns at once


def test_a_blocking_call_waits_until_settled_or_its_time_runs_out() -> None:
    from easyrpc._client import BlockingCall

    call = BlockingCall(None)  # type: ignore[arg-type]
    t0 = time.monotonic()
    assert not call.wait_settled(0.05) and not call.settled
    assert time.monotonic() - t0 >= 0.04
    timer = threading.Timer(0.05, call.settle, args=({"v": 1}, None))
    timer.start()
    try:
        assert call.wait_settled(5.0)
    finally:
        timer.join(5)
    assert call.outcome() == {"v": 1}
    assert not call.settle("late", None) and call.outcome() == {"v": 1}


def test_a_namespace_with_no_functions_is_a_warning_on_connect(server: Any, connect: Any,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A misspelt namespace is accepted (functions may come later) but not silently."""
    caplog.set_level(logging.WARNING, logger="easyrpc.proxy")
    connect(server, namespace="admn")
    assert any("offers no functions in namespace 'admn'" in r.getMessage() for r in caplog.records)
    caplog.clear()
    p = connect(server)
    assert p.echo(1) == 1
    assert not any("offers no functions" in r.getMessage() for r in caplog.records)
