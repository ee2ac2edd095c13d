"""Deployment: easyrpc under a real gunicorn, ``-k gevent`` and ``-k gthread`` (1 worker).

Each server is ``python -m gunicorn ... tests.deploy_app:app`` in a subprocess, bound to
a listening socket this process opened on a free port of 127.0.0.1 and passed down
(``-b fd://N``: no race for the port), and stopped at teardown through its own Popen
handle (terminate, then kill). Many connections are opened by a helper process
(``tests/deploy_client.py``), which keeps this process light.

What they show, for both worker classes:

* calls, a generator stream and a plain Flask route of the same app work;
* a slow plain function does not hold up other connections: it runs on the hub's leader
  (a sequential caller's call runs on the spot), so another connection's call is
  answered only if the watchdog hands the loop to a new leader while it sleeps (under
  gevent the leader is a greenlet and ``time.sleep`` yields; the worker reports that it
  is patched, and that a call run on the spot sees itself as the hub's leader);
* hundreds of connections at once, each answered with its own reply, then closed
  cleanly (the worker's connection count and hub go back to what they were), with the
  plain route answering while they are open.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from easyrpc.proxy import EasyRpcProxy

from .deploy_app import PATH, SECRET

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 30.0
STOP_GRACE = 10.0
CALL_TIMEOUT = 20.0
HTTP_TIMEOUT = 5.0
MANY = 300  # connections held at once in the default run
MANY_SLOW = 2000  # the same, with -m slow
SLOW_CALL = 2.0  # seconds the slow call on connection A takes


def _gunicorn_options() -> set[str]:
    from gunicorn.config import KNOWN_SETTINGS

    return {flag for setting in KNOWN_SETTINGS for flag in getattr(setting, "cli", None) or ()}


class Gunicorn:
    """``gunicorn -k <worker> -w 1 tests.deploy_app:app`` on a free port of 127.0.0.1."""

    def __init__(self, worker: str, capacity: int, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.worker = worker
        self.host = "127.0.0.1"
        self.log_path = log_path
        listener = socket.create_server((self.host, 0), backlog=min(socket.SOMAXCONN, 4096))
        self.port = listener.getsockname()[1]
        cmd = [sys.executable, "-m", "gunicorn", "-k", worker, "-w", "1", "-b", f"fd://{listener.fileno()}",
               "--timeout", "0", "--graceful-timeout", "3", "--log-level", "warning",
               "--backlog", str(max(2048, capacity)),
               # gevent and gthread workers both accept at most this many connections at once (default 1000)
               "--worker-connections", str(capacity),
               # the time a new connection has to send its request (gevent's worker drops a slower one
               # silently: 2 s by default, which a loaded 2-core machine can exceed while thousands connect)
               "--keep-alive", "30"]
        if worker == "gthread":
            cmd += ["--threads", str(capacity)]  # one thread per open WebSocket, plus room for plain routes
        if "--no-control-socket" in _gunicorn_options():  # gunicorn >= 25: no socket in $HOME
            cmd.append("--no-control-socket")
        cmd.append("tests.deploy_app:app")
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, pass_fds=(listener.fileno(),),
                                         preexec_fn=_raise_fd_limit, env={**os.environ, **(env or {})})
        finally:
            listener.close()  # gunicorn holds its own copy
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}: {self.log()}")
            try:
                if self.health()["ok"]:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer within {STARTUP_TIMEOUT} s: {self.log()}")
            time.sleep(0.1)

    def health(self) -> dict[str, Any]:
        """GET the app's plain Flask route (bounded)."""
        with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=HTTP_TIMEOUT) as resp:
            assert resp.status == 200
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def proxy(self) -> EasyRpcProxy:
        return EasyRpcProxy.create(self.host, self.port, PATH, server_secret=SECRET, timeout=CALL_TIMEOUT,
                                   connect_timeout=CALL_TIMEOUT)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        """Terminate gunicorn's arbiter (its own PID; it stops its worker), then kill."""
        for action in (self.proc.terminate, self.proc.kill):
            if self.proc.poll() is not None:
                break
            action()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_GRACE)
        self._log.close()


def _raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def gunicorn(worker: str, capacity: int, tmp: Path) -> Iterator[Gunicorn]:
    if worker == "gevent":
        pytest.importorskip("gevent")
    server = Gunicorn(worker, capacity, tmp / f"gunicorn-{worker}.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    with gunicorn(request.param, MANY + 100, tmp_path_factory.mktemp(f"deploy-{request.param}")) as server:
        yield server


@pytest.fixture
def proxies(served: Gunicorn) -> Iterator[list[EasyRpcProxy]]:
    """Open proxies to *served* (append to the list); closed at teardown."""
    opened: list[EasyRpcProxy] = []
    yield opened
    for proxy in opened:
        proxy.close()


def _settled(served: Gunicorn, proxy: EasyRpcProxy, connections: int, timeout: float = 10.0) -> dict[str, Any]:
    """The worker's info once it counts *connections* connections and hub peers (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        info = proxy.info()
        if (info["connections"], info["hub_peers"]) == (connections, connections) or time.monotonic() > deadline:
            return info  # type: ignore[no-any-return]
        time.sleep(0.05)


# --- calls, streams, a slow function, a plain route -----------------------------------------
@pytest.mark.timeout(60)
def test_calls_streams_and_plain_route(served: Gunicorn, proxies: list[EasyRpcProxy]) -> None:
    proxies.append(proxy := served.proxy())
    info = proxy.info()
    assert info["gevent"] is (served.worker == "gevent"), info  # the worker is (or is not) monkey-patched
    assert proxy.echo({"a": [1, 2, 3]}) == {"a": [1, 2, 3]}
    assert [proxy.echo(i) for i in range(50)] == list(range(50))
    assert list(proxy.count(100)) == list(range(100))
    assert list(proxy.count(5, 0.01)) == list(range(5))
    health = served.health()
    assert health["ok"] and health["pid"] == info["pid"] and health["connections"] >= 1


@pytest.mark.timeout(60)
def test_hub_leader_identity(served: Gunicorn, proxies: list[EasyRpcProxy]) -> None:
    """A sequential caller's plain calls run on the hub's leader and ``Hub.is_leader`` says
    so there; a generator runs on a worker, which is not the leader (under gevent both
    are greenlets of one OS thread: the ident is the greenlet's)."""
    proxies.append(proxy := served.proxy())
    seen = [proxy.info() for _ in range(6)]
    assert seen[-1]["on_leader"] is True, seen
    steps = list(proxy.probe(3))
    assert [s["on_leader"] for s in steps] == [False] * 3, steps
    assert all(s["ident"] != seen[-1]["ident"] for s in steps), (steps, seen[-1])


@pytest.mark.timeout(60)
def test_slow_call_does_not_block_other_connections(served: Gunicorn, proxies: list[EasyRpcProxy]) -> None:
    proxies.append(a := served.proxy())
    proxies.append(b := served.proxy())
    for _ in range(4):  # a sequential caller: its next plain call runs on the hub's leader
        assert a.slow(0) == 0
    before = b.info()
    done: queue.Queue[tuple[Any, float]] = queue.Queue()

    def slow_call() -> None:
        t0 = time.monotonic()
        try:
            done.put((a.slow(SLOW_CALL), time.monotonic() - t0))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            done.put((exc, time.monotonic() - t0))

    started = time.monotonic()
    threading.Thread(target=slow_call, name="test-deploy-slow", daemon=True).start()
    # wait (bounded) until the slow call runs in the worker: b's info counts it
    deadline = started + SLOW_CALL / 2
    while b.info()["active_calls"] < 2:
        assert time.monotonic() < deadline, "the slow call never started"
    t0 = time.monotonic()
    assert b.echo("b") == "b"
    assert list(b.count(3)) == [0, 1, 2]
    health = served.health()
    answered_after = time.monotonic() - t0
    assert done.empty(), "the slow call returned before b's calls were made: nothing was measured"
    assert answered_after < SLOW_CALL / 2, f"b waited {answered_after:.2f} s behind a's slow call"
    assert health["ok"]
    value, elapsed = done.get(timeout=SLOW_CALL + CALL_TIMEOUT)
    assert value == SLOW_CALL and elapsed >= SLOW_CALL * 0.9, (value, elapsed)
    after = b.info()
    # the slow call ran on the hub's leader: b was served because the watchdog promoted a new one
    assert after["hub_leaders_started"] > before["hub_leaders_started"], (before, after)
    assert after["watchdog_ticks"] > before["watchdog_ticks"], (before, after)


# --- many connections at once ---------------------------------------------------------------
class Helper:
    """``python -m tests.deploy_client PORT N`` with stdout read line by line (bounded)."""

    def __init__(self, port: int, n: int, log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.log_path = log_path
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.deploy_client", str(port), str(n)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, name="test-deploy-pump", daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {event!r} from the helper within {timeout:.0f} s: {self.log()}") from None
            if line is None:
                raise AssertionError(f"the helper exited before {event!r}: {self.log()}")
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if data.get("event") == event:
                    return data  # type: ignore[no-any-return]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        for action in (None, self.proc.terminate, self.proc.kill):
            if self.proc.poll() is not None:
                break
            if action is not None:
                action()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_GRACE)
        self._pump.join(STOP_GRACE)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def _hold_many(served: Gunicorn, n: int, tmp: Path, timeout: float) -> None:
    """n connections from a helper process at once, one call each; the plain route and a
    call of our own answer while they are open; all closed cleanly afterwards."""
    watcher = served.proxy()
    helper = Helper(served.port, n, tmp / f"helper-{served.worker}-{n}.log")
    try:
        held = helper.expect("held", timeout)
        assert held["connected"] == n, (held["errors"], held)
        assert held["answered"] == n, held  # every connection got its own reply
        info = watcher.info()
        assert info["connections"] == n + 1 and info["hub_peers"] == n + 1, info  # one hub reads them all
        health = served.health()  # a plain Flask route of the same app, while n + 1 sockets are open
        assert health["ok"] and health["connections"] == n + 1, health
        assert watcher.echo("still here") == "still here"
        helper.send("close")
        closed = helper.expect("closed", timeout)
        assert closed["close_errors"] == 0, closed
        info = _settled(served, watcher, 1)
        assert (info["connections"], info["hub_peers"]) == (1, 1), info  # all of them ended on the server too
        assert served.health()["connections"] == 1
        assert helper.proc.wait(STOP_GRACE) == 0, helper.log()
    finally:
        helper.stop()
        watcher.close()


@pytest.mark.timeout(60)
def test_many_connections_at_once(served: Gunicorn, tmp_path: Path) -> None:
    _hold_many(served, MANY, tmp_path, timeout=40)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_thousands_of_connections_at_once(worker: str, tmp_path: Path) -> None:
    with gunicorn(worker, MANY_SLOW + 100, tmp_path) as server:
        _hold_many(server, MANY_SLOW, tmp_path, timeout=240)
