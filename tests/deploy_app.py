"""The app ``tests/test_deploy.py`` serves under gunicorn (``tests.deploy_app:app``).

An :class:`~easyrpc.server.EasyRpcServer` at ``/ws/deploy`` offering ``echo``, a slow
plain function, a generator and ``info`` (what the worker process looks like from
inside: its pid, whether gevent patched it, its connections and its hub), ``record``
(each call it runs appended to this process's journal file, named by the environment
variable ``EASYRPC_TEST_JOURNAL``: how a test counts calls run on a server it then
kills), ``progress`` (calls back a callable argument), and a plain Flask route
``/health`` on the same app.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask

from easyrpc._net.hub import hub
from easyrpc.server import EasyRpcServer

SECRET = "abcd1234"
PATH = "/ws/deploy"
MAX_SLEEP = 10.0

app = Flask(__name__)
rpc = EasyRpcServer(app, PATH, server_secret=SECRET, max_workers=64)


@rpc.origin
def echo(x: Any) -> Any:
    return x


@rpc.origin
def slow(seconds: float) -> float:
    """Sleep *seconds* (at most MAX_SLEEP): ``time.sleep``, which gevent patches to yield."""
    time.sleep(min(float(seconds), MAX_SLEEP))
    return seconds


@rpc.origin
def count(n: int, pause: float = 0.0) -> Iterator[int]:
    """Yield 0 .. n-1, sleeping *pause* seconds before each."""
    for i in range(n):
        if pause:
            time.sleep(min(float(pause), MAX_SLEEP))
        yield i


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("threading") and monkey.is_module_patched("socket"))


@rpc.origin
def info() -> dict[str, Any]:
    """This worker process: pid, gevent's patching, connections, and its hub (peers,
    leaders started so far, watchdog looks, whether this call runs on the leader)."""
    h = hub()
    return {
        "pid": os.getpid(),
        "gevent": _gevent_patched(),
        "connections": rpc.connection_count,
        "active_calls": rpc.active_calls,
        "hub_peers": h.peer_count,
        "hub_leaders_started": h.leaders_started,
        "watchdog_ticks": h.watch.ticks,
        "on_leader": h.is_leader(),
        "ident": threading.get_ident(),
    }


@rpc.origin
def probe(n: int) -> Iterator[dict[str, Any]]:
    """A generator (it runs on a worker, never on the hub's leader): whether each step
    sees itself as the hub's leader, and its thread (greenlet) ident."""
    for _ in range(n):
        yield {"on_leader": hub().is_leader(), "ident": threading.get_ident()}


@rpc.origin
def record(tag: str, seconds: float = 0.0) -> str:
    """Sleep *seconds* (at most MAX_SLEEP), append *tag* to this process's journal (one
    write of one line, kept by the kernel if the process is killed next) and return it."""
    if seconds:
        time.sleep(min(float(seconds), MAX_SLEEP))
    journal = os.environ.get("EASYRPC_TEST_JOURNAL")
    if journal:
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{tag}\n".encode())
        finally:
            os.close(fd)
    return tag


@rpc.origin
def progress(n: int, report: Any) -> int:
    """Call the client's callable *report(i, n)* for i in 1..n; return the sum of its results."""
    return sum(report(i, n) for i in range(1, n + 1))


@app.route("/health")
def health() -> dict[str, Any]:
    return {"ok": True, "pid": os.getpid(), "connections": rpc.connection_count}
