"""Hostile peers against a real loopback server (API §1, §4, §6).

Raw ``websocket-client`` sockets play the attacker: they skip or forge the handshake,
send oversized or malformed frames and abuse the envelope. Meanwhile an independent,
well-behaved :class:`~easyrpc.proxy.EasyRpcProxy` must keep working, and the hostile
connection itself must stay usable whenever the protocol lets it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
import websocket

from easyrpc import AuthenticationError
from easyrpc import _protocol as proto
from easyrpc._handshake import Secret, new_nonce
from easyrpc.proxy import EasyRpcProxy

from .apps import build_app
from .conftest import SECRET, Served, start_server, wait_for
from .rawpeer import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawPeer, closed_code, frame, mask_bytes, masked_frame_header

pytestmark = [
    pytest.mark.timeout(30),
    # an exception escaping any thread (a server handler, worker or reader) fails the test
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

AUTH_KEY = hmac.new(SECRET.encode(), b"easyrpc/v1/auth", hashlib.sha256).digest()
NAMESPACES = ("DEFAULT", "admin", "left", "right")
OTHER_NAMESPACE_NAMES = {"reset", "left_only", "right_only"}


# --- raw-socket helpers ------------------------------------------------------------------
class PeerClosed(Exception):
    """The server ended the connection (close frame, EOF or reset)."""

    def __init__(self, how: str, code: int | None = None) -> None:
        super().__init__(how, code)
        self.how = how
        self.code = code


_CLOSED_ERRORS = (websocket.WebSocketConnectionClosedException, ConnectionError, BrokenPipeError)


def open_raw(served: Served, path: str = "/ws/test", timeout: float = 5.0) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://{served.host}:{served.port}{path}", timeout=timeout)


def recv_frame(ws: websocket.WebSocket, timeout: float = 5.0) -> tuple[int, bytes]:
    """One data frame; PeerClosed when the server closes; WebSocketTimeoutException on timeout."""
    ws.settimeout(max(timeout, 0.001))
    try:
        opcode, data = ws.recv_data()
    except websocket.WebSocketTimeoutException:
        raise
    except _CLOSED_ERRORS as exc:
        raise PeerClosed(type(exc).__name__) from None
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        raise PeerClosed("close frame", code)
    return opcode, data


def recv_msg(ws: websocket.WebSocket, timeout: float = 5.0) -> dict[str, Any]:
    opcode, data = recv_frame(ws, timeout)
    assert opcode == websocket.ABNF.OPCODE_TEXT, f"unexpected opcode {opcode}"
    msg = json.loads(data)
    assert isinstance(msg, dict), msg
    return msg


def read_until_closed(ws: websocket.WebSocket, within: float) -> tuple[list[bytes], PeerClosed]:
    """Everything the server sends until it closes; fails if it is still open after *within* s."""
    deadline = time.monotonic() + within
    frames: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"the server did not close the connection within {within} s (got {frames!r:.300})")
        try:
            _, data = recv_frame(ws, remaining)
        except PeerClosed as closed:
            return frames, closed
        except websocket.WebSocketTimeoutException:
            continue
        frames.append(data)


def send_quietly(ws: websocket.WebSocket, data: bytes) -> bool:
    """sendall raw bytes; False if the server has already dropped the socket."""
    try:
        ws.sock.sendall(data)
        return True
    except OSError:
        return False


def names_in(text: str, names: set[str]) -> set[str]:
    return {n for n in names if re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", text)}


def all_function_names(rpc: Any) -> set[str]:
    return {d["name"] for ns in NAMESPACES for d in rpc.get_registered_functions(ns)}


def craft_token(hello: dict[str, Any], key: bytes = AUTH_KEY, algorithm: str = "HS256", **claims: Any) -> str:
    """A client token built by hand with the documented key derivation; overrides in *claims*."""
    now = int(time.time())
    body: dict[str, Any] = {"v": proto.PROTOCOL_VERSION, "sn": hello["nonce"], "cn": new_nonce(), "ns": "DEFAULT", "enc": False,
                            "iat": now, "exp": now + 30}
    body.update(claims)
    return jwt.encode(body, key, algorithm=algorithm)


def unsigned_token(hello: dict[str, Any]) -> str:
    """A token with ``alg: none`` and an empty signature, otherwise well formed."""
    now = int(time.time())

    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {"v": proto.PROTOCOL_VERSION, "sn": hello["nonce"], "cn": new_nonce(), "ns": "DEFAULT", "enc": False,
              "iat": now, "exp": now + 30}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def real_token(hello: dict[str, Any], namespace: str = "DEFAULT", enc: bool = False) -> str:
    return Secret(SECRET).client_token(hello["nonce"], new_nonce(), namespace, enc)


def handshake(ws: websocket.WebSocket, make_token: Callable[[dict[str, Any]], str] = real_token
              ) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """hello -> auth -> the server's reply; returns (hello, token sent, reply)."""
    hello = recv_msg(ws)
    assert hello["k"] == "hello", hello
    token = make_token(hello)
    ws.send(json.dumps({"k": "auth", "token": token}))
    return hello, token, recv_msg(ws)


def open_authed(served: Served, namespace: str = "DEFAULT") -> websocket.WebSocket:
    ws = open_raw(served)
    _, _, reply = handshake(ws, lambda h: real_token(h, namespace))
    assert reply["k"] == "welcome", reply
    return ws


def call_frame(call_id: Any, fn: Any = "echo", args: Any = None, kwargs: Any = None, **extra: Any) -> str:
    msg: dict[str, Any] = {"k": "call", "i": call_id, "f": fn, "a": ["x"] if args is None else args,
                           "kw": {} if kwargs is None else kwargs}
    msg.update(extra)
    return json.dumps(msg)


def raw_echo(ws: websocket.WebSocket, call_id: int, value: Any = "still alive", timeout: float = 5.0
             ) -> list[dict[str, Any]]:
    """Call echo on a raw connection; asserts the answer and returns the messages that preceded it."""
    ws.send(call_frame(call_id, "echo", [value]))
    before: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = recv_msg(ws, deadline - time.monotonic())
        if msg.get("i") == call_id and msg.get("k") in ("ok", "err"):
            assert msg == {"k": "ok", "i": call_id, "v": value}
            return before
        before.append(msg)


class Hammer:
    """Calls ``echo`` on a healthy proxy in a loop on a test thread, recording any failure."""

    def __init__(self, proxy: EasyRpcProxy) -> None:
        self.proxy = proxy
        self.calls = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-hammer", daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                value = {"n": i, "s": "healthy"}
                got = self.proxy.echo.with_timeout(5)(value)
                if got != value:
                    raise AssertionError(f"echo returned {got!r}, expected {value!r}")
                self.calls += 1
            except BaseException as exc:  # noqa: BLE001 - recorded and asserted on
                self.errors.append(exc)
                return
            self._stop.wait(0.005)

    def __enter__(self) -> Hammer:
        self._thread.start()
        assert wait_for(lambda: self.calls > 0 or bool(self.errors), 5), "the healthy proxy never answered"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the healthy proxy's call hung"
        assert not self.errors, f"the healthy proxy failed: {self.errors[0]!r}"
        assert self.calls > 0
        assert self.proxy.echo("after") == "after"


# --- fixtures ----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Hostile input is the peer's fault: the server logs it as a warning at most, never an error."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.get_records("call")
              if r.levelno >= logging.ERROR and r.name != "websocket"]  # websocket-client logs closes as errors
    assert not errors, f"errors were logged: {errors}"


@pytest.fixture
def make_server(serve: Any) -> Callable[..., Served]:
    def _make(**options: Any) -> Served:
        app, rpc, counter = build_app(**options)
        served = serve(app, rpc)
        served.rpc = rpc  # type: ignore[attr-defined]
        served.counter = counter  # type: ignore[attr-defined]
        return served
    return _make


@pytest.fixture
def server(make_server: Callable[..., Served]) -> Served:
    return make_server()


# --- before authentication ---------------------------------------------------------------
def test_unauthenticated_socket_is_dropped_at_deadline_after_only_hello(
        make_server: Callable[..., Served], raw_sockets: list[Any]) -> None:
    """A socket that never authenticates is closed by auth_timeout and only ever saw the hello."""
    served = make_server(auth_timeout=0.5)
    names = all_function_names(served.rpc)  # type: ignore[attr-defined]
    start = time.monotonic()
    ws = open_raw(served)
    raw_sockets.append(ws)
    opcode, hello = recv_frame(ws)
    assert json.loads(hello)["k"] == "hello"
    assert not names_in(hello.decode(), names), hello
    frames, _ = read_until_closed(ws, within=3.0)
    elapsed = time.monotonic() - start
    assert frames == [], f"an unauthenticated peer received {frames!r}"
    assert 0.4 <= elapsed <= 3.0, elapsed
    assert served.rpc.connection_count == 0  # type: ignore[attr-defined]


@pytest.fixture(params=["owned", "fallback"])
def preauth_server(request: pytest.FixtureRequest, serve: Any) -> Served:
    """A server with a 0.5 s auth_timeout, on the owned read path, then on the fallback one
    (``SOCK_SERVER_OPTIONS`` replaced after ``init_app``: simple-websocket's thread reads)."""
    app, rpc, _ = build_app(auth_timeout=0.5)
    if request.param == "fallback":
        app.config["SOCK_SERVER_OPTIONS"] = {}
    served: Served = serve(app, rpc)
    served.rpc = rpc  # type: ignore[attr-defined]
    return served


def test_auth_deadline_holds_against_a_frame_dribbled_a_byte_at_a_time(preauth_server: Served) -> None:
    """A pre-auth frame sent one byte every 0.2 s does not extend auth_timeout (0.5 s):
    the socket is closed with 1008 about then, measured from the upgrade."""
    start = time.monotonic()
    with RawPeer(preauth_server.port) as peer:
        assert peer.recv_json()["k"] == "hello"
        slow = frame(OP_TEXT, b'{"k":"auth","token":"' + b"x" * 60 + b'"}')  # 15 s at this pace
        sent = peer.dribble(slow, every=0.2)
        closed = peer.closed_with(within=3.0)
        elapsed = time.monotonic() - start
    assert sent < len(slow), "the server never closed the dribbling socket"
    assert closed.frames == [] and closed.code == 1008, closed
    assert 0.4 <= elapsed <= 2.5, elapsed
    assert preauth_server.rpc.connection_count == 0  # type: ignore[attr-defined]


def test_auth_deadline_holds_against_pings_every_fifth_of_a_second(preauth_server: Served) -> None:
    """Pings every 0.2 s (each answered with a pong) do not extend auth_timeout (0.5 s):
    the socket is closed with 1008 about then, measured from the upgrade."""
    start = time.monotonic()
    with RawPeer(preauth_server.port) as peer:
        assert peer.recv_json()["k"] == "hello"
        pongs, code, next_ping = 0, None, time.monotonic()
        while code is None:
            now = time.monotonic()
            if now - start > 4.0:
                pytest.fail(f"still open after {now - start:.1f} s of pings ({pongs} pongs)")
            if now >= next_ping:
                if not peer.send_frame(OP_PING, b"still here"):
                    break
                next_ping += 0.2
            try:
                got = peer.recv_frame(max(0.001, next_ping - time.monotonic()))
            except TimeoutError:
                continue
            except OSError:
                break  # dropped without a close frame
            if got.opcode == OP_CLOSE:
                code = closed_code(got.payload)
            else:
                assert (got.opcode, got.payload) == (OP_PONG, b"still here"), got
                pongs += 1
        elapsed = time.monotonic() - start
    assert code == 1008
    assert 0.4 <= elapsed <= 2.5, elapsed
    assert pongs >= 1


def test_oversized_preauth_frame_closes_socket_without_revealing_functions(
        server: Served, open_proxy: Any, raw_sockets: list[Any]) -> None:
    """A 100 KB pre-auth frame (even one carrying a valid token) closes that socket at once, revealing nothing."""
    names = all_function_names(server.rpc)  # type: ignore[attr-defined]
    healthy = open_proxy(server)
    with Hammer(healthy):
        ws = open_raw(server)
        raw_sockets.append(ws)
        _, hello = recv_frame(ws)
        start = time.monotonic()
        # a valid auth message padded past the pre-auth frame limit: only the size is wrong
        big = json.dumps({"k": "auth", "token": real_token(json.loads(hello)), "pad": "A" * 100_000})
        with contextlib.suppress(*_CLOSED_ERRORS, OSError):
            ws.send(big)
        frames, _ = read_until_closed(ws, within=3.0)
        assert time.monotonic() - start < 3.0
        seen = b"".join([hello, *frames]).decode("utf-8", "replace")
        assert not names_in(seen, names), seen
        assert all(json.loads(f).get("k") not in ("welcome", "funcs", "ok") for f in frames), frames
    assert server.rpc.connection_count == 1  # type: ignore[attr-defined]


def test_wrong_secret_is_refused_then_closed_within_one_second(server: Served, raw_sockets: list[Any]) -> None:
    """A token signed with the wrong secret gets `refused` (code auth) and a close within 1 s, no function names."""
    names = all_function_names(server.rpc)  # type: ignore[attr-defined]
    ws = open_raw(server)
    raw_sockets.append(ws)
    hello = recv_msg(ws)
    start = time.monotonic()
    token = Secret("not-the-secret").client_token(hello["nonce"], new_nonce(), "DEFAULT", False)
    ws.send(json.dumps({"k": "auth", "token": token}))
    reply = recv_msg(ws, timeout=1.0)
    assert reply["k"] == "refused" and reply["code"] == "auth", reply
    frames, _ = read_until_closed(ws, within=1.0)
    assert time.monotonic() - start < 1.0
    assert frames == []
    assert not names_in(json.dumps(reply), names), reply


def test_wrong_secret_proxy_raises_authentication_error_within_one_second(server: Served) -> None:
    """EasyRpcProxy.create with a wrong secret raises AuthenticationError within 1 s."""
    start = time.monotonic()
    with pytest.raises(AuthenticationError):
        EasyRpcProxy.create(server.host, server.port, "/ws/test", server_secret="wrong-secret")
    assert time.monotonic() - start < 1.0


def test_crafted_token_with_documented_key_is_accepted(server: Served, raw_sockets: list[Any]) -> None:
    """Control: a hand-made HS256 token with the documented key derivation is welcomed (so the refusals below mean something)."""
    ws = open_raw(server)
    raw_sockets.append(ws)
    _, _, reply = handshake(ws, craft_token)
    assert reply["k"] == "welcome", reply
    assert raw_echo(ws, 1) == []


def test_replayed_token_is_refused(server: Served, raw_sockets: list[Any]) -> None:
    """A valid token captured from one connection is refused on another (different server nonce)."""
    first = open_raw(server)
    raw_sockets.append(first)
    hello1, token, reply1 = handshake(first)
    assert reply1["k"] == "welcome", reply1
    second = open_raw(server)
    raw_sockets.append(second)
    hello2, _, reply2 = handshake(second, lambda _h: token)
    assert hello2["nonce"] != hello1["nonce"]
    assert reply2["k"] == "refused" and reply2["code"] == "auth", reply2
    read_until_closed(second, within=1.0)
    assert raw_echo(first, 1) == []  # the legitimate first connection is unaffected


@pytest.mark.parametrize("make_token", [
    pytest.param(lambda h: craft_token(h, iat=int(time.time()) - 120, exp=int(time.time()) - 90), id="expired"),
    pytest.param(unsigned_token, id="alg-none"),
    pytest.param(lambda h: craft_token(h, sn=new_nonce()), id="other-nonce"),
    pytest.param(lambda h: craft_token(h, exp=int(time.time()) + 3600), id="overlong-lifetime"),
    pytest.param(lambda h: "not.a.jwt", id="garbage"),
])
def test_forged_tokens_are_refused(server: Served, raw_sockets: list[Any], make_token: Any) -> None:
    """Expired, unsigned (alg none), wrong-nonce, overlong and garbage tokens are refused (code auth) and closed."""
    names = all_function_names(server.rpc)  # type: ignore[attr-defined]
    ws = open_raw(server)
    raw_sockets.append(ws)
    _, _, reply = handshake(ws, make_token)
    assert reply["k"] == "refused" and reply["code"] == "auth", reply
    frames, _ = read_until_closed(ws, within=1.0)
    assert frames == []
    assert not names_in(json.dumps(reply), names)
    assert server.rpc.connection_count == 0  # type: ignore[attr-defined]


def test_wrong_protocol_version_is_refused_with_code_version(server: Served, raw_sockets: list[Any]) -> None:
    """A correctly signed token claiming protocol version 1 (a peer from before binary
    parts) is refused with code "version"."""
    ws = open_raw(server)
    raw_sockets.append(ws)
    _, _, reply = handshake(ws, lambda h: craft_token(h, v=1))
    assert reply["k"] == "refused" and reply["code"] == "version", reply
    frames, _ = read_until_closed(ws, within=1.0)
    assert frames == []


@pytest.mark.parametrize("server_enc", [False, True], ids=["server-clear", "server-encrypted"])
def test_encryption_mismatch_is_refused_with_code_encryption(
        make_server: Callable[..., Served], raw_sockets: list[Any], server_enc: bool) -> None:
    """A token whose encryption flag differs from the server's setting is refused with code "encryption"."""
    served = make_server(encryption_enabled=server_enc)
    ws = open_raw(served)
    raw_sockets.append(ws)
    hello, _, reply = handshake(ws, lambda h: craft_token(h, enc=not server_enc))
    assert hello["enc"] is server_enc
    assert reply["k"] == "refused" and reply["code"] == "encryption", reply
    frames, _ = read_until_closed(ws, within=1.0)
    assert frames == []


# --- after authentication: abuse of the envelope -----------------------------------------
def _c(i: Any = 7, **over: Any) -> str:
    return call_frame(i, **over)


def _call_without(key: str, i: Any = 7) -> str:
    msg = {"k": "call", "i": i, "f": "echo", "a": ["x"], "kw": {}}
    del msg[key]
    return json.dumps(msg)


# (frame, expected): "notice" = a notice; int = an err carrying that request id;
# "either" = a notice or an err with the message's id (unknown kinds carry no request).
BAD_FRAMES: list[Any] = [
    pytest.param('{"k":"call","i":7,"f":"echo",', "notice", id="malformed-json"),
    pytest.param("", "notice", id="empty-text"),
    pytest.param('\u00ff\u2603 not json', "notice", id="not-json"),
    pytest.param('[{"k":"call","i":7,"f":"echo","a":["x"],"kw":{}}]', "notice", id="json-array"),
    pytest.param('"call"', "notice", id="json-string"),
    pytest.param("null", "notice", id="json-null"),
    pytest.param("42", "notice", id="json-number"),
    pytest.param(_c("7"), "notice", id="id-string"),
    pytest.param(_c(7.0), "notice", id="id-float-integral"),
    pytest.param(_c(7.5), "notice", id="id-float"),
    pytest.param(_c(-7), "notice", id="id-negative"),
    pytest.param(_c(2**70), "notice", id="id-huge"),
    pytest.param(_c(2**53), "notice", id="id-2**53"),
    pytest.param(_c(True), "notice", id="id-bool"),
    pytest.param(_c(None), "notice", id="id-null"),
    pytest.param(_c([7]), "notice", id="id-list"),
    pytest.param(_call_without("i"), "notice", id="id-missing"),
    pytest.param(_c(7, fn=12), 7, id="f-int"),
    pytest.param(_c(7, fn=None), 7, id="f-null"),
    pytest.param(_c(7, fn=["echo"]), 7, id="f-list"),
    pytest.param(_c(7, fn="e" * 10_000), 7, id="f-too-long"),
    pytest.param(_call_without("f"), 7, id="f-missing"),
    pytest.param(_c(7, args={"value": 1}), 7, id="a-dict"),
    pytest.param(_c(7, args="x"), 7, id="a-string"),
    pytest.param(_c(7, kwargs=["x"]), 7, id="kw-list"),
    pytest.param(_c(7, kwargs="x"), 7, id="kw-string"),
    pytest.param(_c(7, w=-1), 7, id="w-negative"),
    pytest.param(_c(7, w="3"), 7, id="w-string"),
    pytest.param(_c(7, w=2**70), 7, id="w-huge"),
    pytest.param(_c(7, w=True), 7, id="w-bool"),
    pytest.param(_c(7, k="bogus"), "either", id="unknown-kind"),
    pytest.param('{"i":7,"f":"echo","a":[],"kw":{}}', "either", id="kind-missing"),
    pytest.param('{"k":17,"i":7}', "either", id="kind-int"),
    pytest.param('{"k":["call"],"i":7}', "either", id="kind-list"),
    pytest.param('{"k":"ok","i":7,"v":1}', "either", id="server-kind-ok"),
    pytest.param('{"k":"cancel","i":"7"}', "notice", id="cancel-id-string"),
    pytest.param('{"k":"credit","i":7,"n":0}', "either", id="credit-zero"),
    pytest.param('{"k":"credit","i":7,"n":-5}', "either", id="credit-negative"),
    pytest.param('{"k":"ping"}', "notice", id="ping-without-token"),
    pytest.param('{"k":"ping","t":"x"}', "notice", id="ping-token-string"),
    pytest.param('{"k":"auth","token":"x"}', "notice", id="auth-again"),
    pytest.param(b'{"k":"call","i":7,"f":"echo","a":["x"],"kw":{}}', "notice", id="binary-frame"),
]


def _check_complaint(msg: dict[str, Any], expected: Any, frame: Any) -> None:
    if expected == "notice" or (expected == "either" and msg.get("k") == "notice"):
        assert msg.get("k") == "notice", f"expected a notice for {frame!r:.200}, got {msg!r}"
        assert isinstance(msg.get("msg"), str) and msg["msg"], msg
        return
    want_id = 7 if expected == "either" else expected
    assert msg.get("k") == "err" and msg.get("i") == want_id, f"expected an err for id {want_id}, got {msg!r}"
    err = msg.get("e")
    assert isinstance(err, dict) and isinstance(err.get("type"), str) and err["type"], msg
    assert isinstance(err.get("message"), str) and err["message"], msg


@pytest.mark.parametrize(("frame", "expected"), BAD_FRAMES)
def test_bad_message_gets_err_or_notice_and_connection_stays_usable(
        server: Served, open_proxy: Any, raw_sockets: list[Any], frame: Any, expected: Any) -> None:
    """Each malformed or mistyped message gets one err (with its id) or notice; that connection and another proxy keep working."""
    healthy = open_proxy(server)
    with Hammer(healthy):
        ws = open_authed(server)
        raw_sockets.append(ws)
        if isinstance(frame, bytes):
            ws.send_binary(frame)
        else:
            ws.send(frame)
        replies = raw_echo(ws, 1000)
        assert len(replies) == 1, f"expected exactly one complaint, got {replies!r}"
        _check_complaint(replies[0], expected, frame)
        # ...and the same connection still serves a second ordinary call
        assert raw_echo(ws, 1001, [1, {"a": None}]) == []
    assert server.rpc.connection_count == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("slow_fn", ["slow", "aslow"])
def test_duplicate_id_in_flight_is_rejected_and_original_call_answers(
        server: Served, open_proxy: Any, raw_sockets: list[Any], slow_fn: str) -> None:
    """A call reusing an in-flight id gets a notice (never an err on that id); the first call still gets its own result."""
    healthy = open_proxy(server)
    with Hammer(healthy):
        ws = open_authed(server)
        raw_sockets.append(ws)
        ws.send(call_frame(5, slow_fn, [0.5]))
        ws.send(call_frame(5, "echo", ["duplicate"]))
        ws.send(call_frame(5, 12))  # malformed *and* reusing the in-flight id
        msgs: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while not any(m.get("i") == 5 for m in msgs):
            msgs.append(recv_msg(ws, deadline - time.monotonic()))
        assert [m for m in msgs if m.get("i") == 5] == [{"k": "ok", "i": 5, "v": 0.5}], msgs
        notices = [m for m in msgs if m.get("k") == "notice"]
        assert len(notices) == 2 and len(msgs) == 3, msgs
        assert raw_echo(ws, 6) == []  # no late second answer for id 5 either
        # the id is free again once the first call has finished
        assert raw_echo(ws, 5, "reused") == []


def test_function_of_another_namespace_is_not_found_and_lists_nothing(
        server: Served, open_proxy: Any, raw_sockets: list[Any]) -> None:
    """Calling 'reset' (namespace admin) from DEFAULT is FunctionNotFound naming no other function; the connection lives on."""
    names = all_function_names(server.rpc)  # type: ignore[attr-defined]
    healthy = open_proxy(server)
    with Hammer(healthy):
        ws = open_authed(server)
        raw_sockets.append(ws)
        for call_id, fn in enumerate(["reset", "left_only", "right_only"], start=40):
            ws.send(call_frame(call_id, fn, [], {}))
            msg = recv_msg(ws)
            assert msg["k"] == "err" and msg["i"] == call_id, msg
            assert msg["e"]["type"] == "FunctionNotFound", msg
            assert not names_in(msg["e"]["message"] + msg["e"].get("traceback", ""), names - {fn}), msg
        assert raw_echo(ws, 50) == []
    # the public client does not even offer it
    assert "reset" not in healthy
    with pytest.raises(AttributeError):
        healthy.reset  # noqa: B018
    # a connection of namespace admin may call it
    admin = open_authed(server, namespace="admin")
    raw_sockets.append(admin)
    admin.send(call_frame(1, "reset", [], {"force": True}))
    assert recv_msg(admin) == {"k": "ok", "i": 1, "v": "reset force=True"}


def test_get_registered_functions_lists_only_own_namespace(server: Served, raw_sockets: list[Any]) -> None:
    """get_registered_functions (and the welcome) on a DEFAULT connection list only DEFAULT functions."""
    rpc = server.rpc  # type: ignore[attr-defined]
    expected = {d["name"] for d in rpc.get_registered_functions("DEFAULT")}
    assert expected & OTHER_NAMESPACE_NAMES == set()
    ws = open_raw(server)
    raw_sockets.append(ws)
    _, _, welcome = handshake(ws)
    assert {d["name"] for d in welcome["fs"]} == expected
    ws.send(call_frame(3, "get_registered_functions", [], {}))
    msg = recv_msg(ws)
    assert msg["k"] == "ok" and msg["i"] == 3, msg
    listed = msg["v"]
    assert {d["name"] for d in listed} == expected
    assert {d["namespace"] for d in listed} == {"DEFAULT"}
    assert not names_in(json.dumps(listed), OTHER_NAMESPACE_NAMES)


def test_get_registered_functions_with_arguments_is_a_type_error(server: Served, raw_sockets: list[Any]) -> None:
    """A hand-built call of the builtin with arguments gets TypeError (it takes none, as its
    description says); the connection carries on."""
    ws = open_raw(server)
    raw_sockets.append(ws)
    handshake(ws)
    ws.send(call_frame(4, "get_registered_functions", ["DEFAULT"], {}))
    ws.send(call_frame(5, "get_registered_functions", [], {"namespace": "admin"}))
    for call_id in (4, 5):
        msg = recv_msg(ws)
        assert msg["k"] == "err" and msg["i"] == call_id and msg["e"]["type"] == "TypeError", msg
        assert "takes no arguments" in msg["e"]["message"]
    ws.send(call_frame(6, "get_registered_functions", [], {}))
    assert recv_msg(ws)["k"] == "ok"


# --- frames claiming huge lengths --------------------------------------------------------
_HUGE = 2**62


def _trickle_until_closed(ws: websocket.WebSocket, mask: bytes, offset: int, limit: int, within: float
                          ) -> tuple[list[bytes], PeerClosed, int]:
    """Keep feeding valid (masked, ASCII) payload until the server closes, at most *limit* bytes."""
    chunk = b"a" * 4096
    sent = offset
    deadline = time.monotonic() + within
    while sent < limit and time.monotonic() < deadline:
        readable, _, _ = select.select([ws.sock], [], [], 0.01)
        if readable:
            break
        if not send_quietly(ws, mask_bytes(chunk, mask, sent)):
            break
        sent += len(chunk)
    frames, closed = read_until_closed(ws, within=max(0.5, deadline - time.monotonic()))
    return frames, closed, sent


def test_huge_length_frame_before_auth_closes_only_that_socket(
        server: Served, open_proxy: Any, raw_sockets: list[Any]) -> None:
    """A pre-auth frame declaring 2**62 bytes is cut off (well before the 10 s auth deadline); other proxies carry on."""
    names = all_function_names(server.rpc)  # type: ignore[attr-defined]
    healthy = open_proxy(server)
    with Hammer(healthy):
        ws = open_raw(server)
        raw_sockets.append(ws)
        _, hello = recv_frame(ws)
        header, mask = masked_frame_header(_HUGE)
        start = time.monotonic()
        prefix = b'{"k":"auth","token":"'
        assert send_quietly(ws, header + mask_bytes(prefix, mask, 0))
        assert healthy.echo("during") == "during"
        frames, _, sent = _trickle_until_closed(ws, mask, len(prefix), limit=1 << 20, within=3.0)
        assert time.monotonic() - start < 3.0
        assert sent < 1 << 20, "the server kept reading far past the pre-auth frame limit"
        assert not names_in(b"".join([hello, *frames]).decode("utf-8", "replace"), names)
    assert server.rpc.connection_count == 1  # type: ignore[attr-defined]


def test_huge_length_frame_after_auth_closes_only_that_connection(
        make_server: Callable[..., Served], open_proxy: Any, raw_sockets: list[Any]) -> None:
    """After auth, a frame declaring 2**62 bytes is cut off at max_message_size; only that connection closes."""
    served = make_server(max_message_size=64 * 1024)
    healthy = open_proxy(served)
    with Hammer(healthy):
        ws = open_authed(served)
        raw_sockets.append(ws)
        assert wait_for(lambda: served.rpc.connection_count == 2)  # type: ignore[attr-defined]
        header, mask = masked_frame_header(_HUGE)
        prefix = b'{"k":"call","i":1,"f":"echo","a":["'
        assert send_quietly(ws, header + mask_bytes(prefix, mask, 0))
        assert healthy.echo("during") == "during"
        frames, _, sent = _trickle_until_closed(ws, mask, len(prefix), limit=8 << 20, within=5.0)
        assert sent < 8 << 20, "the server kept reading far past max_message_size"
        assert all(json.loads(f).get("i") != 1 for f in frames), frames
        assert wait_for(lambda: served.rpc.connection_count == 1)  # type: ignore[attr-defined]


def test_stalled_huge_frame_after_auth_is_dropped_by_keepalive(
        make_server: Callable[..., Served], open_proxy: Any, raw_sockets: list[Any]) -> None:
    """A frame declaring 2**62 bytes that then stalls is dropped by the keepalive (default size limits); others carry on."""
    served = make_server(ping_interval=0.3, ping_timeout=0.3)
    healthy = open_proxy(served)
    with Hammer(healthy):
        ws = open_authed(served)
        raw_sockets.append(ws)
        header, mask = masked_frame_header(_HUGE)
        start = time.monotonic()
        assert send_quietly(ws, header + mask_bytes(b'{"k":"call","i":1,', mask, 0))
        read_until_closed(ws, within=4.0)
        assert time.monotonic() - start < 4.0
        assert wait_for(lambda: served.rpc.connection_count == 1)  # type: ignore[attr-defined]


# --- the secret stays secret -------------------------------------------------------------
def _secret_forms() -> list[str]:
    raw = SECRET.encode()
    forms = [SECRET, raw.hex(), base64.b64encode(raw).decode().rstrip("="),
             base64.urlsafe_b64encode(raw).decode().rstrip("="),
             AUTH_KEY.hex(), base64.urlsafe_b64encode(AUTH_KEY).decode().rstrip("=")]
    return forms


@pytest.mark.timeout(45)
def test_secret_never_logged_nor_shown(caplog: pytest.LogCaptureFixture) -> None:
    """Across good, refused and failing connections and calls, no log line, repr, error or wire frame contains the secret."""
    caplog.set_level(logging.DEBUG)
    for name in ("easyrpc", "websocket", "werkzeug", "simple_websocket", "flask_sock"):
        caplog.set_level(logging.DEBUG, logger=name)
    app, rpc, _ = build_app(auth_timeout=0.5)
    app_enc, rpc_enc, _ = build_app(encryption_enabled=True)
    served = start_server(app, [rpc])
    served_enc = start_server(app_enc, [rpc_enc])
    wire: list[bytes] = []
    shown: list[str] = [repr(rpc), str(rpc), repr(rpc.secret), str(rpc.secret), repr(vars(rpc))]
    try:
        with EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret=SECRET) as p:
            shown += [repr(p), str(p), repr(p.proxy_funcs)]
            assert p.echo("hi") == "hi"
            assert list(p.count_up(3)) == [0, 1, 2]
            with pytest.raises(KeyError) as err:
                p.fail("KeyError", "k")
            shown += [str(err.value), repr(err.value), getattr(err.value, "remote_traceback", "")]
            with pytest.raises(AttributeError) as nf:
                p.reset  # noqa: B018
            shown += [str(nf.value), repr(nf.value)]
        with EasyRpcProxy.create(served_enc.host, served_enc.port, "/ws/test", server_secret=SECRET,
                                 encryption_enabled=True) as pe:
            assert pe.echo({"enc": True}) == {"enc": True}
        for bad in (dict(server_secret="wrong-secret"), dict(server_secret=SECRET, encryption_enabled=True)):
            with pytest.raises(AuthenticationError) as auth_err:
                EasyRpcProxy.create(served.host, served.port, "/ws/test", **bad)  # type: ignore[arg-type]
            shown += [str(auth_err.value), repr(auth_err.value)]
        # raw peers: a successful handshake (recording everything on the wire), forged and silent ones
        ws = open_raw(served)
        try:
            hello, token, welcome = handshake(ws)
            wire += [json.dumps(hello).encode(), token.encode(), json.dumps(welcome).encode()]
            payload = token.split(".")[1]
            wire.append(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            ws.send(call_frame(1, "reset", [], {}))
            not_found = recv_msg(ws)
            assert not_found["e"]["type"] == "FunctionNotFound"
            wire.append(json.dumps(not_found).encode())
            ws.send("{not json")
            wire.append(json.dumps(recv_msg(ws)).encode())
        finally:
            ws.close()
        for make in (lambda h: Secret("wrong").client_token(h["nonce"], new_nonce(), "DEFAULT", False),
                     lambda h: craft_token(h, iat=int(time.time()) - 120, exp=int(time.time()) - 90)):
            ws = open_raw(served)
            try:
                _, _, reply = handshake(ws, make)
                wire.append(json.dumps(reply).encode())
            finally:
                ws.close()
        silent = open_raw(served)
        try:
            read_until_closed(silent, within=3.0)
        finally:
            silent.close()
    finally:
        served.stop()
        served_enc.stop()
    records = [r for r in caplog.records if r.name.startswith("easyrpc")]
    assert any(r.levelno == logging.WARNING for r in records), "expected easyrpc warnings (refusals) to be captured"
    assert any("refused" in r.getMessage() for r in records)
    texts = {"log": caplog.text, "shown": "\n".join(shown),
             "wire": b"\n".join(wire).decode("utf-8", "replace")}
    for where, text in texts.items():
        for form in _secret_forms():
            assert form not in text, f"the secret (as {form!r}) appears in {where}"


def test_secret_is_not_in_socket_stream(server: Served) -> None:
    """Nothing the proxy sends or receives during handshake and calls contains the secret bytes."""
    captured: list[bytes] = []
    original_send, original_recv = socket.socket.send, socket.socket.recv

    def spy_send(self: socket.socket, data: Any, *args: Any) -> int:
        captured.append(bytes(data))
        return original_send(self, data, *args)

    def spy_recv(self: socket.socket, *args: Any) -> bytes:
        data = original_recv(self, *args)
        captured.append(bytes(data))
        return data

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "send", spy_send)
        mp.setattr(socket.socket, "recv", spy_recv)
        with EasyRpcProxy.create(server.host, server.port, "/ws/test", server_secret=SECRET) as p:
            assert p.echo("x") == "x"
    assert captured, "the spy saw no traffic"
    blob = b"".join(captured)
    assert SECRET.encode() not in blob
    assert AUTH_KEY not in blob
