"""A real nginx in front of two gunicorn server processes, ``-k gevent`` and ``-k gthread``.

Two ``gunicorn -w 1 tests.deploy_app:app`` backends (``tests/test_deploy.py``'s
:class:`Gunicorn`, each with its own ``record`` journal) behind nginx
(``tests/nginx.py``: the README's configuration, on loopback ports, with a short
``proxy_read_timeout``), everything stopped by PID. Through nginx, for both worker
classes: calls, streams and callbacks (blocking and asyncio clients); a connection idle
past nginx's read timeout is kept open by the client's pings (and one without them is
closed by nginx); TLS terminated at nginx with a trustme certificate the client
verifies; and a backend killed mid-load: its clients reconnect through nginx to the
other backend, and every call in flight completes or fails with ``ConnectionLost``,
counted one by one, none lost or run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from easyrpc import ConnectionLost
from easyrpc.aio import EasyRpcProxy as AioProxy
from easyrpc.proxy import EasyRpcProxy, engine_of

from .deploy_app import PATH, SECRET
from .nginx import SITE, Nginx, nginx_binary
from .test_deploy import Gunicorn

ROOT = Path(__file__).resolve().parent.parent
READ_TIMEOUT = 1.5  # nginx's proxy_read_timeout in these tests (seconds)
IN_FLIGHT = 16  # calls each client keeps in flight while a backend is killed
CLIENTS = 4


@dataclass
class Stack:
    """nginx in front of two gunicorn backends of one worker class."""

    worker: str
    backends: list[Gunicorn]
    journals: list[Path]
    nginx: Nginx
    ca: trustme.CA

    def proxy(self, **kwargs: Any) -> EasyRpcProxy:
        kwargs.setdefault("timeout", 20)
        return EasyRpcProxy.create(self.nginx.host, self.nginx.port, PATH, SECRET, **kwargs)

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def worker_pids(self) -> list[int]:
        return [b.health()["pid"] for b in self.backends]


@contextlib.contextmanager
def stack(worker: str, tmp: Path, read_timeout: float = READ_TIMEOUT) -> Iterator[Stack]:
    nginx_binary()  # skip (or fail under CI) before starting anything
    if worker == "gevent":
        pytest.importorskip("gevent")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    journals = [tmp / f"journal-{i}" for i in range(2)]
    backends: list[Gunicorn] = []
    nginx: Nginx | None = None
    try:
        for i, journal in enumerate(journals):
            backends.append(Gunicorn(worker, 200, tmp / f"gunicorn-{i}.log", env={"EASYRPC_TEST_JOURNAL": str(journal)}))
        nginx = Nginx(tmp / "nginx", [b.port for b in backends], tmp / "server.pem", tmp / "server.pem",
                      f"{round(read_timeout * 1000)}ms")
        yield Stack(worker, backends, journals, nginx, ca)
    finally:
        if nginx is not None:
            nginx.stop()
        for backend in backends:
            backend.stop()


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(request.param, tmp_path_factory.mktemp(f"nginx-{request.param}")) as s:
        yield s


@pytest.fixture
def proxies() -> Iterator[list[Any]]:
    opened: list[Any] = []
    yield opened
    for p in opened:
        p.close()


def _progress(i: int, n: int) -> int:
    return i * 10


# --- calls, streams, callbacks ---------------------------------------------------------------
@pytest.mark.timeout(60)
def test_calls_streams_and_callbacks_through_nginx(served: Stack, proxies: list[Any]) -> None:
    proxies.append(p := served.proxy())
    assert p.echo({"a": [1, 2, 3]}) == {"a": [1, 2, 3]}
    assert p.info()["pid"] in served.worker_pids()
    assert p.info()["gevent"] is (served.worker == "gevent")
    assert list(p.count(200)) == list(range(200))
    assert p.progress(5, _progress) == 150  # the server calls the client back, through nginx
    seen: list[tuple[int, int]] = []
    assert p.progress(3, lambda i, n: seen.append((i, n)) or 0) == 0
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert p.echo("x" * 1_000_000) == "x" * 1_000_000  # bigger than nginx's proxy buffers


@pytest.mark.timeout(60)
def test_asyncio_client_through_nginx(served: Stack, aio_loop: asyncio.AbstractEventLoop) -> None:
    async def session() -> tuple[Any, ...]:
        async with await AioProxy.create(served.nginx.host, served.nginx.port, PATH, SECRET, timeout=20) as p:
            many = await asyncio.gather(*(p.echo(i) for i in range(100)))
            items = [i async for i in p.count(50)]

            async def report(i: int, n: int) -> int:
                return i

            return many, items, await p.progress(4, report)

    many, items, total = asyncio.run_coroutine_threadsafe(session(), aio_loop).result(60)
    assert many == list(range(100)) and items == list(range(50)) and total == 10


@pytest.mark.timeout(60)
def test_pings_keep_a_connection_open_past_nginx_read_timeout(served: Stack, proxies: list[Any]) -> None:
    """Idle for 2.5x nginx's proxy_read_timeout: a client pinging every READ_TIMEOUT/3 s keeps
    its connection (no drop, same connection id); one whose ping interval is longer is
    closed by nginx (it reconnects)."""
    proxies.append(pinging := served.proxy(ping_interval=READ_TIMEOUT / 3, ping_timeout=READ_TIMEOUT * 2))
    proxies.append(quiet := served.proxy(ping_interval=60))
    drops = {"pinging": 0, "quiet": 0}
    for name, p in (("pinging", pinging), ("quiet", quiet)):
        engine_of(p).add_lost_listener(lambda name=name: drops.__setitem__(name, drops[name] + 1))  # type: ignore[misc]
    cid = engine_of(pinging).cid
    time.sleep(READ_TIMEOUT * 2.5)  # the quiet one: dropped at 1x, reconnected, dropped at 2x
    assert drops["pinging"] == 0 and drops["quiet"] >= 1, drops  # quiet: dropped each time it idles
    assert engine_of(pinging).cid == cid
    assert pinging.echo("still open") == "still open"
    assert quiet.echo("reconnected") == "reconnected"


# --- TLS at nginx --------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_tls_terminated_at_nginx_with_a_verified_certificate(served: Stack, proxies: list[Any]) -> None:
    proxies.append(p := EasyRpcProxy.create(served.nginx.host, served.nginx.tls_port, PATH, SECRET,
                                            ssl_context=served.tls_context(), timeout=20))
    assert engine_of(p).url.startswith("wss://")
    assert p.echo("secure") == "secure"
    assert list(p.count(20)) == list(range(20))
    assert p.progress(3, _progress) == 60
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted without the test CA
        EasyRpcProxy.create(served.nginx.host, served.nginx.tls_port, PATH, SECRET,
                            ssl_context=ssl.create_default_context(), connect_timeout=5)


def test_readme_shows_the_tested_nginx_config() -> None:
    readme = (ROOT / "README.md").read_text()
    shown = SITE.format(backend_a="10.0.0.1:8090", backend_b="10.0.0.2:8090", listen="80",
                        listen_tls="443", cert="/etc/ssl/easyrpc/fullchain.pem", key="/etc/ssl/easyrpc/privkey.pem",
                        read_timeout="60s")
    indented = "\n".join(f"  {line}" if line else "" for line in shown.rstrip("\n").split("\n"))  # in a list item
    assert indented in readme


# --- a backend killed mid-load -----------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_backend_killed_mid_load_clients_move_to_the_other(worker: str, tmp_path: Path) -> None:
    proxies: list[EasyRpcProxy] = []
    with stack(worker, tmp_path, read_timeout=60) as s, contextlib.ExitStack() as closing:  # no idle drops
        for _ in range(CLIENTS):
            proxies.append(p := s.proxy())
            closing.callback(p.close)  # before nginx stops
        pids = s.worker_pids()
        placed = [p.info()["pid"] for p in proxies]
        drops: list[list[float]] = [[] for _ in range(CLIENTS)]  # when each client's connection dropped
        for c, p in enumerate(proxies):
            engine_of(p).add_lost_listener(lambda c=c: drops[c].append(time.monotonic()))  # type: ignore[misc]
        victim = pids.index(placed[0])
        survivor = pids[1 - victim]
        futures: list[tuple[str, Future[Any]]] = []
        lock = threading.Lock()
        stop = threading.Event()
        errors: list[BaseException] = []

        def load(c: int, p: EasyRpcProxy) -> None:
            n = 0
            try:
                while not stop.is_set():
                    wave = [(f"{c}-{n + i}", p.record.submit(f"{c}-{n + i}", 0.02)) for i in range(IN_FLIGHT)]
                    n += IN_FLIGHT
                    with lock:
                        futures.extend(wave)
                    wait([f for _, f in wave], timeout=30)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        loaders = [threading.Thread(target=load, args=(c, p), name=f"test-nginx-load-{c}")
                   for c, p in enumerate(proxies)]
        for t in loaders:
            t.start()
        try:
            time.sleep(1.0)
            killed_at = time.monotonic()
            os.kill(s.backends[victim].proc.pid, signal.SIGKILL)  # the arbiter first: no new worker
            os.kill(pids[victim], signal.SIGKILL)
            moved = _first_answer(proxies[0], killed_at + 30)
            failover = time.monotonic() - killed_at
            time.sleep(1.0)
        finally:
            stop.set()
            for t in loaders:
                t.join(60)
        assert not errors and not any(t.is_alive() for t in loaders), errors
        done, lost = set(), set()
        for tag, fut in futures:
            exc = fut.exception(30)
            if exc is None:
                assert fut.result() == tag
                done.add(tag)
            else:
                assert isinstance(exc, ConnectionLost), repr(exc)
                lost.add(tag)
        ran = [line for j in s.journals if j.exists() for line in j.read_text().split()]
        assert len(ran) == len(set(ran)), "a call ran twice"
        assert done <= set(ran), sorted(done - set(ran))[:5]
        on_victim = sum(1 for pid in placed if pid == pids[victim])
        # the kill dropped exactly the victim's clients (once each), and failed at most their calls in flight
        assert [len(d) for d in drops] == [1 if pid == pids[victim] else 0 for pid in placed], (drops, placed, pids)
        assert all(t >= killed_at for d in drops for t in d), (killed_at, drops)
        assert len(lost) <= IN_FLIGHT * on_victim, (len(lost), on_victim)
        assert all(p.info()["pid"] == survivor for p in proxies)  # every client is on the other backend now
        assert moved in ran
        print(f"\nnginx failover ({worker}): {failover * 1000:.0f} ms from the kill to the first call answered "
              f"by the other backend; {len(done)} calls done, {len(lost)} ConnectionLost, none run twice")


def _first_answer(p: EasyRpcProxy, deadline: float) -> str:
    n = 0
    while True:
        try:
            return p.record(f"probe-{n}")  # type: ignore[no-any-return]
        except ConnectionLost:
            assert time.monotonic() < deadline, "no backend answered"
            n += 1
