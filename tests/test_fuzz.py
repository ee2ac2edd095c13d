"""Property-based fuzzing of the server's message handling (API §6).

After a real handshake on a raw socket, hypothesis sends arbitrary frames: JSON envelopes
with arbitrary field values, arbitrary JSON documents, arbitrary text, raw bytes in text
and binary frames, and raw WebSocket frames with arbitrary opcodes and flags. Whatever it
sends, the server must not fall over: that connection either still answers a ping or was
closed, and an independent proxy on the same server still answers ``echo``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easyrpc.proxy import EasyRpcProxy

from .apps import build_app
from .conftest import SECRET, Served, start_server, wait_for
from .rawpeer import mask_bytes
from .test_hostile import PeerClosed, open_authed, recv_frame

PING_TOKEN = 987_654_321
# Functions safe to call with arbitrary arguments (nothing that sleeps for a given time).
FUNCTIONS = ["echo", "aecho", "good_func_a", "good_func_c", "annotated", "posonly", "fail", "unserializable",
             "count_up", "acount_up", "forever", "aforever", "fail_after", "get_registered_functions",
             "reset", "left_only", "nope", ""]
KINDS = ["call", "cancel", "credit", "ping", "pong", "auth", "hello", "welcome", "ok", "err", "item", "end",
         "notice", "bye", "funcs", "refused", ""]


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[tuple[Served, EasyRpcProxy]]:
    """One server and one healthy proxy for every example of the module."""
    app, rpc, _ = build_app(max_workers=4)
    served = start_server(app, [rpc])
    served.rpc = rpc  # type: ignore[attr-defined]
    proxy = EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret=SECRET)
    try:
        # Warm up the worker pool and the server's event loop here, so the per-test thread
        # check does not count the server's long-lived easyrpc-* threads as leaks.
        futures = [proxy.slow.submit(0.3) for _ in range(4)]
        assert [f.result(10) for f in futures] == [0.3] * 4
        assert proxy.aecho("warm") == "warm"
        yield served, proxy
    finally:
        proxy.close()
        served.stop()


# --- strategies --------------------------------------------------------------------------
json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**53 - 1, 2**53, 2**63, 1_000_000, 1_000_001]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
small_ids = st.integers(min_value=0, max_value=20)

envelopes = st.fixed_dictionaries(
    {"k": st.one_of(st.sampled_from(KINDS), json_values)},
    optional={
        "i": st.one_of(small_ids, json_values),
        "f": st.one_of(st.sampled_from(FUNCTIONS), json_values),
        "a": st.one_of(st.lists(json_values, max_size=4), json_values),
        "kw": st.one_of(st.dictionaries(st.sampled_from(["a", "b", "c", "value", "n", "kind", "x", "flag"]),
                                        json_values, max_size=3), json_values),
        "w": st.one_of(st.integers(min_value=0, max_value=2000), json_values),
        "n": st.one_of(st.integers(min_value=-2, max_value=2000), json_values),
        "t": st.one_of(st.integers(min_value=0, max_value=2**53), json_values),
        "token": st.one_of(st.text(max_size=50), json_values),
        "v": json_values,
    },
)
# Well-typed calls to real functions with arbitrary arguments.
calls = st.builds(
    lambda i, f, a, kw, w: {"k": "call", "i": i, "f": f, "a": a, "kw": kw, **({"w": w} if w is not None else {})},
    small_ids, st.sampled_from(FUNCTIONS), st.lists(json_values, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "c", "value", "n", "kind", "message", "x", "y", "flag"]),
                    json_values, max_size=3),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2000)),
)
controls = st.builds(
    lambda k, i, n: {"k": k, "i": i, "n": n, "t": i},
    st.sampled_from(["cancel", "credit", "ping", "pong"]), small_ids, st.integers(min_value=-1, max_value=5000),
)


def _text(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False)


frames = st.one_of(
    envelopes.map(lambda o: ("text", _text(o))),
    calls.map(lambda o: ("text", _text(o))),
    controls.map(lambda o: ("text", _text(o))),
    json_values.map(lambda o: ("text", _text(o))),
    st.text(max_size=200).map(lambda s: ("text", s)),
    st.binary(max_size=200).map(lambda b: ("text-bytes", b)),  # possibly invalid UTF-8 in a text frame
    st.binary(max_size=200).map(lambda b: ("binary", b)),
    envelopes.map(lambda o: ("binary", _text(o).encode())),
    st.tuples(st.integers(min_value=0, max_value=15), st.booleans(), st.binary(max_size=125)).map(
        lambda t: ("raw", t)),  # any opcode, FIN or not
)


def _send(ws: websocket.WebSocket, kind: str, payload: Any) -> None:
    if kind == "text":
        ws.send(payload)
    elif kind == "text-bytes":
        ws.send(payload, opcode=websocket.ABNF.OPCODE_TEXT)
    elif kind == "binary":
        ws.send_binary(payload)
    else:
        opcode, fin, data = payload  # hand-made, so reserved opcodes and bad flags go out as they are
        mask = os.urandom(4)
        ws.sock.sendall(bytes([(0x80 if fin else 0) | opcode, 0x80 | len(data)]) + mask + mask_bytes(data, mask, 0))


def _answers_ping_or_closed(ws: websocket.WebSocket, within: float = 5.0) -> str:
    """'pong' if the connection answers a ping, 'closed' if the server ended it; fails if it hangs."""
    try:
        ws.send(json.dumps({"k": "ping", "t": PING_TOKEN}))
    except (websocket.WebSocketConnectionClosedException, OSError):
        pass  # already closed by the server: the reads below see the close or EOF
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail("the connection neither answered a ping nor was closed")
        try:
            opcode, data = recv_frame(ws, remaining)
        except PeerClosed:
            return "closed"
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketProtocolException, websocket.WebSocketPayloadException, UnicodeDecodeError) as exc:
            pytest.fail(f"the server sent an invalid frame: {exc!r}")
        if opcode != websocket.ABNF.OPCODE_TEXT:
            pytest.fail(f"the server sent a non-text frame (opcode {opcode}) on a clear connection")
        msg = json.loads(data)
        assert isinstance(msg, dict) and isinstance(msg.get("k"), str), msg
        if msg == {"k": "pong", "t": PING_TOKEN}:
            return "pong"


@pytest.mark.timeout(90)
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_server_survives_arbitrary_frames(fuzz_server: tuple[Served, EasyRpcProxy], caplog: pytest.LogCaptureFixture) -> None:
    """Whatever frames follow a real handshake, that connection answers a ping or is closed, and another proxy keeps working."""
    served, healthy = fuzz_server
    caplog.set_level(logging.WARNING)
    outcomes: dict[str, int] = {"pong": 0, "closed": 0}

    @settings(max_examples=150, deadline=None, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(batch=st.lists(frames, min_size=1, max_size=5), probe=json_values)
    def example(batch: list[tuple[str, Any]], probe: Any) -> None:
        ws = open_authed(served)
        try:
            for kind, payload in batch:
                try:
                    _send(ws, kind, payload)
                except (websocket.WebSocketConnectionClosedException, OSError):
                    break  # the server closed it: checked below
            outcomes[_answers_ping_or_closed(ws)] += 1
        finally:
            with contextlib.suppress(Exception):
                ws.close(timeout=0.2)
            with contextlib.suppress(Exception):
                ws.shutdown()
        assert healthy.echo.with_timeout(5)(probe) == probe

    example()
    assert outcomes["pong"] > 0 and outcomes["closed"] > 0, outcomes  # both paths were exercised
    # every hostile connection is gone; only the healthy proxy remains
    assert wait_for(lambda: served.rpc.connection_count == 1, 10), served.rpc.connection_count  # type: ignore[attr-defined]
    assert healthy.echo([1, "two", None]) == [1, "two", None]
    # a hostile peer is the peer's fault: warnings at most, never an error or a crash trace
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records
              if r.levelno >= logging.ERROR and r.name != "websocket"]  # websocket-client logs closes as errors
    assert not errors, f"errors were logged: {errors[:5]}"
