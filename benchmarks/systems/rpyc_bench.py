"""RPyC: a ThreadedServer exposing a service; one connection shared by the client's threads.

``python rpyc_bench.py server --port P`` / ``client --port P [...]``

Runs in its own virtualenv (``.venvs/rpyc``). RPyC passes lists and dicts *by reference*
(as netrefs), so the service answers with tuples, which brine sends by value; the deep
echo sends nested tuples for the same reason. Otherwise a reply would be a proxy whose
content has not crossed the wire at all.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from _common import SMALL_RESULT, SyncDriver, run_sync_client

SMALL_TUPLE = ("good_func_a", (1, 5, 7))


def serve(port: int) -> None:
    import rpyc
    from rpyc.utils.server import ThreadedServer

    class BenchService(rpyc.Service):  # type: ignore[misc]
        def exposed_good_func_a(self, a: Any, b: Any, c: Any) -> tuple[str, tuple[Any, Any, Any]]:
            return ("good_func_a", (a, b, c))

        def exposed_echo(self, x: Any) -> Any:
            return x

        def exposed_gen(self, n: int) -> Iterator[int]:
            yield from range(n)

    server = ThreadedServer(BenchService, hostname="127.0.0.1", port=port,
                            protocol_config={"allow_public_attrs": True, "sync_request_timeout": 120})
    server.start()  # SIGTERM ends the process


class RpycDriver(SyncDriver):
    def __init__(self, port: int) -> None:
        import rpyc

        self.conn = rpyc.connect("127.0.0.1", port, config={"sync_request_timeout": 120})
        self.root = self.conn.root
        self._good = self.root.good_func_a
        self._async_good = rpyc.async_(self._good)

    def small(self) -> Any:
        if self._good(1, 5, 7) != SMALL_TUPLE:
            raise AssertionError("bad reply")
        return SMALL_RESULT

    def threads_note(self) -> str:
        return "one connection shared by 8 threads"

    def small_batch(self, n: int) -> None:
        results = [self._async_good(1, 5, 7) for _ in range(n)]
        for r in results:
            r.wait()
            if r.value != SMALL_TUPLE:
                raise AssertionError("bad reply")

    def echo(self, value: Any) -> Any:
        return self.root.echo(value)

    def deep_value(self) -> Any:
        value: tuple[Any, ...] = ()
        for _ in range(999):
            value = (value,)
        return value

    def gen(self, n: int) -> Iterator[Any]:
        return iter(self.root.gen(n))

    def gen_note(self) -> str:
        return "netref iteration: one round trip per item"

    def close(self) -> None:
        self.conn.close()


def main() -> None:
    role, argv = sys.argv[1], sys.argv[2:]
    if role == "server":
        serve(int(argv[argv.index("--port") + 1]))
    else:
        run_sync_client(RpycDriver, argv)


if __name__ == "__main__":
    main()
