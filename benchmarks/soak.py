"""Soak: minutes of mixed load; memory, threads and descriptors must come back flat.

::

    python benchmarks/soak.py                  # 3 minutes after a 30 s warm-up
    python benchmarks/soak.py --minutes 0.5    # a quick check
    python benchmarks/soak.py --encryption     # the same with encryption_enabled=True
    python benchmarks/soak.py --call-limit 0   # proxies without a default time limit per call

The server runs in a subprocess (``_bench_server.py``), the clients here. The load, all
at once: threads of sequential calls on one shared proxy (small calls and echoes up to
1 MiB), batches of futures (some cancelled), streams (consumed fully, abandoned with
``close()``, with ``with``, or by dropping the iterator), proxies created and closed all
the time (each leaving a stream open and a call in flight at its close), an asyncio
client (``gather``, ``async for``, abandoned streams, cancelled awaits, its own proxy
churn), calls and streams whose time limit expires, and remote and local errors.

The load runs once as a warm-up, then everything settles (churn proxies closed, server
connections and streams back to the long-lived two) and a snapshot is taken of both
sides; then it runs for ``--minutes``, settles again, and a second snapshot is taken.
The verdict is "flat" if each side's RSS grew less than 10%, thread and descriptor counts
are back within a small tolerance (the server's worker pool may grow up to its bound, so
it is checked against that instead), and the server is back to the same connections and
no streams. Exit code 0: flat and no unexpected errors; 1: not flat; 2: flat, but
unexpected errors (listed by type).

Every proxy has a default time limit per call (``--call-limit``, 20 s), as most callers
would set; the warm-up outlasts it so that calls still held until their limit (see the
"finished futures held" row) are at their steady level when the start is measured.
``--call-limit 0`` runs the same load with proxies that have no default limit; the
benchmark then bounds every wait itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from _bench_server import HOST, PATH, SECRET, BenchServer, ProcStats, proc_stats, thread_groups

from easyrpc.exceptions import CallTimeout, ConnectionLost, RemoteError, SerializationError

CALL_TIMEOUT = 20.0  # the bound of every wait; the proxies' default limit (--call-limit) too
JOIN_TIMEOUT = 60.0  # for a worker to finish its last iteration after the stop
SETTLE_TIMEOUT = 20.0  # for the server to drop closed connections and abandoned streams
SAMPLE_EVERY = 15.0  # seconds between progress lines
RSS_GROWTH_LIMIT = 0.10
THREAD_TOLERANCE = 2
FD_TOLERANCE = 2
SERVER_POOL = "easyrpc-worker"  # the server's worker threads are named with this prefix
SERVER_MAX_WORKERS = 32  # EasyRpcServer's default max_workers
LONG_LIVED = 2  # connections open all the time: the shared blocking proxy and the aio proxy
HELD_FUTURES_NOTE = 100  # more finished futures than this still referenced at rest earn a note
SEQ_THREADS = 3
ECHO_SIZES = (16, 1024, 16 * 1024, 64 * 1024)
BIG_ECHO = 1024 * 1024  # echoed now and then by the sequential threads


# --- bookkeeping --------------------------------------------------------------------------------
class Tally:
    """Thread-safe counts of operations done and errors, expected or not, by type."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done: Counter[str] = Counter()
        self.expected: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.examples: dict[str, str] = {}  # the first message of each unexpected error

    def ok(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.done[kind] += n

    def expect(self, kind: str, error: str) -> None:
        """An error the load provoked on purpose (a time limit, a remote raise...)."""
        with self._lock:
            self.expected[f"{kind}: {error}"] += 1

    def fail(self, kind: str, error: str, detail: str = "") -> None:
        key = f"{kind}: {error}"
        with self._lock:
            self.unexpected[key] += 1
            if detail and len(self.examples) < 10:
                self.examples.setdefault(key, detail[:300])


@dataclass
class Load:
    """What every worker shares."""

    port: int
    encryption: bool
    limit: float | None  # the proxies' default time limit per call (None: none)
    tally: Tally
    stop: threading.Event = field(default_factory=threading.Event)
    proxy: Any = None  # the long-lived blocking proxy
    gen: Any = None  # its gen(), bounded

    def __post_init__(self) -> None:
        self.proxy = self.new_proxy()
        self.gen = self.bounded_stream(self.proxy.gen)

    def new_proxy(self) -> Any:
        from easyrpc.proxy import EasyRpcProxy

        return EasyRpcProxy.create(HOST, self.port, PATH, server_secret=SECRET, encryption_enabled=self.encryption,
                                   timeout=self.limit)

    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, bounded: by the proxy's own limit, or here if it has none."""
        if self.limit is not None:
            return fn(*args)
        return fn.submit(*args).result(CALL_TIMEOUT)

    def bounded_stream(self, fn: Any) -> Any:
        """*fn*, a remote generator, with a limit per item (the proxy's, or CALL_TIMEOUT)."""
        return fn if self.limit is not None else fn.with_timeout(CALL_TIMEOUT)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


# --- the blocking workers: each runs one step at a time until the stop --------------------------------
def step_sequential(load: Load, rng: random.Random) -> None:
    p = load.proxy
    i = rng.randrange(1_000_000)
    check(load.call(p.good_func_a, i, "b", None) == {"good_func_a": [i, "b", None]}, "good_func_a result")
    size = BIG_ECHO if rng.random() < 0.01 else rng.choice(ECHO_SIZES)
    value: Any = {"s": "y" * size, "n": [i, 1.5, True, None]}
    check(load.call(p.echo, value) == value, "echo result")
    load.tally.ok("sequential call", 2)


def step_batch(load: Load, rng: random.Random) -> None:
    p = load.proxy
    futures = [p.good_func_a.submit(i, i, i) for i in range(32)]
    futures += [p.echo.submit("z" * rng.choice(ECHO_SIZES)) for _ in range(8)]
    if rng.random() < 0.2:
        cancelled = [f for f in (p.slow.submit(0.2) for _ in range(2)) if f.cancel()]
        check_cancelled(load, cancelled)
    done, not_done = wait(futures, timeout=CALL_TIMEOUT)
    check(not not_done, f"{len(not_done)} futures unfinished")
    for i, f in enumerate(futures[:32]):
        check(f.result(0) == {"good_func_a": [i, i, i]}, "batch result")
    for f in futures[32:]:
        f.result(0)
    load.tally.ok("batch future", len(futures))


def check_cancelled(load: Load, cancelled: list[Any]) -> None:
    """Cancelled futures must count as done, for ``concurrent.futures.wait`` too."""
    load.tally.ok("batch future cancelled", len(cancelled))
    if not all(f.done() and f.cancelled() for f in cancelled):
        load.tally.fail("batch", "cancelled future not done()")
    _, not_done = wait(cancelled, timeout=0)
    if not_done:
        load.tally.fail("batch", "cancelled future not done for concurrent.futures.wait()",
                        f"{len(not_done)} of {len(cancelled)} cancelled futures, state {not_done.pop()._state}")


def step_streams(load: Load, rng: random.Random) -> None:
    gen = load.gen
    how = rng.randrange(4)
    if how == 0:
        check(list(gen(500)) == list(range(500)), "full stream")
        load.tally.ok("stream consumed fully")
    elif how == 1:
        it = gen(100_000)
        check([next(it) for _ in range(5)] == list(range(5)), "stream head")
        it.close()
        load.tally.ok("stream abandoned (close)")
    elif how == 2:
        with gen(100_000) as it:
            next(it)
        load.tally.ok("stream abandoned (with)")
    else:
        for item in gen(100_000):
            if item >= 3:
                break  # the iterator is dropped here: its __del__ must stop the stream
        load.tally.ok("stream abandoned (dropped)")


def step_churn(load: Load, rng: random.Random) -> None:
    """A fresh proxy: one call, a stream left open and a call in flight when it closes."""
    q = load.new_proxy()
    try:
        check(load.call(q.good_func_a, 1, 2, 3) == {"good_func_a": [1, 2, 3]}, "churn call")
        it = load.bounded_stream(q.gen)(100_000)
        next(it)
        in_flight = q.slow.submit(0.5)
    finally:
        q.close()
    try:
        in_flight.result(CALL_TIMEOUT)
        load.tally.fail("churn", "call in flight survived close()")
    except ConnectionLost:
        load.tally.expect("churn in-flight at close", "ConnectionLost")
    del it
    load.tally.ok("churn proxy")
    load.stop.wait(rng.uniform(0.1, 0.4))


def expect_timeout(load: Load, kind: str, attempt: Callable[[], Any], takes: float) -> None:
    """*attempt* must fail with CallTimeout. On a starved client the reply (which takes
    *takes* seconds) may win the race with the limit: that is counted apart, as late."""
    start = time.monotonic()
    try:
        attempt()
    except CallTimeout:
        load.tally.expect(kind, "CallTimeout")
        return
    if time.monotonic() - start >= takes:
        load.tally.expect(kind, "no CallTimeout: the reply won the race (client starved)")
    else:
        load.tally.fail("timeout", f"{kind} did not expire")


def step_timeouts(load: Load, rng: random.Random) -> None:
    p = load.proxy
    expect_timeout(load, "call limit", lambda: p.slow.with_timeout(0.05)(0.3), 0.3)
    it = p.slow_gen.with_timeout(0.05)(3, 0.3)
    expect_timeout(load, "stream item limit", lambda: next(it), 0.3)
    it.close()
    load.stop.wait(rng.uniform(0.05, 0.2))  # each expired call still holds a server worker for 0.3 s


def step_errors(load: Load, rng: random.Random) -> None:
    p = load.proxy
    try:
        load.call(p.fail, f"boom {rng.random()}")
        load.tally.fail("error", "fail() returned")
    except ValueError as exc:  # a RemoteError mixing in the builtin ValueError
        check(isinstance(exc, RemoteError), "remote error type")
        load.tally.expect("remote raise", "RemoteValueError")
    try:
        p.echo(object())
        load.tally.fail("error", "object() was sent")
    except SerializationError:
        load.tally.expect("local argument", "SerializationError")
    load.stop.wait(rng.uniform(0.01, 0.05))


def run_steps(load: Load, name: str, step: Callable[[Load, random.Random], None], seed: int) -> None:
    """Run *step* until the stop; an unexpected error is counted, then the loop goes on."""
    rng = random.Random(seed)
    while not load.stop.is_set():
        try:
            step(load, rng)
        except Exception as exc:  # noqa: BLE001 - counted by type and shown in the report
            load.tally.fail(name, type(exc).__name__, str(exc))
            load.stop.wait(0.05)  # no busy loop if the server is gone


# --- the asyncio client --------------------------------------------------------------------------
class AioClient:
    """An event loop thread with a long-lived aio proxy; runs the aio load on request."""

    def __init__(self, port: int, encryption: bool, limit: float | None, tally: Tally) -> None:
        self.port = port
        self.encryption = encryption
        self.limit = limit
        self.loop = asyncio.new_event_loop()
        # an exception escaping a callback on the loop (easyrpc's reader, say) is logged by
        # asyncio and would go unnoticed: count it as unexpected
        self.loop.set_exception_handler(
            lambda loop, context: tally.fail("aio loop callback", type(context.get("exception")).__name__,
                                             str(context.get("message", ""))))
        self.thread = threading.Thread(target=self.loop.run_forever, name="soak-aio-loop", daemon=True)
        self.thread.start()
        try:
            self.proxy: Any = self.run(self.connect(), CALL_TIMEOUT)
        except BaseException:
            self.stop_loop()
            raise
        self.gen = self.bounded_stream(self.proxy.gen)

    def bounded_stream(self, fn: Any) -> Any:
        return fn if self.limit is not None else fn.with_timeout(CALL_TIMEOUT)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def connect(self) -> Any:
        from easyrpc.aio import EasyRpcProxy

        return await EasyRpcProxy.create(HOST, self.port, PATH, server_secret=SECRET,
                                         encryption_enabled=self.encryption, timeout=self.limit)

    async def step(self, tally: Tally, rng: random.Random, n: int) -> None:
        ap = self.proxy
        results = await asyncio.wait_for(asyncio.gather(*(ap.good_func_a(i, 0, 0) for i in range(16))), CALL_TIMEOUT)
        check(results == [{"good_func_a": [i, 0, 0]} for i in range(16)], "aio gather")
        check([x async for x in self.gen(300)] == list(range(300)), "aio full stream")
        tally.ok("aio call", 16)
        tally.ok("aio stream consumed fully")
        it = self.gen(100_000)
        async for x in it:
            if x >= 4:
                break
        await it.aclose()
        tally.ok("aio stream abandoned (aclose)")
        start = time.monotonic()
        try:
            await asyncio.wait_for(ap.slow(0.3), 0.05)
        except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11
            tally.expect("aio cancelled await", "TimeoutError")
        else:
            if time.monotonic() - start >= 0.3:
                tally.expect("aio cancelled await", "no TimeoutError: the reply won the race (loop starved)")
            else:
                tally.fail("aio", "wait_for did not time out")
        if n % 10 == 0:
            await self.churn(tally)

    async def churn(self, tally: Tally) -> None:
        q = await self.connect()
        try:
            check(await asyncio.wait_for(q.echo("churn"), CALL_TIMEOUT) == "churn", "aio churn call")
            it = self.bounded_stream(q.gen)(100_000)
            await it.__anext__()
        finally:
            await q.close()
        tally.ok("aio churn proxy")

    async def load(self, tally: Tally, stop: threading.Event, seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while not stop.is_set():
            n += 1
            try:
                await self.step(tally, rng, n)
            except Exception as exc:  # noqa: BLE001 - counted by type and shown in the report
                tally.fail("aio", type(exc).__name__, str(exc))
                await asyncio.sleep(0.05)

    def close(self) -> None:
        try:
            self.run(self.proxy.close(), CALL_TIMEOUT)
        finally:
            self.stop_loop()

    def stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(JOIN_TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()


# --- phases -----------------------------------------------------------------------------------------
def run_load(load: Load, aio: AioClient, seconds: float, server: BenchServer, started: float) -> list[str]:
    """The whole mixed load for *seconds*; the names of workers that did not stop in time."""
    load.stop.clear()
    steps: list[tuple[str, Callable[[Load, random.Random], None]]] = [
        *((f"sequential-{i}", step_sequential) for i in range(SEQ_THREADS)),
        ("batch", step_batch), ("streams", step_streams), ("churn", step_churn),
        ("timeouts", step_timeouts), ("errors", step_errors),
    ]
    threads = [threading.Thread(target=run_steps, args=(load, name, step, seed), name=f"soak-{name}", daemon=True)
               for seed, (name, step) in enumerate(steps)]
    for t in threads:
        t.start()
    aio_done = asyncio.run_coroutine_threadsafe(aio.load(load.tally, load.stop, seed=len(steps)), aio.loop)
    deadline = time.monotonic() + seconds
    while not load.stop.wait(max(0.0, min(SAMPLE_EVERY, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            break
        print_progress(load, server, started)
    load.stop.set()
    stuck = []
    for t in threads:
        t.join(JOIN_TIMEOUT)
        if t.is_alive():
            stuck.append(t.name)
    try:
        aio_done.result(JOIN_TIMEOUT)
    except FutureTimeout:
        stuck.append("aio")
    return stuck


def print_progress(load: Load, server: BenchServer, started: float) -> None:
    s, c = server.stats(), proc_stats()
    ops = sum(load.tally.done.values()) + sum(load.tally.expected.values())
    print(f"[{time.monotonic() - started:6.0f} s] server rss {s.rss_mib:6.1f} MiB threads {s.threads:3d} fds {s.fds:3d}"
          f" | client rss {c.rss_mib:6.1f} MiB threads {c.threads:3d} fds {c.fds:3d}"
          f" | ops {ops:,} unexpected errors {sum(load.tally.unexpected.values())}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Snapshot:
    """Both sides at rest."""

    server: ProcStats
    server_rpc: dict[str, Any]  # the server's stats(): connections, streams, threads by name
    client: ProcStats
    client_threads: int  # threading.active_count()
    client_groups: dict[str, int]
    client_held_futures: int  # finished call futures still referenced (-1: unknown)
    client_py_blocks: int  # sys.getallocatedblocks() after a collection

    @property
    def server_pool(self) -> int:
        return sum(n for name, n in self.server_rpc["thread_groups"].items() if name.startswith(SERVER_POOL))


def settle(load: Load) -> None:
    """Wait (bounded) until the server holds only the long-lived connections, no calls and no
    streams, and its thread count has stopped changing."""
    gc.collect()
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last_threads, steady = -1, 0
    while time.monotonic() < deadline:
        stats = load.call(load.proxy.stats)
        idle = stats["connection_count"] == LONG_LIVED and stats["active_streams"] == 0 and stats["active_calls"] == 0
        steady = steady + 1 if idle and stats["threads"] == last_threads else 0
        last_threads = stats["threads"]
        if steady >= 4:  # the same thread count for 2 s
            return
        time.sleep(0.5)


def held_call_futures() -> int:
    """Finished easyrpc call futures still alive here (nobody waits for them any more); -1
    if easyrpc's private CallFuture class is not where it was."""
    from easyrpc import _client  # private, but the one way to see them

    future_class = getattr(_client, "CallFuture", None)
    if not (isinstance(future_class, type) and issubclass(future_class, Future)):
        return -1
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, future_class) and obj.done())


def snapshot(load: Load, server: BenchServer) -> Snapshot:
    settle(load)
    rpc = load.call(load.proxy.stats, True)  # after a collection, for its Python block count
    held = held_call_futures()
    return Snapshot(server.stats(), rpc, proc_stats(), threading.active_count(), thread_groups(), held,
                    sys.getallocatedblocks())


# --- the report ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    label: str
    start: float
    end: float
    ok: bool
    rule: str
    unit: str = ""

    def row(self) -> str:
        delta = self.end - self.start
        fmt = "{:.1f}" if self.unit else "{:.0f}"
        start, end, d = fmt.format(self.start), fmt.format(self.end), ("+" if delta >= 0 else "") + fmt.format(delta)
        return (f"{self.label:<34} | {start + self.unit:>10} | {end + self.unit:>10} | {d + self.unit:>10} | "
                f"{'ok' if self.ok else 'NOT FLAT':>8} | {self.rule}")


def within(start: float, end: float, tolerance: float) -> bool:
    return end - start <= tolerance


def build_checks(a: Snapshot, b: Snapshot) -> list[Check]:
    limit = f"grew < {RSS_GROWTH_LIMIT:.0%}"
    tol = f"end <= start + {THREAD_TOLERANCE}"
    fd_tol = f"end <= start + {FD_TOLERANCE}"
    s_other_a, s_other_b = a.server.threads - a.server_pool, b.server.threads - b.server_pool
    return [
        Check("server RSS", a.server.rss_mib, b.server.rss_mib,
              b.server.rss_mib < a.server.rss_mib * (1 + RSS_GROWTH_LIMIT), limit, " MiB"),
        Check("server Python blocks allocated", a.server_rpc["py_blocks"], b.server_rpc["py_blocks"], True,
              "information: objects, not fragmentation"),
        Check("server threads (all)", a.server.threads, b.server.threads, True, "information"),
        Check("server threads (not the pool)", s_other_a, s_other_b, within(s_other_a, s_other_b, THREAD_TOLERANCE), tol),
        Check("server worker pool threads", a.server_pool, b.server_pool, b.server_pool <= SERVER_MAX_WORKERS,
              f"bounded: <= max_workers {SERVER_MAX_WORKERS}"),
        Check("server open fds", a.server.fds, b.server.fds, within(a.server.fds, b.server.fds, FD_TOLERANCE), fd_tol),
        Check("server connection_count", a.server_rpc["connection_count"], b.server_rpc["connection_count"],
              b.server_rpc["connection_count"] == a.server_rpc["connection_count"], "the long-lived proxies only"),
        Check("server active_streams", a.server_rpc["active_streams"], b.server_rpc["active_streams"],
              b.server_rpc["active_streams"] == 0, "0"),
        Check("server active_calls", a.server_rpc["active_calls"], b.server_rpc["active_calls"],
              b.server_rpc["active_calls"] == 0, "0 (not counting stats())"),
        Check("client RSS", a.client.rss_mib, b.client.rss_mib,
              b.client.rss_mib < a.client.rss_mib * (1 + RSS_GROWTH_LIMIT), limit, " MiB"),
        Check("client threads (/proc)", a.client.threads, b.client.threads,
              within(a.client.threads, b.client.threads, THREAD_TOLERANCE), tol),
        Check("client threading.active_count()", a.client_threads, b.client_threads,
              within(a.client_threads, b.client_threads, THREAD_TOLERANCE), tol),
        Check("client open fds", a.client.fds, b.client.fds, within(a.client.fds, b.client.fds, FD_TOLERANCE), fd_tol),
        Check("client Python blocks allocated", a.client_py_blocks, b.client_py_blocks, True,
              "information: objects, not fragmentation"),
        Check("client finished futures held", a.client_held_futures, b.client_held_futures, True, "information (see note)"),
    ]


def print_counter(title: str, counts: Counter[str]) -> None:
    print(f"\n{title}: {sum(counts.values()):,}")
    for key, n in sorted(counts.items()):
        print(f"  {key:<48} {n:>10,}")


def report(checks: list[Check], tally: Tally, stuck: list[str], end: Snapshot, minutes: float,
           limit: float | None) -> bool:
    """Print the table, the counts and the verdict; True if flat."""
    print(f"\nsoak: {minutes:g} min of mixed load after warm-up, call limit {f'{limit:g} s' if limit else 'none'}; "
          f"start and end measured at rest")
    header = f"{'measure':<34} | {'start':>10} | {'end':>10} | {'delta':>10} | {'verdict':>8} | rule"
    print(header)
    print("-" * len(header))
    for c in checks:
        print(c.row())
    print(f"\nserver threads by name at end: {dict(sorted(end.server_rpc['thread_groups'].items()))}")
    print(f"client threads by name at end: {dict(sorted(end.client_groups.items()))}")
    if limit is not None and end.client_held_futures > HELD_FUTURES_NOTE:
        print(f"note: {end.client_held_futures:,} finished call futures (each with its request and result) were still "
              f"referenced by the client at rest; easyrpc keeps a call with a time limit until that limit "
              f"({limit:g} s here) has passed, so the client's memory tracks calls x payload x limit "
              f"(compare --call-limit 0)")
    print_counter("operations done", tally.done)
    print_counter("expected errors (provoked)", tally.expected)
    print_counter("unexpected errors", tally.unexpected)
    for key, detail in tally.examples.items():
        print(f"  first {key}: {detail}")
    if stuck:
        print(f"\nworkers that did not stop within {JOIN_TIMEOUT:.0f} s: {', '.join(stuck)}")
    flat = all(c.ok for c in checks) and not stuck
    errors = sum(tally.unexpected.values())
    print(f"\nverdict: {'flat' if flat else 'NOT FLAT'}{f' ({errors:,} unexpected errors)' if errors else ''}")
    return flat


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of load after the warm-up (default 3)")
    parser.add_argument("--warmup", type=float, help="seconds of the same load first (default: 30, or 1.5 x the call limit)")
    parser.add_argument("--call-limit", type=float, default=CALL_TIMEOUT,
                        help=f"the proxies' default time limit per call in seconds (default {CALL_TIMEOUT:g}); 0: none "
                             f"(the benchmark still bounds every wait by {CALL_TIMEOUT:g} s)")
    parser.add_argument("--encryption", action="store_true", help="encryption_enabled=True on both sides")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = max(30.0, 1.5 * args.call_limit)
    return args


def soak(server: BenchServer, args: argparse.Namespace, limit: float | None) -> tuple[Load, Snapshot, Snapshot, list[str]]:
    """Warm up, snapshot, run, snapshot; the load (with its tally), both snapshots and stuck workers."""
    started = time.monotonic()
    load = Load(server.port, args.encryption, limit, Tally())
    try:
        aio = AioClient(server.port, args.encryption, limit, load.tally)
        try:
            print(f"warm-up: {args.warmup:g} s", file=sys.stderr, flush=True)
            stuck = run_load(load, aio, args.warmup, server, started)
            start = snapshot(load, server)
            print(f"soak: {args.minutes:g} min", file=sys.stderr, flush=True)
            stuck += run_load(load, aio, args.minutes * 60, server, started)
            end = snapshot(load, server)
        finally:
            aio.close()
    finally:
        load.proxy.close()
    return load, start, end, stuck


def main() -> int:
    args = parse_args()
    limit = args.call_limit or None
    with BenchServer(encryption=args.encryption) as server:
        load, start, end, stuck = soak(server, args, limit)
    flat = report(build_checks(start, end), load.tally, stuck, end, args.minutes, limit)
    if not flat:
        return 1
    return 2 if load.tally.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
