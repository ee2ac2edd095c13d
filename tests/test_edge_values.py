"""Edge cases of values, names, callables and errors through both clients (issue #19, API §1, §2, §4, §5)."""

from __future__ import annotations

import errno
import functools
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from flask import Flask

from easyrpc import RemoteError, SerializationError
from easyrpc.server import EasyRpcServer

from .conftest import SECRET


class _Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class _AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x * 2


class _AsyncGenCallable:
    async def __call__(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


class _GenCallable:
    def __call__(self, n: int) -> Iterator[int]:
        yield from range(n)


async def _add(a: int, b: int) -> int:
    return a + b


def build_edge_app() -> tuple[Flask, EasyRpcServer]:
    app = Flask("easyrpc-edge-tests")
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET)

    @rpc.origin
    def echo(value: Any) -> Any:
        return value

    @rpc.origin
    def unserializable() -> Any:
        return {1, 2, 3}

    @rpc.origin
    def colliding_result() -> Any:
        return {"ok": [{1: "a", "1": "b"}]}

    @rpc.origin
    def stream_then_unserializable(n: int) -> Iterator[Any]:
        yield from range(n)
        yield {"a set": {1, 2}}
        yield "never sent"

    @rpc.origin
    async def astream_then_unserializable(n: int) -> AsyncIterator[Any]:
        for i in range(n):
            yield i
        yield object()

    @rpc.origin
    def makefun_names(_func_impl_, DEFAULT_x=1, x=2):  # type: ignore[no-untyped-def] # noqa: N803
        return [_func_impl_, DEFAULT_x, x]

    @rpc.origin
    def more_makefun_names(_func_, HINT_a=0, /, *RETURNHINT, a=3, **DEFAULT_a):  # type: ignore[no-untyped-def] # noqa: N803
        return [_func_, HINT_a, list(RETURNHINT), a, DEFAULT_a]

    @rpc.origin
    def makefun_gen(_func_impl_, DEFAULT_n=0, n=2):  # type: ignore[no-untyped-def] # noqa: N803
        yield from range(_func_impl_, _func_impl_ + n)

    def DEFAULT_y(y=5):  # type: ignore[no-untyped-def] # noqa: N802
        return y

    def _func_impl_(v=7):  # type: ignore[no-untyped-def]
        return v

    rpc.origin(DEFAULT_y)
    rpc.origin(_func_impl_)

    rpc.register(_AsyncCallable(), name="async_callable")
    rpc.register(functools.partial(_add, 10), name="async_partial")
    rpc.register(functools.partial(_AsyncCallable(), x=4), name="partial_of_async_callable")
    rpc.register(_AsyncGenCallable(), name="async_gen_callable")
    rpc.register(_GenCallable(), name="gen_callable")

    @rpc.origin
    def raise_os(kind: str) -> None:
        if kind == "missing":
            open("/nonexistent/easyrpc-edge-test")  # noqa: SIM115
        elif kind == "two":
            raise OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")
        raise OSError("no errno here")

    @rpc.origin
    def raise_stop(kind: str) -> None:
        raise (StopIteration if kind == "stop" else StopAsyncIteration)("stopped")

    return app, rpc


@pytest.fixture
def server(serve: Any) -> Any:
    app, rpc = build_edge_app()
    return serve(app, rpc)


# --- defect 4: results JSON cannot carry -------------------------------------------------
def test_unserializable_result_raises_serialization_error(server: Any, connect: Any) -> None:
    """A result JSON cannot carry arrives as SerializationError (a TypeError) naming the
    function and the type; the connection carries on."""
    p = connect(server)
    with pytest.raises(SerializationError) as info:
        p.unserializable()
    err = info.value
    assert isinstance(err, TypeError) and isinstance(err, RemoteError)
    assert err.remote_type == "SerializationError"
    assert "unserializable" in str(err) and "set" in str(err)
    assert p.echo("still fine") == "still fine"


@pytest.mark.parametrize("fn", ["stream_then_unserializable", "astream_then_unserializable"])
def test_unserializable_stream_item_ends_the_stream_with_serialization_error(
        server: Any, connect: Any, fn: str) -> None:
    """The items before the bad one arrive, then the stream ends with SerializationError."""
    p = connect(server)
    it = iter(p[fn](3))
    got = [next(it) for _ in range(3)]
    assert got == [0, 1, 2]
    with pytest.raises(SerializationError) as info:
        next(it)
    assert fn in str(info.value)
    assert "set" in str(info.value) or "object" in str(info.value)
    assert p.echo(1) == 1


# --- defect 7: parameter names makefun uses ----------------------------------------------
def test_parameters_named_like_makefun_internals_work(server: Any, connect: Any) -> None:
    p = connect(server)
    assert p.makefun_names(1) == [1, 1, 2]
    assert p.makefun_names(1, 5, 6) == [1, 5, 6]
    assert p.makefun_names(_func_impl_=0, x=9) == [0, 1, 9]
    assert p.more_makefun_names(1) == [1, 0, [], 3, {}]
    assert p.more_makefun_names(1, 2, 3, 4, a=5, DEFAULT_a=6, b=7) == [1, 2, [3, 4], 5, {"DEFAULT_a": 6, "b": 7}]
    assert list(p.makefun_gen(10)) == [10, 11]
    assert list(p.makefun_gen(10, n=3)) == [10, 11, 12]
    assert p.DEFAULT_y() == 5 and p.DEFAULT_y(y=1) == 1
    assert p["_func_impl_"]() == 7 and p["_func_impl_"](8) == 8
    with pytest.raises(TypeError):
        p.makefun_names()  # binds locally, as a local call would
    with pytest.raises(TypeError):
        p.makefun_names(1, nope=2)
    fn = p.proxy.makefun_names if connect.kind == "aio" else p.makefun_names
    assert str(inspect.signature(fn)) == "(_func_impl_, DEFAULT_x=1, x=2)"
    assert fn.__name__ == "makefun_names"
    if connect.kind == "aio":
        assert inspect.iscoroutinefunction(fn)


# --- defect 10: async callables that are not plain coroutine functions -------------------
def test_async_callable_objects_and_partials_are_awaited(server: Any, connect: Any) -> None:
    p = connect(server)
    assert p.async_callable(21) == 42
    assert p.async_partial(5) == 15
    assert p.partial_of_async_callable() == 8
    assert list(p.async_gen_callable(3)) == [0, 1, 2]
    assert list(p.gen_callable(3)) == [0, 1, 2]


# --- defect 11: surrogates ---------------------------------------------------------------
def test_separate_surrogates_round_trip_exactly(server: Any, connect: Any) -> None:
    p = connect(server)
    for value in ["\ud83d\ude00", "\U0001f600", "a\ud83d\ude00b\U0001f600", "\ud800", "\udfff\ud800",
                  ["\ud83d", "\ude00"], {"\ud83d\ude00": "\ud83d\ude00"}, "\\ud83d\\ude00"]:
        out = p.echo(value)
        assert out == value and type(out) is type(value)
        if isinstance(value, str):
            assert len(out) == len(value)


# --- defect 12 ---------------------------------------------------------------------------
def test_colliding_keys_are_refused_on_both_sides(server: Any, connect: Any) -> None:
    """(a) A dict whose keys turn into the same JSON key: refused locally for arguments,
    as SerializationError from the server for results; int keys alone still travel."""
    p = connect(server)
    with pytest.raises(SerializationError, match="'1'"):
        p.echo({1: "a", "1": "b"})
    with pytest.raises(SerializationError):
        p.echo([{"x": {True: 1, "true": 2}}])
    with pytest.raises(SerializationError, match="'1'"):
        p.colliding_result()
    assert p.echo({1: "a", 2: "b"}) == {"1": "a", "2": "b"}
    assert p.echo({None: 1, 1.5: 2, False: 3}) == {"null": 1, "1.5": 2, "false": 3}


def test_a_default_whose_repr_raises_registers_with_a_placeholder(serve: Any, connect: Any) -> None:
    """(b) Defaults are shown, never sent: a broken repr shows a placeholder, the function works."""
    app = Flask("easyrpc-edge-repr")
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET)

    @rpc.origin
    def bad_default(a: int = _Unrepresentable()) -> int:  # type: ignore[assignment]  # noqa: B008
        return 1 if isinstance(a, _Unrepresentable) else a

    p = connect(serve(app, rpc))
    fn = p.proxy.bad_default if connect.kind == "aio" else p.bad_default
    assert "_Unrepresentable" in str(inspect.signature(fn))
    assert p.bad_default() == 1
    assert p.bad_default(5) == 5


def test_remote_os_errors_keep_errno_strerror_and_filenames(server: Any, connect: Any) -> None:
    """(c)"""
    p = connect(server)
    with pytest.raises(FileNotFoundError) as info:
        p.raise_os("missing")
    err = info.value
    assert isinstance(err, RemoteError)
    assert err.errno == errno.ENOENT
    assert err.strerror == "No such file or directory"
    assert err.filename == "/nonexistent/easyrpc-edge-test"
    with pytest.raises(OSError) as info2:
        p.raise_os("two")
    assert (info2.value.errno, info2.value.filename, info2.value.filename2) == (errno.EXDEV, "/a", "/b")
    with pytest.raises(OSError) as info3:
        p.raise_os("none")
    assert info3.value.errno is None and info3.value.strerror is None


def test_remote_stop_iteration_is_not_a_local_stop_iteration(server: Any, connect: Any) -> None:
    """(d) A remote StopIteration must not end a local generator or loop silently."""
    p = connect(server)

    def user_generator() -> Iterator[int]:
        yield 1
        p.raise_stop("stop")
        yield 2

    with pytest.raises(RemoteError) as info:
        list(user_generator())
    assert info.value.remote_type == "StopIteration"
    assert not isinstance(info.value, StopIteration)
    with pytest.raises(RemoteError) as info:
        p.raise_stop("astop")
    assert info.value.remote_type == "StopAsyncIteration"
    assert not isinstance(info.value, StopAsyncIteration)
