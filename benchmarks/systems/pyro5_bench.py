"""Pyro5: a threaded daemon exposing one object; serpent serializer (the default).

``python pyro5_bench.py server --port P`` / ``client --port P [...]``

Runs in its own virtualenv (``.venvs/pyro5``). A Pyro5 proxy belongs to one thread, so
the threads workload gives each thread its own proxy (connection); Pyro5 has no
asynchronous calls, so 64-in-flight is n/a. Generators are streamed as remote iterators.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from _common import SyncDriver, run_sync_client, serve_until_terminated

OBJECT_ID = "bench"


def serve(port: int) -> None:
    from Pyro5.api import Daemon, expose

    @expose
    class Bench:
        def good_func_a(self, a: Any, b: Any, c: Any) -> dict[str, list[Any]]:
            return {"good_func_a": [a, b, c]}

        def echo(self, x: Any) -> Any:
            return x

        def gen(self, n: int) -> Iterator[int]:
            yield from range(n)

    daemon = Daemon(host="127.0.0.1", port=port)
    daemon.register(Bench, objectId=OBJECT_ID)
    serve_until_terminated(daemon.requestLoop, daemon.shutdown)


class PyroDriver(SyncDriver):
    def __init__(self, port: int) -> None:
        from Pyro5.api import Proxy

        self._Proxy = Proxy
        self.uri = f"PYRO:{OBJECT_ID}@127.0.0.1:{port}"
        self.p = Proxy(self.uri)
        self.p._pyroBind()
        self._extra: list[Any] = []

    def small(self) -> Any:
        return self.p.good_func_a(1, 5, 7)

    def small_for_thread(self) -> Callable[[], Any]:
        proxy = self._Proxy(self.uri)
        self._extra.append(proxy)

        def call() -> Any:
            proxy._pyroClaimOwnership()
            return proxy.good_func_a(1, 5, 7)

        return call

    def threads_note(self) -> str:
        return "one proxy (connection) per thread: Pyro5 proxies are owned by one thread"

    def end_threads(self) -> None:
        for proxy in self._extra:
            proxy._pyroClaimOwnership()
            proxy._pyroRelease()
        self._extra.clear()

    def echo(self, value: Any) -> Any:
        return self.p.echo(value)

    def gen(self, n: int) -> Iterator[Any]:
        return iter(self.p.gen(n))

    def gen_note(self) -> str:
        return "remote iterator: one round trip per item"

    def close(self) -> None:
        self.p._pyroRelease()


def main() -> None:
    role, argv = sys.argv[1], sys.argv[2:]
    if role == "server":
        serve(int(argv[argv.index("--port") + 1]))
    else:
        run_sync_client(PyroDriver, argv)


if __name__ == "__main__":
    main()
