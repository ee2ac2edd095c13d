"""A/B: one connection's sequential calls/s for two or more checkouts, alternating.

    python benchmarks/ab.py [--rounds 6] [--calls 3000] [--pin] [--split] TREE [TREE ...]

Each TREE is a directory holding an ``easyrpc`` package (a checkout: ``git worktree add
/tmp/ab-b8222b2 b8222b2``); it goes first on ``PYTHONPATH`` of a server process (Flask,
werkzeug ``make_server(threaded=True)``, one ``echo`` function) and of a client process
(a blocking proxy calling ``echo(i)`` back to back). Every round runs each tree once, in
turn, with a new pair of processes: 2,000 calls to warm up, then five timed batches of
``--calls``; a run's figure is its best batch. The table gives each tree's median over
the rounds and its ratio to the first tree's. Alternating trees within one run is what
makes a ratio mean something on a shared, noisy machine.

``--pin`` puts the server on CPU 0 and the client on CPU 1 (``taskset``): less noise,
and the two busy-polling processes never share a core. ``--split`` also stamps every
socket send and receive (a ``sitecustomize`` in ``harness/stamps`` wraps the socket
methods; it costs about a microsecond per call on each side) and splits the round trip
into the client's processing (reply received to next request sent), the server's
(request received to reply sent) and the wire (both directions: the client's wait less
the server's processing). Only the old public API is used, so any commit can be a tree.

Every process is stopped through its own Popen handle; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAMPS = Path(__file__).resolve().parent / "harness" / "stamps"

SERVER = """
import sys
from flask import Flask
from werkzeug.serving import make_server
from easyrpc.server import EasyRpcServer
app = Flask("ab")
rpc = EasyRpcServer(app, "/ws/ab", server_secret="ab")
@rpc.origin
def echo(x):
    return x
make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()
"""

CLIENT = """
import sys, time
from easyrpc.proxy import EasyRpcProxy
port, calls = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 30
while True:
    try:
        p = EasyRpcProxy.create("127.0.0.1", port, "/ws/ab", server_secret="ab")
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
for i in range(2000):
    p.echo(i)
try:
    import sitecustomize
    sitecustomize.STAMPS.clear()  # only the timed batches (when --split stamps them)
except (ImportError, AttributeError):
    pass
best = 0.0
for _ in range(5):
    start = time.perf_counter()
    for i in range(calls):
        p.echo(i)
    best = max(best, calls / (time.perf_counter() - start))
import easyrpc
print(best, easyrpc.__file__)
p.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gaps(stamps: list[list[float]], first: int) -> tuple[list[float], list[float]]:
    """The times from each stamp of kind *first* to the next of the other kind, and back."""
    there, back = [], []
    for (k1, t1), (k2, t2) in zip(stamps, stamps[1:], strict=False):
        if k1 == first and k2 != first:
            there.append(t2 - t1)
        elif k1 != first and k2 == first:
            back.append(t2 - t1)
    return there, back


def run(tree: str, calls: int, pin: bool, split: bool, tmp: Path) -> dict[str, float]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, str(STAMPS)] if split else [tree]))
    pre_s, pre_c = (["taskset", "-c", "0"], ["taskset", "-c", "1"]) if pin else ([], [])
    s_out, c_out = tmp / "server.json", tmp / "client.json"
    # cwd: a directory without an easyrpc package (``-c`` puts the cwd first on sys.path)
    server = subprocess.Popen(pre_s + [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.DEVNULL, cwd=tmp,
                              stderr=subprocess.DEVNULL, env=dict(env, EASYRPC_STAMPS=str(s_out)) if split else env)
    try:
        client = subprocess.run(pre_c + [sys.executable, "-c", CLIENT, str(port), str(calls)], capture_output=True,
                                cwd=tmp, text=True, timeout=300,
                                env=dict(env, EASYRPC_STAMPS=str(c_out)) if split else env)
    finally:
        server.terminate()  # the stamps' SIGTERM handler writes them and exits
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    if client.returncode != 0:
        raise RuntimeError(f"{tree}: the client failed:\n{client.stderr[-2000:]}")
    rate, imported = client.stdout.split()
    if not Path(imported).resolve().is_relative_to(Path(tree).resolve()):
        raise RuntimeError(f"{tree}: the client imported easyrpc from {imported}")
    out = {"rate": float(rate)}
    if split:
        c_wait, c_proc = gaps(json.loads(c_out.read_text())[:-4], 1)
        s_proc, _ = gaps(json.loads(s_out.read_text())[-4 * calls:-4], 2)
        out |= {"client": statistics.median(c_proc) * 1e6, "server": statistics.median(s_proc) * 1e6,
                "wire": (statistics.median(c_wait) - statistics.median(s_proc)) * 1e6}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", help="directories holding an easyrpc package")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=3000, help="calls per timed batch (five batches per run)")
    ap.add_argument("--pin", action="store_true", help="server on CPU 0, client on CPU 1")
    ap.add_argument("--split", action="store_true", help="split the round trip (socket stamps)")
    args = ap.parse_args()
    results: dict[str, list[dict[str, float]]] = {t: [] for t in args.trees}
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for tree in args.trees:
                results[tree].append(run(tree, args.calls, args.pin, args.split, Path(tmp)))
                print(f"round {r + 1}/{args.rounds} {tree}: {results[tree][-1]['rate']:,.0f} calls/s", flush=True)
    base = statistics.median(x["rate"] for x in results[args.trees[0]])
    print(f"\n{started}, {args.rounds} rounds, best of 5 x {args.calls} calls per run"
          f"{', pinned' if args.pin else ''}\n")
    head = "| tree | calls/s (median) | ratio | runs |"
    if args.split:
        head += " client us | server us | wire us |"
    print(head)
    print("|---|---:|---:|---|" + ("---:|---:|---:|" if args.split else ""))
    for tree in args.trees:
        rates = [x["rate"] for x in results[tree]]
        rate = statistics.median(rates)
        row = f"| {tree} | {rate:,.0f} | {rate / base:.3f}x | {', '.join(f'{x:,.0f}' for x in rates)} |"
        if args.split:
            row += "".join(f" {statistics.median(x[k] for x in results[tree]):.2f} |" for k in ("client", "server", "wire"))
        print(row)


if __name__ == "__main__":
    main()
