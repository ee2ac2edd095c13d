"""Annotations that convert: a served function's arguments become the types its parameters
declare, or the call is refused before it runs (issue #21, API §9).

Conversion plans are tested without sockets; the rest against a real loopback server
through both clients, and through a chain of servers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import sys
import threading
import typing
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Optional, Union

import pydantic
import pytest
from flask import Flask
from typing_extensions import TypedDict  # pydantic refuses typing's before Python 3.12

from easyrpc import ArgumentError, RemoteArgumentError, RemoteError
from easyrpc._convert import plan_for
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer

from .conftest import SECRET, wait_for
from .test_typed_values import TZ, Color, Point, Shape, serve_chain


# --- conversion plans, without sockets ------------------------------------------------------
class Movie(TypedDict):
    title: str
    year: int


class Pair(NamedTuple):
    left: int
    right: str = "r"


@dataclasses.dataclass
class Tree:
    value: int
    children: list[Tree] = dataclasses.field(default_factory=list)


class OldStyle(typing.TypedDict):
    n: int


class Plain:
    """A class of the user's: pydantic has no schema for it."""


def _everything(
    p: Point, s: Shape, m: Movie, pair: Pair, c: Color, lit: Literal["a", "b", 3], nums: list[float],
    table: dict[str, Point], tup: tuple[int, str], var: tuple[int, ...], opt: Optional[Point], un: Union[int, Point],  # noqa: UP007,UP045
    when: dt.datetime, tree: Tree, ids: dict[int, uuid.UUID], anything: Any, plain, /, *rest: Point, **more: Color,  # type: ignore[no-untyped-def]
) -> None: ...


RAW: list[Any] = [
        {"x": 1, "y": 2}, {"name": "n", "points": [{"x": 0, "y": 0, "label": "o"}], "color": "red",
                       "made": dt.datetime(2000, 1, 1), "area": 9.0},
    {"title": "T", "year": 1999}, [5], "green", "b", [1, 2.5], {"k": {"x": 0, "y": 1}}, [1, "s"], [1, 2, 3],
    None, {"x": 3, "y": 4}, "2024-01-01T10:00:00+01:00", {"value": 1, "children": [{"value": 2}]},
    {"7": "12345678-1234-5678-1234-567812345678"}, {"un": "touched"}, object(), {"x": 9, "y": 9},
]


def test_a_plan_converts_every_kind_of_annotation() -> None:
    plan = plan_for(_everything, "everything")
    assert plan is not None
    raw = list(RAW)
    args, kwargs = plan(raw, {"extra": "red"})
    assert args[0] == Point(1, 2)
    assert args[1] == Shape("n", [Point(0, 0, "o")], Color.RED, dt.datetime(2000, 1, 1))
    assert args[2] == {"title": "T", "year": 1999}
    assert args[3] == Pair(5) and type(args[3]) is Pair
    assert args[4] is Color.GREEN and args[5] == "b"
    assert args[6] == [1, 2.5] and type(args[6][0]) is float  # an int passes for a float, as a float
    assert args[7] == {"k": Point(0, 1)}
    assert args[8] == (1, "s") and args[9] == (1, 2, 3)
    assert args[10] is None and args[11] == Point(3, 4)
    assert args[12] == dt.datetime(2024, 1, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert args[13] == Tree(1, [Tree(2)])
    assert args[14] == {7: uuid.UUID("12345678-1234-5678-1234-567812345678")}
    assert args[15] is raw[15] and args[16] is raw[16]  # Any and no annotation: untouched
    assert args[17] == Point(9, 9)  # *rest: Point, item by item
    assert kwargs == {"extra": Color.RED}  # **more: Color


@pytest.mark.parametrize("index, value, message", [
    (0, {"x": 1}, "argument 'p' at .y: Field required"),
    (0, {"x": "1", "y": 2}, "argument 'p' at .x: Input should be a valid integer, got str '1'"),
    (0, [1, 2], "argument 'p': Input should be a dictionary or an instance of Point, got list"),
    (1, {"name": "n", "points": [{"x": 0, "y": True}], "color": "red", "made": "2000-01-01T00:00:00"},
     "argument 's' at .points[0].y: Input should be a valid integer, got bool True"),
    (1, {"name": "n", "points": [], "color": "blue", "made": "2000-01-01T00:00:00"},
     "argument 's' at .color: Input should be 'red' or 'green', got str 'blue'"),
    (1, {"name": "n", "points": [], "color": "red", "made": "yesterday"},
     "argument 's' at .made: Input should be a valid datetime or date, input is too short, got str 'yesterday'"),
    (2, {"title": "T"}, "argument 'm' at .year: Field required"),
    (3, [1, 2, 3], "argument 'pair': NamedTuple should have at most 2 items after validation, not 3, got list"),
    (3, ["x"], "argument 'pair' at [0]: Input should be a valid integer, got str 'x'"),
    (5, "c", "argument 'lit': Input should be 'a', 'b' or 3, got str 'c'"),
    (5, 4, "argument 'lit': Input should be 'a', 'b' or 3, got int 4"),
    (6, [1, "2"], "argument 'nums' at [1]: Input should be a valid number, got str '2'"),
    (7, {"k": 5}, "argument 'table' at .k: Input should be a dictionary or an instance of Point, got int 5"),
    (7, {"my key": 5}, "argument 'table' at ['my key']: Input should be a dictionary or an instance of Point, got int 5"),
    (8, [1], "argument 'tup' at [1]: Field required"),
    (8, [1, 2, 3], "argument 'tup': Tuple should have at most 2 items after validation, not 3, got list"),
    (11, "5", "argument 'un': at .int: Input should be a valid integer, got str '5'; "
              "at .Point: Input should be a dictionary or an instance of Point, got str '5'"),
    (13, {"value": 1, "children": [{"value": "2"}]},
     "argument 'tree' at .children[0].value: Input should be a valid integer, got str '2'"),
    (14, {"seven": "12345678-1234-5678-1234-567812345678"},
     "argument 'ids' at .seven (key): Input should be a valid integer, unable to parse string as an integer, got str 'seven'"),
])
def test_a_value_that_does_not_fit_is_refused_naming_the_parameter_and_the_place(
        index: int, value: Any, message: str) -> None:
    plan = plan_for(_everything, "everything")
    assert plan is not None
    args = list(RAW)
    args[index] = value
    with pytest.raises(ArgumentError) as info:
        plan(args[: index + 1], {})
    assert str(info.value) == f"everything() {message}"
    assert isinstance(info.value, TypeError)


def test_unannotated_and_any_functions_have_no_plan() -> None:
    def f(a, b=1, *c, **d):  # type: ignore[no-untyped-def]
        return a

    def g(a: Any, b: object = None) -> int:
        return 0

    assert plan_for(f, "f") is None and plan_for(g, "g") is None


def test_scalars_convert_strictly() -> None:
    """JSON's own types are strict (pydantic's strict mode for them); typed values also come from text."""
    def f(i: int, x: float, b: bool, s: str, d: Decimal, t: dt.timedelta, o: Optional[int] = None) -> None: ...  # noqa: UP045

    plan = plan_for(f, "f")
    assert plan is not None
    good: list[Any] = [1, 2, True, "s", "1.5", 1.5, None]
    args, _ = plan(good, {})
    assert args == [1, 2.0, True, "s", Decimal("1.5"), dt.timedelta(seconds=1.5), None]
    for i, bad in [(0, True), (0, 1.0), (0, "1"), (1, "1.0"), (1, True), (2, 1), (2, "true"), (3, 1), (4, [1]),
                   (5, "1s"), (6, "1")]:
        args = list(good)
        args[i] = bad
        with pytest.raises(ArgumentError, match=f"argument {list(inspect.signature(f).parameters)[i]!r}"):
            plan(args, {})


def test_unknown_keys_are_ignored_and_equal_literals_accepted() -> None:
    """pydantic's defaults: a record's unknown keys are dropped (a newer peer may send more
    fields), and a literal matches an equal value (JSON has one number type)."""
    plan = plan_for(_everything, "everything")
    assert plan is not None
    args, _ = plan([{"x": 1, "y": 2, "z": 3}, *RAW[1:5], 3.0], {})
    assert args[0] == Point(1, 2) and args[5] == 3 and type(args[5]) is int


def test_typing_typeddict_is_converted_where_pydantic_accepts_it(caplog: pytest.LogCaptureFixture) -> None:
    """pydantic refuses ``typing.TypedDict`` before Python 3.12: such a parameter is not
    checked (a warning says why), and registration does not fail."""
    def f(o: OldStyle, n: int) -> None: ...

    plan = plan_for(f, "f")
    assert plan is not None
    if sys.version_info >= (3, 12):
        with pytest.raises(ArgumentError, match=r"f\(\) argument 'o' at \.n: Input should be a valid integer"):
            plan([{"n": "1"}, 1], {})
    else:
        raw = {"n": "1"}
        assert plan([raw, 1], {})[0][0] is raw
        assert "typing_extensions.TypedDict" in caplog.text
    with pytest.raises(ArgumentError, match="argument 'n'"):
        plan([{"n": 1}, "1"], {})


def test_annotations_pydantic_cannot_handle_pass_untouched() -> None:
    def f(a: Plain, cb: Callable[[int], int], items: list[Plain], n: int) -> None: ...

    plan = plan_for(f, "f")
    assert plan is not None
    raw: list[Any] = [{"x": 1}, "not callable", [1, "a"], 5]
    args, _ = plan(raw, {})
    assert all(a is r for a, r in zip(args, raw, strict=True))


def test_recursive_and_deeply_nested_values_convert() -> None:
    def f(tree: Tree, deep: list[list[list[list[list[list[list[list[int]]]]]]]], s: set[int], fs: frozenset[str]) -> None: ...

    plan = plan_for(f, "f")
    assert plan is not None
    node: dict[str, Any] = {"value": 0}
    for i in range(1, 60):
        node = {"value": i, "children": [node]}
    args, _ = plan([node, [[[[[[[[1, 2]]]]]]]], [1, 2, 2], ["a"]], {})
    depth, tree = 0, args[0]
    while tree.children:
        assert isinstance(tree, Tree)
        depth, tree = depth + 1, tree.children[0]
    assert depth == 59 and args[1] == [[[[[[[[1, 2]]]]]]]] and args[2] == {1, 2} and args[3] == frozenset({"a"})
    with pytest.raises(ArgumentError, match=r"argument 'deep' at \[0\]\[0\]\[0\]\[0\]\[0\]\[0\]\[0\]\[1\]"):
        plan([node, [[[[[[[[1, "2"]]]]]]]]], {})
    with pytest.raises(ArgumentError, match=r"argument 's' at \[1\]: Input should be a valid integer"):
        plan([node, [], [1, "x"]], {})


# --- loopback: both clients -----------------------------------------------------------------
def build_conversion_app() -> tuple[Flask, EasyRpcServer, dict[str, int]]:
    app = Flask("easyrpc-conversion-tests")
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET)
    ran: dict[str, int] = {}
    lock = threading.Lock()

    def hit(name: str) -> None:
        with lock:
            ran[name] = ran.get(name, 0) + 1

    @rpc.origin
    def echo(value):  # type: ignore[no-untyped-def]
        return value

    @rpc.origin
    def place(shape: Shape, at: dt.datetime, tags: dict[str, Color], pair: Pair, movie: Movie,
              mode: Literal["fast", "slow"] = "fast", scale: Optional[float] = None) -> Shape:  # noqa: UP045
        hit("place")
        assert isinstance(shape, Shape) and all(isinstance(p, Point) for p in shape.points)
        assert isinstance(at, dt.datetime) and isinstance(pair, Pair)
        assert all(isinstance(c, Color) for c in tags.values())
        return dataclasses.replace(shape, name=f"{shape.name}@{at.isoformat()}/{mode}/{scale}/{pair.right}/{movie['year']}")

    @rpc.origin
    async def apoint(p: Point) -> Point:
        hit("apoint")
        return Point(p.y, p.x, p.label)

    @rpc.origin
    def count_to(n: int) -> Iterator[int]:
        hit("count_to")
        yield from range(n)

    return app, rpc, ran


@pytest.fixture
def conv_server(serve: Any) -> Any:
    app, rpc, ran = build_conversion_app()
    served = serve(app, rpc)
    served.ran = ran
    return served


def test_annotated_arguments_are_converted_and_records_come_back_as_data(conv_server: Any, connect: Any) -> None:
    p = connect(conv_server)
    shape = Shape("tri", [Point(0, 0), Point(1, 1, "b")], Color.RED, dt.datetime(2024, 1, 1))
    at = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=TZ)
    out = p.place(shape, at, {"a": Color.GREEN, "b": "red"}, Pair(1), {"title": "T", "year": 1999}, scale=2)
    assert out == {"name": f"tri@{at.isoformat()}/fast/2.0/r/1999",  # an int passes for a float, as a float
                   "points": [{"x": 0, "y": 0, "label": ""}, {"x": 1, "y": 1, "label": "b"}],
                   "color": "red", "made": dt.datetime(2024, 1, 1), "area": 0.0}
    assert Shape(**{k: v for k, v in out.items() if k != "area"}).made == dt.datetime(2024, 1, 1)  # rebuilt as it was
    # plain data works as well as the records themselves
    assert p.apoint({"x": 1, "y": 2}) == {"x": 2, "y": 1, "label": ""}
    assert p.apoint(Point(3, 4, "c")) == {"x": 4, "y": 3, "label": "c"}


def test_a_wrong_argument_is_refused_before_the_function_runs(conv_server: Any, connect: Any) -> None:
    p = connect(conv_server)
    shape = {"name": "tri", "points": [{"x": 0, "y": "zero"}], "color": "red", "made": "2024-01-01T00:00:00"}
    with pytest.raises(RemoteArgumentError) as info:
        p.place(shape, dt.datetime(2024, 1, 1), {}, [1], {"title": "T", "year": 1})
    err = info.value
    assert isinstance(err, RemoteError) and isinstance(err, TypeError) and isinstance(err, ArgumentError)
    assert err.remote_type == "ArgumentError" and err.remote_traceback == ""
    assert str(err) == (
        "ArgumentError: place() argument 'shape' at .points[0].y: Input should be a valid integer, got str 'zero'")
    with pytest.raises(TypeError, match="argument 'mode': Input should be 'fast' or 'slow', got str 'medium'"):
        p.place(Shape("s", [], Color.RED, dt.datetime(2024, 1, 1)), dt.datetime(2024, 1, 1), {}, [1],
                {"title": "T", "year": 1}, mode="medium")
    with pytest.raises(TypeError, match=r"apoint\(\) argument 'p'"):
        p.apoint("not a point")
    with pytest.raises(TypeError, match=r"count_to\(\) argument 'n': Input should be a valid integer, got str '3'"):
        list(p.count_to("3"))
    assert conv_server.ran == {}  # none of them ran
    assert list(p.count_to(2)) == [0, 1] and conv_server.ran == {"count_to": 1}


def test_an_unannotated_function_gets_the_values_as_they_arrived(conv_server: Any, connect: Any) -> None:
    p = connect(conv_server)
    assert p.echo({"x": 1, "y": 2}) == {"x": 1, "y": 2}
    assert p.echo(Point(1, 2)) == {"x": 1, "y": 2, "label": ""}
    assert p.echo(Color.GREEN) == "green"



# --- a chain of servers ----------------------------------------------------------------------
def test_arguments_are_converted_at_the_origin_at_the_end_of_a_chain(serve: Any) -> None:
    c_app, c_rpc, ran = build_conversion_app()
    a = serve_chain(serve, c_app, c_rpc)
    with EasyRpcProxy.create("127.0.0.1", a.port, "/ws/test", server_secret=SECRET, timeout=10) as p:
        assert wait_for(lambda: "apoint" in p, timeout=5)
        assert p.apoint({"x": 1, "y": 2}) == {"x": 2, "y": 1, "label": ""}
        with pytest.raises(RemoteArgumentError, match="argument 'p'"):
            p.apoint([1, 2])
        assert ran == {"apoint": 1}


# --- pydantic models ---------------------------------------------------------------------------
class Order(pydantic.BaseModel):
    id: uuid.UUID
    qty: int
    placed: dt.datetime


def test_pydantic_models_are_validated_by_pydantic_and_sent_as_their_dump(serve: Any, connect: Any) -> None:
    app = Flask("easyrpc-pydantic-tests")
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET)
    ran: list[Any] = []

    @rpc.origin
    def take(order: Order) -> Order:
        ran.append(order)
        return order.model_copy(update={"qty": order.qty + 1})

    p = connect(serve(app, rpc))
    oid = uuid.UUID(int=7)
    out = p.take({"id": str(oid), "qty": 1, "placed": dt.datetime(2024, 1, 1, tzinfo=TZ)})
    assert out == {"id": oid, "qty": 2, "placed": dt.datetime(2024, 1, 1, tzinfo=TZ)}
    assert isinstance(ran[0], Order) and ran[0].id == oid
    # a model keeps its own configuration: pydantic's lax mode by default, where "3" is an int
    assert p.take({"id": str(oid), "qty": "3", "placed": "2024-01-01T00:00:00"})["qty"] == 4
    assert p.take(Order(id=oid, qty=5, placed=dt.datetime(2024, 1, 1))) == {  # a model as an argument
        "id": oid, "qty": 6, "placed": dt.datetime(2024, 1, 1)}
    with pytest.raises(RemoteArgumentError,
                       match=r"take\(\) argument 'order' at \.qty: Input should be a valid integer.*got str 'many'"):
        p.take({"id": str(oid), "qty": "many", "placed": "2024-01-01T00:00:00"})
    assert len(ran) == 3
