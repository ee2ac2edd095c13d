"""Typed clients (issue #23, API §11): `easyrpc stubgen` writes Protocol classes and the named
types from a live server, `--check` reports drift, `create(..., interface=Cls)` types the
proxy and converts results, and mypy --strict checks a client against the module."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import datetime as dt
import decimal
import enum
import importlib
import inspect
import io
import os
import subprocess
import sys
import tokenize
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import pytest

from easyrpc import SerializationError
from easyrpc._stubgen import EXIT_DRIFT, render_module
from easyrpc._typeinfo import add_types
from easyrpc.aio import EasyRpcProxy as AioProxy
from easyrpc.proxy import EasyRpcProxy

from .conftest import SECRET, Served
from .stub_app import PATH, Opaque, Order, build_stub_app
from .test_cli import ROOT, easyrpc

CLASS = "ShopApi"


@pytest.fixture
def shop(serve: Callable[..., Served]) -> Served:
    app, rpc = build_stub_app()
    return serve(app, rpc)


def url_of(served: Served) -> str:
    return f"ws://127.0.0.1:{served.port}{PATH}"


@pytest.fixture
def api(shop: Served, tmp_path: Path) -> Iterator[ModuleType]:
    """The module `easyrpc stubgen` wrote for *shop*, imported as ``api_shop``."""
    done = easyrpc("stubgen", url_of(shop), "-o", str(tmp_path / "api_shop.py"))
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("api_shop")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("api_shop", None)


# --- descriptions -----------------------------------------------------------------------
def test_description_carries_types_and_the_named_types_they_use() -> None:
    def place(order: Order, x: Opaque, n: int | None = None) -> list[Order]: ...

    desc: dict[str, Any] = {"parameters": [{"name": "order"}, {"name": "x"}, {"name": "n"}]}
    add_types(desc, place)
    order, opaque, n = desc["parameters"]
    assert order["type"] == "Order" and "type" not in opaque and n["type"] == "int | None"
    assert desc["return_type"] == "list[Order]"
    assert set(desc["types"]) == {"Order", "Line", "Size"}
    fields = {f["name"]: f for f in desc["types"]["Line"]["fields"]}
    assert fields["size"]["member"] == "Size.SMALL" and fields["tags"]["factory"] == "list"
    assert desc["types"]["Line"]["doc"] == "One line of an order."
    assert desc["types"]["Size"] == {"kind": "enum", "doc": "", "base": None,
                                     "members": [{"name": "SMALL", "value": "s"}, {"name": "LARGE", "value": "l"}]}
    assert {f["name"]: f["type"] for f in desc["types"]["Order"]["fields"]}["placed"] == "datetime.datetime"


# --- the module -------------------------------------------------------------------------
def test_module_has_both_protocols_every_kind_default_and_doc(api: ModuleType) -> None:
    sync, aio = getattr(api, CLASS), getattr(api, "Async" + CLASS)
    sig = inspect.signature(sync.kinds)
    assert [(p.name, p.kind.name) for p in sig.parameters.values()] == [
        ("self", "POSITIONAL_ONLY"), ("a", "POSITIONAL_ONLY"), ("b", "POSITIONAL_ONLY"),
        ("c", "POSITIONAL_OR_KEYWORD"), ("args", "VAR_POSITIONAL"), ("d", "KEYWORD_ONLY"),
        ("e", "KEYWORD_ONLY"), ("kw", "VAR_KEYWORD")]
    assert [sig.parameters[n].default for n in "bcde"] == ["x", 1.5, False, None]
    assert sync.kinds.__doc__ == "Every parameter kind."
    when = inspect.signature(sync.when).parameters
    assert when["t"].default == dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.timezone.utc)
    assert when["u"].default == uuid.UUID(int=1) and when["d"].default == decimal.Decimal("1.5")
    assert when["p"].default is Ellipsis  # a NamedTuple default does not travel as itself
    assert inspect.iscoroutinefunction(aio.place) and not inspect.iscoroutinefunction(sync.place)
    assert not inspect.iscoroutinefunction(aio.acount)
    text = Path(api.__file__).read_text()
    assert "def count(self, n: int) -> collections.abc.Iterator[Point]:" in text
    assert "def acount(self, n: int) -> collections.abc.AsyncIterator[int]:" in text
    assert "def set(self, key: str, value: int) -> list[int]:" in text
    assert "def sets(self, values: builtins.set[int]) -> builtins.set[int]:" in text  # `set` is a method here
    assert "def untyped(self, a: typing.Any, b: typing.Any = 2) -> typing.Any:" in text
    assert "mode: typing.Literal['a', 'b'] = 'a'" in text
    assert "# unresolved annotations, typed Any: x: 'Opaque'; return: 'Opaque'" in text
    assert "get_registered_functions" not in text


def test_named_types_are_generated_as_matching_classes(api: ModuleType) -> None:
    assert dataclasses.is_dataclass(api.Line) and api.Line.__doc__ == "One line of an order."
    line = api.Line("tea", 2)
    assert (line.size, line.tags) == (api.Size.SMALL, [])
    assert [f.name for f in dataclasses.fields(api.Order)] == ["id", "placed", "lines", "total", "note"]
    assert issubclass(api.Size, enum.Enum) and api.Size("l") is api.Size.LARGE
    assert issubclass(api.Priority, enum.IntEnum) and api.Priority.HIGH == 2
    assert api.Point._fields == ("x", "y") and api.Point(1.0) == (1.0, 0.0)
    assert api.Movie.__required_keys__ == {"title"} and api.Movie.__optional_keys__ == {"year"}


# --- typed proxies ----------------------------------------------------------------------
def _order(api: ModuleType) -> Any:
    return api.Order(uuid.UUID(int=7), dt.datetime(2024, 5, 6, 12), [api.Line("tea", 2, api.Size.LARGE)],
                     decimal.Decimal("1.25"))


def test_blocking_proxy_typed_by_interface_converts_results(shop: Served, api: ModuleType) -> None:
    with EasyRpcProxy.create(shop.host, shop.port, PATH, SECRET, interface=getattr(api, CLASS)) as p:
        order = p.place(_order(api), priority=api.Priority.HIGH)
        assert isinstance(order, api.Order) and isinstance(order.lines[0], api.Line)
        assert order.lines[0].size is api.Size.LARGE and order.total == decimal.Decimal("2.50")
        assert order.note == "/HIGH/2030-01-01"
        assert list(p.count(3)) == [api.Point(0.0, 0.0), api.Point(1.0, 1.0), api.Point(2.0, 4.0)]
        assert all(isinstance(pt, api.Point) for pt in p.count(2))
        assert p.pair(api.Point(1.0, 2.0)) == api.Point(2.0, 1.0)
        assert p.kinds(1, "b", 2.0, 3, d=True, z="s") == {
            "a": 1, "b": "b", "c": 2.0, "args": [3], "d": True, "e": None, "kw": {"z": "s"}}
        assert p.when() == dt.timedelta(seconds=10)
        assert p.set("k", 3) == [3]
        # a submitted call's future holds the converted result too
        future = p.place.submit(_order(api), priority=api.Priority.HIGH)
        submitted = future.result(10)
        assert isinstance(submitted, api.Order) and submitted.lines[0].size is api.Size.LARGE
        assert p.pair.submit(api.Point(1.0, 2.0)).result(10) == api.Point(2.0, 1.0)


def test_async_proxy_typed_by_interface_converts_results(shop: Served, api: ModuleType) -> None:
    async def main() -> None:
        async with await AioProxy.create(shop.host, shop.port, PATH, SECRET, interface=getattr(api, "Async" + CLASS)) as p:
            order = await p.place(_order(api))
            assert isinstance(order, api.Order) and order.lines[0].size is api.Size.LARGE
            assert [i async for i in p.acount(3)] == [0, 1, 2]
            points = [pt async for pt in p.count(2)]
            assert points == [api.Point(0.0, 0.0), api.Point(1.0, 1.0)] and isinstance(points[0], api.Point)
            assert await p.movie({"title": "x", "year": 1}) == {"title": "X", "year": 2}

    asyncio.run(main())


def test_result_that_does_not_fit_the_interface_raises(shop: Served) -> None:
    class Wrong(Protocol):
        def set(self, key: str, value: int) -> dict[str, int]: ...

    with EasyRpcProxy.create(shop.host, shop.port, PATH, SECRET, interface=Wrong) as p:
        with pytest.raises(SerializationError, match=r"set\(\) result does not match Wrong"):
            p.set("k", 1)
        with pytest.raises(SerializationError, match=r"set\(\) result does not match Wrong"):
            p.set.submit("k", 1).result(10)  # the future fails as the call does
    with pytest.raises(TypeError, match="interface must be a class"):
        EasyRpcProxy.create(shop.host, shop.port, PATH, SECRET, interface="ShopApi")  # type: ignore[call-overload]


# --- mypy ---------------------------------------------------------------------------------
CLIENT = '''
from __future__ import annotations

import asyncio
import datetime
import decimal
import uuid

import api_shop as api

from easyrpc import aio
from easyrpc.proxy import EasyRpcProxy


def new_order() -> api.Order:
    return api.Order(uuid.UUID(int=1), datetime.datetime(2024, 5, 6), [api.Line("tea", 2)], decimal.Decimal("1.5"))


def blocking(port: int) -> decimal.Decimal:
    with EasyRpcProxy.create("127.0.0.1", port, "/ws/shop_api", "abcd1234", interface=api.ShopApi) as p:
        order = p.place(new_order(), priority=api.Priority.HIGH)
        xs: list[float] = [point.x for point in p.count(3)]
        span: datetime.timedelta = p.when(span=datetime.timedelta(seconds=1))
        assert xs == [0.0, 1.0, 2.0] and span == datetime.timedelta(seconds=2)
        #BAD
        return order.total


async def main(port: int) -> list[int]:
    async with await aio.EasyRpcProxy.create("127.0.0.1", port, "/ws/shop_api", "abcd1234",
                                             interface=api.AsyncShopApi) as p:
        order = await p.place(new_order())
        assert order.lines[0].qty == 2
        movie: api.Movie = await p.movie({"title": "x"})
        assert movie["title"] == "X"
        return [i async for i in p.acount(3)]


def run(port: int) -> tuple[decimal.Decimal, list[int]]:
    return blocking(port), asyncio.run(main(port))
'''
BAD = '''p.place("an order")
        p.count()
        p.plcae(new_order())'''


def _code_lines(text: str) -> str:
    return "".join(tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                   if tok.type not in (tokenize.COMMENT, tokenize.STRING))


def test_mypy_strict_passes_a_client_and_reports_exactly_three_errors(shop: Served, api: ModuleType,
                                                                      tmp_path: Path) -> None:
    (tmp_path / "client_ok.py").write_text(CLIENT)
    (tmp_path / "client_bad.py").write_text(CLIENT.replace("#BAD", BAD))
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(tmp_path), ROOT])}
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--hide-error-context",
                           "--cache-dir", str(tmp_path / ".mypy_cache"), "api_shop.py", "client_ok.py", "client_bad.py"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert [e.split(":")[0] for e in errors] == ["client_bad.py"] * 3, done.stdout + done.stderr
    assert "[arg-type]" in errors[0] and '"place" of "ShopApi"' in errors[0]
    assert "[call-arg]" in errors[1] and 'Missing positional argument "n" in call to "count"' in errors[1]
    assert "[attr-defined]" in errors[2] and '"ShopApi" has no attribute "plcae"' in errors[2]
    sys.path.insert(0, str(tmp_path))  # and the client that passed runs
    try:
        client = importlib.import_module("client_ok")
        assert client.run(shop.port) == (decimal.Decimal("3.0"), [0, 1, 2])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("client_ok", None)


# --- --check ------------------------------------------------------------------------------
@pytest.fixture
def drift(serve: Callable[..., Served], shop: Served, tmp_path: Path) -> tuple[str, str]:
    """The module written for *shop*, and the URL of a server that drifted from it."""
    path = tmp_path / "api_shop.py"
    assert easyrpc("stubgen", url_of(shop), "-o", str(path)).returncode == 0
    app, rpc = build_stub_app("changed")
    return str(path), url_of(serve(app, rpc))


def test_check_passes_for_the_same_server(shop: Served, drift: tuple[str, str]) -> None:
    done = easyrpc("stubgen", "--check", url_of(shop), drift[0])
    assert done.returncode == 0, done.stderr
    assert "matches" in done.stdout


def test_check_reports_a_function_added(drift: tuple[str, str]) -> None:
    done = easyrpc("stubgen", "--check", drift[1], drift[0])
    assert done.returncode == EXIT_DRIFT
    assert "  added on the server: def added(self, x: int) -> int\n" in done.stderr


def test_check_reports_a_function_removed(drift: tuple[str, str]) -> None:
    done = easyrpc("stubgen", "--check", drift[1], drift[0])
    assert done.returncode == EXIT_DRIFT
    assert "  removed from the server: def untyped(self, a: typing.Any, b: typing.Any=2) -> typing.Any\n" in done.stderr


def test_check_reports_a_function_changed(drift: tuple[str, str]) -> None:
    done = easyrpc("stubgen", "--check", drift[1], drift[0])
    assert done.returncode == EXIT_DRIFT
    assert ("  changed: def count(self, n: int) -> collections.abc.Iterator[Point]\n"
            "      now: def count(self, n: str) -> collections.abc.Iterator[Point]") in done.stderr
    assert "(aio)" not in done.stderr  # the async Protocol's copy of the same change is not repeated


def test_stubgen_usage_errors(shop: Served) -> None:
    assert easyrpc("stubgen", "--check", url_of(shop)).returncode == 2
    assert easyrpc("stubgen", url_of(shop), "some.py").returncode == 2
    done = easyrpc("stubgen", url_of(shop), "--class-name", "Shop")
    assert done.returncode == 0 and "class AsyncShop(typing.Protocol):" in done.stdout


# --- hostile descriptions -----------------------------------------------------------------
def test_nothing_from_the_wire_reaches_the_module_as_code() -> None:
    evil = "__import__('os').system('echo pwned')"
    desc = {
        "name": "f", "kind": "function", "doc": 'doc """ with \\ quotes"', "parameters": [
            {"name": "a", "kind": "POSITIONAL_OR_KEYWORD", "annotation": evil, "type": evil},
            {"name": "b", "kind": "POSITIONAL_OR_KEYWORD", "type": "typing.Literal[" + evil + "]"},
            {"name": "c", "kind": "POSITIONAL_OR_KEYWORD", "type": "list['os.system']"},
            {"name": "d", "kind": "POSITIONAL_OR_KEYWORD", "type": "T", "default": evil, "value": {"k": [1]}},
            {"name": "e", "kind": "POSITIONAL_OR_KEYWORD", "type": "Color", "default": "x", "member": "Color.RED"},
            {"name": "g", "kind": "POSITIONAL_OR_KEYWORD", "type": "Color", "default": "x", "member": "Color.BLUE"}],
        "return_type": "os.system", "return_annotation": "x\nimport os",
        "types": {"T": {"kind": "dataclass", "doc": "", "fields": [
            {"name": "x", "type": "int", "default": "0", "value": evil}]},
            "import os": {"kind": "enum", "members": []},
            "Color": {"kind": "enum", "members": [{"name": "RED", "value": 1}]},
            "E": {"kind": "enum", "members": [{"name": "A", "value": ["not", "a", "scalar"]}]}},
    }
    text = render_module([desc, {"name": "1bad", "parameters": []}], "Api")
    code = _code_lines(text)
    assert "system" not in code and "__import__" not in code and "pwned" not in code and "1bad" not in code
    assert ("def f(self, a: typing.Any, b: typing.Any, c: typing.Any, d: T = {'k': [1]}, e: Color = Color.RED, "
            "g: Color = ...) -> typing.Any:") in text  # an enum default only if the enum has that member
    assert """    x: int = "__import__('os')""" in text  # a value is written as its repr: data, not code
    assert "class E" not in text
    tree = ast.parse(text)
    assert ast.get_docstring(tree.body[-1].body[-1]) == 'doc """ with \\ quotes"'  # type: ignore[attr-defined]


def test_display_text_is_tried_only_for_servers_that_send_no_types() -> None:
    params = [{"name": "a", "kind": "POSITIONAL_OR_KEYWORD", "annotation": "Optional[int]"},
              {"name": "b", "kind": "POSITIONAL_OR_KEYWORD", "annotation": "Text"}]
    old = {"name": "f", "kind": "function", "parameters": params, "return_annotation": "list[str]"}
    assert "def f(self, a: typing.Optional[int], b: typing.Text) -> list[str]:" in render_module([old], "Api")
    new = {**old, "types": {}}  # a newer server: no `type` means it could not write one (b may be its own Text)
    assert "def f(self, a: typing.Any, b: typing.Any) -> typing.Any:" in render_module([new], "Api")
