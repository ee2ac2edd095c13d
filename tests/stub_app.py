"""The server tests/test_stubgen.py writes typed modules from: every parameter kind, the
named types (dataclass, TypedDict, NamedTuple, Enum), typed defaults, generators, an
annotation stubgen cannot resolve, and a function named like a builtin."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Optional

from flask import Flask
from typing_extensions import NotRequired, TypedDict

from easyrpc.server import EasyRpcServer

from .conftest import SECRET

PATH = "/ws/shop_api"


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Line:
    """One line of an order."""

    sku: str
    qty: int
    size: Size = Size.SMALL
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: dt.datetime
    lines: list[Line]
    total: Decimal
    note: Optional[str] = None  # noqa: UP045 - the old spelling must resolve too


class Point(NamedTuple):
    x: float
    y: float = 0.0


# the functional form: under `from __future__ import annotations` the class form's
# NotRequired is text, which TypedDict cannot see (so it would count the key as required)
Movie = TypedDict("Movie", {"title": str, "year": NotRequired[int]})  # noqa: UP013


class Opaque:
    """A plain class: neither pydantic nor stubgen knows it."""


def build_stub_app(variant: str = "base") -> tuple[Flask, EasyRpcServer]:
    """The served functions; *variant* ``"changed"`` drops ``untyped``, adds ``added``
    and changes ``count``'s parameter type (for ``--check``)."""
    app = Flask("easyrpc-stub-tests")
    rpc = EasyRpcServer(app, PATH, server_secret=SECRET)

    @rpc.origin
    def place(order: Order, deliver_by: dt.date = dt.date(2030, 1, 1), *, priority: Priority = Priority.LOW,
              note: str = "") -> Order:
        """Place an order; the total doubles."""
        assert isinstance(order, Order) and isinstance(order.lines[0], Line)
        return dataclasses.replace(order, total=order.total * 2, note=f"{note}/{priority.name}/{deliver_by}")

    @rpc.origin
    def kinds(a: int, b: str = "x", /, c: float = 1.5, *args: int, d: bool = False, e: list[int] | None = None,
              **kw: str) -> dict[str, Any]:
        """Every parameter kind."""
        return {"a": a, "b": b, "c": c, "args": list(args), "d": d, "e": e, "kw": kw}

    if variant == "base":
        @rpc.origin
        def count(n: int) -> Iterator[Point]:
            """Points, one by one."""
            for i in range(n):
                yield Point(float(i), float(i * i))

        @rpc.origin
        def untyped(a, b=2):  # type: ignore[no-untyped-def]
            return [a, b]
    else:
        @rpc.origin
        def count(n: str) -> Iterator[Point]:  # type: ignore[misc]
            """Points, one by one."""
            yield Point(0.0)

        @rpc.origin
        def added(x: int) -> int:
            return x

    @rpc.origin
    async def acount(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @rpc.origin
    async def movie(m: Movie, size: Size = Size.LARGE) -> Movie:
        return {"title": m["title"].upper(), "year": m.get("year", 0) + 1}

    @rpc.origin
    def opaque(x: Opaque, mode: Literal["a", "b"] = "a") -> Opaque:
        return x

    @rpc.origin
    def when(t: dt.datetime = dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.timezone.utc), u: uuid.UUID = uuid.UUID(int=1),  # noqa: B008
             d: Decimal = Decimal("1.5"), span: dt.timedelta = dt.timedelta(seconds=5),
             p: Point = Point(1.0)) -> dt.timedelta:  # noqa: B008
        """Typed defaults."""
        return span * 2

    @rpc.origin(name="set")
    def set_(key: str, value: int) -> list[int]:
        """Named like a builtin."""
        return [value]

    @rpc.origin
    def sets(values: set[int]) -> set[int]:
        return values

    @rpc.origin
    def pair(p: Point) -> Point:
        return Point(p.y, p.x)

    return app, rpc
