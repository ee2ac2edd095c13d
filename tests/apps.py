"""The functions the behavioural tests serve."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Optional

from flask import Flask

from easyrpc.server import EasyRpcServer

from .conftest import SECRET


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.events: dict[str, threading.Event] = {}

    def hit(self, name: str) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def count(self, name: str) -> int:
        with self.lock:
            return self.calls.get(name, 0)

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())


def build_app(**server_options: Any) -> tuple[Flask, EasyRpcServer, Counter]:
    """A Flask app with an ordinary route and an easyrpc server on /ws/test."""
    app = Flask("easyrpc-tests")
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET, **server_options)
    counter = Counter()

    @app.route("/hello")
    def hello() -> str:
        return "plain flask route"

    @rpc.origin
    def good_func_a(a, b, c):  # type: ignore[no-untyped-def]
        counter.hit("good_func_a")
        return {"good_func_a": [a, b, c]}

    @rpc.origin
    def good_func_c(a, **kw):  # type: ignore[no-untyped-def]
        return {"good_func_c": [a, kw]}

    @rpc.origin
    def annotated(x: int, y: Optional[str] = None, *args: float, flag: bool = False, **kw: Any) -> dict[str, Any]:  # noqa: UP045
        """Echo the arguments it was given.

        A second line of documentation.
        """
        counter.hit("annotated")
        return {"x": x, "y": y, "args": list(args), "flag": flag, "kw": kw}

    @rpc.origin
    def posonly(a, b=2, /, c=3):  # type: ignore[no-untyped-def]
        return [a, b, c]

    @rpc.origin
    def echo(value: Any) -> Any:
        return value

    @rpc.origin
    def slow(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @rpc.origin
    async def aslow(seconds: float) -> float:
        counter.hit("aslow.start")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            counter.hit("aslow.cancelled")
            raise
        return seconds

    @rpc.origin
    async def aecho(value: Any) -> Any:
        return value

    @rpc.origin
    def fail(kind: str, message: str = "boom") -> None:
        errors: dict[str, type[Exception]] = {
            "KeyError": KeyError, "ValueError": ValueError, "ZeroDivisionError": ZeroDivisionError,
            "TimeoutError": TimeoutError, "OSError": OSError, "custom": CustomError,
        }
        raise errors[kind](message)

    @rpc.origin
    def unserializable() -> Any:
        return {1, 2, 3}

    @rpc.origin
    def count_up(n: int) -> Iterator[int]:
        yield from range(n)

    @rpc.origin
    async def acount_up(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
            await asyncio.sleep(0)

    @rpc.origin
    def forever() -> Iterator[int]:
        i = 0
        try:
            while True:
                counter.hit("forever.item")
                yield i
                i += 1
        finally:
            counter.hit("forever.closed")

    @rpc.origin
    async def aforever() -> AsyncIterator[int]:
        i = 0
        try:
            while True:
                yield i
                i += 1
                await asyncio.sleep(0)
        finally:
            counter.hit("aforever.closed")

    @rpc.origin
    def fail_after(n: int) -> Iterator[int]:
        yield from range(n)
        raise ValueError(f"failed after {n}")

    @rpc.origin(namespace="admin")
    def reset(force: bool = False) -> str:
        return f"reset force={force}"

    @rpc.origin(namespace="left")
    def left_only() -> str:
        return "left"

    @rpc.origin(namespace="right")
    def right_only() -> str:
        return "right"

    rpc.create_namespace_group("both", "left", "right")
    return app, rpc, counter


class CustomError(Exception):
    pass
