"""Peak memory of a big string round trip, ``p.echo('x' * N)``, on each side.

::

    python benchmarks/memory.py               # 10 MB and 100 MB
    python benchmarks/memory.py --mb 100      # one size (MB = 2**20 bytes, as in run.py)
    python benchmarks/memory.py --encryption  # the same with encryption_enabled=True

For each size a fresh server subprocess and a fresh client subprocess are started, so
both baselines are clean. The client connects, warms up with a small echo, builds the
payload and reports its resident set; the benchmark then reads the server's resident set,
resets both peaks (``/proc/<pid>/clear_refs``) and lets the client make the call. The
extra memory of each side is its peak resident set (VmHWM) during the round trip minus
its resident set just before it, shown in MiB and as a multiple of the payload. The
client's payload string is built before its baseline, so it is not counted; the echoed
result (one payload) is. Target: within 4x the payload on each side. Exit code 1 if a
side misses it, 2 if a round trip fails.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from _bench_server import HOST, MIB, PATH, SECRET, STOP_GRACE, BenchServer, proc_stats, reset_peak

TARGET = 4.0  # extra peak memory per side, in payloads


@dataclass(frozen=True)
class Measurement:
    """One round trip of *mb* MiB."""

    mb: int
    seconds: float
    server_extra_mib: float
    client_extra_mib: float
    peak_reset: bool  # VmHWM could be reset on both sides before the call

    def multiple(self, extra_mib: float) -> float:
        return extra_mib / self.mb

    @property
    def within_target(self) -> bool:
        return max(self.multiple(self.server_extra_mib), self.multiple(self.client_extra_mib)) <= TARGET


# --- the client subprocess ------------------------------------------------------------------
def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def client_main(port: int, size: int, encryption: bool, timeout: float) -> None:
    """Connect, warm up, build the payload, report; on ``go`` make the call and report."""
    from easyrpc.proxy import EasyRpcProxy

    p = EasyRpcProxy.create(HOST, port, PATH, server_secret=SECRET, encryption_enabled=encryption, timeout=timeout)
    try:
        p.echo("warm-up")
        payload = "x" * size
        emit("ready", rss_mib=proc_stats().rss_mib)
        if sys.stdin.readline().strip() != "go":
            return  # the benchmark went away
        before = proc_stats().rss_mib
        reset = reset_peak()
        start = time.perf_counter()
        result = p.echo(payload)
        seconds = time.perf_counter() - start
        peak = proc_stats().hwm_mib
        emit("done", seconds=seconds, extra_mib=peak - before, peak_reset=reset, ok=result == payload)
    finally:
        p.close()


# --- the benchmark --------------------------------------------------------------------------
class ClientProcess:
    """The client subprocess, its JSON lines read by a thread; stopped through its handle."""

    def __init__(self, port: int, size: int, encryption: bool, timeout: float) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--client-port", str(port), "--bytes", str(size),
               "--timeout", str(timeout)]
        if encryption:
            cmd.append("--encryption")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, args=(self.proc.stdout,), name="client-out", daemon=True)
        self._pump.start()

    def _read(self, stream: IO[str] | None) -> None:
        if stream is not None:
            for line in stream:
                try:
                    self._events.put(json.loads(line))
                except ValueError:
                    sys.stderr.write(line)
        self._events.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next event, which must be *event*, within *timeout* seconds."""
        try:
            got = self._events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the client sent no {event!r} within {timeout:.0f} s") from None
        if got is None or got.get("event") != event:
            raise RuntimeError(f"the client stopped before {event!r} (got {got})")
        return got

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        for action in (None, self.proc.terminate, self.proc.kill):
            if action is not None:
                action()
            try:
                self.proc.wait(STOP_GRACE)
                break
            except subprocess.TimeoutExpired:
                continue
        self._pump.join(STOP_GRACE)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def measure(mb: int, encryption: bool) -> Measurement:
    """One round trip of *mb* MiB between a fresh server and a fresh client."""
    size = mb * MIB
    timeout = 60.0 + 3.0 * mb
    with BenchServer(encryption=encryption) as server:
        client = ClientProcess(server.port, size, encryption, timeout)
        try:
            client.expect("ready", 60.0)
            server_before = server.stats().rss_mib
            server_reset = reset_peak(server.pid)
            client.send("go")
            done = client.expect("done", timeout + 10.0)
            server_peak = server.stats().hwm_mib
        finally:
            client.stop()
    if not done["ok"]:
        raise RuntimeError(f"the {mb} MiB echo came back different")
    return Measurement(mb, done["seconds"], server_peak - server_before, done["extra_mib"],
                       server_reset and done["peak_reset"])


def print_table(results: list[Measurement], encryption: bool) -> None:
    print(f"\nmemory: echo('x' * N) round trip, encryption {'on' if encryption else 'off'}; "
          f"extra = peak RSS (VmHWM) during the call - RSS just before it; target <= {TARGET:.0f}x payload per side")
    header = f"{'payload':>9} | {'round trip':>10} | {'server extra':>22} | {'client extra':>22} | {'verdict':>7}"
    print(header)
    print("-" * len(header))
    for m in results:
        server = f"{m.server_extra_mib:8.1f} MiB ({m.multiple(m.server_extra_mib):5.3f}x)"
        client = f"{m.client_extra_mib:8.1f} MiB ({m.multiple(m.client_extra_mib):5.3f}x)"
        verdict = "ok" if m.within_target else "OVER"
        print(f"{m.mb:>5} MiB | {m.seconds:>8.2f} s | {server:>22} | {client:>22} | {verdict:>7}")
    if not all(m.peak_reset for m in results):
        print("note: VmHWM could not be reset on one side; its peak then includes start-up")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[10, 100], help="payload sizes in MiB (default: 10 100)")
    parser.add_argument("--encryption", action="store_true", help="encryption_enabled=True on both sides")
    parser.add_argument("--client-port", type=int, help=argparse.SUPPRESS)  # the client subprocess's role
    parser.add_argument("--bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.client_port is not None:
        client_main(args.client_port, args.bytes, args.encryption, args.timeout)
        return 0
    results: list[Measurement] = []
    for mb in args.mb:
        try:
            results.append(measure(mb, args.encryption))
        except (RuntimeError, TimeoutError) as exc:
            print(f"{mb} MiB: failed: {exc}", file=sys.stderr)
            return 2
    print_table(results, args.encryption)
    return 0 if all(m.within_target for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
