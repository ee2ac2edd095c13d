"""Added latency per hop in a chain A <- B <- C, and how long a restored link takes.

Three node processes (examples/cluster/node.py) on loopback; one client process (this
one) calls C's ``where_c`` directly (0 hops), through B (1 hop) and through A (2 hops),
interleaved, median of ``--runs``. Then B is stopped and restarted on the same port, and
the time until ``where_c`` is back on A's client is measured.

Run: python benchmarks/hops.py [--calls 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

from easyrpc.proxy import EasyRpcProxy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = os.path.join(ROOT, "examples", "cluster", "node.py")
SECRET = "abcd1234"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(name: str, port: int, link: int | None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, NODE, name, str(port)]
    if link is not None:
        cmd += ["--link", f"127.0.0.1:{link}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    stop(proc)
    raise SystemExit(f"node {name} did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_for(predicate: object, timeout: float) -> float:
    start_at = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start_at > timeout:
            raise SystemExit("timed out")
        time.sleep(0.002)
    return time.monotonic() - start_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ports = {"a": free_port(), "b": free_port(), "c": free_port()}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    proxies: dict[str, EasyRpcProxy] = {}
    try:
        procs["c"] = start("c", ports["c"], None)
        procs["b"] = start("b", ports["b"], ports["c"])
        procs["a"] = start("a", ports["a"], ports["b"])
        for name in ("c", "b", "a"):
            proxies[name] = EasyRpcProxy.create("127.0.0.1", ports[name], "/ws/node", server_secret=SECRET, timeout=10)
        wait_for(lambda: "where_c" in proxies["a"], 15)
        labels = {"c": "0 hops (client -> C)", "b": "1 hop  (client -> B -> C)", "a": "2 hops (client -> A -> B -> C)"}
        rates: dict[str, list[float]] = {k: [] for k in labels}
        for _ in range(args.runs):
            for name in ("c", "b", "a"):
                fn = proxies[name].where_c
                fn(0)
                t0 = time.perf_counter()
                for i in range(args.calls):
                    fn(i)
                rates[name].append(args.calls / (time.perf_counter() - t0))
        base = statistics.median(rates["c"])
        print(f"where_c(i) sequential, median of {args.runs} runs of {args.calls} calls, nodes in separate processes")
        print(f"{'path':34s} {'calls/s':>9s} {'us/call':>9s} {'added':>9s}")
        for name, label in labels.items():
            rate = statistics.median(rates[name])
            print(f"{label:34s} {rate:9,.0f} {1e6 / rate:9.0f} {1e6 / rate - 1e6 / base:+9.0f}")
        # restore: B goes away and comes back on the same port
        stop(procs.pop("b"))
        gone = wait_for(lambda: "where_c" not in proxies["a"], 15)
        restarted = time.monotonic()
        procs["b"] = start("b", ports["b"], ports["c"])
        listening = time.monotonic() - restarted
        back = wait_for(lambda: "where_c" in proxies["a"], 30)
        print(f"B stopped: C's functions gone from A's client after {gone * 1000:.0f} ms")
        print(f"B restarted: listening after {listening * 1000:.0f} ms, C's functions back on A's client "
              f"{(listening + back) * 1000:.0f} ms after the restart (links back off up to 5 s by default)")
        return 0
    finally:
        for p in proxies.values():
            p.close()
        for proc in procs.values():
            stop(proc)


if __name__ == "__main__":
    raise SystemExit(main())
