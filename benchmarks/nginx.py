"""Calls/s through nginx against direct to the backend, same run.

    python benchmarks/nginx.py [--worker gthread|gevent] [--seconds 3] [--rounds 3]

Starts two ``gunicorn -w 1 tests.deploy_app:app`` backends and nginx in front of them
with the README's configuration (``tests/nginx.py``; nginx must be installed), then, in
interleaved rounds, measures from this process:

- ``sequential``: one thread, one proxy, ``echo(1)`` back to back;
- ``8 threads``: eight threads sharing one proxy, the same calls;

each ``direct`` (to the first backend's port), ``nginx`` (nginx's plain port; the
proxy lands on either backend) and ``nginx+tls`` (TLS terminated at nginx, verified
with the test CA). Prints the median calls/s of the rounds per target and the ratio to
direct. Everything is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trustme  # noqa: E402

from easyrpc.proxy import EasyRpcProxy  # noqa: E402
from tests.deploy_app import PATH, SECRET  # noqa: E402
from tests.nginx import Nginx  # noqa: E402
from tests.test_deploy import Gunicorn  # noqa: E402


def rate(proxy: EasyRpcProxy, threads: int, seconds: float) -> float:
    """Calls/s of *threads* threads calling ``echo(1)`` on *proxy* for *seconds*."""
    counts = [0] * threads
    stop = threading.Event()

    def run(i: int) -> None:
        echo = proxy.echo
        n = 0
        while not stop.is_set():
            echo(1)
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=run, args=(i,), name=f"bench-nginx-{i}") for i in range(threads)]
    start = time.perf_counter()
    for t in workers:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in workers:
        t.join(30)
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", default="gthread", choices=["gthread", "gevent"])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="easyrpc-nginx-") as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        ca = trustme.CA()
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
        backends = [Gunicorn(args.worker, 64, tmp / f"gunicorn-{i}.log") for i in range(2)]
        for b in backends:
            stack.callback(b.stop)
        nginx = Nginx(tmp / "nginx", [b.port for b in backends], tmp / "server.pem", tmp / "server.pem", "60s")
        stack.callback(nginx.stop)
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        targets: dict[str, dict[str, Any]] = {
            "direct": {"port": backends[0].port},
            "nginx": {"port": nginx.port},
            "nginx+tls": {"port": nginx.tls_port, "ssl_context": ctx},
        }
        proxies = {}
        for name, target in targets.items():
            port = target.pop("port")
            proxies[name] = p = EasyRpcProxy.create("127.0.0.1", port, PATH, SECRET, timeout=30, **target)
            stack.callback(p.close)
            rate(p, 1, 0.5)  # warm-up
        results: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for threads in (1, 8):
                for name, p in proxies.items():
                    results.setdefault((name, threads), []).append(rate(p, threads, args.seconds))
    print(f"gunicorn -k {args.worker} -w 1 behind nginx, {args.rounds} interleaved rounds of {args.seconds:g} s, "
          f"median calls/s (ratio to direct):")
    for threads, label in ((1, "sequential"), (8, "8 threads, one proxy")):
        direct = statistics.median(results[("direct", threads)])
        cells = [f"{name} {statistics.median(results[(name, threads)]):,.0f} "
                 f"({statistics.median(results[(name, threads)]) / direct:.2f}x)" for name in proxies]
        print(f"  {label}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
