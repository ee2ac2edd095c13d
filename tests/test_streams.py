"""Generator functions stream through both clients, with flow control (API §2, §3)."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from easyrpc import RemoteError

from .apps import build_app
from .conftest import wait_for


@pytest.fixture
def server(serve: Any) -> Any:
    app, rpc, counter = build_app(stream_window_max=64)
    served = serve(app, rpc)
    served.counter = counter
    served.rpc = rpc
    return served


@pytest.mark.parametrize("fn", ["count_up", "acount_up"])
def test_generator_streams_all_items_in_order(server: Any, connect: Any, fn: str) -> None:
    p = connect(server)
    assert list(p[fn](500)) == list(range(500))
    assert list(p[fn](0)) == []


def test_exception_mid_stream_arrives_after_the_items_before_it(server: Any, connect: Any) -> None:
    p = connect(server)
    got = []
    with pytest.raises(ValueError) as info:
        for item in p.fail_after(3):
            got.append(item)
    assert got == [0, 1, 2]
    assert isinstance(info.value, RemoteError)
    assert "failed after 3" in str(info.value)
    assert p.echo("ok") == "ok"


def test_infinite_generator_is_bounded_by_the_window(server: Any, connect: Any) -> None:
    p = connect(server, stream_window=8)
    it = p.forever()
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    # The producer may run at most a window ahead of the consumer.
    produced = server.counter.count("forever.item")
    assert produced <= 5 + 8 + 1, produced
    it.close()


@pytest.mark.parametrize("fn", ["forever", "aforever"])
def test_abandoned_infinite_generator_frees_server_state(server: Any, connect: Any, fn: str) -> None:
    p = connect(server)
    it = p[fn]()
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert server.rpc.active_streams == 1
    it.close()
    assert wait_for(lambda: server.rpc.active_streams == 0, timeout=3)
    assert wait_for(lambda: server.counter.count(f"{fn}.closed") == 1, timeout=3)
    assert p.echo("usable") == "usable"


def test_dropping_the_iterator_stops_the_generator(server: Any, connect: Any) -> None:
    p = connect(server)
    it = p.forever()
    next(it)
    del it
    gc.collect()
    assert wait_for(lambda: server.rpc.active_streams == 0, timeout=3)
    assert wait_for(lambda: server.counter.count("forever.closed") == 1, timeout=3)


def test_break_out_of_for_loop_stops_the_generator(server: Any, connect: Any) -> None:
    p = connect(server)
    for item in p.forever():
        if item == 3:
            break
    gc.collect()
    assert wait_for(lambda: server.rpc.active_streams == 0, timeout=3)
    assert p.echo(1) == 1


def test_many_streams_at_once_on_one_proxy(server: Any, connect: Any) -> None:
    p = connect(server)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def consume(k: int) -> None:
        try:
            results[k] = list(p.count_up(200 + k))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert all(results[k] == list(range(200 + k)) for k in range(12))
    assert server.rpc.active_streams == 0


def test_generator_argument_errors_are_local(server: Any, connect: Any) -> None:
    p = connect(server)
    with pytest.raises(TypeError):
        p.count_up()


@pytest.mark.parametrize("fn", ["count_up", "acount_up"])
def test_a_server_window_smaller_than_the_clients_does_not_stall_the_stream(
        serve: Any, connect: Any, fn: str) -> None:
    """The server grants 16 items ahead where the proxy asked for 64: the first item tells
    the proxy, which gives credit back after 8 (not 32, which the server would never reach)."""
    app, rpc, _ = build_app(stream_window_max=16)
    served = serve(app, rpc)
    p = connect(served, timeout=3.0, stream_window=64)
    assert list(p[fn](200)) == list(range(200))
