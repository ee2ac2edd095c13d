"""OpenTelemetry: spans per the RPC conventions, one trace through a chain of three
servers, metrics by function and outcome (read from the SDK's in-memory exporters)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from flask import Flask

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from easyrpc.otel import OpenTelemetryInterceptor  # noqa: E402
from easyrpc.proxy import EasyRpcProxy  # noqa: E402
from easyrpc.server import EasyRpcServer, call_context  # noqa: E402

from .conftest import SECRET, Served, wait_for  # noqa: E402

PATH = "/ws/otel"


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracer = tracer_provider.get_tracer("served-code")  # what a served function uses
        self.reader = InMemoryMetricReader()
        self.interceptor = OpenTelemetryInterceptor(
            tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[self.reader]))

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of every point of metric *name*."""
        data = self.reader.get_metrics_data()
        found = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        found += [(dict(p.attributes or {}), p) for p in metric.data.data_points]
        return found


@pytest.fixture
def otel() -> Telemetry:
    return Telemetry()


def node(name: str, otel: Telemetry) -> tuple[Flask, EasyRpcServer]:
    app = Flask(f"otel-{name}")
    rpc = EasyRpcServer(app, PATH, server_secret=SECRET, interceptors=[otel.interceptor])
    return app, rpc


def origin(otel: Telemetry) -> tuple[Flask, EasyRpcServer]:
    app, rpc = node("c", otel)

    @rpc.origin
    def c_echo(value: Any) -> Any:
        return value

    @rpc.origin
    def c_fail() -> None:
        raise KeyError("from C")

    @rpc.origin
    def c_count(n: int) -> Iterator[int]:
        yield from range(n)

    return app, rpc


def chain(serve: Callable[..., Served], otel: Telemetry) -> Served:
    """A -> B -> C, each server and each link instrumented; returns A."""
    c = serve(*origin(otel))
    app_b, rpc_b = node("b", otel)
    rpc_b.create_server_proxy(c.host, c.port, PATH, SECRET, interceptors=[otel.interceptor])
    b = serve(app_b, rpc_b)
    app_a, rpc_a = node("a", otel)
    rpc_a.create_server_proxy(b.host, b.port, PATH, SECRET, interceptors=[otel.interceptor])
    return serve(app_a, rpc_a)


def _by_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


def test_a_call_through_three_servers_is_one_trace_of_parent_and_child_spans(
        serve: Callable[..., Served], otel: Telemetry, connect: Callable[..., Any]) -> None:
    a = chain(serve, otel)
    p = connect(a, PATH, interceptors=[otel.interceptor])
    assert wait_for(lambda: "c_echo" in p)
    assert p.c_echo({"x": 1}) == {"x": 1}
    assert wait_for(lambda: len(otel.finished()) == 6)
    spans = otel.finished()
    assert len({s.context.trace_id for s in spans}) == 1  # one trace
    # client -> A (server) -> A's link (client) -> B (server) -> B's link (client) -> C (server)
    by_parent = {s.parent.span_id if s.parent else None: s for s in spans}
    chain_of_spans = [by_parent[None]]
    while chain_of_spans[-1].context.span_id in by_parent:
        chain_of_spans.append(by_parent[chain_of_spans[-1].context.span_id])
    assert [s.kind for s in chain_of_spans] == [SpanKind.CLIENT, SpanKind.SERVER] * 3
    for s in spans:
        assert s.name == "DEFAULT/c_echo"
        assert s.attributes is not None
        assert s.attributes["rpc.system"] == "easyrpc"
        assert s.attributes["rpc.service"] == "DEFAULT" and s.attributes["rpc.method"] == "c_echo"
        assert s.status.status_code == StatusCode.UNSET
        if s.kind == SpanKind.CLIENT:
            assert s.attributes["server.address"] == "127.0.0.1" and isinstance(s.attributes["server.port"], int)
        else:
            assert s.attributes["client.address"] == "127.0.0.1"
    # each server span lies within its caller's span
    for parent, child in zip(chain_of_spans, chain_of_spans[1:], strict=False):
        assert parent.start_time is not None and child.start_time is not None
        assert parent.end_time is not None and child.end_time is not None
        assert parent.start_time <= child.start_time and child.end_time <= parent.end_time


def test_errors_set_span_status_and_metrics_count_by_function_and_outcome(
        serve: Callable[..., Served], otel: Telemetry) -> None:
    c = serve(*origin(otel))
    with EasyRpcProxy.create(c.host, c.port, PATH, server_secret=SECRET, interceptors=[otel.interceptor]) as p:
        for i in range(3):
            assert p.c_echo(i) == i
        with pytest.raises(KeyError):
            p.c_fail()
    assert wait_for(lambda: len(otel.finished()) == 8)
    failed = [s for s in otel.finished() if s.name == "DEFAULT/c_fail"]
    assert {s.kind for s in failed} == {SpanKind.CLIENT, SpanKind.SERVER}
    for s in failed:
        assert s.status.status_code == StatusCode.ERROR and s.attributes is not None
        assert s.attributes["error.type"] == "KeyError"
    for side in ("server", "client"):
        durations = {(attrs["rpc.method"], attrs["easyrpc.outcome"], attrs.get("error.type")): point
                     for attrs, point in otel.points(f"rpc.{side}.duration")}
        counts = {key: point.count for key, point in durations.items()}  # a histogram counts the calls
        assert counts == {("c_echo", "ok", None): 3, ("c_fail", "error", "KeyError"): 1}
        assert durations[("c_echo", "ok", None)].sum > 0
        for attrs, _ in otel.points(f"rpc.{side}.duration"):
            assert attrs["rpc.system"] == "easyrpc" and attrs["rpc.service"] == "DEFAULT"


def test_a_served_function_calling_another_server_makes_a_child_span(
        serve: Callable[..., Served], otel: Telemetry) -> None:
    c = serve(*origin(otel))
    app_a, rpc_a = node("a", otel)
    outbound = EasyRpcProxy.create(c.host, c.port, PATH, server_secret=SECRET, interceptors=[otel.interceptor])

    @rpc_a.origin
    def via_a(value: Any) -> Any:
        assert call_context() is not None
        return outbound.c_echo(value)

    a = serve(app_a, rpc_a)
    try:
        with EasyRpcProxy.create(a.host, a.port, PATH, server_secret=SECRET, interceptors=[otel.interceptor]) as p:
            assert p.via_a(5) == 5
    finally:
        outbound.close()
    assert wait_for(lambda: len(otel.finished()) == 4)
    spans = {(s.name, s.kind): s for s in otel.finished()}
    a_server = spans[("DEFAULT/via_a", SpanKind.SERVER)]
    out_client = spans[("DEFAULT/c_echo", SpanKind.CLIENT)]
    c_server = spans[("DEFAULT/c_echo", SpanKind.SERVER)]
    assert out_client.parent is not None and out_client.parent.span_id == a_server.context.span_id
    assert c_server.parent is not None and c_server.parent.span_id == out_client.context.span_id
    assert len({s.context.trace_id for s in spans.values()}) == 1


def test_a_stream_is_one_span_per_side_ended_with_the_stream(
        serve: Callable[..., Served], otel: Telemetry, connect: Callable[..., Any]) -> None:
    a = chain(serve, otel)
    p = connect(a, PATH, interceptors=[otel.interceptor])
    assert wait_for(lambda: "c_count" in p)
    assert list(p.c_count(4)) == [0, 1, 2, 3]
    assert wait_for(lambda: len(otel.finished()) == 6)
    spans = otel.finished()
    assert {s.name for s in spans} == {"DEFAULT/c_count"} and len({s.context.trace_id for s in spans}) == 1
    assert sorted(s.kind.name for s in spans) == ["CLIENT"] * 3 + ["SERVER"] * 3


def _inner_server(otel: Telemetry) -> tuple[Flask, EasyRpcServer]:
    """Functions of every kind that start spans of their own while they run."""
    app, rpc = node("inner", otel)
    tracer = otel.tracer

    @rpc.origin
    def inner_plain(i: int) -> int:
        with tracer.start_as_current_span("plain-work", attributes={"i": i}):
            return i

    @rpc.origin
    async def inner_async(i: int) -> int:
        await asyncio.sleep(0)
        with tracer.start_as_current_span("async-work", attributes={"i": i}):
            await asyncio.sleep(0)
            return i

    @rpc.origin
    def inner_gen(n: int) -> Iterator[int]:
        for i in range(n):
            with tracer.start_as_current_span("gen-step", attributes={"i": i}):
                yield i

    @rpc.origin
    async def inner_agen(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            with tracer.start_as_current_span("agen-step", attributes={"i": i}):
                yield i

    return app, rpc


@pytest.mark.parametrize("function, work, steps", [
    ("inner_plain", "plain-work", 1), ("inner_async", "async-work", 1),
    ("inner_gen", "gen-step", 3), ("inner_agen", "agen-step", 3)])
def test_spans_a_served_function_starts_are_children_of_its_server_span(
        serve: Callable[..., Served], otel: Telemetry, function: str, work: str, steps: int) -> None:
    served = serve(*_inner_server(otel))
    with EasyRpcProxy.create(served.host, served.port, PATH, server_secret=SECRET) as p:
        result = getattr(p, function)(steps if steps > 1 else 7)
        assert (list(result) if steps > 1 else result) == (list(range(steps)) if steps > 1 else 7)
    assert wait_for(lambda: len(otel.finished()) == steps + 1)
    server = [s for s in otel.finished() if s.kind == SpanKind.SERVER]
    inner = [s for s in otel.finished() if s.name == work]
    assert len(server) == 1 and len(inner) == steps
    for span in inner:
        assert span.parent is not None and span.parent.span_id == server[0].context.span_id
        assert span.context.trace_id == server[0].context.trace_id


def test_concurrent_calls_each_see_their_own_span_and_none_leaks_to_other_calls(
        serve: Callable[..., Served], otel: Telemetry) -> None:
    served = serve(*_inner_server(otel))
    bare_app = Flask("otel-bare")
    bare = EasyRpcServer(bare_app, "/ws/bare", server_secret=SECRET)  # no interceptors

    @bare.origin
    def current_span_is_set() -> bool:
        return bool(trace.get_current_span().get_span_context().is_valid)

    bare_served = serve(bare_app, bare)  # the same process: the same hub threads run both
    with EasyRpcProxy.create(served.host, served.port, PATH, server_secret=SECRET) as p, \
            EasyRpcProxy.create(bare_served.host, bare_served.port, "/ws/bare", server_secret=SECRET) as q:
        futures = [p.inner_plain.submit(i) for i in range(40)]
        assert [f.result(30) for f in futures] == list(range(40))
        for i in range(20):  # sequential calls run on the hub's thread, one server after the other
            assert p.inner_plain(i) == i
            assert q.current_span_is_set() is False
    assert wait_for(lambda: len(otel.finished()) == 120)
    servers = {s.context.span_id for s in otel.finished() if s.kind == SpanKind.SERVER}
    parents = {s.parent.span_id for s in otel.finished() if s.name == "plain-work" and s.parent is not None}
    assert len(servers) == 60 and parents == servers  # one work span under each call's own span
