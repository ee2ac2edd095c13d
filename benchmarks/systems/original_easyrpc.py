"""The original easyrpc 0.251 from PyPI: FastAPI + uvicorn server, aiohttp asyncio proxy.

``python original_easyrpc.py server --port P`` / ``client --port P [...]``

Runs in its own virtualenv (``.venvs/original``). Its ``EasyRpcServer`` needs a running
event loop when constructed, so it is built in the app's startup (lifespan) hook; its
README's module-level construction fails on current uvicorn.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from _common import AsyncDriver, run_async_client

PATH = "/ws/server_a"
SECRET = "abcd1234"
ORIGINAL_VERSION = "0.251"


def check_original() -> None:
    """Refuse to measure anything but easyrpc 0.251 (e.g. this checkout's easyrpc by mistake)."""
    import importlib.metadata

    version = importlib.metadata.version("easyrpc")
    if version != ORIGINAL_VERSION:
        raise SystemExit(f"expected easyrpc {ORIGINAL_VERSION} in {sys.prefix}, found {version}")


def serve(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from easyrpc.server import EasyRpcServer  # the original's, from this script's venv

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ws = EasyRpcServer(app, PATH, server_secret=SECRET)

        @ws.origin
        def good_func_a(a: Any, b: Any, c: Any) -> dict[str, list[Any]]:
            return {"good_func_a": [a, b, c]}

        @ws.origin
        def echo(x: Any) -> Any:
            return x

        @ws.origin
        def gen(n: int) -> Any:
            yield from range(n)

        yield

    app = FastAPI(lifespan=lifespan)
    # uvicorn stops on SIGTERM by itself.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class OriginalDriver(AsyncDriver):
    def __init__(self, proxy: Any) -> None:
        self.p = proxy
        self._good = proxy.proxy_funcs["good_func_a"]
        self._echo = proxy.proxy_funcs["echo"]
        self._gen = proxy.proxy_funcs["gen"]

    @classmethod
    async def connect(cls, port: int) -> OriginalDriver:
        # The original's proxy module (this script's venv), not this repository's.
        original: Any = importlib.import_module("easyrpc.proxy")
        proxy = await original.EasyRpcProxy.create("127.0.0.1", port, PATH, server_secret=SECRET)
        # Its proxy logs every failure with a traceback at ERROR; keep stderr readable.
        logging.getLogger("wsRpc-proxy").setLevel(logging.CRITICAL)
        return cls(proxy)

    async def small(self) -> Any:
        return await self._good(1, 5, 7)

    async def echo(self, value: Any) -> Any:
        return await self._echo(value)

    async def gen(self, n: int) -> AsyncIterator[Any]:
        it: AsyncIterator[Any] = await self._gen(n)
        return it

    def gen_note(self) -> str:
        return "one round trip per item"

    async def close(self) -> None:
        # 0.251 has no close(): end its session generator, which closes the socket.
        await self.p.cleanup_proxy_session()


def main() -> None:
    role, argv = sys.argv[1], sys.argv[2:]
    check_original()
    if role == "server":
        serve(int(argv[argv.index("--port") + 1]))
    else:
        run_async_client(OriginalDriver.connect, argv)


if __name__ == "__main__":
    main()
