"""Binary data travels as binary (issue #21, API §9): no base64, one WebSocket message.

The container (``easyrpc._parts``) is tested without sockets; the rest against a real
loopback server through both clients, streams, encryption, a chain of servers and a
hostile raw peer. The 100 MB round trip with peak memory measured is under ``slow``.
"""

from __future__ import annotations

import array
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from flask import Flask

from easyrpc import ProtocolError, SerializationError
from easyrpc import _protocol as proto
from easyrpc._core.cipher import FrameCipher
from easyrpc._core.frames import OP_BINARY, FrameParser, masked_parts
from easyrpc._parts import Packed
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import EasyRpcServer

from .conftest import SECRET, wait_for
from .rawpeer import RawPeer
from .test_typed_values import serve_chain

BLOBS: list[Any] = [b"", b"\x00", b"\x00\x01\xff", bytes(range(256)), b'"\\\n{}', b"x" * 70_000]


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


def _wire(msg: proto.Encoded) -> bytes:
    return msg.join() if isinstance(msg, Packed) else msg


def _container(header: dict[str, Any], *parts: bytes, length: int | None = None) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("!BI", 1, len(head) if length is None else length) + head + b"".join(parts)


# --- the container, without sockets ----------------------------------------------------------
def test_a_message_with_bytes_is_a_header_then_the_raw_parts() -> None:
    msg = proto.encode_result(7, {"img": b"\x00\x01", "more": [b"abc"]})
    assert isinstance(msg, Packed)
    wire = msg.join()
    assert wire[0] == 0x01
    (length,) = struct.unpack("!I", wire[1:5])
    header = json.loads(wire[5:5 + length])
    assert header["k"] == "ok" and header["i"] == 7
    assert header["v"] == {"img": 0, "more": [1]}
    assert header["x"] == {"bytes": [["v", "img"], ["v", "more", 0]]}
    assert header["b"] == [2, 3]
    assert wire[5 + length:] == b"\x00\x01abc"  # raw: no base64, no escaping
    assert len(msg) == len(wire)


def test_a_message_without_binary_values_is_plain_json_as_before() -> None:
    assert proto.encode_result(1, {"a": [1, "b"]}) == b'{"k":"ok","i":1,"v":{"a":[1,"b"]}}'
    assert isinstance(proto.encode_call(1, "f", [1], {}), bytes)


def test_bytes_bytearray_and_memoryview_all_arrive_as_bytes() -> None:
    ints = array.array("i", [1, 2, 3])
    grid = memoryview(bytearray(range(12))).cast("B", (3, 4))
    strided = memoryview(bytes(range(10)))[::2]
    values = [b"ab", bytearray(b"cd"), memoryview(b"ef"), memoryview(ints), grid, strided]
    out = proto.parse_server(_wire(proto.encode_result(1, values))).value  # type: ignore[union-attr]
    assert [type(v) for v in out] == [bytes] * 6
    assert out == [b"ab", b"cd", b"ef", ints.tobytes(), bytes(range(12)), bytes(range(0, 10, 2))]


@pytest.mark.parametrize("value", [
    BLOBS,
    {"deep": {"er": [b"\x01", (b"\x02", {"k": b""})]}, "n": 1, "s": "text"},
    {1: b"int key", None: [b"null key"]},
    [b"%d" % i for i in range(2000)],
    [b""] * 100,
])
def test_binary_values_round_trip_anywhere_in_a_payload(value: Any) -> None:
    def tuples_as_lists(v: Any) -> Any:
        if isinstance(v, dict):
            return {(k if isinstance(k, str) else json.dumps(k)): tuples_as_lists(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [tuples_as_lists(x) for x in v]
        return v

    expected = tuples_as_lists(value)
    assert proto.parse_server(_wire(proto.encode_result(3, value))).value == expected  # type: ignore[union-attr]
    assert proto.parse_server(_wire(proto.encode_item(3, value))).value == expected  # type: ignore[union-attr]
    call = proto.parse_client(_wire(proto.encode_call(3, "f", [value], {"kw": value})))
    assert isinstance(call, proto.Call) and call.args == [expected] and call.kwargs == {"kw": expected}


def test_binary_values_beside_typed_values_and_100000_levels_deep() -> None:
    import datetime as dt

    value: Any = [b"bottom", dt.date(2000, 1, 2)]
    for _ in range(100_000):
        value = [value]
    out = proto.parse_server(_wire(proto.encode_result(1, value))).value  # type: ignore[union-attr]
    for _ in range(100_000):
        out = out[0]
    assert out == [b"bottom", dt.date(2000, 1, 2)]


def test_binary_values_are_refused_where_they_cannot_travel() -> None:
    with pytest.raises(SerializationError):
        proto.encode_result(1, {b"key": 1})  # JSON object keys are text
    with pytest.raises(SerializationError):
        proto.encode("funcs", fs=[b"x"])  # only payloads carry parts


def test_strings_that_look_like_the_container_stay_strings() -> None:
    for value in ["\x01", {"b": [1], "x": {"bytes": [["v"]]}}, 0, [0, 1]]:
        assert proto.parse_server(_wire(proto.encode_result(1, value))).value == value  # type: ignore[union-attr]


@pytest.mark.parametrize("data, reason", [
    (b"\x01\x00\x00", "shorter than its prefix"),
    (_container({"k": "ok", "i": 1, "v": 0}, b"ab", length=1000), "runs past its end"),
    (_container({"k": "ok", "i": 1, "v": 0, "x": {"bytes": [["v"]]}, "b": [3]}, b"ab"), "do not match"),
    (_container({"k": "ok", "i": 1, "v": 0, "x": {"bytes": [["v"]]}, "b": [1]}, b"ab"), "take 1 bytes"),
    (_container({"k": "ok", "i": 1, "v": 0, "x": {"bytes": [["v"]]}, "b": [-1, 3]}, b"ab"), "do not match"),
    (_container({"k": "ok", "i": 1, "v": 0, "x": {"bytes": [["v"]]}, "b": ["2"]}, b"ab"), "do not match"),
    (_container({"k": "ok", "i": 1, "v": 0, "x": {"bytes": [["v"]]}}, b"ab"), "non-empty array of part lengths"),
    (_container({"k": "ok", "i": 1, "v": 5, "x": {"bytes": [["v"]]}, "b": [2]}, b"ab"), "part 5 does not exist"),
    (_container({"k": "ok", "i": 1, "v": [0, 0], "x": {"bytes": [["v", 0], ["v", 1]]}, "b": [2]}, b"ab"),
     "part 0 has two places"),
    (_container({"k": "ok", "i": 1, "v": 0, "x": {"bytes": [["v"]]}, "b": [1, 1]}, b"ab"), "1 of the message's 2"),
    (_container({"k": "ok", "i": 1, "v": 0, "b": [2]}, b"ab"), "have no place"),
    (_container({"k": "ok", "i": 1, "v": "0", "x": {"bytes": [["v"]]}, "b": [2]}, b"ab"), "JSON int"),
    (b'{"k":"ok","i":1,"v":0,"x":{"bytes":[["v"]]}}', "part 0 does not exist"),  # JSON has no parts
    (b"\x01\x00\x00\x00\x02{}", "unknown message kind"),
    (b"\x01\x00\x00\x00\x02{]", "malformed JSON"),
    (b"\x01\x00\x00\x00\x02[]", "must be a JSON object"),
])
def test_a_malformed_binary_message_is_a_protocol_error(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        proto.parse_server(data)


def test_parts_are_framed_masked_and_sealed_as_if_joined() -> None:
    msg = proto.encode_result(1, [b"a" * 5, b"b" * 300_000, b"", bytes(range(256)) * 2000])
    assert isinstance(msg, Packed)
    wire = msg.join()
    frame = b"".join(masked_parts(OP_BINARY, msg.buffers()))  # offsets not multiples of 4
    parser = FrameParser(masked=True)
    parser.feed(frame)
    assert parser.next_message() == (OP_BINARY, wire)
    keys = os.urandom(32), os.urandom(32)
    sender, receiver = FrameCipher(keys[0], keys[1]), FrameCipher(keys[1], keys[0])
    big = proto.encode_result(2, [b"z" * (3 << 20), b"tail"])
    small = proto.encode_result(3, [b"small"])
    assert isinstance(big, Packed) and isinstance(small, Packed)
    assert receiver.open(sender.seal(big)) == big.join()  # sealed part by part
    assert receiver.open(sender.seal(small)) == small.join()


# --- a real server -----------------------------------------------------------------------------
def build_binary_app(**server_kw: Any) -> tuple[Flask, EasyRpcServer]:
    app = Flask("binary")
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET, **server_kw)

    @rpc.origin
    def echo(value: Any) -> Any:
        return value

    @rpc.origin
    def types_of(*values: Any, **named: Any) -> Any:
        return [_types(list(values)), _types(named)]

    @rpc.origin
    def make(n: int, size: int) -> list[bytes]:
        return [bytes([i % 256]) * size for i in range(n)]

    @rpc.origin
    def chunks(n: int, size: int) -> Iterator[bytes]:
        for i in range(n):
            yield bytes([i % 256]) * size

    @rpc.origin
    async def achunks(n: int, size: int) -> AsyncIterator[Any]:
        for i in range(n):
            yield {"i": i, "data": bytearray([i % 256]) * size}

    @rpc.origin
    def length(data: bytes) -> int:
        return len(data)

    return app, rpc


@pytest.fixture
def binary_server(serve: Any) -> Any:
    return serve(*build_binary_app())


def _check_round_trips(p: Any) -> None:
    for blob in BLOBS:
        assert p.echo(blob) == blob and type(p.echo(blob)) is bytes
    assert p.echo(bytearray(b"ba")) == b"ba" and type(p.echo(bytearray(b"ba"))) is bytes
    assert p.echo(memoryview(b"mv")) == b"mv"
    nested = {"a": [b"\x00", {"b": b"\xff" * 3}], "s": "\x00 text", "n": None}
    assert p.echo(nested) == nested
    assert p.types_of(b"x", bytearray(b"y"), memoryview(b"z"), k=[b"w"]) == [["bytes"] * 3, {"k": ["bytes"]}]
    many = [b"%d" % i for i in range(3000)]
    assert p.echo(many) == many
    assert p.make(3, 5) == [b"\x00" * 5, b"\x01" * 5, b"\x02" * 5]
    big = os.urandom(3 << 20)
    assert p.echo([big, b"tail"]) == [big, b"tail"]
    assert p.length(big) == len(big)


def test_binary_values_round_trip_through_both_clients(binary_server: Any, connect: Any) -> None:
    _check_round_trips(connect(binary_server))


@pytest.mark.parametrize("fn", ["chunks", "achunks"])
def test_binary_stream_items_arrive_as_bytes(binary_server: Any, connect: Any, fn: str) -> None:
    p = connect(binary_server)
    items = list(p[fn](70, 100))
    if fn == "achunks":
        assert items == [{"i": i, "data": bytes([i]) * 100} for i in range(70)]
    else:
        assert items == [bytes([i]) * 100 for i in range(70)]
    assert [len(x) for x in p.chunks(3, 2 << 20)] == [2 << 20] * 3


def test_binary_values_round_trip_with_encryption(serve: Any, connect: Any) -> None:
    served = serve(*build_binary_app(encryption_enabled=True))
    p = connect(served, encryption_enabled=True)
    _check_round_trips(p)
    assert list(p.chunks(3, 4)) == [b"\x00" * 4, b"\x01" * 4, b"\x02" * 4]


def test_binary_values_pass_through_a_chain_of_servers(serve: Any) -> None:
    c_app, c_rpc = build_binary_app()
    a = serve_chain(serve, c_app, c_rpc)
    with EasyRpcProxy.create("127.0.0.1", a.port, "/ws/test", server_secret=SECRET, timeout=20) as p:
        assert wait_for(lambda: "achunks" in p, timeout=5)
        _check_round_trips(p)
        assert list(p.chunks(3, 4)) == [b"\x00" * 4, b"\x01" * 4, b"\x02" * 4]
        assert list(p.achunks(2, 1)) == [{"i": 0, "data": b"\x00"}, {"i": 1, "data": b"\x01"}]


def test_concurrent_binary_calls_never_mix_their_parts(binary_server: Any) -> None:
    with EasyRpcProxy.create("127.0.0.1", binary_server.port, "/ws/test", server_secret=SECRET, timeout=20) as p:
        blobs = [bytes([i]) * (i * 9000) for i in range(40)]
        futures = [p.echo.submit([b, i]) for i, b in enumerate(blobs)]
        assert [f.result(20) for f in futures] == [[b, i] for i, b in enumerate(blobs)]


def test_big_replies_in_a_row_never_wait_for_the_servers_timer() -> None:
    """A big reply written by the hub pauses reading that connection until it is sent; the
    send's end resumes reading at once, not the next timer sweep (1 s). The server runs in
    a process of its own: in this one, the client's own hub peers would sweep it sooner."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(os.getcwd()), os.environ.get("PYTHONPATH", "")]))
    server = subprocess.Popen([sys.executable, "-c", _SERVER, "clear"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().strip())
        with EasyRpcProxy.create("127.0.0.1", port, "/ws/test", server_secret=SECRET, timeout=20) as p:
            blob = b"b" * (12 << 20)  # a reply far over the 4 MiB queue limit
            start = time.monotonic()
            for _ in range(8):  # from the third, calls run on the hub, which writes the reply
                assert p.echo(blob) == blob
            assert time.monotonic() - start < 3.0  # was over 5 s: each late call waited for the sweep
    finally:
        server.terminate()
        server.wait(10)


def _call_frame(header: dict[str, Any], *parts: bytes, length: int | None = None) -> bytes:
    return _container({"k": "call", "f": "echo", "kw": {}} | header, *parts, length=length)


@pytest.mark.parametrize("data, reason", [
    (_call_frame({"i": 1, "a": [0], "x": {"bytes": [["a", 0]]}, "b": [9]}, b"ab"), "do not match"),
    (_call_frame({"i": 1, "a": [4], "x": {"bytes": [["a", 0]]}, "b": [2]}, b"ab"), "part 4 does not exist"),
    (_call_frame({"i": 1, "a": [0], "x": {"bytes": [["a", 0]]}, "b": [2]}, b"a"), "do not match"),  # truncated
    (_call_frame({"i": 1, "a": [0], "b": [2]}, b"ab"), "no place"),
])
def test_a_hostile_binary_call_is_refused_and_the_connection_goes_on(
        binary_server: Any, data: bytes, reason: str) -> None:
    with EasyRpcProxy.create("127.0.0.1", binary_server.port, "/ws/test", server_secret=SECRET, timeout=10) as other, \
            RawPeer(binary_server.port) as peer:
        assert peer.authenticate(SECRET)["k"] == "welcome"
        peer.send_frame(0x2, data)
        reply = peer.recv_json()
        assert reply["k"] == "err" and reply["i"] == 1, reply
        assert reply["e"]["type"] == "ProtocolError" and reason in reply["e"]["message"], reply
        assert other.echo(b"fine") == b"fine"  # other callers are not disturbed
        good = _call_frame({"i": 2, "a": [0], "x": {"bytes": [["a", 0]]}, "b": [2]}, b"ok")
        peer.send_frame(0x2, good)  # nor is this connection
        frame = peer.recv_frame()
        assert frame.opcode == 0x2 and frame.payload.endswith(b"ok")
        assert proto.parse_server(frame.payload) == proto.Result(2, b"ok")


@pytest.mark.parametrize("opcode, data, notice", [
    (0x2, b"\x01\x00\x00\x00", "shorter than its prefix"),
    (0x2, _call_frame({"i": 1, "a": []}, length=1 << 30), "runs past its end"),
    (0x2, b'{"k":"call","i":1,"f":"echo","a":[1]}', "binary frame must hold"),
    (0x1, _call_frame({"i": 1, "a": [0], "x": {"bytes": [["a", 0]]}, "b": [2]}, b"ab"), "must travel in a binary frame"),
])
def test_a_binary_message_without_a_usable_id_gets_a_notice(
        binary_server: Any, opcode: int, data: bytes, notice: str) -> None:
    with RawPeer(binary_server.port) as peer:
        assert peer.authenticate(SECRET)["k"] == "welcome"
        peer.send_frame(opcode, data)
        reply = peer.recv_json()
        assert reply["k"] == "notice" and notice in reply["msg"], reply
        peer.send_text('{"k":"ping","t":5}')
        assert peer.recv_json() == {"k": "pong", "t": 5}


# --- 100 MB, peak memory measured --------------------------------------------------------------
_SERVER = textwrap.dedent("""
    import sys
    from flask import Flask
    from werkzeug.serving import make_server
    from easyrpc.server import EasyRpcServer

    app = Flask("big")
    rpc = EasyRpcServer(app, "/ws/test", server_secret="abcd1234", encryption_enabled=sys.argv[1] == "enc")

    @rpc.origin
    def echo(value):
        return value

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    print(httpd.server_port, flush=True)
    httpd.serve_forever()
""")

_CLIENT = textwrap.dedent("""
    import sys, time
    from easyrpc.proxy import EasyRpcProxy

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    size = int(sys.argv[2])
    with EasyRpcProxy.create("127.0.0.1", int(sys.argv[1]), "/ws/test", server_secret="abcd1234",
                             encryption_enabled=sys.argv[3] == "enc", timeout=300) as p:
        p.echo(b"warm up")
        base = hwm()
        payload = bytes([7]) * size  # written, so counted (bytes(size) would be pages never touched)
        t0 = time.perf_counter()
        out = p.echo(payload)
        took = time.perf_counter() - t0
        assert type(out) is bytes and len(out) == size and out == payload
        print(base, hwm(), took, flush=True)
""")


def _hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["clear", "enc"])
def test_a_100_mb_bytes_round_trip_peaks_under_twice_the_payload_on_each_side(mode: str) -> None:
    size = 100 << 20
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(os.getcwd()), os.environ.get("PYTHONPATH", "")]))
    server = subprocess.Popen([sys.executable, "-c", _SERVER, mode], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        time.sleep(0.2)
        server_base = _hwm(server.pid)
        client = subprocess.run([sys.executable, "-c", _CLIENT, port, str(size), mode],
                                capture_output=True, text=True, env=env, timeout=600)
        assert client.returncode == 0, client.stderr
        base, peak, took = client.stdout.split()
        server_peak = _hwm(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    client_growth = int(peak) - int(base)
    server_growth = server_peak - server_base
    print(f"100 MB echo ({mode}) in {float(took):.2f} s; peak growth: client {client_growth / size:.2f}x "
          f"(the payload included), server {server_growth / size:.2f}x")
    slack = 8 << 20  # the interpreter's own growth, a piece being moved
    assert client_growth <= 2 * size + slack  # its own payload, and the reply
    assert server_growth <= 2 * size + slack
