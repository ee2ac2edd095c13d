"""Standard-library XML-RPC: a threading SimpleXMLRPCServer speaking HTTP/1.1 keep-alive.

``python xmlrpc_bench.py server --port P`` / ``client --port P [...]``

A ``ServerProxy`` is not thread-safe (one HTTP connection), so the threads workload gives
each thread its own; XML-RPC has no asynchronous calls and no streaming (n/a).
"""

from __future__ import annotations

import sys
import xmlrpc.client
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from _common import SyncDriver, run_sync_client, serve_until_terminated


class _Handler(SimpleXMLRPCRequestHandler):
    protocol_version = "HTTP/1.1"  # keep the connection open between calls


class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True


def good_func_a(a: Any, b: Any, c: Any) -> dict[str, list[Any]]:
    return {"good_func_a": [a, b, c]}


def echo(x: Any) -> Any:
    return x


def serve(port: int) -> None:
    server = _Server(("127.0.0.1", port), requestHandler=_Handler, logRequests=False, allow_none=True)
    server.register_function(good_func_a)
    server.register_function(echo)
    serve_until_terminated(server.serve_forever, server.shutdown)


class XmlRpcDriver(SyncDriver):
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.p = xmlrpc.client.ServerProxy(self.url, allow_none=True)
        self._extra: list[xmlrpc.client.ServerProxy] = []

    def small(self) -> Any:
        return self.p.good_func_a(1, 5, 7)

    def small_for_thread(self) -> Callable[[], Any]:
        proxy = xmlrpc.client.ServerProxy(self.url, allow_none=True)
        self._extra.append(proxy)
        return lambda: proxy.good_func_a(1, 5, 7)

    def threads_note(self) -> str:
        return "one ServerProxy (connection) per thread: not thread-safe"

    def end_threads(self) -> None:
        for proxy in self._extra:
            proxy("close")()
        self._extra.clear()

    def echo(self, value: Any) -> Any:
        return self.p.echo(value)

    def close(self) -> None:
        self.p("close")()


def main() -> None:
    role, argv = sys.argv[1], sys.argv[2:]
    if role == "server":
        serve(int(argv[argv.index("--port") + 1]))
    else:
        run_sync_client(XmlRpcDriver, argv)


if __name__ == "__main__":
    main()
