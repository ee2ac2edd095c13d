"""Deadlines and keepalive on slow or stuck links (issue #19): a relay on loopback slows,
stalls or cuts the connection between a real server and both clients (API §2)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from easyrpc import CallTimeout
from easyrpc.proxy import EasyRpcProxy

from .apps import build_app
from .conftest import SECRET, wait_for
from .faults import Relay

BIG = 1_300_000  # over 1 MiB: received as one big frame (the path that read it to the end)
KEEPALIVE = {"ping_interval": 0.5, "ping_timeout": 0.5}  # a peer silent for 1 s is dropped


def _serve(serve: Any, **options: Any) -> Any:
    app, rpc, _ = build_app(**options)

    @rpc.origin
    def length(value: str) -> int:
        return len(value)

    gate = threading.Event()

    @rpc.origin
    def wait_gate() -> bool:
        return gate.wait(10)

    served = serve(app, rpc)
    served.rpc = rpc
    served.gate = gate
    return served


@pytest.fixture
def server(serve: Any) -> Any:
    """A server with the default keepalive (20 + 20 s)."""
    return _serve(serve)


@pytest.fixture
def quick_server(serve: Any) -> Any:
    """A server that drops a peer silent for 1 s."""
    return _serve(serve, **KEEPALIVE)


@pytest.fixture
def relay_to() -> Iterator[Callable[[Any], Relay]]:
    """``relay_to(served)``: a Relay to that server, closed at teardown."""
    relays: list[Relay] = []

    def _relay(served: Any) -> Relay:
        relays.append(Relay(served.port))
        return relays[-1]

    yield _relay
    for r in relays:
        r.close()


def _cid(p: Any) -> str:
    return str((p.proxy if hasattr(p, "proxy") else p).connection_id)


def _warm_up(p: Any) -> None:
    # a few sequential calls: a blocking caller then reads its own replies (the reading role)
    for i in range(3):
        assert p.echo(i) == i


def test_a_big_reply_stalled_half_way_times_out_at_the_call_limit(relay_to: Any, server: Any, connect: Any) -> None:
    """A reply stuck mid-frame fails its call with CallTimeout at the call's limit (not at
    the keepalive's); other calls meanwhile time out too, and once the rest of the frame
    arrives the connection carries calls again."""
    relay = relay_to(server)
    p = connect(relay, timeout=1.5)
    _warm_up(p)
    cid = _cid(p)
    relay.stall_after("down", 600_000)  # about half of the reply, then nothing
    start = time.monotonic()
    with pytest.raises(CallTimeout):
        p.echo("x" * BIG)
    elapsed = time.monotonic() - start
    assert relay.wait_held("down", 0)  # the reply really was cut half-way
    assert 1.2 < elapsed < 3.5, elapsed
    start = time.monotonic()
    with pytest.raises(CallTimeout):  # the connection is stuck behind that frame: a clear error
        p.echo("behind it")
    assert 1.2 < time.monotonic() - start < 3.5
    relay.resume()
    assert p.echo("after") == "after"
    assert _cid(p) == cid  # the same connection: a timeout does not cost the connection


@pytest.mark.parametrize("direction", ["down", "up"])
def test_a_big_message_arriving_slowly_is_not_cut_by_keepalive(
        relay_to: Any, quick_server: Any, connect: Any, direction: str) -> None:
    """A peer whose bytes keep arriving is alive: a 1.3 MB reply ("down") or argument
    ("up") dribbling for ~3 s is not cut by a 1 s keepalive on either side."""
    relay = relay_to(quick_server)
    p = connect(relay, **KEEPALIVE)
    _warm_up(p)
    cid = _cid(p)
    relay.dribble(direction, BIG / 3)
    start = time.monotonic()
    if direction == "down":
        assert p.echo("y" * BIG) == "y" * BIG
    else:
        assert p.length("y" * BIG) == BIG
    assert time.monotonic() - start > 2.0  # it really took longer than the keepalive, twice
    assert _cid(p) == cid  # neither side dropped the connection meanwhile
    relay.dribble(direction, None)
    assert p.echo("still here") == "still here"


def test_a_silent_link_is_still_dropped_by_keepalive(relay_to: Any, quick_server: Any, connect: Any) -> None:
    """Only silence counts: a link that stops mid-reply is dropped after the keepalive."""
    relay = relay_to(quick_server)
    p = connect(relay, **KEEPALIVE)
    _warm_up(p)
    cid = _cid(p)
    relay.stall_after("down", 600_000)
    fut_errors: list[BaseException] = []
    try:
        p.echo("z" * BIG)
    except Exception as exc:  # noqa: BLE001 - recorded for the assertion
        fut_errors.append(exc)
    assert fut_errors and isinstance(fut_errors[0], ConnectionError), fut_errors
    relay.resume()
    assert wait_for(lambda: p.echo("back") == "back" if _cid(p) != cid else False, timeout=10)


def test_close_in_a_done_callback_ends_every_thread(server: Any) -> None:
    """close() called from a future's done-callback (on the dispatcher thread) returns and
    ends every easyrpc thread, that one included (the no-leaked-threads fixture checks)."""
    p = EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET)
    closed = threading.Event()
    ran_on: list[str] = []

    def on_done(_: Any) -> None:
        ran_on.append(threading.current_thread().name)
        p.close()
        closed.set()

    try:
        fut = p.wait_gate.submit()
        fut.add_done_callback(on_done)  # before the reply: it runs on the dispatcher
        server.gate.set()
        assert fut.result(5) is True
        assert closed.wait(5)
        assert ran_on == ["easyrpc-dispatch"]
        assert wait_for(lambda: not any(t.name in ("easyrpc-dispatch", "easyrpc-reader")
                                        for t in threading.enumerate()), timeout=5)
    finally:
        p.close()


def test_waiting_for_room_under_max_in_flight_counts_toward_the_call_timeout(server: Any) -> None:
    """The limit runs from the call, waiting for room included: a call fails at its limit
    whether it is still waiting for room or was sent after waiting for it."""
    with EasyRpcProxy.create("127.0.0.1", server.port, "/ws/test", server_secret=SECRET, max_in_flight=1) as p:
        _warm_up(p)
        busy = p.slow.submit(1.0)
        start = time.monotonic()
        with pytest.raises(CallTimeout):
            p.slow.with_timeout(0.5)(0.01)  # never gets room in time
        assert 0.4 < time.monotonic() - start < 0.9
        busy.result(5)

        # The only slot is held by a blocking call on another thread, which reads its own
        # reply; once it is done, this call gets room, is sent, and reads for itself.
        def hold_the_slot() -> None:
            _warm_up(p)
            p.slow(0.6)

        holder = threading.Thread(target=hold_the_slot, name="test-holder")
        holder.start()
        try:
            assert wait_for(lambda: server.rpc.active_calls == 1, timeout=5)
            start = time.monotonic()
            with pytest.raises(CallTimeout):
                p.slow.with_timeout(1.2)(3.0)  # room after ~0.6 s, then ~0.6 s left
            assert 1.1 < time.monotonic() - start < 1.55  # not 1.2 s after getting room (~1.8 s)
        finally:
            holder.join(5)


def test_calls_and_streams_work_through_a_relay_that_splits_every_write(
        relay_to: Any, server: Any, connect: Any) -> None:
    """Frames split into 13-byte pieces both ways (headers cut anywhere) still parse on both ends."""
    relay = relay_to(server)
    relay.fragment(13)
    p = connect(relay)
    _warm_up(p)
    assert p.echo("w" * 100_000) == "w" * 100_000
    assert list(p.count_up(20)) == list(range(20))
    assert relay.forwarded("up") > 100_000 and relay.forwarded("down") > 100_000
