"""What only easyrpc.aio has: awaiting, gathering, cancelling, async with (API §3)."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

import pytest

from easyrpc.aio import EasyRpcProxy

from .apps import build_app
from .conftest import SECRET, wait_for


@pytest.fixture
def server(serve: Any) -> Any:
    app, rpc, counter = build_app()
    served = serve(app, rpc)
    served.counter = counter
    served.rpc = rpc
    return served


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_proxies_are_coroutine_functions_with_the_origin_signature(server: Any) -> None:
    async def main() -> None:
        async with await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET) as p:
            assert inspect.iscoroutinefunction(p.good_func_a)
            assert str(inspect.signature(p.good_func_a)) == "(a, b, c)"
            assert await p.proxy_funcs["good_func_a"](1, 5, 7) == {"good_func_a": [1, 5, 7]}
            assert await p.good_func_a(1, 5, 7) == {"good_func_a": [1, 5, 7]}
            with pytest.raises(TypeError):
                await p.good_func_a(1)

    run(main())


def test_a_thousand_concurrent_awaits_get_their_own_results(server: Any) -> None:
    async def main() -> None:
        p = await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET)
        try:
            results = await asyncio.gather(*(p.aecho(i) for i in range(1000)))
            assert results == list(range(1000))
            results = await asyncio.gather(*(p.echo([i, str(i)]) for i in range(1000)))
            assert results == [[i, str(i)] for i in range(1000)]
        finally:
            await p.close()

    run(main())


def test_cancelling_an_awaiting_task_cancels_the_call_on_the_server(server: Any) -> None:
    async def main() -> float:
        p = await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET)
        try:
            task = asyncio.create_task(p.aslow(5))
            await asyncio.sleep(0.1)
            assert server.rpc.active_calls == 1
            cancelled_at = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            freed = await asyncio.to_thread(wait_for, lambda: server.rpc.active_calls == 0, 1.0)
            assert freed
            assert await asyncio.to_thread(wait_for, lambda: server.counter.count("aslow.cancelled") == 1, 1.0)
            assert await p.aecho("still usable") == "still usable"
            return time.monotonic() - cancelled_at
        finally:
            await p.close()

    assert run(main()) < 1.0


def test_the_event_loop_is_never_blocked(server: Any) -> None:
    """A ticker keeps running while calls are in flight and while connecting and closing."""

    async def main() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        p = await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET)
        await asyncio.gather(*(p.slow(0.3) for _ in range(4)))
        await p.close()
        stop.set()
        await t
        return ticks

    assert run(main()) >= 15  # ~30 expected over 0.3 s; a blocked loop would give ~1


def test_async_generators_and_abandoning_them(server: Any) -> None:
    async def main() -> None:
        async with await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET) as p:
            assert [i async for i in p.count_up(50)] == list(range(50))
            assert [i async for i in p.acount_up(50)] == list(range(50))
            it = p.forever()
            got = [await it.__anext__() for _ in range(5)]
            assert got == [0, 1, 2, 3, 4]
            await it.aclose()
            assert await asyncio.to_thread(wait_for, lambda: server.rpc.active_streams == 0, 3.0)
            async with p.aforever() as it2:
                async for item in it2:
                    if item == 2:
                        break
            assert await asyncio.to_thread(wait_for, lambda: server.rpc.active_streams == 0, 3.0)

    run(main())


def test_no_easyrpc_threads_left_after_async_close(server: Any) -> None:
    async def main() -> None:
        p = await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET)
        await p.echo(1)
        await p.close()
        await p.close()

    run(main())
    assert not [t for t in threading.enumerate() if t.name in ("easyrpc-reader", "easyrpc-dispatch")]
