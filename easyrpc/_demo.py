"""``easyrpc demo``: a server and a client talking on loopback, showing each way of calling."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import pydoc
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from .exceptions import RemoteError
from .server import EasyRpcServer

SECRET = "demo-secret"


def build_demo_app() -> tuple[Flask, EasyRpcServer]:
    """The demo server: the seed README's functions plus a generator and an async one."""
    app = Flask("easyrpc-demo")
    rpc = EasyRpcServer(app, "/ws/server_a", server_secret=SECRET)

    @rpc.origin
    def good_func_a(a: int, b: int, c: int) -> dict[str, list[int]]:
        """Return the three arguments under the function's name."""
        return {"good_func_a": [a, b, c]}

    @rpc.origin
    def good_func_c(a: Any, **kw: Any) -> dict[str, Any]:
        """Return the positional argument and the keywords."""
        return {"good_func_c": [a, kw]}

    @rpc.origin
    def count_up(n: int) -> Iterator[int]:
        """Yield 0 .. n-1, one item at a time."""
        yield from range(n)

    @rpc.origin
    async def slow_square(x: float, delay: float = 0.1) -> float:
        """Square x after an asynchronous sleep."""
        await asyncio.sleep(delay)
        return x * x

    @rpc.origin
    async def ticks(n: int) -> AsyncIterator[str]:
        """An async generator."""
        for i in range(n):
            await asyncio.sleep(0)
            yield f"tick {i}"

    @rpc.origin
    def divide(a: float, b: float) -> float:
        """Divide a by b (try b=0)."""
        return a / b

    return app, rpc


def run_demo(out: Any = None) -> int:
    """Start the demo server on a free loopback port, call it every way, stop it."""
    from .aio import EasyRpcProxy as AsyncProxy
    from .proxy import EasyRpcProxy

    def say(*parts: Any) -> None:
        print(*parts, file=out, flush=True)

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no request lines in the demo
    app, rpc = build_demo_app()
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    port = httpd.server_port
    thread = threading.Thread(target=httpd.serve_forever, name="easyrpc-demo-httpd", daemon=True)
    thread.start()
    say(f"server: serving /ws/server_a on 127.0.0.1:{port}")
    try:
        with EasyRpcProxy.create("127.0.0.1", port, "/ws/server_a", server_secret=SECRET, timeout=10) as p:
            say("client: functions:", ", ".join(p.proxy_funcs))
            say("client: p.good_func_a(1, 5, 7) ->", p.good_func_a(1, 5, 7))
            say("client: p.good_func_c(1, keyword='value') ->", p.good_func_c(1, keyword="value"))
            fut = p.slow_square.submit(12)
            say("client: p.slow_square.submit(12).result() ->", fut.result(10))
            say("client: list(p.count_up(5)) ->", list(p.count_up(5)))
            try:
                p.divide(1, 0)
            except ZeroDivisionError as exc:
                assert isinstance(exc, RemoteError)
                say(f"client: p.divide(1, 0) raised {exc.remote_type}: {exc.remote_message}"
                    " (catchable as ZeroDivisionError)")
            try:
                p.good_func_a(1, 2)
            except TypeError as exc:
                say(f"client: p.good_func_a(1, 2) raised TypeError locally: {exc}")
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                pydoc.doc(p.good_func_a, output=buf)
            say("client: help(p.good_func_a):")
            for line in buf.getvalue().strip().splitlines():
                say("    " + line)

        async def async_part() -> None:
            async with await AsyncProxy.create("127.0.0.1", port, "/ws/server_a", server_secret=SECRET, timeout=10) as ap:
                results = await asyncio.gather(*(ap.slow_square(i) for i in range(5)))
                say("client (aio): await asyncio.gather(slow_square(0..4)) ->", results)
                say("client (aio): async for in ticks(3) ->", [t async for t in ap.ticks(3)])

        asyncio.run(async_part())
        say("demo: done")
        return 0
    finally:
        rpc.close(grace=1.0)
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
