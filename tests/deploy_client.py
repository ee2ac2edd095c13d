"""Many proxies in one helper process, for ``tests/test_deploy.py``.

    python -m tests.deploy_client PORT N

Opens N ``EasyRpcProxy`` connections to ``/ws/deploy`` on 127.0.0.1:PORT (a few
connecting at a time), makes one ``echo`` call on each with its own value and checks
that the reply is its own, then prints one JSON line ``{"event": "held", ...}`` and
holds them open until a line ``close`` (or the end of stdin) arrives; then closes them
all and prints ``{"event": "closed", ...}``. Every connect and call is bounded; the
test stops this process through its Popen handle if it lingers.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from easyrpc.proxy import EasyRpcProxy

from .deploy_app import PATH, SECRET

CONNECT_TIMEOUT = 20.0
CALL_TIMEOUT = 20.0
CONNECTORS = 16  # connections opened at the same time


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    errors: list[str] = []
    lock = threading.Lock()

    def connect(i: int) -> EasyRpcProxy | None:
        try:
            return EasyRpcProxy.create("127.0.0.1", port, PATH, server_secret=SECRET,
                                       timeout=CALL_TIMEOUT, connect_timeout=CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            with lock:
                errors.append(f"connect {i}: {type(exc).__name__}: {exc}"[:200])
            return None

    t0 = time.monotonic()
    with ThreadPoolExecutor(CONNECTORS, thread_name_prefix="deploy-connect") as pool:
        opened = list(pool.map(connect, range(n)))
    proxies = [p for p in opened if p is not None]
    connect_s = time.monotonic() - t0

    def call(i: int) -> bool:
        proxy = opened[i]
        if proxy is None:
            return False
        value = {"i": i, "tag": f"conn-{i}"}
        try:
            reply = proxy.echo(value)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            with lock:
                errors.append(f"call {i}: {type(exc).__name__}: {exc}"[:200])
            return False
        return bool(reply == value)

    # every connection is open now; their calls run concurrently
    with ThreadPoolExecutor(CONNECTORS, thread_name_prefix="deploy-call") as pool:
        answered = sum(pool.map(call, range(n)))
    emit("held", connected=len(proxies), answered=answered, connect_s=round(connect_s, 2),
         threads=threading.active_count(), errors=errors[:5])

    while (line := sys.stdin.readline()) and line.strip() != "close":
        pass
    t1 = time.monotonic()
    close_errors = 0
    with ThreadPoolExecutor(CONNECTORS, thread_name_prefix="deploy-close") as pool:
        for exc in pool.map(_close, proxies):
            close_errors += exc is not None
    emit("closed", close_errors=close_errors, close_s=round(time.monotonic() - t1, 2))


def _close(proxy: EasyRpcProxy) -> BaseException | None:
    try:
        proxy.close()
    except Exception as exc:  # noqa: BLE001 - counted and reported
        return exc
    return None


if __name__ == "__main__":
    main()
