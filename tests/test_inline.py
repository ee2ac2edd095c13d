"""Calls the hub's leader runs itself, and the new leader that takes over the loop.

A connection with nothing else in flight runs a plain call on the hub's leader thread
(no hand-off to a worker), and so does a call of a function whose recent runs were fast
(CallPace), whatever else is in flight. These tests pin down what must still hold: a
long call never keeps the connection's other messages (or any other connection) waiting
(the watchdog makes a new thread the leader), the connection's keepalive is answered
meanwhile, a peer that leaves is noticed at once, and every thread involved is named
and ends with the connection or the server.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from flask import Flask

from easyrpc import _transport
from easyrpc._net import _inline
from easyrpc._net.hub import hub
from easyrpc._server import calls, tasks
from easyrpc.exceptions import ConnectionLost
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer

from .conftest import SECRET, Served, server_readers, wait_for

pytestmark = pytest.mark.timeout(30)


class Gate:
    """A server-side function that holds until released, and says when it started."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.thread_name = ""

    def hold(self) -> str:
        self.thread_name = threading.current_thread().name
        self.started.set()
        self.release.wait(10)
        return "held"


@pytest.fixture
def gated(serve: Callable[..., Served]) -> Iterator[tuple[Served, EasyRpcServer, Gate]]:
    app = Flask(__name__)
    rpc = EasyRpcServer(app, "/ws/test", SECRET)
    gate = Gate()

    @rpc.origin
    def who() -> str:
        return threading.current_thread().name

    @rpc.origin
    def open_gate() -> str:
        gate.release.set()
        return threading.current_thread().name

    @rpc.origin
    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @rpc.origin
    def slow_who() -> str:
        time.sleep(2 * tasks.FAST_CALL)
        return threading.current_thread().name

    @rpc.origin
    def maybe_hold(hold: bool) -> str:
        return gate.hold() if hold else threading.current_thread().name

    rpc.register(gate.hold, name="hold")
    served = serve(app, rpc)
    yield served, rpc, gate
    gate.release.set()  # never leave a handler thread held


def _in_background(fn: Callable[[], Any]) -> Future[Any]:
    fut: Future[Any] = Future()

    def run() -> None:
        try:
            fut.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            fut.set_exception(exc)

    threading.Thread(target=run, name="test-caller", daemon=True).start()
    return fut


def _sequential(p: Any) -> None:
    """Make the connection's next plain call run inline: a streak of solo calls."""
    for _ in range(calls.SOLO_STREAK):
        p.who()


def _hold_inline(p: Any, gate: Gate) -> Future[Any]:
    """Start hold() so that it runs inline on the hub's leader; its future."""
    _sequential(p)
    held = _in_background(p.hold)
    assert gate.started.wait(5)
    assert gate.thread_name.startswith("easyrpc-hub-")  # it runs inline
    return held


def test_sequential_calls_run_on_the_hubs_leader(gated: Any, open_proxy: Any) -> None:
    served, _, _ = gated
    p = open_proxy(served)
    names = [p.who() for _ in range(50)]
    # the first calls of a streak go to the pool; from then on, the hub's leader runs them
    first = calls.SOLO_STREAK - 1
    assert all(n.startswith("easyrpc-worker") for n in names[:first]), names
    assert all(n.startswith("easyrpc-hub-") for n in names[first:]), names


def test_a_call_arriving_during_a_long_inline_call_is_served(gated: Any, open_proxy: Any) -> None:
    served, _, gate = gated
    p = open_proxy(served)
    held = _hold_inline(p, gate)
    # Without a new leader reading meanwhile, this call would wait behind hold(), which
    # waits for it: a deadlock the call's time limit turns into CallTimeout.
    ran_on = p.open_gate.with_timeout(5)()
    assert ran_on.startswith("easyrpc-worker")
    assert held.result(5) == "held"
    assert p.who()  # and the connection reads on as before


def test_keepalive_is_answered_during_a_long_inline_call(gated: Any, open_proxy: Any) -> None:
    served, _, _ = gated
    # The proxy drops a server silent for 0.3 + 0.3 s; the call runs inline for 1.5 s.
    p = open_proxy(served, ping_interval=0.3, ping_timeout=0.3, reconnect=False)
    _sequential(p)
    assert p.sleep(1.5) == 1.5
    assert p.who()


def test_a_peer_leaving_during_a_long_inline_call_is_noticed_at_once(gated: Any) -> None:
    served, rpc, gate = gated
    p = EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret=SECRET, reconnect=False)
    held = _hold_inline(p, gate)
    assert wait_for(lambda: rpc.connection_count == 1)
    p.close()
    with pytest.raises(ConnectionLost):
        held.result(5)
    # the new leader reads the close while hold() still runs, and forgets the connection
    assert wait_for(lambda: rpc.connection_count == 0 and rpc.active_calls == 0, timeout=3)
    assert not gate.release.is_set()
    gate.release.set()
    # the old leader, its call done, retires; the new one ends with the last connection
    assert wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("easyrpc-hub-")
                                 and t.is_alive() and "watchdog" not in t.name], timeout=3)


def test_server_close_during_a_long_inline_call(gated: Any) -> None:
    served, rpc, gate = gated
    p = EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret=SECRET, reconnect=False)
    try:
        held = _hold_inline(p, gate)
        start = time.monotonic()
        rpc.close(grace=0.3)
        assert time.monotonic() - start < 3
        with pytest.raises(ConnectionLost):
            held.result(5)
        # every hub thread ends but the one still inside hold() (as a worker would be)
        assert wait_for(lambda: not any(t.name.startswith("easyrpc-hub") and t.is_alive()
                                        and t.name != gate.thread_name for t in threading.enumerate()), timeout=3)
    finally:
        gate.release.set()
        p.close()


def test_the_watchdog_ticks_only_while_inline_calls_happen(gated: Any, open_proxy: Any) -> None:
    served, rpc, _ = gated
    p = open_proxy(served)
    watch = hub().watch
    p.who()
    assert wait_for(lambda: watch.idle, timeout=3)  # then started again by the calls below
    start_ticks = watch.ticks
    start = time.monotonic()
    for _ in range(200):
        p.who()
    elapsed = time.monotonic() - start
    # It sleeps at least _WATCH_MIN_SLEEP between looks (a spinning watchdog looks thousands of times).
    assert watch.ticks - start_ticks <= elapsed / _inline.WATCH_MIN_SLEEP + 5
    assert wait_for(lambda: watch.idle, timeout=3)
    asleep = watch.ticks
    time.sleep(0.2)  # nothing runs: the count must not move
    assert watch.ticks == asleep


def test_concurrent_calls_go_to_the_pool(gated: Any, open_proxy: Any) -> None:
    served, _, gate = gated
    p = open_proxy(served)
    held = _hold_inline(p, gate)
    # with hold() in flight, these are not the connection's only call: workers run them
    names = [p.who() for _ in range(5)]
    assert all(n.startswith("easyrpc-worker") for n in names), names
    gate.release.set()
    assert held.result(5) == "held"



def test_a_leader_that_cannot_start_leaves_the_connection_working(
        gated: Any, open_proxy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a new leader fails once (as under thread exhaustion): the long call still
    answers, the old leader reads on afterwards, and the watchdog lives on."""
    served, rpc, gate = gated
    orig_start = threading.Thread.start
    failed = threading.Event()

    def start(self: threading.Thread) -> None:
        if self.name.startswith("easyrpc-hub-") and not self.name.endswith("watchdog") \
                and leading.is_set() and not failed.is_set():
            failed.set()
            raise RuntimeError("can't start new thread")
        orig_start(self)

    leading = threading.Event()  # the hub's first leader is up (the proxy is connected)
    monkeypatch.setattr(threading.Thread, "start", start)
    p = open_proxy(served, reconnect=False)
    leading.set()
    held = _hold_inline(p, gate)
    assert failed.wait(5)  # the watchdog tried to start a new leader
    gate.release.set()
    assert held.result(5) == "held"
    assert p.who.with_timeout(3)()  # the old leader reads again
    # and a later long call gets its new leader
    gate.started.clear()
    gate.release.clear()
    held = _hold_inline(p, gate)
    assert p.open_gate.with_timeout(5)().startswith("easyrpc-worker")
    assert held.result(5) == "held"


# --- one reader at a time, under takeovers and handbacks -------------------------------

class ReaderGuard:
    """Flags two threads inside one server-side FrameReader's pop/fill at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.violations: list[str] = []
        self.checked = 0  # calls into a server-side reader seen
        self._lock = threading.Lock()
        self._inside: dict[int, int] = {}
        self._servers = server_readers(monkeypatch)  # the client's readers are not ours to check
        for name in ("pop", "fill", "receive_ready", "wait_readable"):
            orig = getattr(_transport.FrameReader, name)
            monkeypatch.setattr(_transport.FrameReader, name, self._wrap(orig, name))

    def _wrap(self, orig: Callable[..., Any], name: str) -> Callable[..., Any]:
        def wrapper(reader: Any, *args: Any, **kwargs: Any) -> Any:
            if reader not in self._servers:
                return orig(reader, *args, **kwargs)
            me = threading.get_ident()
            with self._lock:
                self.checked += 1
                other = self._inside.get(id(reader))
                if other is not None and other != me:
                    self.violations.append(f"{name}: {threading.current_thread().name} while {other} reads")
                self._inside[id(reader)] = me
            try:
                return orig(reader, *args, **kwargs)
            finally:
                with self._lock:
                    if self._inside.get(id(reader)) == me:
                        del self._inside[id(reader)]

        return wrapper



def _stress_app(serve: Callable[..., Served], **kw: Any) -> tuple[Served, EasyRpcServer]:
    app = Flask(__name__)
    rpc = EasyRpcServer(app, "/ws/test", SECRET, **kw)

    @rpc.origin
    def nap(seconds: float) -> float:
        if seconds:
            time.sleep(seconds)
        return seconds

    @rpc.origin
    def count(n: int) -> Iterator[int]:
        yield from range(n)

    return serve(app, rpc), rpc


def _stress(p: EasyRpcProxy, seconds: float) -> None:
    rng = random.Random(1)
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def side() -> None:
        r = random.Random(2)
        while time.monotonic() < stop:
            try:
                assert p.nap(r.choice([0, 0.0005, 0.003])) is not None
                if r.random() < 0.2:
                    assert list(p.count(5)) == [0, 1, 2, 3, 4]
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return
            time.sleep(r.choice([0.0, 0.01, 0.05]))

    t = threading.Thread(target=side, name="test-side", daemon=True)
    t.start()
    n = 0
    while time.monotonic() < stop:
        d = rng.choice([0, 0, 0, 0.001, 0.0025, 0.004, 0.02])
        assert p.nap.with_timeout(10)(d) == d
        n += 1
    t.join(15)
    assert not errors, errors
    assert n > 50


@pytest.mark.parametrize("encryption", [False, True])
def test_one_reader_at_a_time_under_takeovers_and_handbacks(
        serve: Callable[..., Served], monkeypatch: pytest.MonkeyPatch, encryption: bool) -> None:
    """Sequential calls around the 2 ms limit, concurrent calls and streams, keepalive every
    0.2 s: many new leaders, and never two threads in a connection's reader at once."""
    guard = ReaderGuard(monkeypatch)
    served, rpc = _stress_app(serve, encryption_enabled=encryption)
    p = EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret=SECRET,
                            ping_interval=0.2, ping_timeout=0.5, reconnect=False,
                            encryption_enabled=encryption)
    takeovers = [0]
    orig_start = threading.Thread.start

    def counted(self: threading.Thread) -> None:
        if self.name.startswith("easyrpc-hub-") and not self.name.endswith("watchdog"):
            takeovers[0] += 1
        orig_start(self)

    monkeypatch.setattr(threading.Thread, "start", counted)
    try:
        _stress(p, 3.0)
    finally:
        p.close()
    assert takeovers[0] > 10, takeovers
    assert wait_for(lambda: rpc.connection_count == 0)
    assert guard.checked and not guard.violations, (guard.checked, guard.violations[:5])


def test_call_pace_counts_fast_runs_and_forgives_one_slow_run() -> None:
    pace = tasks.CallPace()
    fast, slow = tasks.FAST_CALL / 10, tasks.FAST_CALL * 10
    for _ in range(tasks.FAST_SCORE - 1):
        pace.record(fast)
    assert not pace.fast
    pace.record(fast)
    assert pace.fast
    for _ in range(2 * tasks.FAST_CAP):
        pace.record(fast)
    pace.record(slow)  # one run held up (by the GIL, say) among fast ones
    assert pace.fast
    pace.record(slow)  # slow again: back to the pool
    assert not pace.fast
    assert pace.score >= 0


def test_concurrent_calls_of_a_fast_function_run_on_the_hubs_leader(gated: Any, open_proxy: Any) -> None:
    served, _, _ = gated
    p = open_proxy(served)
    for _ in range(tasks.FAST_SCORE + calls.SOLO_STREAK):
        p.who()  # fast runs: its pace says so
    names = [f.result(5) for f in [p.who.submit() for _ in range(64)]]
    assert not any(n.startswith("easyrpc-worker") for n in names), names


def test_concurrent_calls_of_a_slow_function_go_to_the_pool(gated: Any, open_proxy: Any) -> None:
    served, _, _ = gated
    p = open_proxy(served)
    for _ in range(tasks.FAST_SCORE + calls.SOLO_STREAK):
        p.slow_who()  # sequential: these may run inline, and their runs are slow
    names = [f.result(5) for f in [p.slow_who.submit() for _ in range(16)]]
    # The first may arrive alone, continuing the sequential streak, and run inline; the
    # others arrive while it runs, find calls buffered, and go to the pool.
    assert all(n.startswith("easyrpc-worker") for n in names[1:]), names


def test_a_fast_function_turning_slow_inline_holds_up_no_other_call(gated: Any, open_proxy: Any) -> None:
    served, _, gate = gated
    p = open_proxy(served)
    for _ in range(tasks.FAST_SCORE + calls.SOLO_STREAK):
        p.maybe_hold(False)
    others = [p.who.submit() for _ in range(4)]  # in flight: not a sequential streak
    held = p.maybe_hold.submit(True)
    assert gate.started.wait(5)
    assert not gate.thread_name.startswith("easyrpc-worker")  # its pace put it inline
    # the watchdog gives the loop to a new leader: this call is served while hold() runs
    assert p.open_gate.with_timeout(5)().startswith("easyrpc-worker")
    assert held.result(5) == "held"
    assert all(f.result(5) for f in others)
