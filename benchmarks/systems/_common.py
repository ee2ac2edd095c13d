"""Workload drivers shared by every system's client; standard library only.

Each ``systems/<name>.py`` script runs in its own interpreter (possibly another virtualenv),
so this module is imported as a top-level module from the script's directory and must not
import anything outside the standard library.

A client prints one JSON object per line on stdout:

* ``{"event": "start", "workload": W}`` when workload W begins (the runner starts W's
  timeout clock then),
* ``{"event": "result", "workload": W, "status": "ok" | "n/a" | "error", ...}`` when it ends.

A system adapts itself by implementing :class:`SyncDriver` or :class:`AsyncDriver`; the
timing loops live here, so every system is measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

WORKLOADS: tuple[str, ...] = ("seq", "threads8", "inflight64", "echo10mb", "bytes10mb", "gen100k", "deep1000")
THREADS = 8
IN_FLIGHT = 64
SMALL_RESULT = {"good_func_a": [1, 5, 7]}
BIG_SIZE = 10_000_000
DEEP = 1000
JOIN_TIMEOUT = 600.0  # the runner's per-workload timeout is far shorter


@dataclass(frozen=True)
class Scale:
    """How much work each workload does."""

    warmup: int  # small calls before the sequential measurement
    seq_calls: int
    thread_calls: int  # per thread (or task)
    inflight_batches: int  # batches of IN_FLIGHT calls
    big_trips: int
    gen_items: int
    deep_trips: int


SCALES: dict[str, Scale] = {
    "quick": Scale(warmup=100, seq_calls=2000, thread_calls=300, inflight_batches=40, big_trips=2, gen_items=10_000,
                   deep_trips=5),
    "full": Scale(warmup=300, seq_calls=8000, thread_calls=1500, inflight_batches=200, big_trips=5, gen_items=100_000,
                  deep_trips=20),
}


class NotApplicable(Exception):
    """The system cannot do this workload (the message says why)."""


def emit(event: str, workload: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "workload": workload, **fields}), flush=True)


def big_string() -> str:
    return "x" * BIG_SIZE


def big_bytes() -> bytes:
    """10 MB of every byte value (no system may get away with text)."""
    return (bytes(range(256)) * (BIG_SIZE // 256 + 1))[:BIG_SIZE]


NO_BYTES = "bytes echo measured for easyrpc, the floor and gRPC only"


def _check_big(reply: Any, payload: Any) -> None:
    if type(reply) is not type(payload) or reply != payload:
        raise AssertionError(f"echoed a {type(reply).__name__} of {len(reply)}, not the {len(payload)} sent")


def nested_list(depth: int = DEEP) -> list[Any]:
    """A list nested *depth* levels deep: ``[[[...[]...]]]``."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def depth_of(value: Any) -> int:
    depth = 0
    while isinstance(value, (list, tuple)):
        depth += 1
        if not value:
            break
        value = value[0]
    return depth


def check_small(result: Any) -> None:
    if result != SMALL_RESULT:
        raise AssertionError(f"unexpected reply {result!r}")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def seq_fields(latencies_ns: list[int], elapsed: float) -> dict[str, Any]:
    lat = sorted(latencies_ns)
    return {
        "calls_per_s": len(lat) / elapsed,
        "p50_us": percentile(lat, 0.50) / 1000,
        "p99_us": percentile(lat, 0.99) / 1000,
        "n": len(lat),
    }


# --- blocking clients ------------------------------------------------------------------
class SyncDriver:
    """What a blocking client offers; raise :class:`NotApplicable` for what it cannot do."""

    def small(self) -> Any:
        """``good_func_a(1, 5, 7)`` on the shared proxy."""
        raise NotImplementedError

    def small_for_thread(self) -> Callable[[], Any]:
        """The call a worker thread makes (default: the shared proxy's)."""
        return self.small

    def threads_note(self) -> str | None:
        return None

    def end_threads(self) -> None:
        """Called after the threads workload (e.g. to stop a helper thread)."""

    def small_batch(self, n: int) -> None:
        """Put *n* small calls in flight at once from this thread and wait for all."""
        raise NotApplicable("no futures/asynchronous calls")

    def echo(self, value: Any) -> Any:
        raise NotImplementedError

    def echo_bytes(self, value: bytes) -> bytes:
        """Echo raw bytes as the system's own binary type (no base64 by hand)."""
        raise NotApplicable(NO_BYTES)

    def gen(self, n: int) -> Iterable[Any]:
        raise NotApplicable("no streaming of generators")

    def gen_note(self) -> str | None:
        return None

    def deep_value(self) -> Any:
        return nested_list()

    def close(self) -> None:
        pass


def _sync_workload(driver: SyncDriver, workload: str, scale: Scale) -> dict[str, Any]:
    if workload == "seq":
        for _ in range(scale.warmup):
            driver.small()
        lat: list[int] = []
        call = driver.small
        clock = time.perf_counter_ns
        check_small(call())
        start = time.perf_counter()
        for _ in range(scale.seq_calls):
            t0 = clock()
            call()
            lat.append(clock() - t0)
        return seq_fields(lat, time.perf_counter() - start)
    if workload == "threads8":
        calls = [driver.small_for_thread() for _ in range(THREADS)]
        for c in calls:
            check_small(c())
        errors: list[BaseException] = []
        barrier = threading.Barrier(THREADS + 1)

        def work(c: Callable[[], Any]) -> None:
            barrier.wait(30)
            try:
                for _ in range(scale.thread_calls):
                    c()
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in calls]
        for t in threads:
            t.start()
        barrier.wait(30)
        start = time.perf_counter()
        for t in threads:
            t.join(JOIN_TIMEOUT)
        elapsed = time.perf_counter() - start
        driver.end_threads()
        if errors:
            raise errors[0]
        fields: dict[str, Any] = {"calls_per_s": THREADS * scale.thread_calls / elapsed}
        note = driver.threads_note()
        if note:
            fields["note"] = note
        return fields
    if workload == "inflight64":
        driver.small_batch(IN_FLIGHT)
        start = time.perf_counter()
        for _ in range(scale.inflight_batches):
            driver.small_batch(IN_FLIGHT)
        return {"calls_per_s": IN_FLIGHT * scale.inflight_batches / (time.perf_counter() - start)}
    if workload in ("echo10mb", "bytes10mb"):
        payload, echo = (big_string(), driver.echo) if workload == "echo10mb" else (big_bytes(), driver.echo_bytes)
        times = []
        for _ in range(scale.big_trips):
            start = time.perf_counter()
            reply = echo(payload)
            times.append(time.perf_counter() - start)
            _check_big(reply, payload)
        return {"seconds": sorted(times)[len(times) // 2], "n": len(times)}
    if workload == "gen100k":
        start = time.perf_counter()
        count = 0
        last = None
        for item in driver.gen(scale.gen_items):
            count += 1
            last = item
        elapsed = time.perf_counter() - start
        if count != scale.gen_items or last != scale.gen_items - 1:
            raise AssertionError(f"received {count} items, last {last!r}")
        fields = {"items_per_s": count / elapsed, "n": count}
        note = driver.gen_note()
        if note:
            fields["note"] = note
        return fields
    if workload == "deep1000":
        value = driver.deep_value()
        times = []
        for _ in range(scale.deep_trips):
            start = time.perf_counter()
            reply = driver.echo(value)
            times.append(time.perf_counter() - start)
            if depth_of(reply) != DEEP:
                raise AssertionError(f"echoed depth {depth_of(reply)}, not {DEEP}")
        return {"seconds": sorted(times)[len(times) // 2], "n": len(times)}
    raise ValueError(f"unknown workload {workload}")


# --- asyncio clients -------------------------------------------------------------------
class AsyncDriver:
    """What an asyncio client offers; raise :class:`NotApplicable` for what it cannot do."""

    async def small(self) -> Any:
        raise NotImplementedError

    async def echo(self, value: Any) -> Any:
        raise NotImplementedError

    async def echo_bytes(self, value: bytes) -> bytes:
        """Echo raw bytes as the system's own binary type (no base64 by hand)."""
        raise NotApplicable(NO_BYTES)

    async def gen(self, n: int) -> AsyncIterator[Any]:
        raise NotApplicable("no streaming of generators")

    def gen_note(self) -> str | None:
        return None

    async def close(self) -> None:
        pass


async def _async_workload(driver: AsyncDriver, workload: str, scale: Scale) -> dict[str, Any]:
    if workload == "seq":
        for _ in range(scale.warmup):
            await driver.small()
        lat: list[int] = []
        call = driver.small
        clock = time.perf_counter_ns
        check_small(await call())
        start = time.perf_counter()
        for _ in range(scale.seq_calls):
            t0 = clock()
            await call()
            lat.append(clock() - t0)
        return seq_fields(lat, time.perf_counter() - start)
    if workload == "threads8":
        check_small(await driver.small())

        async def work() -> None:
            for _ in range(scale.thread_calls):
                await driver.small()

        start = time.perf_counter()
        await asyncio.gather(*(work() for _ in range(THREADS)))
        return {"calls_per_s": THREADS * scale.thread_calls / (time.perf_counter() - start),
                "note": f"{THREADS} asyncio tasks"}
    if workload == "inflight64":
        await asyncio.gather(*(driver.small() for _ in range(IN_FLIGHT)))
        start = time.perf_counter()
        for _ in range(scale.inflight_batches):
            await asyncio.gather(*(driver.small() for _ in range(IN_FLIGHT)))
        return {"calls_per_s": IN_FLIGHT * scale.inflight_batches / (time.perf_counter() - start),
                "note": f"asyncio.gather of {IN_FLIGHT}"}
    if workload in ("echo10mb", "bytes10mb"):
        payload, echo = (big_string(), driver.echo) if workload == "echo10mb" else (big_bytes(), driver.echo_bytes)
        times = []
        for _ in range(scale.big_trips):
            start = time.perf_counter()
            reply = await echo(payload)
            times.append(time.perf_counter() - start)
            _check_big(reply, payload)
        return {"seconds": sorted(times)[len(times) // 2], "n": len(times)}
    if workload == "gen100k":
        start = time.perf_counter()
        count = 0
        last = None
        async for item in await driver.gen(scale.gen_items):
            count += 1
            last = item
        elapsed = time.perf_counter() - start
        if count != scale.gen_items or last != scale.gen_items - 1:
            raise AssertionError(f"received {count} items, last {last!r}")
        fields: dict[str, Any] = {"items_per_s": count / elapsed, "n": count}
        note = driver.gen_note()
        if note:
            fields["note"] = note
        return fields
    if workload == "deep1000":
        value = nested_list()
        times = []
        for _ in range(scale.deep_trips):
            start = time.perf_counter()
            reply = await driver.echo(value)
            times.append(time.perf_counter() - start)
            if depth_of(reply) != DEEP:
                raise AssertionError(f"echoed depth {depth_of(reply)}, not {DEEP}")
        return {"seconds": sorted(times)[len(times) // 2], "n": len(times)}
    raise ValueError(f"unknown workload {workload}")


# --- entry points ----------------------------------------------------------------------
def _error_fields(exc: BaseException) -> dict[str, Any]:
    text = f"{type(exc).__name__}: {exc}"
    return {"status": "error", "reason": text[:300]}


def client_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), default="quick")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--duration", type=float, default=0.0,
                        help="profiling mode: repeat sequential calls for this many seconds, print nothing")
    return parser.parse_args(argv)


def run_sync_client(connect: Callable[[int], SyncDriver], argv: Sequence[str] | None = None) -> None:
    args = client_args(argv)
    scale = SCALES[args.scale]
    driver = connect(args.port)
    try:
        if args.duration:
            deadline = time.monotonic() + args.duration
            while time.monotonic() < deadline:
                for _ in range(200):
                    driver.small()
            return
        for workload in args.workloads.split(","):
            emit("start", workload)
            try:
                fields = {"status": "ok", **_sync_workload(driver, workload, scale)}
            except NotApplicable as exc:
                fields = {"status": "n/a", "reason": str(exc)}
            except Exception as exc:  # noqa: BLE001 - any failure of the system is a result
                traceback.print_exc(file=sys.stderr)
                fields = _error_fields(exc)
            emit("result", workload, **fields)
    finally:
        driver.close()


def run_async_client(connect: Callable[[int], Awaitable[AsyncDriver]], argv: Sequence[str] | None = None) -> None:
    args = client_args(argv)
    scale = SCALES[args.scale]

    async def main() -> None:
        driver = await connect(args.port)
        try:
            if args.duration:
                deadline = time.monotonic() + args.duration
                while time.monotonic() < deadline:
                    for _ in range(200):
                        await driver.small()
                return
            for workload in args.workloads.split(","):
                emit("start", workload)
                try:
                    fields = {"status": "ok", **await _async_workload(driver, workload, scale)}
                except NotApplicable as exc:
                    fields = {"status": "n/a", "reason": str(exc)}
                except Exception as exc:  # noqa: BLE001 - any failure of the system is a result
                    traceback.print_exc(file=sys.stderr)
                    fields = _error_fields(exc)
                emit("result", workload, **fields)
        finally:
            await driver.close()

    asyncio.run(main())


def serve_until_terminated(serve: Callable[[], None], stop: Callable[[], None]) -> None:
    """Run *serve* (blocking) in this thread; SIGTERM calls *stop* from a helper thread."""
    import signal

    def on_term(signum: int, frame: object) -> None:
        threading.Thread(target=stop, name="bench-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    serve()
