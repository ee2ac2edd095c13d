"""Values that keep their type, annotations that convert, defaults that are real (issue #21, API §9).

The codec and the conversion plans are tested without sockets; the rest against a real
loopback server through both clients, and through a chain of servers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask

from easyrpc import ProtocolError, SerializationError, _codec
from easyrpc import _protocol as proto
from easyrpc._signature import Text, describe_function, spec_from_description
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer

from .conftest import SECRET, wait_for

TZ = dt.timezone(dt.timedelta(hours=5, minutes=30))
TYPED: list[Any] = [
    dt.datetime(2024, 2, 29, 23, 59, 58, 123456),                       # naive, microseconds
    dt.datetime(2024, 2, 29, 23, 59, 58, 1, tzinfo=TZ),                 # aware, offset kept
    dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-11, seconds=-5))),
    dt.date(2020, 2, 29),
    dt.time(1, 2, 3, 4),
    dt.time(23, 0, tzinfo=dt.timezone.utc),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    dt.timedelta.max,
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("1.10"),
    Decimal("-0E-7"),
    Decimal("123456789012345678901234567890.000000000000000000001"),
]
LOOKALIKES: list[Any] = [
    "2024-02-29T23:59:58", "2024-02-29", "12345678-1234-5678-1234-567812345678", "1.10",
    {"$dt": "2024-01-01"}, {"x": {"datetime": [["v"]]}}, {"__type__": "datetime", "value": "2024-01-01"},
    ["datetime", "2024-01-01"], {"k": "ok", "x": 1},
]


def _same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down, and (for datetimes) with the same offset."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (dt.datetime, dt.time)):
        return a == b and a.utcoffset() == b.utcoffset() and a.isoformat() == b.isoformat()
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return bool(a == b)


def _nested(depth: int, leaf: Any) -> list[Any]:
    value: list[Any] = [leaf]
    for _ in range(depth):
        value = [value]
    return value


def _unnest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = value[0]
    return value[0]


# --- the codec, without sockets ------------------------------------------------------------
@pytest.mark.parametrize("value", TYPED, ids=repr)
def test_each_typed_value_round_trips_as_itself_in_every_payload(value: Any) -> None:
    res = proto.parse_server(proto.encode_result(1, value))
    assert isinstance(res, proto.Result) and _same(res.value, value)
    item = proto.parse_server(proto.encode_item(2, {"at": [value]}))
    assert isinstance(item, proto.Item) and _same(item.value, {"at": [value]})
    call = proto.parse_client(proto.encode_call(3, "f", [value], {"k": (value, 1)}))
    assert isinstance(call, proto.Call) and _same(call.args, [value]) and _same(call.kwargs, {"k": [value, 1]})


def test_strings_and_dicts_that_look_like_markers_stay_what_they_are() -> None:
    with_marks = [*LOOKALIKES, dt.date(2000, 1, 1)]  # a typed value too: the message has marks
    for value in (LOOKALIKES, with_marks):
        assert _same(proto.parse_server(proto.encode_result(1, value)).value, value)  # type: ignore[union-attr]


def test_a_message_with_json_values_only_is_written_as_before() -> None:
    """The fast path: no marks, the same bytes as the stdlib's compact JSON."""
    assert proto.encode_result(7, {"good_func_a": [1, 5, 7]}) == b'{"k":"ok","i":7,"v":{"good_func_a":[1,5,7]}}'
    assert proto.encode_call(1, "f", [], {"a": "2024-01-01"}) == b'{"k":"call","i":1,"f":"f","a":[],"kw":{"a":"2024-01-01"}}'


def test_marks_are_out_of_band_paths_in_the_envelope() -> None:
    data = proto.encode_result(1, {"when": dt.date(2000, 1, 2), "ids": [uuid.UUID(int=1)], "1": 0})
    assert json.loads(data) == {
        "k": "ok", "i": 1, "v": {"when": "2000-01-02", "ids": ["00000000-0000-0000-0000-000000000001"], "1": 0},
        "x": {"date": [["v", "when"]], "uuid": [["v", "ids", 0]]}}
    # a non-str key is a step as its JSON text
    assert json.loads(proto.encode_result(1, {5: dt.timedelta(seconds=1)}))["x"] == {"timedelta": [["v", "5"]]}


def test_typed_values_at_the_bottom_of_100000_levels_round_trip() -> None:
    deep = _nested(100_000, dt.datetime(2024, 1, 1, tzinfo=TZ))
    out = proto.parse_server(proto.encode_result(1, deep)).value  # type: ignore[union-attr]
    assert _same(_unnest(out, 100_000), dt.datetime(2024, 1, 1, tzinfo=TZ))
    call = proto.parse_client(proto.encode_call(1, "f", [deep], {}))
    assert _same(_unnest(call.args[0], 100_000), dt.datetime(2024, 1, 1, tzinfo=TZ))  # type: ignore[union-attr]


def test_the_codec_rules_still_hold_with_typed_values() -> None:
    day = dt.date(2000, 1, 1)
    cyc: list[Any] = [day]
    cyc.append(cyc)
    for bad in ([day, {1, 2}], [day, object()], [day, float("nan")], cyc, [day, {1: "a", "1": "b"}], {day: 1}):
        with pytest.raises(SerializationError):
            proto.encode_result(1, bad)
    surrogates = [day, "\ud83d\ude00", "\ud800"]
    assert _same(proto.parse_server(proto.encode_result(1, surrogates)).value, surrogates)  # type: ignore[union-attr]
    with pytest.raises(SerializationError):
        _codec.dumps(day)  # a bare value has no envelope to carry its marks


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass
class Point:
    x: int
    y: int
    label: str = ""


@dataclasses.dataclass
class Shape:
    name: str
    points: list[Point]
    color: Color
    made: dt.datetime
    area: float = dataclasses.field(init=False, default=0.0)


def test_records_are_sent_as_the_data_they_hold() -> None:
    shape = Shape("tri", [Point(0, 0), Point(1, 0, "b")], Color.GREEN, dt.datetime(2024, 1, 1))
    out = proto.parse_server(proto.encode_result(1, shape)).value  # type: ignore[union-attr]
    assert _same(out, {"name": "tri", "points": [{"x": 0, "y": 0, "label": ""}, {"x": 1, "y": 0, "label": "b"}],
                       "color": "green", "made": dt.datetime(2024, 1, 1), "area": 0.0})


@pytest.mark.parametrize("marks, reason", [
    ({"set": [["v"]]}, "unknown value type"),
    ({"bytes": [["v", 1]]}, "part 5 does not exist"),
    ({"date": [["k"]]}, "payload"),
    ({"date": [["i"]]}, "payload"),
    ({"date": [[]]}, "payload"),
    ({"date": [["v", 5]]}, "leads nowhere"),
    ({"date": [["v", "0"]]}, "leads nowhere"),
    ({"date": [["v", 0, 0]]}, "leads nowhere"),
    ({"date": [["v", 1]]}, "JSON str"),
    ({"date": [["v", 0], ["v", 0]]}, "JSON str"),
    ({"timedelta": [["v", 0]]}, "JSON int"),
    ({"date": [["v", 2]]}, "malformed date"),
    ({"uuid": [["v", 2]]}, "malformed uuid"),
    ({"decimal": [["v", 2]]}, "malformed decimal"),
    ({"date": "v"}, "must be an array"),
    ([["v", 0]], "must be an object"),
])
def test_malformed_marks_are_a_protocol_error(marks: Any, reason: str) -> None:
    data = json.dumps({"k": "ok", "i": 1, "v": ["2000-01-01", 5, "nope"], "x": marks}).encode()
    with pytest.raises(ProtocolError, match=reason):
        proto.parse_server(data)


def test_marks_may_point_only_into_the_messages_payload() -> None:
    data = json.dumps({"k": "call", "i": 1, "f": "f", "a": ["2000-01-01"], "kw": {}, "x": {"date": [["f"]]}})
    with pytest.raises(ProtocolError):
        proto.parse_client(data)
    data = json.dumps({"k": "call", "i": 1, "f": "f", "a": [], "kw": {"d": "2000-01-01"}, "x": {"date": [["kw", "d"]]}})
    assert proto.parse_client(data).kwargs == {"d": dt.date(2000, 1, 1)}  # type: ignore[union-attr]


# --- signatures -----------------------------------------------------------------------------
def test_defaults_that_travel_as_themselves_are_real_in_the_signature() -> None:
    def greet(name: str, punct: str = "!", n: int = 2, when: dt.date = dt.date(2000, 1, 1), tags: list[str] = ["a"],  # noqa: B006
              pair: tuple[int, int] = (1, 2), color: Color = Color.RED, nan: float = float("nan"), none: None = None) -> str:
        return name

    desc = json.loads(proto.encode("funcs", fs=[describe_function(greet, "greet", "DEFAULT")]))
    msg = proto.parse_server(json.dumps(desc))
    spec = spec_from_description(msg.functions[0])  # type: ignore[union-attr]
    params = spec.signature.parameters
    assert params["punct"].default == "!" and params["n"].default == 2
    assert params["when"].default == dt.date(2000, 1, 1) and params["tags"].default == ["a"]
    assert params["none"].default is None
    # what arrives as something else, or not at all, keeps the origin's text
    assert params["pair"].default == Text("(1, 2)") and params["color"].default == Text("<Color.RED: 'red'>")
    assert params["nan"].default == Text("nan")
    assert str(spec.signature).startswith("(name: str, punct: str = '!', n: int = 2, when: dt.date = datetime.date(2000, 1, 1)")


def test_an_old_description_without_values_still_shows_text_defaults() -> None:
    spec = spec_from_description({"name": "f", "kind": "function", "parameters": [
        {"name": "a", "kind": "POSITIONAL_OR_KEYWORD", "default": "'!'"}]})
    assert spec.signature.parameters["a"].default == Text("'!'")


# --- loopback: both clients -----------------------------------------------------------------
def build_typed_app() -> tuple[Flask, EasyRpcServer]:
    app = Flask("easyrpc-typed-tests")
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET)

    @rpc.origin
    def echo(value):  # type: ignore[no-untyped-def]
        return value

    @rpc.origin
    def a_moment() -> list[Any]:
        return [dt.datetime(2024, 1, 1, 12, tzinfo=TZ), uuid.UUID(int=1), Decimal("1.10")]

    @rpc.origin
    def types_of(*values: Any) -> list[str]:
        return [type(v).__name__ for v in values]

    @rpc.origin
    def typed_stream(values: list[Any]) -> Iterator[Any]:
        yield from values

    @rpc.origin
    async def atyped_stream(values: list[Any]) -> AsyncIterator[Any]:
        for v in values:
            yield v

    @rpc.origin
    def greet(name: str, punct: str = "!", since: dt.date = dt.date(2020, 1, 1), pair: tuple[int, int] = (1, 2)) -> str:
        return f"{name}{punct}"

    @rpc.origin
    def fail_with(value: Any) -> None:
        raise ValueError(value)

    return app, rpc


@pytest.fixture
def typed_server(serve: Any) -> Any:
    return serve(*build_typed_app())


def test_typed_values_round_trip_through_both_clients(typed_server: Any, connect: Any) -> None:
    p = connect(typed_server)
    assert _same(p.echo(TYPED), TYPED)
    assert _same(p.echo({"deep": {"er": [TYPED[1], (TYPED[8],)]}}), {"deep": {"er": [TYPED[1], [TYPED[8]]]}})
    assert p.types_of(*TYPED[:10]) == ["datetime"] * 3 + ["date", "time", "time", "timedelta", "timedelta", "UUID", "Decimal"]
    assert _same(p.echo(LOOKALIKES), LOOKALIKES)
    assert p.types_of(*LOOKALIKES[:4]) == ["str"] * 4
    deep = _nested(100_000, TYPED[1])
    assert _same(_unnest(p.echo(deep), 100_000), TYPED[1])


@pytest.mark.parametrize("fn", ["typed_stream", "atyped_stream"])
def test_typed_values_arrive_as_themselves_in_streams(typed_server: Any, connect: Any, fn: str) -> None:
    p = connect(typed_server)
    assert _same(list(p[fn](TYPED)), TYPED)


def test_a_proxys_signature_shows_real_defaults(typed_server: Any, connect: Any) -> None:
    p = connect(typed_server)
    fn = p.proxy.greet if connect.kind == "aio" else p.greet
    params = inspect.signature(fn).parameters
    assert params["punct"].default == "!"
    assert params["since"].default == dt.date(2020, 1, 1)
    assert params["pair"].default == Text("(1, 2)")
    assert p.greet("a") == "a!"  # omitted defaults are still the server's to apply


def test_a_typed_argument_reaches_a_function_that_raises_with_it(typed_server: Any, connect: Any) -> None:
    p = connect(typed_server)
    with pytest.raises(ValueError) as info:
        p.fail_with(dt.date(2000, 1, 2))
    assert info.value.remote_message == "2000-01-02"  # type: ignore[attr-defined]


def test_values_that_cannot_travel_are_still_refused_locally(typed_server: Any, connect: Any) -> None:
    p = connect(typed_server)
    for bad in ({1, 2}, object(), float("nan"), {dt.date(2000, 1, 1): 1}):
        with pytest.raises(SerializationError):
            p.echo(bad)
    assert p.echo(1) == 1


def test_the_command_line_prints_typed_values_in_iso_form(typed_server: Any) -> None:
    from .test_cli import easyrpc

    url = f"ws://127.0.0.1:{typed_server.port}/ws/test"
    listed = easyrpc("list", url, "--json")
    assert listed.returncode == 0, listed.stderr
    greet = next(d for d in json.loads(listed.stdout) if d["name"] == "greet")
    assert greet["parameters"][2]["value"] == "2020-01-01"
    called = easyrpc("call", url, "a_moment")
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == ["2024-01-01T12:00:00+05:30", "00000000-0000-0000-0000-000000000001", "1.10"]


# --- a chain of servers ----------------------------------------------------------------------
def serve_chain(serve: Any, c_app: Flask, c_rpc: EasyRpcServer) -> Any:
    """A <- B <- C, C serving *c_rpc*: the served A."""
    previous = serve(c_app, c_rpc)
    for name in ("b", "a"):
        app = Flask(f"typed-{name}")
        rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET)
        served = serve(app, rpc)
        rpc.create_server_proxy("127.0.0.1", previous.port, "/ws/test", SECRET, max_backoff=0.2)
        previous = served
    return previous


def test_typed_values_pass_through_a_chain_of_servers(serve: Any) -> None:
    c_app, c_rpc = build_typed_app()
    a = serve_chain(serve, c_app, c_rpc)
    with EasyRpcProxy.create("127.0.0.1", a.port, "/ws/test", server_secret=SECRET, timeout=10) as p:
        assert wait_for(lambda: "greet" in p, timeout=5)
        assert _same(p.echo(TYPED), TYPED)
        assert _same(list(p.typed_stream(TYPED)), TYPED)
        assert _same(p.echo(LOOKALIKES), LOOKALIKES)
        assert p.types_of(*TYPED[3:5]) == ["date", "time"]
        assert inspect.signature(p.greet).parameters["since"].default == dt.date(2020, 1, 1)
