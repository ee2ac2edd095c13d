"""How fast can one thread wake others? The cost behind a blocking call shared by threads.

    python benchmarks/wakeups.py [--calls 40000] [--runs 3]

No RPC and no server: N caller threads each send a 64-byte message on a socketpair and
sleep until woken; one replier thread reads the messages and wakes their senders in order,
as easyrpc's reading thread wakes blocking callers. Two ways of sleeping are compared in
the same run, and the ratio is the median over the runs of each run's ratio:

* ``lock``: a fresh ``threading.Lock`` per call, released by the replier (what
  ``BlockingCall`` slept on before the waker). The futex wake happens with the GIL held.
* ``waker``: the caller thread's ``easyrpc._wake.ThreadWaker`` (a pipe on POSIX),
  written with the GIL released.

Prints one table: calls/s and CPU µs per call (both threads' CPU, ``time.process_time``).
"""

from __future__ import annotations

import argparse
import collections
import socket
import statistics
import threading
import time
from typing import Any

from easyrpc._wake import _PIPE, thread_waker

MSG = b"x" * 64


class _Box:
    """One call's reply has come (easyrpc._wake.Delivered)."""

    __slots__ = ("delivered",)

    def __init__(self) -> None:
        self.delivered = False


def one_run(kind: str, threads: int, calls: int) -> tuple[float, float]:
    """(calls/s, CPU µs per call) of *threads* callers making *calls* calls in all."""
    a, b = socket.socketpair()
    waiters: collections.deque[Any] = collections.deque()
    send_lock = threading.Lock()
    per_thread = calls // threads
    total = per_thread * threads

    def replier() -> None:
        got = buffered = 0
        while got < total:
            data = b.recv(65536)
            if not data:
                return
            buffered += len(data)
            k, buffered = divmod(buffered, len(MSG))
            for _ in range(k):
                w = waiters.popleft()
                if kind == "lock":
                    w.release()
                else:
                    waker, box = w
                    box.delivered = True
                    waker.wake()
            got += k

    def caller() -> None:
        waker = thread_waker()
        for _ in range(per_thread):
            if kind == "lock":
                lock = threading.Lock()
                lock.acquire()
                with send_lock:
                    waiters.append(lock)
                    a.sendall(MSG)
                lock.acquire()
            else:
                box = _Box()
                with send_lock:
                    waiters.append((waker, box))
                    a.sendall(MSG)
                waker.wait_for(box, None)

    rt = threading.Thread(target=replier, name="bench-replier")
    ts = [threading.Thread(target=caller, name=f"bench-caller-{i}") for i in range(threads)]
    rt.start()
    t0, c0 = time.perf_counter(), time.process_time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    rt.join()
    a.close()
    b.close()
    return total / elapsed, cpu / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"waker: {'pipe' if _PIPE else 'lock'}; "
          f"{args.calls:,} calls per figure, median of {args.runs} runs")
    print(f"{'threads':>7}  {'lock calls/s':>12}  {'lock us/call':>12}  "
          f"{'waker calls/s':>13}  {'waker us/call':>13}  {'ratio':>6}")
    for threads in (1, 8):
        lock_runs, waker_runs, ratios = [], [], []
        for _ in range(args.runs):  # interleaved, so drift on a shared machine hits both
            lock_runs.append(one_run("lock", threads, args.calls))
            waker_runs.append(one_run("waker", threads, args.calls))
            ratios.append(waker_runs[-1][0] / lock_runs[-1][0])
        lr = statistics.median(r for r, _ in lock_runs)
        lc = statistics.median(c for _, c in lock_runs)
        wr = statistics.median(r for r, _ in waker_runs)
        wc = statistics.median(c for _, c in waker_runs)
        print(f"{threads:>7}  {lr:>12,.0f}  {lc:>12.1f}  {wr:>13,.0f}  {wc:>13.1f}  {statistics.median(ratios):>5.2f}x")


if __name__ == "__main__":
    main()
