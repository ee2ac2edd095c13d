"""Fault timings: inject each fault on loopback and report what the caller saw, and when.

Run: python benchmarks/faults.py          (from the repository root; about 20 s)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from easyrpc import CallTimeout, ConnectionLost  # noqa: E402
from easyrpc.proxy import EasyRpcProxy  # noqa: E402
from tests.apps import build_app  # noqa: E402
from tests.conftest import SECRET, start_server  # noqa: E402
from tests.faults import Relay, ServerProcess  # noqa: E402

Row = tuple[str, str, float]


def _in_flight(p: Any, call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - reported
            out["error"] = exc
        out["at"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _until(predicate: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            return float("nan")
        time.sleep(0.005)
    return time.monotonic() - start


def _seen(out: dict[str, Any]) -> str:
    err = out.get("error")
    return f"{type(err).__name__}" if err is not None else f"result {out.get('value')!r}"


def kill_and_restart() -> list[Row]:
    proc = ServerProcess(0)
    p = EasyRpcProxy.create("127.0.0.1", proc.port, "/ws/test", server_secret=SECRET)
    try:
        p.echo(1)
        t, out = _in_flight(p, lambda: p.slow(10))
        time.sleep(0.2)
        at = time.monotonic()
        proc.kill()
        t.join(5)
        rows: list[Row] = [("server process killed mid-call (SIGKILL)", _seen(out), out["at"] - at)]
        at = time.monotonic()
        proc.start()
        back = _until(lambda: p.connected, 10)
        rows.append(("server restarted on the same port", "proxy reconnected, old functions work", back))
        assert p.echo("again") == "again"
        return rows
    finally:
        p.close()
        proc.stop()


def tcp_cut() -> list[Row]:
    app, rpc, _ = build_app()
    served = start_server(app, [rpc])
    relay = Relay(served.port)
    p = EasyRpcProxy.create(relay.host, relay.port, "/ws/test", server_secret=SECRET)
    try:
        p.echo(1)
        t, out = _in_flight(p, lambda: p.slow(5))
        time.sleep(0.2)
        at = time.monotonic()
        relay.cut()
        t.join(5)
        rows: list[Row] = [("TCP reset without a close frame", _seen(out), out["at"] - at)]
        back = _until(lambda: p.connected, 10)
        rows.append(("... reconnect through the relay", "proxy reconnected", back))
        return rows
    finally:
        p.close()
        relay.close()
        served.stop()


def stalled_server() -> list[Row]:
    proc = ServerProcess(0)
    p = EasyRpcProxy.create("127.0.0.1", proc.port, "/ws/test", server_secret=SECRET, ping_interval=0.5, ping_timeout=0.5)
    try:
        p.echo(1)
        proc.stop_signal()
        at = time.monotonic()
        fut = p.echo.submit("x")
        try:
            fut.result(10)
            seen = "answered?!"
        except ConnectionLost:
            seen = "ConnectionLost"
        took = time.monotonic() - at
        proc.cont_signal()
        return [("server SIGSTOPped (keepalive 0.5 s + 0.5 s)", seen, took)]
    finally:
        p.close()
        proc.stop()


def waiting_for_reconnect() -> list[Row]:
    proc = ServerProcess(0)
    p = EasyRpcProxy.create("127.0.0.1", proc.port, "/ws/test", server_secret=SECRET, timeout=1.0)
    try:
        p.echo(1)
        proc.kill()
        _until(lambda: not p.connected, 5)
        at = time.monotonic()
        try:
            p.echo("nobody")
            seen = "answered?!"
        except CallTimeout:
            seen = "CallTimeout"
        return [("call made while the server is down (timeout=1 s)", seen, time.monotonic() - at)]
    finally:
        p.close()
        proc.stop()


def graceful_shutdown() -> list[Row]:
    app, rpc, _ = build_app()
    served = start_server(app, [rpc])
    p = EasyRpcProxy.create("127.0.0.1", served.port, "/ws/test", server_secret=SECRET, reconnect=False)
    try:
        short = p.slow.submit(0.2)
        long = p.aslow.submit(30)
        time.sleep(0.05)
        at = time.monotonic()
        rpc.close(grace=0.5)
        short_seen = f"result {short.result(5)}"
        try:
            long.result(5)
            seen = "answered?!"
        except ConnectionLost:
            seen = "ConnectionLost (server going away)"
        took = time.monotonic() - at
        return [("server close(grace=0.5): a 0.2 s call", short_seen, float("nan")),
                ("server close(grace=0.5): a 30 s call", seen, took)]
    finally:
        p.close()
        served.stop()


def timeout() -> list[Row]:
    app, rpc, counter = build_app()
    served = start_server(app, [rpc])
    p = EasyRpcProxy.create("127.0.0.1", served.port, "/ws/test", server_secret=SECRET, timeout=0.3)
    try:
        at = time.monotonic()
        try:
            p.aslow(10)
            seen = "answered?!"
        except CallTimeout:
            seen = "CallTimeout"
        took = time.monotonic() - at
        cancelled = _until(lambda: counter.count("aslow.cancelled") == 1, 5)
        return [("call past its timeout (0.3 s)", seen, took),
                ("... the server cancels the async function", "cancelled on the server", took + cancelled)]
    finally:
        p.close()
        served.stop()


def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # the faults are expected: keep their warnings out of the table
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    rows: list[Row] = []
    for scenario in (kill_and_restart, tcp_cut, stalled_server, waiting_for_reconnect, graceful_shutdown, timeout):
        rows += scenario()
    print(f"{'fault':52s} {'what the caller saw':40s} {'after':>8s}")
    for fault, seen, seconds in rows:
        after = "" if seconds != seconds else f"{seconds * 1000:6.0f} ms"
        print(f"{fault:52s} {seen:40s} {after:>8s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
