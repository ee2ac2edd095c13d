"""Serve tests.apps.build_app() on 127.0.0.1:<port> until terminated (for fault tests).

Prints ``READY <port>`` once listening. Extra arguments are ``name=value`` server options
(floats or ints); or ``deploy`` and then ``journal=PATH``: serve ``tests.deploy_app``
instead, with that ``record`` journal.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from werkzeug.serving import make_server

from tests.apps import build_app


def main() -> None:
    port = int(sys.argv[1])
    if sys.argv[2:3] == ["deploy"]:  # tests.deploy_app; journal=PATH: its record() journal
        for arg in sys.argv[3:]:
            key, value = arg.split("=", 1)
            os.environ[f"EASYRPC_TEST_{key.upper()}"] = value
        from tests.deploy_app import app, rpc
    else:
        options: dict[str, float] = {}
        for arg in sys.argv[2:]:
            key, value = arg.split("=", 1)
            options[key] = float(value) if "." in value else int(value)
        app, rpc, _ = build_app(**options)
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    print(f"READY {httpd.server_port}", flush=True)
    while not stop.wait(0.2):
        pass
    rpc.close(grace=1.0)
    httpd.shutdown()


if __name__ == "__main__":
    main()
