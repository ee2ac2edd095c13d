"""One easyrpc node for tests/test_netns.py, run inside a network namespace.

Usage: ``netns_node.py NAME BIND_HOST PORT [LINK_HOST:LINK_PORT ...]``

Serves ``/ws/node`` on ``BIND_HOST:PORT`` with ``whoami_NAME``, ``NAME_echo``,
``NAME_sleep`` and the generator ``NAME_ticks``; links (``create_server_proxy``) to each
``LINK_HOST:LINK_PORT``; uses short keepalive settings everywhere; prints ``READY`` once
listening; stops cleanly on SIGTERM or when its stdin closes (so it does not outlive a
test process that died). Sleeps and ticks end early when the node stops.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from easyrpc.server import EasyRpcServer

PATH = "/ws/node"
SECRET = "abcd1234"
PING_INTERVAL, PING_TIMEOUT = 0.3, 0.5  # short keepalive: a silent peer is dropped in 0.8 s


def main() -> None:
    name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    links = [arg.rsplit(":", 1) for arg in sys.argv[4:]]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {name} %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    stop = threading.Event()
    app = Flask(f"node-{name}")
    rpc = EasyRpcServer(app, PATH, server_secret=SECRET, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)

    def whoami() -> str:
        return name

    def echo(value: Any) -> Any:
        return [name, value]

    def sleep(seconds: float) -> float:
        stop.wait(seconds)  # returns early when the node stops, so shutdown is quick
        return seconds

    def ticks(n: int, every: float) -> Iterator[int]:
        for i in range(n):
            yield i
            if stop.wait(every):
                return

    rpc.origin(whoami, name=f"whoami_{name}")
    rpc.origin(ticks, name=f"{name}_ticks")
    rpc.origin(echo, name=f"{name}_echo")
    rpc.origin(sleep, name=f"{name}_sleep")

    httpd = make_server(host, port, app, threaded=True)
    for link_host, link_port in links:
        rpc.create_server_proxy(link_host, int(link_port), PATH, SECRET, ping_interval=PING_INTERVAL,
                                ping_timeout=PING_TIMEOUT, max_backoff=0.5)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin() -> None:
        sys.stdin.read()  # EOF: the test process is gone
        stop.set()

    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    print("READY", flush=True)
    while not stop.wait(0.2):
        pass
    rpc.close(grace=1.0)
    httpd.shutdown()
    httpd.server_close()


if __name__ == "__main__":
    main()
