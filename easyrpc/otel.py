"""OpenTelemetry traces and metrics for easyrpc calls (``pip install easyrpc[otel]``).

One interceptor, installed wherever calls should be seen: a server (its calls become
SERVER spans), a proxy (CLIENT spans) and a server's links to other servers (CLIENT
spans for the calls they relay)::

    from easyrpc.otel import OpenTelemetryInterceptor

    otel = OpenTelemetryInterceptor()             # the global tracer and meter providers
    rpc = EasyRpcServer(app, '/ws/a', secret, interceptors=[otel])
    rpc.create_server_proxy(host, port, '/ws/b', secret, interceptors=[otel])
    p = EasyRpcProxy.create(host, port, '/ws/a', secret, interceptors=[otel])

Spans follow the OpenTelemetry RPC semantic conventions: named ``namespace/function``,
with ``rpc.system`` ``"easyrpc"``, ``rpc.service`` (the namespace), ``rpc.method`` (the
function), the peer's ``server.*`` or ``client.*`` address and port, and status ERROR
with ``error.type`` when the call failed or was cancelled. A client span's W3C trace
context (``traceparent``, ``tracestate``, and ``baggage`` with the default propagator)
travels in the call's metadata and the server's span continues it, so a call through a
chain of servers is one trace. While a served function runs (each step of a
generator), its server span is the current span: spans it starts, its own or an
instrumented library's, are children of it, and so is a call it makes through any proxy
with this interceptor.

Metrics: ``rpc.server.duration`` and ``rpc.client.duration``, histograms of call
durations in milliseconds, whose counts are the numbers of calls; each point has
``rpc.system``, ``rpc.service``, ``rpc.method``, ``easyrpc.outcome`` (``ok``, ``error``
or ``cancelled``) and ``error.type`` when not ok.

Only ``opentelemetry-api`` is needed; without an SDK configured, spans and metrics cost
next to nothing and go nowhere.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import __version__
from .interceptors import CallInfo, Interceptor, Outcome

__all__ = ["OpenTelemetryInterceptor"]

_SPAN = "easyrpc.otel.span"  # where a call's span is kept in CallInfo.state


class OpenTelemetryInterceptor(Interceptor):
    """Spans, trace context propagation and metrics for every call it sees.

    Args:
        tracer_provider: where spans go (default: the global provider).
        meter_provider: where metrics go (default: the global provider).
        propagator: how trace context is written to and read from metadata (default:
            the global propagator: W3C trace context and baggage unless configured).
    """

    def __init__(self, *, tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None,
                 propagator: TextMapPropagator | None = None) -> None:
        self._tracer = trace.get_tracer("easyrpc", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("easyrpc", __version__, meter_provider=meter_provider)
        self._duration = {
            side: meter.create_histogram(f"rpc.{side}.duration", unit="ms",
                                         description=f"Duration of {way} easyrpc calls")
            for side, way in (("server", "inbound"), ("client", "outbound"))}
        self._propagator = propagator
        self._peers: dict[str, dict[str, Any]] = {}  # the peer attributes of each peer seen

    def _textmap(self) -> TextMapPropagator:
        return self._propagator if self._propagator is not None else propagate.get_global_textmap()

    def before(self, call: CallInfo) -> None:
        """Start the call's span; on a client, put its trace context in the metadata."""
        attributes: dict[str, Any] = {"rpc.system": "easyrpc", "rpc.service": call.namespace,
                                      "rpc.method": call.function, **self._peer(call)}
        name = f"{call.namespace}/{call.function}"
        if call.side == "server":
            parent = self._textmap().extract(call.metadata)
            span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        else:
            parent = otel_context.get_current()
            if not trace.get_current_span(parent).get_span_context().is_valid and call.parent is not None:
                served = call.parent.state.get(_SPAN)  # a served function calling out
                if served is not None:
                    parent = trace.set_span_in_context(served, parent)
            span = self._tracer.start_span(name, context=parent, kind=SpanKind.CLIENT, attributes=attributes)
            self._textmap().inject(call.metadata, context=trace.set_span_in_context(span, parent))
        call.state[_SPAN] = span

    def running(self, call: CallInfo) -> AbstractContextManager[object] | None:
        """(Server.) The call's span is the current span while its function runs."""
        span = call.state.get(_SPAN)
        return None if span is None else trace.use_span(span, end_on_exit=False)

    def after(self, call: CallInfo, outcome: Outcome) -> None:
        """End the call's span with its status; record its duration (and so its count)."""
        error_type = outcome.error_type
        attributes: dict[str, Any] = {"rpc.system": "easyrpc", "rpc.service": call.namespace,
                                      "rpc.method": call.function,
                                      "easyrpc.outcome": "ok" if error_type is None else
                                      ("cancelled" if outcome.cancelled else "error")}
        if error_type is not None:
            attributes["error.type"] = error_type
        span = call.state.pop(_SPAN, None)
        if span is not None:
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(Status(StatusCode.ERROR, str(outcome.error) if outcome.error is not None
                                       else "cancelled"))
            span.end()
        self._duration[call.side].record(outcome.duration * 1000.0, attributes)

    def _peer(self, call: CallInfo) -> dict[str, Any]:
        attrs = self._peers.get(call.peer)
        if attrs is None:
            if call.side == "server":
                host, _, port = call.peer.rpartition(":")
                attrs = {"client.address": host.strip("[]")}
                if port.isdigit():
                    attrs["client.port"] = int(port)
            else:
                url = urlsplit(call.peer)
                attrs = {"server.address": url.hostname or "", "server.port": url.port or 0}
            if len(self._peers) < 1024:  # bounded: a server sees new client ports all the time
                self._peers[call.peer] = attrs
        return attrs
