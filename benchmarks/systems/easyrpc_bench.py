"""easyrpc (this repository): Flask + flask-sock server; blocking and asyncio proxies.

``python easyrpc_bench.py server --port P``
``python easyrpc_bench.py client-sync --port P [...]`` / ``client-aio``
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import wait
from typing import Any

from _common import AsyncDriver, SyncDriver, run_async_client, run_sync_client, serve_until_terminated

PATH = "/ws/server_a"
SECRET = "abcd1234"


def build_app() -> tuple[Any, Any]:
    from flask import Flask

    from easyrpc.server import EasyRpcServer

    app = Flask(__name__)
    rpc = EasyRpcServer(app, PATH, server_secret=SECRET)

    @rpc.origin
    def good_func_a(a: Any, b: Any, c: Any) -> dict[str, list[Any]]:
        return {"good_func_a": [a, b, c]}

    @rpc.origin
    def echo(x: Any) -> Any:
        return x

    @rpc.origin
    def gen(n: int) -> Iterator[int]:
        yield from range(n)

    return app, rpc


def serve(port: int) -> None:
    from werkzeug.serving import make_server

    app, rpc = build_app()
    httpd = make_server("127.0.0.1", port, app, threaded=True)

    def stop() -> None:
        rpc.close(grace=2.0)
        httpd.shutdown()

    serve_until_terminated(httpd.serve_forever, stop)


class BlockingDriver(SyncDriver):
    def __init__(self, port: int) -> None:
        from easyrpc.proxy import EasyRpcProxy

        self.p = EasyRpcProxy.create("127.0.0.1", port, PATH, server_secret=SECRET)
        self._good = self.p.good_func_a

    def small(self) -> Any:
        return self._good(1, 5, 7)

    def small_batch(self, n: int) -> None:
        submit = self._good.submit
        futures = [submit(1, 5, 7) for _ in range(n)]
        done, not_done = wait(futures, timeout=60)
        if not_done:
            raise TimeoutError(f"{len(not_done)} of {n} calls unfinished after 60 s")
        for f in done:
            f.result()

    def echo(self, value: Any) -> Any:
        return self.p.echo(value)

    def echo_bytes(self, value: bytes) -> bytes:
        result: bytes = self.p.echo(value)
        return result

    def gen(self, n: int) -> Iterator[Any]:
        return iter(self.p.gen(n))

    def gen_note(self) -> str:
        return "streamed, credit window 64"

    def close(self) -> None:
        self.p.close()


class AioDriver(AsyncDriver):
    def __init__(self, proxy: Any) -> None:
        self.p = proxy
        self._good = proxy.good_func_a

    @classmethod
    async def connect(cls, port: int) -> AioDriver:
        from easyrpc.aio import EasyRpcProxy

        return cls(await EasyRpcProxy.create("127.0.0.1", port, PATH, server_secret=SECRET))

    async def small(self) -> Any:
        return await self._good(1, 5, 7)

    async def echo(self, value: Any) -> Any:
        return await self.p.echo(value)

    async def echo_bytes(self, value: bytes) -> bytes:
        result: bytes = await self.p.echo(value)
        return result

    async def gen(self, n: int) -> AsyncIterator[Any]:
        it: AsyncIterator[Any] = self.p.gen(n)
        return it

    def gen_note(self) -> str:
        return "streamed, credit window 64"

    async def close(self) -> None:
        await self.p.close()


def main() -> None:
    role, argv = sys.argv[1], sys.argv[2:]
    if role == "server":
        serve(int(argv[argv.index("--port") + 1]))
    elif role == "client-sync":
        run_sync_client(BlockingDriver, argv)
    elif role == "client-aio":
        run_async_client(AioDriver.connect, argv)
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main()
