"""One client process of ``conns.py``: K connections, one socket and one thread each.

    python benchmarks/_conns_client.py --system easyrpc|grpc --port P --conns K
        [--seconds S] [--warmup W] [--first-id I] [--hold]

Standard library at module level: it runs in the runner's interpreter (easyrpc) or in the
gRPC venv (``.venvs/grpc``, then ``systems/grpc_bench.py`` gives the service's names, codec
and message options). Talks to ``conns.py`` in JSON lines on stdout and plain lines on
stdin:

1. opens its K connections one after another (each bounded by ``CONNECT_TIMEOUT``): an
   ``EasyRpcProxy`` each, or a gRPC channel each with ``grpc.use_local_subchannel_pool``
   so that every channel has its own subchannel and therefore its own TCP connection;
2. load mode: starts one thread per connection (``bench-conn-<I+i>``), each makes
   ``WARMUP_CALLS`` calls, then prints ``{"event": "ready", ...}``; hold mode: makes one
   call per connection from the main thread and prints ``ready`` with how many answered;
3. load mode: on the line ``go`` every thread calls ``good_func_a(1, 5, 7)`` back to back
   for ``--warmup`` + ``--seconds`` seconds; calls completing in the last ``--seconds``
   are counted and their latencies kept (all of them up to ``MAX_SAMPLES`` per process,
   else a uniform sample with its weight); prints ``{"event": "result", ...}``;
4. on the line ``exit`` or at the end of stdin, closes its connections and exits.

Every call has a time limit (``CALL_TIMEOUT``) where the client supports one, every join
is bounded, and every thread is a daemon: ``conns.py`` stops this process through its
Popen handle if it lingers.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
EASYRPC_PATH = "/ws/bench"  # _bench_server.py
SECRET = "abcd1234"
SMALL_RESULT = {"good_func_a": [1, 5, 7]}
CONNECT_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0
WARMUP_CALLS = 5
ERROR_PAUSE = 0.05  # after a failed call, so a dead connection does not spin
MAX_SAMPLES = 200_000
MAX_ERROR_TEXTS = 5
SYSTEMS_DIR = Path(__file__).resolve().parent / "systems"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Conn:
    """One connection: a blocking ``good_func_a(1, 5, 7)`` and a close."""

    def __init__(self, call: Callable[[], Any], close: Callable[[], None]) -> None:
        self.call = call
        self.close = close


def easyrpc_connect(port: int) -> Conn:
    from easyrpc.proxy import EasyRpcProxy

    kwargs: dict[str, Any] = {}
    params = inspect.signature(EasyRpcProxy.create).parameters
    if "timeout" in params:  # older commits (A/B runs) may not have these
        kwargs["timeout"] = CALL_TIMEOUT
    if "connect_timeout" in params:
        kwargs["connect_timeout"] = CONNECT_TIMEOUT
    proxy = EasyRpcProxy.create(HOST, port, EASYRPC_PATH, server_secret=SECRET, **kwargs)
    good = proxy.good_func_a
    return Conn(lambda: good(1, 5, 7), proxy.close)


def grpc_connect(port: int) -> Conn:
    sys.path.insert(0, str(SYSTEMS_DIR))
    import grpc_bench

    # Without a local subchannel pool, channels with equal arguments share one subchannel,
    # i.e. one TCP connection: this option gives each channel its own.
    channel = grpc_bench.connect(port, options=[("grpc.use_local_subchannel_pool", 1)], timeout=CONNECT_TIMEOUT)
    good = grpc_bench.small_call(channel)
    args = grpc_bench.SMALL_ARGS
    return Conn(lambda: good(args, timeout=CALL_TIMEOUT), channel.close)


class Worker:
    """The thread of one connection and what it measured."""

    def __init__(self, conn: Conn, name: str) -> None:
        self.conn = conn
        self.lat_ns: list[int] = []
        self.calls = 0
        self.errors = 0
        self.error_texts: list[str] = []
        self.warm_ok = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.ready: threading.Barrier | None = None
        self.go: threading.Event | None = None
        self.window: tuple[int, int] = (0, 0)  # perf_counter_ns: measured from, until

    def _fail(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_texts) < MAX_ERROR_TEXTS:
            self.error_texts.append(f"{type(exc).__name__}: {exc}"[:200])

    def _run(self) -> None:
        assert self.ready is not None and self.go is not None
        call = self.conn.call
        try:
            for _ in range(WARMUP_CALLS):
                if call() != SMALL_RESULT:
                    raise AssertionError("unexpected reply")
            self.warm_ok = True
        except Exception as exc:  # noqa: BLE001 - counted and reported
            self._fail(exc)
        try:
            self.ready.wait(CONNECT_TIMEOUT + CALL_TIMEOUT * WARMUP_CALLS)
        except threading.BrokenBarrierError:
            return
        if not self.go.wait(600):
            return
        start, end = self.window
        clock = time.perf_counter_ns
        lat = self.lat_ns
        while True:
            t0 = clock()
            if t0 >= end:
                break
            try:
                reply = call()
                if reply != SMALL_RESULT:
                    raise AssertionError(f"unexpected reply {reply!r}"[:100])
            except Exception as exc:  # noqa: BLE001 - counted and reported
                self._fail(exc)
                time.sleep(ERROR_PAUSE)
                continue
            t1 = clock()
            if start <= t1 < end:  # completions within the window: calls/s and latencies
                lat.append(t1 - t0)


def read_command() -> str:
    """The next stdin line ("" at the end of stdin)."""
    return sys.stdin.readline().strip()


def connect_all(connect: Callable[[int], Conn], port: int, k: int) -> tuple[list[Conn], list[str]]:
    conns: list[Conn] = []
    errors: list[str] = []
    for _ in range(k):
        try:
            conns.append(connect(port))
        except Exception as exc:  # noqa: BLE001 - reported; the rest still connect
            if len(errors) < MAX_ERROR_TEXTS:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            errors_count = k - len(conns)
            if errors_count > k // 10 + 2:  # the server is not taking connections: stop trying
                break
    return conns, errors


def close_all(conns: list[Conn]) -> None:
    """Close every connection, a few at a time (each close may wait for its threads)."""

    def close(batch: list[Conn]) -> None:
        for c in batch:
            try:
                c.close()
            except Exception:  # noqa: BLE001, S110 - closing at exit: nothing to report
                pass

    batches = [conns[i::8] for i in range(8)]
    threads = [threading.Thread(target=close, args=(b,), name=f"bench-close-{i}", daemon=True)
               for i, b in enumerate(batches) if b]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", choices=("easyrpc", "grpc"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--first-id", type=int, default=0)
    parser.add_argument("--hold", action="store_true", help="one call per connection, then hold them idle")
    args = parser.parse_args()
    fd_limit = raise_fd_limit()
    connect = easyrpc_connect if args.system == "easyrpc" else grpc_connect

    t0 = time.monotonic()
    conns, connect_errors = connect_all(connect, args.port, args.conns)
    connect_s = time.monotonic() - t0
    base = {"conns": args.conns, "connected": len(conns), "connect_s": round(connect_s, 3),
            "connect_errors": connect_errors, "fd_limit": list(fd_limit)}
    try:
        if args.hold:
            answered = 0
            errors: list[str] = []
            for c in conns:
                try:
                    if c.call() == SMALL_RESULT:
                        answered += 1
                except Exception as exc:  # noqa: BLE001 - reported
                    if len(errors) < MAX_ERROR_TEXTS:
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])
            emit("ready", **base, answered=answered, call_errors=errors,
                 threads=threading.active_count())
            while read_command() not in ("exit", ""):
                pass
            return

        workers = [Worker(c, f"bench-conn-{args.first_id + i}") for i, c in enumerate(conns)]
        ready = threading.Barrier(len(workers) + 1)
        go = threading.Event()
        for w in workers:
            w.ready, w.go = ready, go
            w.thread.start()
        try:
            ready.wait(CONNECT_TIMEOUT + CALL_TIMEOUT * WARMUP_CALLS + 10)
        except threading.BrokenBarrierError:
            pass
        emit("ready", **base, warm=sum(w.warm_ok for w in workers), threads=threading.active_count())

        while (line := read_command()) != "go":
            if line in ("exit", ""):
                return
        now = time.perf_counter_ns()
        start = now + int(args.warmup * 1e9)
        end = start + int(args.seconds * 1e9)
        for w in workers:
            w.window = (start, end)
        go.set()
        deadline = time.monotonic() + args.warmup + args.seconds + CALL_TIMEOUT + 10
        for w in workers:
            w.thread.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(w.thread.is_alive() for w in workers)

        lat = [x for w in workers for x in w.lat_ns]
        calls = len(lat)
        sample = lat if calls <= MAX_SAMPLES else random.sample(lat, MAX_SAMPLES)
        texts: list[str] = []
        for w in workers:
            texts.extend(w.error_texts[: MAX_ERROR_TEXTS - len(texts)])
        emit("result", **base, calls=calls, seconds=args.seconds, errors=sum(w.errors for w in workers) + stuck,
             stuck=stuck, error_texts=texts, weight=calls / len(sample) if sample else 0.0,
             lat_us=[round(x / 1000, 1) for x in sample])
        while read_command() not in ("exit", ""):
            pass
    finally:
        close_all(conns)


if __name__ == "__main__":
    main()
