"""What a callback costs: a callback round trip and a call that calls back, against a plain call.

    python benchmarks/callbacks.py [N]        # N sequential plain calls per repetition (5000)

One process: a Werkzeug server in a thread and a blocking proxy on 127.0.0.1. Each of 5
repetitions measures, in the same run:

* a plain call: ``p.echo(i)``, N times;
* a callback round trip: one call whose function calls the client's callable N times
  (``count_back``): the server-to-client call and its answer;
* a call that calls back once: ``p.once(i, cb)``, N/5 times (such a call runs on a worker,
  never on the hub's reading thread).

Prints one line per repetition and the medians, with the ratios to the plain call.
"""

from __future__ import annotations

import logging
import statistics
import sys
import threading
import time
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer

SECRET = "bench-callbacks"


def build() -> tuple[Flask, EasyRpcServer]:
    app = Flask("bench-callbacks")
    rpc = EasyRpcServer(app, "/ws/b", server_secret=SECRET)

    @rpc.origin
    def echo(x: Any) -> Any:
        return x

    @rpc.origin
    def count_back(n: int, cb: Any) -> float:
        started = time.perf_counter()
        for i in range(n):
            cb(i)
        return time.perf_counter() - started

    @rpc.origin
    def once(x: Any, cb: Any) -> Any:
        return cb(x)

    return app, rpc


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    logging.disable(logging.INFO)
    app, rpc = build()
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    server = threading.Thread(target=httpd.serve_forever, name="bench-server", daemon=True)
    server.start()
    try:
        with EasyRpcProxy.create("127.0.0.1", httpd.server_port, "/ws/b", server_secret=SECRET) as p:
            def noop(i: int) -> int:
                return i

            for _ in range(3):  # warm-up: the server's pace scores, the pools
                for i in range(500):
                    p.echo(i)
                p.count_back(500, noop)
            rows = []
            for _ in range(5):
                started = time.perf_counter()
                for i in range(n):
                    p.echo(i)
                plain = (time.perf_counter() - started) / n
                round_trip = p.count_back(n, noop) / n
                started = time.perf_counter()
                for i in range(n // 5):
                    p.once(i, noop)
                with_one = (time.perf_counter() - started) / (n // 5)
                rows.append((plain, round_trip, with_one))
                print(f"plain call {plain * 1e6:7.1f} us   callback round trip {round_trip * 1e6:7.1f} us "
                      f"({round_trip / plain:.2f}x)   call with one callback {with_one * 1e6:7.1f} us "
                      f"({with_one / plain:.2f}x)", flush=True)
            med = [statistics.median(r[i] for r in rows) for i in range(3)]
            print(f"median: plain {med[0] * 1e6:.1f} us, callback round trip {med[1] * 1e6:.1f} us "
                  f"({med[1] / med[0]:.2f}x), call with one callback {med[2] * 1e6:.1f} us ({med[2] / med[0]:.2f}x)")
    finally:
        rpc.close()
        httpd.shutdown()
        server.join(5)


if __name__ == "__main__":
    main()
