"""Call metadata, the call context of a served function, and interceptors (issue #24)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from easyrpc import CallRefused, RemoteCallRefused, RemoteError
from easyrpc.interceptors import CallInfo, Interceptor, Outcome
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer, call_context

from .conftest import SECRET, AioAdapter, Served, wait_for
from .rawpeer import RawPeer

PATH = "/ws/obs"


def _seen() -> dict[str, Any]:
    ctx = call_context()
    assert ctx is not None
    return {"function": ctx.function, "namespace": ctx.namespace, "metadata": dict(ctx.metadata),
            "cid": ctx.connection_id, "peer": ctx.peer, "left": ctx.time_left(), "side": ctx.side,
            "stream": ctx.stream}


def make_app(**server_kwargs: Any) -> tuple[Flask, EasyRpcServer, list[str]]:
    app = Flask("obs")
    rpc = EasyRpcServer(app, PATH, server_secret=SECRET, **server_kwargs)
    ran: list[str] = []

    @rpc.origin
    def ctx_sync(x: int = 0) -> dict[str, Any]:
        ran.append("ctx_sync")
        return _seen()

    @rpc.origin
    async def ctx_async() -> dict[str, Any]:
        await asyncio.sleep(0)
        inner = await asyncio.create_task(_in_task())  # a task the function starts sees it too
        return {**_seen(), "task": inner}

    @rpc.origin
    def ctx_gen(n: int) -> Iterator[dict[str, Any]]:
        for _ in range(n):
            yield _seen()

    @rpc.origin
    async def ctx_agen(n: int) -> AsyncIterator[dict[str, Any]]:
        for _ in range(n):
            await asyncio.sleep(0)
            yield _seen()

    @rpc.origin
    def admin_reset() -> str:
        ran.append("admin_reset")
        return "reset"

    @rpc.origin
    def fails() -> None:
        raise KeyError("nope")

    @rpc.origin
    def count(n: int) -> Iterator[int]:
        yield from range(n)

    return app, rpc, ran


async def _in_task() -> dict[str, str]:
    ctx = call_context()
    assert ctx is not None
    return dict(ctx.metadata)


@pytest.fixture
def plain(serve: Callable[..., Served]) -> tuple[Served, list[str]]:
    app, rpc, ran = make_app()
    return serve(app, rpc), ran


def _cid(proxy: Any) -> str:
    return getattr(proxy, "proxy", proxy).connection_id


def variant(p: Any, name: str, change: Callable[[Any], Any]) -> Callable[..., Any]:
    """*p*'s function *name* changed by *change* (``with_timeout``...), callable from this thread."""
    if isinstance(p, AioAdapter):
        return p._wrap(change(p.proxy[name]))
    return change(p[name])  # type: ignore[no-any-return]


# --- metadata and the call context -------------------------------------------------------
def test_call_context_shows_metadata_name_connection_and_deadline(plain: tuple[Served, list[str]],
                                                                   connect: Callable[..., Any]) -> None:
    served, _ = plain
    p = connect(served, PATH, metadata={"user": "ann", "tenant": "t1"})
    seen = p.ctx_sync()
    assert seen["function"] == "ctx_sync" and seen["namespace"] == "DEFAULT" and seen["side"] == "server"
    assert seen["metadata"] == {"user": "ann", "tenant": "t1"}
    assert seen["cid"] == _cid(p) and seen["peer"].startswith("127.0.0.1:")
    assert seen["left"] is None  # no time limit
    limited = variant(p, "ctx_sync", lambda f: f.with_timeout(5.0))()
    assert 0 < limited["left"] <= 5.0


def test_per_call_metadata_merges_over_the_proxy_default_and_composes_with_timeout(
        plain: tuple[Served, list[str]], connect: Callable[..., Any]) -> None:
    served, _ = plain
    p = connect(served, PATH, metadata={"user": "ann", "tenant": "t1"})
    seen1 = variant(p, "ctx_sync", lambda f: f.with_metadata({"user": "bob"}).with_timeout(5.0))()
    seen2 = variant(p, "ctx_sync", lambda f: f.with_timeout(5.0).with_metadata({"trace": "x"}).with_metadata(
        {"more": "y"}))()
    assert seen1["metadata"] == {"user": "bob", "tenant": "t1"} and 0 < seen1["left"] <= 5
    assert seen2["metadata"] == {"user": "ann", "tenant": "t1", "trace": "x", "more": "y"} and seen2["left"] > 0
    assert p.ctx_sync()["metadata"] == {"user": "ann", "tenant": "t1"}  # the plain function is unchanged


def test_call_context_in_async_functions_and_their_tasks(plain: tuple[Served, list[str]],
                                                         connect: Callable[..., Any]) -> None:
    served, _ = plain
    p = connect(served, PATH, metadata={"k": "v"})
    seen = p.ctx_async()
    assert seen["function"] == "ctx_async" and seen["metadata"] == {"k": "v"} and seen["task"] == {"k": "v"}


def test_call_context_in_generators_sync_and_async(plain: tuple[Served, list[str]],
                                                   connect: Callable[..., Any]) -> None:
    served, _ = plain
    p = connect(served, PATH, metadata={"k": "v"})
    for name in ("ctx_gen", "ctx_agen"):
        items = list(p[name](3))
        assert len(items) == 3
        for seen in items:
            assert seen["function"] == name and seen["metadata"] == {"k": "v"} and seen["stream"] is True


def test_call_context_is_the_calls_own_under_concurrency(plain: tuple[Served, list[str]]) -> None:
    """Concurrent calls on one proxy (pool, inline and loop alike) each see their own metadata."""
    served, _ = plain
    with EasyRpcProxy.create(served.host, served.port, PATH, server_secret=SECRET) as p:
        futs = [p.ctx_sync.with_metadata({"n": str(i)}).submit(i) for i in range(200)]
        assert [f.result(10)["metadata"]["n"] for f in futs] == [str(i) for i in range(200)]
        results: list[str] = []

        def worker(i: int) -> None:
            for j in range(20):
                results.append(p.ctx_async.with_metadata({"n": f"{i}.{j}"})()["metadata"]["n"] == f"{i}.{j}")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [True] * 80


def test_call_context_is_none_outside_a_served_call() -> None:
    assert call_context() is None


def test_metadata_limits_are_checked_before_sending(plain: tuple[Served, list[str]]) -> None:
    served, ran = plain
    with EasyRpcProxy.create(served.host, served.port, PATH, server_secret=SECRET) as p:
        with pytest.raises(ValueError, match="at most 32"):
            p.ctx_sync.with_metadata({f"k{i}": "v" for i in range(33)})
        with pytest.raises(ValueError, match="at most 4096 characters"):
            p.ctx_sync.with_metadata({"k": "x" * 4097})
        with pytest.raises(ValueError, match="1 to 64 characters"):
            p.ctx_sync.with_metadata({"k" * 65: "v"})
        with pytest.raises(ValueError, match="must be a string"):
            p.ctx_sync.with_metadata({"k": 1})
        assert p.ctx_sync.with_metadata({f"k{i}": "x" * 4096 for i in range(32)})()["metadata"]["k31"] == "x" * 4096
    with pytest.raises(ValueError, match="at most 32"):
        EasyRpcProxy.create(served.host, served.port, PATH, server_secret=SECRET,
                            metadata={f"k{i}": "v" for i in range(33)})


def test_a_hand_built_call_over_the_metadata_limits_is_refused_clearly(plain: tuple[Served, list[str]]) -> None:
    served, ran = plain
    with RawPeer(served.port, PATH) as peer:
        assert peer.authenticate(SECRET)["k"] == "welcome"
        peer.send_text(json.dumps({"k": "call", "i": 1, "f": "ctx_sync", "m": {"k": "x" * 5000}}))
        reply = peer.recv_json()
        while reply["k"] != "err":
            reply = peer.recv_json()
        assert reply["e"]["type"] == "ProtocolError" and "at most 4096 characters" in reply["e"]["message"]
        peer.send_text(json.dumps({"k": "call", "i": 2, "f": "ctx_sync", "m": {"role": "a"}}))
        reply = peer.recv_json()
        while reply["k"] != "ok":
            reply = peer.recv_json()
        assert reply["v"]["metadata"] == {"role": "a"}
    assert ran == ["ctx_sync"]


# --- interceptors ------------------------------------------------------------------------
class Recorder(Interceptor):
    """Notes every hook, and adds metadata."""

    def __init__(self, tag: str, add: dict[str, str] | None = None) -> None:
        self.tag = tag
        self.add = add or {}
        self.events: list[tuple[str, str, Any]] = []
        self.done = threading.Event()

    def before(self, call: CallInfo) -> None:
        self.events.append(("before", call.function, dict(call.metadata)))
        call.metadata.update(self.add)

    def after(self, call: CallInfo, outcome: Outcome) -> None:
        assert outcome.duration >= 0
        self.events.append(("after", call.function, outcome.error_type))
        self.done.set()

    def ends(self, name: str) -> list[Any]:
        return [e[2] for e in self.events if e[0] == "after" and e[1] == name]


class RequireRole(Interceptor):
    def before(self, call: CallInfo) -> None:
        if call.function.startswith("admin_") and call.metadata.get("role") != "admin":
            raise CallRefused(f"{call.function} needs the admin role")


def test_a_server_interceptor_refuses_by_role_and_the_function_does_not_run(
        serve: Callable[..., Served], connect: Callable[..., Any]) -> None:
    rec = Recorder("server")
    app, rpc, ran = make_app(interceptors=[RequireRole(), rec])
    served = serve(app, rpc)
    guest = connect(served, PATH, metadata={"role": "guest"})
    with pytest.raises(RemoteCallRefused, match="admin_reset needs the admin role") as info:
        guest.admin_reset()
    assert isinstance(info.value, CallRefused) and isinstance(info.value, RemoteError)
    assert ran == []
    assert rec.events == []  # refused before the recorder (second) ran
    admin = connect(served, PATH, metadata={"role": "admin"})
    assert admin.admin_reset() == "reset" and ran == ["admin_reset"]
    assert guest.ctx_sync()["function"] == "ctx_sync"  # other functions stay open to guests


def test_server_interceptors_add_metadata_and_see_outcomes(serve: Callable[..., Served],
                                                           connect: Callable[..., Any]) -> None:
    rec = Recorder("server", add={"added": "by-server"})
    app, rpc, _ = make_app(interceptors=[rec])
    served = serve(app, rpc)
    p = connect(served, PATH, metadata={"user": "ann"})
    assert p.ctx_sync()["metadata"] == {"user": "ann", "added": "by-server"}
    with pytest.raises(KeyError):
        p.fails()
    assert wait_for(lambda: rec.ends("fails") == ["KeyError"])
    assert rec.ends("ctx_sync") == [None]
    assert ("before", "ctx_sync", {"user": "ann"}) in rec.events


def test_interceptors_see_streams_start_and_end(serve: Callable[..., Served], connect: Callable[..., Any]) -> None:
    server_rec = Recorder("server")
    app, rpc, _ = make_app(interceptors=[server_rec])
    served = serve(app, rpc)
    client_rec = Recorder("client")
    p = connect(served, PATH, interceptors=[client_rec])
    assert list(p.count(5)) == [0, 1, 2, 3, 4]
    assert wait_for(lambda: server_rec.ends("count") == [None] and client_rec.ends("count") == [None])
    it = p.count(10_000)
    assert next(it) == 0
    it.close()  # stopped early: cancelled on both sides
    assert wait_for(lambda: server_rec.ends("count") == [None, "cancelled"])
    assert client_rec.ends("count") == [None, "cancelled"]
    assert [e[0] for e in server_rec.events] == ["before", "after", "before", "after"]


def test_client_interceptors_add_metadata_refuse_locally_and_see_errors(
        plain: tuple[Served, list[str]], connect: Callable[..., Any]) -> None:
    served, ran = plain

    class NoAdmin(Interceptor):
        def before(self, call: CallInfo) -> None:
            assert call.side == "client" and call.peer.endswith(PATH)
            if call.function.startswith("admin_"):
                raise CallRefused("not from this client")

    rec = Recorder("client", add={"via": "client"})
    p = connect(served, PATH, metadata={"user": "ann"}, interceptors=[NoAdmin(), rec])
    assert p.ctx_sync()["metadata"] == {"user": "ann", "via": "client"}
    with pytest.raises(CallRefused, match="not from this client") as info:
        p.admin_reset()
    assert not isinstance(info.value, RemoteError)  # refused locally: nothing was sent
    assert ran == ["ctx_sync"]
    with pytest.raises(KeyError):
        p.fails()
    assert rec.ends("fails") == ["KeyError"] and rec.ends("ctx_sync") == [None]
    assert "admin_reset" not in [e[1] for e in rec.events]


def test_client_interceptors_see_submitted_futures(plain: tuple[Served, list[str]]) -> None:
    served, _ = plain
    rec = Recorder("client", add={"via": "submit"})
    with EasyRpcProxy.create(served.host, served.port, PATH, server_secret=SECRET, interceptors=[rec]) as p:
        assert p.ctx_sync.submit().result(10)["metadata"] == {"via": "submit"}
        assert wait_for(lambda: rec.ends("ctx_sync") == [None])
        with pytest.raises(KeyError):
            p.fails.submit().result(10)
        assert wait_for(lambda: rec.ends("fails") == ["KeyError"])


def test_an_interceptor_that_fails_in_before_fails_the_call_with_a_clear_error(
        serve: Callable[..., Served], connect: Callable[..., Any]) -> None:
    class Broken(Interceptor):
        def before(self, call: CallInfo) -> None:
            raise RuntimeError("bug")

    app, rpc, ran = make_app(interceptors=[Broken()])
    served = serve(app, rpc)
    p = connect(served, PATH)
    with pytest.raises(RemoteError, match="an interceptor failed: RuntimeError"):
        p.ctx_sync()
    assert ran == []


def test_options_refuse_what_is_not_an_interceptor() -> None:
    from easyrpc.proxy import ClientOptions

    with pytest.raises(TypeError, match="Interceptor"):
        ClientOptions(interceptors=[object()])  # type: ignore[list-item]

    class Duck:  # before and after, but not an Interceptor: refused at once, not at each call
        def before(self, call: CallInfo) -> None: ...
        def after(self, call: CallInfo, outcome: Outcome) -> None: ...

    with pytest.raises(TypeError, match="Interceptor"):
        EasyRpcServer(Flask("duck"), PATH, server_secret=SECRET, interceptors=[Duck()])  # type: ignore[list-item]


# --- through a chain of servers ----------------------------------------------------------
def test_metadata_passes_through_a_chain_with_what_relays_add(serve: Callable[..., Served],
                                                              connect: Callable[..., Any]) -> None:
    """client -> A -> B -> C: C's function sees the caller's metadata, plus what A's server
    interceptor and B's link interceptor added; streams too."""
    app_c, rpc_c, ran = make_app()
    c = serve(app_c, rpc_c)
    app_b = Flask("b")
    rpc_b = EasyRpcServer(app_b, PATH, server_secret=SECRET)
    link_rec = Recorder("link", add={"hop_b": "link"})
    rpc_b.create_server_proxy(c.host, c.port, PATH, SECRET, interceptors=[link_rec])
    b = serve(app_b, rpc_b)
    app_a = Flask("a")
    rpc_a = EasyRpcServer(app_a, PATH, server_secret=SECRET, interceptors=[Recorder("a", add={"hop_a": "server"})])
    rpc_a.create_server_proxy(b.host, b.port, PATH, SECRET)
    a = serve(app_a, rpc_a)
    p = connect(a, PATH, metadata={"user": "ann"})
    assert wait_for(lambda: "ctx_gen" in p and "ctx_sync" in p)
    want = {"user": "ann", "hop_a": "server", "hop_b": "link"}
    seen = variant(p, "ctx_sync", lambda f: f.with_timeout(5.0))()
    assert seen["metadata"] == want and seen["function"] == "ctx_sync"
    assert 0 < seen["left"] <= 5.0  # the caller's limit travels with the call
    assert [s["metadata"] for s in p.ctx_gen(2)] == [want, want]
    assert link_rec.ends("ctx_sync") == [None]
    assert wait_for(lambda: link_rec.ends("ctx_gen") == [None])


class Around(Interceptor):
    """Records entering and leaving its context, and on which thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []

    def running(self, call: CallInfo) -> Any:
        events = self.events

        @contextlib.contextmanager
        def context() -> Iterator[None]:
            events.append(("enter", call.function, threading.get_ident()))
            try:
                yield
            finally:
                events.append(("exit", call.function, threading.get_ident()))
        return context()


class BrokenRunning(Interceptor):
    def running(self, call: CallInfo) -> Any:
        raise RuntimeError("a broken running hook")


def test_an_interceptors_running_context_wraps_each_run_of_the_function_on_its_thread(
        serve: Callable[..., Served], caplog: pytest.LogCaptureFixture) -> None:
    around = Around()
    app = Flask("obs-around")
    rpc = EasyRpcServer(app, PATH, server_secret=SECRET, interceptors=[BrokenRunning(), around])

    @rpc.origin
    def where() -> int:
        assert around.events[-1][0] == "enter"  # inside the context
        return threading.get_ident()

    @rpc.origin
    async def where_async() -> int:
        await asyncio.sleep(0)
        assert around.events[-1][0] == "enter"
        return threading.get_ident()

    @rpc.origin
    def where_gen(n: int) -> Iterator[int]:
        for _ in range(n):
            yield threading.get_ident()

    served = serve(app, rpc)
    client_side = Around()
    with EasyRpcProxy.create(served.host, served.port, PATH, server_secret=SECRET,
                             interceptors=[client_side]) as p:
        for fn in ("where", "where_async"):
            around.events.clear()
            ident = getattr(p, fn)()
            assert around.events == [("enter", fn, ident), ("exit", fn, ident)]
        around.events.clear()
        idents = list(p.where_gen(3))
        assert len(idents) == 3
        # one context per step (the last one ends the generator), each on its step's thread
        assert [e[0] for e in around.events] == ["enter", "exit"] * 4
        assert [e[2] for e in around.events[:6:2]] == idents
        futures = [p.where.submit() for _ in range(16)]  # concurrent: inline or in the pool
        assert len({f.result(30) for f in futures}) >= 1
    assert client_side.events == []  # a client has no function to run: never entered
    assert wait_for(lambda: len([e for e in around.events if e[1] == "where"]) == 32)
    pairs = [e for e in around.events if e[1] == "where"]
    assert sorted(e[0] for e in pairs) == ["enter"] * 16 + ["exit"] * 16
    assert "running() failed" in caplog.text  # the broken hook is logged, and every call went on
