"""Several endpoints in one proxy: it connects to the first that answers and fails over
to the next when its server dies (``create_many``, ``endpoint_order``), both clients.

The servers are ``tests.deploy_app`` in subprocesses (``tests/server_main.py deploy``),
each writing the calls it runs to its own journal file, and killed through their own
Popen handles: the journals survive the kill, so a test counts every call one by one
(completed, or failed with ``ConnectionLost``, never both, never run twice).
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

import pytest

from easyrpc import ConnectionLost
from easyrpc._client.endpoints import Endpoint, Endpoints, parse_endpoints
from easyrpc.aio import EasyRpcProxy as AioProxy
from easyrpc.exceptions import AuthenticationError
from easyrpc.proxy import EasyRpcProxy

from .deploy_app import PATH, SECRET
from .faults import ServerProcess
from .test_cli import easyrpc

IN_FLIGHT = 24  # calls kept in flight while the first server is killed
FAILOVER_LIMIT = 3.0  # seconds from the kill to the first call answered by the second server


def _url(port: int) -> str:
    return f"ws://127.0.0.1:{port}{PATH}"


def _dead_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend(ServerProcess):
    """``tests.deploy_app`` under Werkzeug in a subprocess, with its own record() journal."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        super().__init__(0, "deploy", f"journal={journal}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tags(self) -> list[str]:
        return self.journal.read_text().split() if self.journal.exists() else []


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[list[Backend]]:
    started = [Backend(tmp_path / "journal-1"), Backend(tmp_path / "journal-2")]
    yield started
    for backend in started:
        backend.stop()


class Client:
    """A blocking or an asyncio proxy behind one face: ``submit(fn, *args)`` gives a
    ``concurrent.futures.Future`` either way (the asyncio one runs on the test's loop)."""

    def __init__(self, kind: str, loop: asyncio.AbstractEventLoop, endpoints: list[Any], **kwargs: Any) -> None:
        self.kind, self.loop = kind, loop
        if kind == "sync":
            self.proxy: Any = EasyRpcProxy.create_many(endpoints, SECRET, **kwargs)
        else:
            self.proxy = self._run(AioProxy.create_many(endpoints, SECRET, **kwargs))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def submit(self, name: str, *args: Any) -> Future[Any]:
        if self.kind == "sync":
            return self.proxy[name].submit(*args)  # type: ignore[no-any-return]
        return asyncio.run_coroutine_threadsafe(self.proxy[name](*args), self.loop)

    def call(self, name: str, *args: Any, timeout: float = 30) -> Any:
        return self.submit(name, *args).result(timeout)

    def close(self) -> None:
        if self.kind == "sync":
            self.proxy.close()
        else:
            self._run(self.proxy.close())


@pytest.fixture(params=["sync", "aio"])
def client(request: pytest.FixtureRequest, aio_loop: asyncio.AbstractEventLoop) -> Iterator[Callable[..., Client]]:
    opened: list[Client] = []

    def _open(endpoints: list[Any], **kwargs: Any) -> Client:
        opened.append(c := Client(request.param, aio_loop, endpoints, **kwargs))
        return c

    yield _open
    for c in opened:
        c.close()


# --- endpoints, without sockets -------------------------------------------------------------
def test_endpoints_are_urls_or_tuples_and_bad_ones_are_refused() -> None:
    assert parse_endpoints(["ws://h1:81/ws/a", "wss://h2/ws/b?x=1", ("::1", 82, "/c")], tls=False) == [
        Endpoint("h1", 81, "/ws/a", False), Endpoint("h2", 443, "/ws/b?x=1", True), Endpoint("::1", 82, "/c", False)]
    assert parse_endpoints([("h", 1, "/p")], tls=True)[0].url == "wss://h:1/p"
    assert Endpoint("::1", 82, "/c", False).url == "ws://[::1]:82/c"
    assert parse_endpoints(["ws://h"], tls=False)[0].url == "ws://h:80/"
    for bad, error in [([], ValueError), (["http://h/x"], ValueError), (["ws://h:99999/x"], ValueError),
                       ([("h", 0, "/x")], ValueError), ([("h", 80, "x")], ValueError), ([("h", 80)], TypeError),
                       ("ws://h/x", TypeError)]:
        with pytest.raises(error):
            parse_endpoints(bad, tls=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wss://"):
        parse_endpoints(["ws://h/x"], tls=True)  # an ssl_context with a plain URL: say wss://


def test_a_round_starts_after_the_endpoint_that_dropped_and_ends_with_it() -> None:
    eps = parse_endpoints(["ws://a/", "ws://b/", "ws://c/"], tls=False)
    ring = Endpoints(eps, "in-order")
    assert ring.round() == eps and ring.current == eps[0]  # first connection: in the order given
    ring.connected(eps[1])
    assert ring.current == eps[1]
    assert ring.round() == [eps[2], eps[0], eps[1]]  # after b drops: c, a, then b again
    ring.connected(eps[2])
    assert ring.round() == [eps[0], eps[1], eps[2]]


def test_random_order_is_a_shuffle_made_once_per_proxy() -> None:
    eps = parse_endpoints([f"ws://h{i}/" for i in range(8)], tls=False)
    ring = Endpoints(eps, "random", random.Random(7))
    first = ring.round()
    assert sorted(first, key=eps.index) == eps and first != eps
    assert ring.round() == first  # the same order each round, until one answers
    firsts = {Endpoints(eps, "random").round()[0] for _ in range(200)}
    assert len(firsts) > 4  # proxies spread over the servers
    with pytest.raises(ValueError, match="endpoint_order"):
        EasyRpcProxy.create_many(["ws://h/"], SECRET, endpoint_order="sorted")


# --- connecting ---------------------------------------------------------------------------
def test_connects_to_the_first_endpoint_that_answers(backends: list[Backend], client: Callable[..., Client]) -> None:
    live = backends[1]
    c = client([_url(_dead_port()), ("127.0.0.1", live.port, PATH), _url(backends[0].port)])
    assert c.proxy.connected
    assert c.call("info")["pid"] == live.pid
    assert c.proxy._engine.url == _url(live.port)
    assert c.call("echo", [1, "a"]) == [1, "a"]


def test_when_no_endpoint_answers_the_error_names_each(client: Callable[..., Client]) -> None:
    dead = [_url(_dead_port()), _url(_dead_port())]
    with pytest.raises(ConnectionError) as caught:
        client(dead, connect_timeout=2)
    assert all(url in str(caught.value) for url in dead), caught.value


def test_a_refusal_is_an_authentication_error_even_beside_unreachable_ones(backends: list[Backend]) -> None:
    with pytest.raises(AuthenticationError):
        EasyRpcProxy.create_many([_url(_dead_port()), _url(backends[0].port)], "wrong-secret", connect_timeout=2)


# --- failover -------------------------------------------------------------------------------
def test_killed_server_calls_fail_or_complete_once_then_go_on_through_the_next(
        backends: list[Backend], client: Callable[..., Client]) -> None:
    """Calls in flight when the first server is killed each fail with ConnectionLost or
    complete, counted one by one: none is lost, none runs twice (the journals), and calls
    go on through the second server within FAILOVER_LIMIT of the kill."""
    first, second = backends
    c = client([_url(first.port), _url(second.port)], timeout=20)
    assert c.call("info")["pid"] == first.pid
    drops: list[float] = []
    c.proxy._engine.add_lost_listener(lambda: drops.append(time.monotonic()))
    outcomes: dict[str, str] = {}
    futures: list[tuple[str, Future[Any]]] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:  # keeps IN_FLIGHT record() calls in flight until stopped
        n = 0
        try:
            while not stop.is_set():
                wave = [(f"c{n + i}", c.submit("record", f"c{n + i}", 0.02)) for i in range(IN_FLIGHT)]
                n += IN_FLIGHT
                futures.extend(wave)
                wait([f for _, f in wave], timeout=30)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    loader = threading.Thread(target=load, name="test-failover-load")
    loader.start()
    try:
        time.sleep(0.5)  # load on the first server
        killed_at = time.monotonic()
        first.kill()
        answered = _first_answer(c, "probe", killed_at + 20)
        failover = time.monotonic() - killed_at
        time.sleep(0.5)  # load on the second server
    finally:
        stop.set()
        loader.join(60)
    assert not errors and not loader.is_alive(), errors
    assert answered.startswith("probe-")
    for tag, fut in futures:
        exc = fut.exception(30)
        if exc is None:
            assert fut.result() == tag
            outcomes[tag] = "done"
        else:
            assert isinstance(exc, ConnectionLost), repr(exc)
            outcomes[tag] = "lost"
    ran = first.tags() + second.tags()
    assert len(ran) == len(set(ran)), "a call ran twice"
    done = {tag for tag, what in outcomes.items() if what == "done"}
    lost = set(outcomes) - done
    assert done <= set(ran), done - set(ran)  # a completed call ran (once)
    assert len(drops) == 1 and drops[0] >= killed_at, drops  # the kill dropped the connection, once
    assert len(lost) <= IN_FLIGHT, len(lost)  # the calls in flight at the kill, at most
    assert set(second.tags()) & done and answered in second.tags()
    assert c.call("info")["pid"] == second.pid
    assert c.proxy._engine.url == _url(second.port)
    assert failover < FAILOVER_LIMIT, failover
    print(f"\nfailover ({c.kind}): {failover * 1000:.0f} ms from the kill to the first call answered by "
          f"the second server; {len(done)} calls done, {len(lost)} ConnectionLost, none run twice")


def _first_answer(c: Client, tag: str, deadline: float) -> str:
    """record(tag) until it is answered: a call sent before the proxy saw the drop fails
    with ConnectionLost; one made while it reconnects waits for the next server."""
    n = 0
    while True:
        try:
            return c.call("record", f"{tag}-{n}", timeout=max(0.1, deadline - time.monotonic()))  # type: ignore[no-any-return]
        except ConnectionLost:
            assert time.monotonic() < deadline, "no server answered"
            n += 1


def test_fails_over_again_when_the_second_dies_and_the_first_is_back(
        backends: list[Backend], client: Callable[..., Client]) -> None:
    first, second = backends
    c = client([_url(first.port), _url(second.port)], timeout=20)
    first.kill()
    _first_answer(c, "a", time.monotonic() + 20)
    assert c.call("info")["pid"] == second.pid
    first.start()  # the same port
    assert c.call("info")["pid"] == second.pid  # stays where it is
    second.kill()
    _first_answer(c, "b", time.monotonic() + 20)
    assert c.call("info")["pid"] == first.pid


def test_cli_takes_several_urls_comma_separated(backends: list[Backend]) -> None:
    urls = f"{_url(_dead_port())},{_url(backends[1].port)}"
    done = easyrpc("call", urls, "echo", '"both"')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '"both"'
    listed = easyrpc("list", urls)
    assert listed.returncode == 0 and "record(tag: str, seconds: float = 0.0) -> str" in listed.stdout
    mixed = easyrpc("list", f"{_url(backends[0].port)},wss://127.0.0.1:1{PATH}")
    assert mixed.returncode == 2 and "mixed" in mixed.stderr
