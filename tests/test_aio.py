"""What only easyrpc.aio has: awaiting, gathering, cancelling, async with (API §3)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from typing import Any

import pytest

from easyrpc.aio import EasyRpcProxy, engine_of

from .apps import build_app
from .conftest import SECRET, loop_reader, wait_for


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


# --- the event loop reads its own replies (Engine.read_in_loop) ---------------------------
def _open_fds() -> int:
    import os
    return len(os.listdir("/proc/self/fd"))


def test_the_event_loop_reads_its_own_replies(server: Any) -> None:
    """While calls are in flight the loop holds the reading role; results stay matched to their calls."""
    async def main() -> None:
        async with await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET) as p:
            for i in range(200):
                assert await p.echo(i) == i
            await loop_reader(p)
            assert await asyncio.gather(*(p.echo(i) for i in range(300))) == list(range(300))

    run(main())


def test_a_blocked_loop_loses_the_reading_role_and_gets_it_back(server: Any) -> None:
    """A loop blocked by user code while its reply waits: the reader thread takes over, then hands back."""

    async def main() -> None:
        async with await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET) as p:
            assert await p.echo(0) == 0
            task = asyncio.ensure_future(p.slow(0.3))
            await asyncio.sleep(0.05)  # the call goes out; its reply comes after 0.3 s
            # block the loop (wait_for sleeps without yielding to it): the reply waits unread
            # until the dispatcher sees the stall and the reader thread takes over
            def loop_lost_the_role() -> bool:
                return engine_of(p).loop_reader is None
            assert wait_for(loop_lost_the_role, 2.0)
            assert await asyncio.wait_for(task, 5) == 0.3
            for i in range(20):
                assert await p.echo(i) == i
            assert wait_for(lambda: engine_of(p).loop_reader is not None, 2.0)

    run(main())


def test_a_proxy_outlives_the_loop_that_read_for_it(server: Any) -> None:
    """An aio proxy left open when asyncio.run() ends still works from the next loop, at once."""
    holder: dict[str, Any] = {}

    async def first() -> None:
        holder["p"] = p = await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET)
        assert await p.echo(1) == 1

    async def second() -> float:
        start = time.monotonic()
        assert await holder["p"].echo(2) == 2
        elapsed = time.monotonic() - start
        assert await asyncio.gather(*(holder["p"].echo(i) for i in range(50))) == list(range(50))
        await holder["p"].close()
        return elapsed

    run(first())
    assert run(second()) < 0.2  # no wait for the stalled-loop check


def test_aio_proxies_leave_no_descriptors_behind(server: Any) -> None:
    """The loop's duplicate of the socket's descriptor is closed with the proxy."""
    async def cycle() -> None:
        async with await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET) as p:
            assert await asyncio.gather(*(p.echo(i) for i in range(10))) == list(range(10))

    run(cycle())
    before = _open_fds()
    for _ in range(10):
        run(cycle())
    assert wait_for(lambda: _open_fds() <= before + 2, 5.0), (before, _open_fds())


def test_no_loop_gets_the_reading_role_once_close_has_begun(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub hands the role to a waiting loop when it steps aside: if close() began in
    between (the hub holding the role when close() looked), no hand-over."""
    from easyrpc._client import LoopReader
    from easyrpc._client.role import ReadingRole

    held = threading.Event()
    original = ReadingRole.reader_handled

    def reader_handled(role: ReadingRole, hub_reader: Any) -> None:
        if role.loop_wanted is not None and not role.engine.in_flight and not held.is_set():
            # about to hand the role over, the loop's call answered: until close() has begun
            held.set()
            assert wait_for(lambda: role.engine.closed, 10.0, 0.001)
        original(role, hub_reader)

    monkeypatch.setattr(ReadingRole, "reader_handled", reader_handled)
    late: list[LoopReader] = []  # readers started on a loop after close() began
    start = LoopReader.start

    def start_reader(reader: LoopReader) -> None:
        if reader.engine.closed:
            late.append(reader)
        start(reader)

    monkeypatch.setattr(LoopReader, "start", start_reader)

    async def main() -> None:
        p = await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET)
        engine = engine_of(p)
        try:
            for _ in range(50):  # bounded: the loop may take the role first; try again
                role = engine.loop_reader
                if role is not None:
                    role.revoke()
                engine.role.want_reader()
                # the hub holds the role: the loop's next call asks it for a hand-over
                assert wait_for(lambda: engine.reading_role == "hub", 5.0)
                task = asyncio.ensure_future(p.echo(1))
                if await asyncio.to_thread(held.wait, 0.5):
                    break  # the hub waits for close() to begin
                assert await task == 1
            assert held.is_set()
        finally:
            await p.close()
        for _ in range(3):
            await asyncio.sleep(0)  # a hand-over would have reached the loop by now
        assert not late
        assert engine.loop_reader is None
        with contextlib.suppress(BaseException):
            await task  # failed by close()

    run(main())


def test_calls_started_together_go_out_in_writes_of_a_few(server: Any) -> None:
    """A gather's calls are written together, at most _OUTBOX_BATCH per write, so the
    server starts on the first ones while the loop still builds the rest; a lone call
    goes out at once. Every call still gets its own result."""
    from easyrpc import aio

    n = 2 * aio._OUTBOX_BATCH + 7

    async def main() -> list[int]:
        p = await EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET)
        engine = engine_of(p)
        sizes: list[int] = []
        send = engine.send

        def counting_send(*payloads: bytes) -> None:
            sizes.append(len(payloads))
            send(*payloads)

        engine.send = counting_send  # type: ignore[method-assign]
        try:
            assert await asyncio.gather(*(p.aecho(i) for i in range(n))) == list(range(n))
        finally:
            del engine.send
            await p.close()
        return sizes

    sizes = run(main())
    batch = aio._OUTBOX_BATCH
    # Typically [1, 16, 16, 6]. A call finds itself alone (and goes at once) only while
    # every earlier one has been answered; the reader thread, if it still holds the
    # reading role just after create(), may answer the first during the loop's turn.
    assert sum(sizes) == n and max(sizes) == batch and sizes.count(batch) >= 2, sizes


class _Forgets:
    """Stands in for the engine: records what a LoopCall asks it to forget."""

    def __init__(self) -> None:
        self.forgotten: list[tuple[int, bool]] = []
        self.calls = self

    def forget(self, call_id: int, item: Any, *, send_cancel: bool) -> None:
        self.forgotten.append((call_id, send_cancel))


def test_a_loop_call_is_settled_once_from_any_thread_and_cancels_only_if_unsettled() -> None:
    from easyrpc._client import LoopCall, loop_inbox

    async def main() -> None:
        loop = asyncio.get_running_loop()
        engine = _Forgets()
        # settled from another thread: the loop's inbox delivers it; a later settle loses
        call = LoopCall(engine, loop, loop_inbox(loop))  # type: ignore[arg-type]
        worker = threading.Thread(target=call.settle, args=({"v": 1}, None), name="settler")
        worker.start()
        assert await asyncio.wait_for(call.future, 5) == {"v": 1}
        worker.join(5)
        assert not call.settle("late", None)
        call.cancel()  # already settled: nothing to cancel on the server
        assert engine.forgotten == []
        # settled on the loop with an error
        failing = LoopCall(engine, loop, loop_inbox(loop))  # type: ignore[arg-type]
        assert failing.settle(None, KeyError("k"))
        with pytest.raises(KeyError):
            await failing.future
        # cancelled first: forgotten (and cancelled remotely, as it was sent); a reply loses
        cancelled = LoopCall(engine, loop, loop_inbox(loop))  # type: ignore[arg-type]
        cancelled.id, cancelled.sent = 7, True
        cancelled.cancel()
        assert engine.forgotten == [(7, True)]
        assert not cancelled.settle("reply", None) and not cancelled.future.done()

    run(main())
