"""The cost of ``encryption_enabled=True``: encrypted against plain, in the same run.

::

    python benchmarks/encryption.py [--runs 3] [--seconds 3] [--mb 10] [--echoes 3]

Two server subprocesses run at once, one with encryption and one without; this process
holds a blocking proxy to each. Every run measures, for each server in turn (the order
alternates from run to run), sequential ``good_func_a(1, 5, 7)`` calls for ``--seconds``
(calls/s) and then ``echo('x' * N)`` round trips of ``--mb`` MiB, ``--echoes`` per server,
alternating between the servers (seconds, the median of them). The table shows the
median over the runs and the median of the same-run ratios encrypted/plain:
below 1 for calls/s, above 1 for seconds, means encryption costs that much.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from _bench_server import HOST, MIB, PATH, SECRET, BenchServer

MODES = ("plain", "encrypted")
SMALL_RESULT = {"good_func_a": [1, 5, 7]}
WARMUP_CALLS = 300
CALL_TIMEOUT = 120.0


@dataclass
class RunResult:
    """One run's figures for one mode."""

    calls_per_s: float
    echo_s: float


def sequential_rate(proxy: Any, seconds: float) -> float:
    """Sequential ``good_func_a(1, 5, 7)`` calls per second over about *seconds*."""
    call = proxy.good_func_a
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):  # check the clock every 50 calls
            if call(1, 5, 7) != SMALL_RESULT:
                raise RuntimeError("good_func_a returned a wrong result")
        calls += 50
    return calls / (time.perf_counter() - start)


def echo_seconds(proxy: Any, payload: str) -> float:
    """Seconds for one echo round trip of *payload*."""
    start = time.perf_counter()
    result = proxy.echo(payload)
    elapsed = time.perf_counter() - start
    if len(result) != len(payload):
        raise RuntimeError("echo returned a different string")
    return elapsed


def warm_up(proxy: Any, payload: str) -> None:
    for _ in range(WARMUP_CALLS):
        proxy.good_func_a(1, 5, 7)
    echo_seconds(proxy, payload)


def run_once(proxies: dict[str, Any], order: tuple[str, ...], seconds: float, payload: str,
             echoes: int) -> dict[str, RunResult]:
    """One run: the small-call rate of each mode, then *echoes* big echoes per mode, alternating (median kept)."""
    rates = {mode: sequential_rate(proxies[mode], seconds) for mode in order}
    times: dict[str, list[float]] = {mode: [] for mode in order}
    for _ in range(echoes):
        for mode in order:
            times[mode].append(echo_seconds(proxies[mode], payload))
    return {mode: RunResult(rates[mode], statistics.median(times[mode])) for mode in MODES}


def ratio_median(runs: list[dict[str, RunResult]], field: str) -> float:
    """The median over runs of encrypted/plain for *field*."""
    return float(statistics.median(getattr(r["encrypted"], field) / getattr(r["plain"], field) for r in runs))


def print_table(runs: list[dict[str, RunResult]], seconds: float, mb: int) -> None:
    print(f"\nencryption: plain vs encrypted servers side by side, median of {len(runs)} run(s)")
    header = f"{'workload':<34} | {'plain':>11} | {'encrypted':>11} | {'enc/plain':>9} | per run (plain / encrypted)"
    print(header)
    print("-" * len(header))
    rows = [
        (f"good_func_a(1,5,7) seq, ~{seconds:g} s", "calls_per_s", "{:,.0f}/s"),
        (f"echo {mb} MiB round trip (median)", "echo_s", "{:.3f} s"),
    ]
    for label, field, fmt in rows:
        plain = statistics.median(getattr(r["plain"], field) for r in runs)
        enc = statistics.median(getattr(r["encrypted"], field) for r in runs)
        per_run = ", ".join(f"{fmt.format(getattr(r['plain'], field))} / {fmt.format(getattr(r['encrypted'], field))}"
                            for r in runs)
        print(f"{label:<34} | {fmt.format(plain):>11} | {fmt.format(enc):>11} | {ratio_median(runs, field):>8.2f}x | {per_run}")
    print("enc/plain is the median of same-run ratios: below 1x for calls/s and above 1x for seconds mean slower.")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per median (default 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of sequential calls per mode and run")
    parser.add_argument("--mb", type=int, default=10, help="echo payload in MiB (default 10)")
    parser.add_argument("--echoes", type=int, default=3, help="echo round trips per mode and run; their median counts")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    payload = "x" * (args.mb * MIB)
    runs: list[dict[str, RunResult]] = []
    with BenchServer(encryption=False) as plain_server, BenchServer(encryption=True) as enc_server:
        from easyrpc.proxy import EasyRpcProxy

        proxies: dict[str, Any] = {}
        try:
            for mode, server in (("plain", plain_server), ("encrypted", enc_server)):
                proxies[mode] = EasyRpcProxy.create(HOST, server.port, PATH, server_secret=SECRET,
                                                    encryption_enabled=mode == "encrypted", timeout=CALL_TIMEOUT)
                warm_up(proxies[mode], payload)
            for i in range(args.runs):
                order = MODES if i % 2 == 0 else MODES[::-1]
                runs.append(run_once(proxies, order, args.seconds, payload, args.echoes))
                print(f"run {i + 1}/{args.runs} done", file=sys.stderr, flush=True)
        finally:
            for proxy in proxies.values():
                proxy.close()
    print_table(runs, args.seconds, args.mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
