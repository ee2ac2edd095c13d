"""The sans-I/O core, tested without sockets: codec, envelopes, signatures, errors, tokens."""

from __future__ import annotations

import ast
import functools
import hashlib
import hmac
import inspect
import json
import pathlib
import pickle
import time
from typing import Any

import jwt
import pytest

import easyrpc
from easyrpc import _codec
from easyrpc import _protocol as proto
from easyrpc._handshake import Secret, new_nonce
from easyrpc._signature import OMITTED, callable_kind, describe_function, spec_from_description, wire_arguments
from easyrpc.exceptions import (
    AuthenticationError,
    ProtocolError,
    RemoteError,
    SerializationError,
    make_remote_error,
)

CORE = ["_protocol.py", "_codec.py", "_deep_json.py", "_values.py", "_parts.py", "_convert.py", "_signature.py",
        "_handshake.py", "exceptions.py",
        "_core/cipher.py", "_core/close_codes.py", "_core/credit.py", "_core/frames.py", "_core/handshake.py",
        "_core/keepalive.py", "_core/metadata.py", "_core/requests.py", "_core/session.py", "_error_wire.py",
        "_core/masking.py", "_core/callbacks.py", "_typeinfo.py", "_stubgen/exprs.py", "_stubgen/render.py",
        "_stubgen/check.py"]
FORBIDDEN = {"socket", "threading", "asyncio", "flask", "flask_sock", "simple_websocket", "websocket", "selectors", "ssl"}


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_io(module: str) -> None:
    path = pathlib.Path(easyrpc.__file__).parent / module
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


def test_public_all_lists_exist() -> None:
    import easyrpc.aio
    import easyrpc.exceptions
    import easyrpc.interceptors
    import easyrpc.proxy
    import easyrpc.server

    for mod in (easyrpc, easyrpc.exceptions, easyrpc.proxy, easyrpc.server, easyrpc.aio, easyrpc.interceptors):
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"


# --- codec -------------------------------------------------------------------------------
def _nested(depth: int) -> list[Any]:
    root: list[Any] = []
    cur = root
    for _ in range(depth):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    return root


def test_codec_handles_any_depth() -> None:
    data = _codec.dumps(_nested(100_000))
    assert data == b"[" * 100_001 + b"]" * 100_001
    out = _codec.loads(data)
    depth = 0
    while out:
        out = out[0]
        depth += 1
    assert depth == 100_000


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**70, 1.25, -0.0, 1e300, "", "a\"b\\c\n\u2603\U0001f600", [], {},
    {"a": [1, {"b": None}], "": ""}, [[[], {}], [{"x": [1.5]}]],
])
def test_iterative_codec_matches_stdlib(value: Any) -> None:
    stdlib = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert _codec._encode_deep(value) == stdlib
    assert _codec._decode_deep(stdlib) == json.loads(stdlib)
    spaced = json.dumps(value, indent=2)
    assert _codec._decode_deep(spaced) == json.loads(spaced)


@pytest.mark.parametrize("bad", ["", "[1,", "[1 2]", '{"a" 1}', '{"a":1,}', "[1]x", "nul", "{1:2}", "[01]"])
def test_iterative_decoder_rejects_malformed_json(bad: str) -> None:
    with pytest.raises(ValueError):
        _codec._decode_deep(bad)


def test_codec_rejects_what_json_cannot_carry() -> None:
    cyc: list[Any] = []
    cyc.append(cyc)
    for value in ({1, 2}, object(), float("nan"), float("inf"), cyc, {(1, 2): 3}):
        with pytest.raises(SerializationError):
            _codec.dumps(value)
    deep_cycle = _nested(3000)
    deep_cycle[0].append(deep_cycle)
    with pytest.raises(SerializationError):
        _codec.dumps(deep_cycle)


@pytest.mark.parametrize("text", ["NaN", "[1,Infinity]", '{"a":-Infinity}', '{"k":"ok","i":1,"v":NaN}'])
def test_nan_and_infinities_are_refused_at_any_depth(text: str) -> None:
    """JSON has none; the encoder never writes them, and both decoders refuse them."""
    with pytest.raises(ValueError, match="is not JSON"):
        _codec.loads(text)
    deep = "[" * 3000 + text + "]" * 3000
    with pytest.raises(ValueError):
        _codec.loads(deep)


def test_lone_surrogates_are_escaped_not_invalid_utf8() -> None:
    data = _codec.dumps(["\ud800x"])
    data.decode("utf-8")  # valid UTF-8 on the wire
    assert _codec.loads(data) == ["\ud800x"]


@pytest.mark.parametrize("value", [
    "\ud83d\ude00", "\U0001f600", "\ud83d\U0001f600\ude00", "x\udbff\udc00y\ud800", "\\ud83d\\ude00",
    "\\\ud83d\ude00\"", {"\ud83d\ude00": ["\ud83d", "\ude00", "\ude00\ud83d"]},
])
def test_surrogate_code_points_round_trip_exactly(value: Any) -> None:
    """Two surrogate code points stay two; a real astral character stays one."""
    data = _codec.dumps(value)
    data.decode("utf-8")  # valid UTF-8 on the wire, whatever the text holds
    assert json.loads(data) is not None  # and still JSON any decoder reads
    out = _codec.loads(data)
    assert out == value
    if isinstance(value, str):
        assert len(out) == len(value)
    deep: list[Any] = _nested(3000)
    deep[0].append(value)
    assert _codec.loads(_codec.dumps(deep))[0][1] == value


def test_escaped_surrogate_pairs_from_other_encoders_still_join() -> None:
    """Only easyrpc's marked messages keep escaped pairs apart: standard JSON reads as JSON says."""
    assert _codec.loads(json.dumps(["\U0001f600"])) == ["\U0001f600"]
    assert _codec.loads(b' {"a": "\\ud83d\\ude00"}\n') == {"a": "\U0001f600"}
    assert _codec.loads(_codec.dumps(["\U0001f600", "\ud800"])) == ["\U0001f600", "\ud800"]
    for bad in (b"", b"\t", b"[1] x", b"\t[1", b"{1:2}"):
        with pytest.raises(ValueError):
            _codec.loads(bad)


@pytest.mark.parametrize("value", [
    {1: "a", "1": "b"}, {True: 1, "true": 2}, {None: 1, "null": 2}, {1.5: 0, "1.5": 1},
    [{"ok": 1}, {"x": {2: "a", "2": "b"}}], ({"t": ({0: 1, "0": 2},)},),
])
def test_dict_keys_that_collide_as_json_text_are_refused(value: Any) -> None:
    with pytest.raises(SerializationError, match="JSON key"):
        _codec.dumps(value)
    deep: list[Any] = _nested(3000)
    deep[0].append(value)
    with pytest.raises(SerializationError, match="JSON key"):
        _codec.dumps(deep)


def test_non_str_keys_travel_as_their_json_text() -> None:
    """int, float, bool and None keys arrive as JSON writes them, as before; no collision, no error."""
    value = {1: "a", 2.5: "b", False: "c", None: "d", "x": {3: [{"4": 4}]}}
    assert _codec.loads(_codec.dumps(value)) == {"1": "a", "2.5": "b", "false": "c", "null": "d", "x": {"3": [{"4": 4}]}}


# --- envelopes ---------------------------------------------------------------------------
def test_payload_never_collides_with_the_envelope() -> None:
    for value in ({"error": "x"}, {"k": "end", "i": 1}, "end", {"v": 1, "k": "err"}):
        msg = proto.parse_server(proto.encode_result(9, value))
        assert msg == proto.Result(9, value)
        item = proto.parse_server(proto.encode_item(9, value))
        assert item == proto.Item(9, value)


def test_call_round_trip() -> None:
    msg = proto.parse_client(proto.encode_call(3, "f", [1, None], {"k": {"error": 1}}, 16))
    assert msg == proto.Call(3, "f", [1, None], {"k": {"error": 1}}, 16)


@pytest.mark.parametrize("obj", [
    [], "x", 1, {"k": "call"}, {"k": "call", "i": "1", "f": "f"}, {"k": "call", "i": -1, "f": "f"},
    {"k": "call", "i": 2**70, "f": "f"}, {"k": "call", "i": True, "f": "f"}, {"k": "call", "i": 1.0, "f": "f"},
    {"k": "call", "i": 1, "f": 3}, {"k": "call", "i": 1, "f": "f", "a": {}}, {"k": "call", "i": 1, "f": "f", "kw": []},
    {"k": "call", "i": 1, "f": "f", "w": -1}, {"k": "credit", "i": 1, "n": 0}, {"k": "nope"}, {"k": None},
    {"k": "auth", "token": 5}, {"k": "call", "i": 1, "f": "x" * 1000},
])
def test_malformed_client_messages_are_protocol_errors(obj: Any) -> None:
    with pytest.raises(ProtocolError):
        proto.parse_client(json.dumps(obj))


@pytest.mark.parametrize("data", [b"\xff\xfe", b"{", b"", "not json", b'{"k":"call","i":1,"f":"f","a":[NaN]}',
                                  b'{"k":"ok","i":1,"v":Infinity}'])
def test_undecodable_frames_are_protocol_errors(data: Any) -> None:
    with pytest.raises(ProtocolError):
        proto.parse_client(data)
    with pytest.raises(ProtocolError):
        proto.parse_server(data)


def test_request_id_extraction_is_defensive() -> None:
    assert proto.request_id({"i": 5}) == 5
    for bad in (None, [], {"i": "5"}, {"i": -1}, {"i": True}, {"i": 2**60}):
        assert proto.request_id(bad) is None




# --- errors ------------------------------------------------------------------------------
def test_errors_round_trip_with_builtin_mixins() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        wire = proto.error_to_wire(exc)
    err = proto.error_from_wire(json.loads(json.dumps(wire)))
    assert isinstance(err, KeyError) and isinstance(err, RemoteError)
    assert err.remote_type == "KeyError" and err.remote_message == "'missing'"
    assert "Traceback" in err.remote_traceback
    for name, builtin in (("ValueError", ValueError), ("OSError", OSError), ("TimeoutError", TimeoutError)):
        assert isinstance(make_remote_error(name, "m"), builtin)
    custom = make_remote_error("mymod.MyError", "m")
    assert type(custom) is RemoteError
    assert not isinstance(make_remote_error("SystemExit", "m"), SystemExit)  # never a BaseException mixin
    with pytest.raises(ProtocolError):
        proto.error_from_wire({"type": 5})


def test_control_flow_builtins_are_never_mixed_in() -> None:
    """A remote StopIteration must not end a local loop or generator (nor the others theirs)."""
    for name in ("StopIteration", "StopAsyncIteration", "GeneratorExit", "KeyboardInterrupt", "SystemExit",
                 "BaseExceptionGroup", "ExceptionGroup"):
        err = make_remote_error(name, "m")
        assert type(err) is RemoteError, name

    def gen() -> Any:
        yield 1
        raise make_remote_error("StopIteration", "m")

    with pytest.raises(RemoteError):
        list(gen())


def test_os_errors_keep_errno_strerror_and_filenames() -> None:
    try:
        open("/nonexistent/easyrpc-core-test")  # noqa: SIM115
    except OSError as exc:
        wire = proto.error_to_wire(exc)
    err = proto.error_from_wire(json.loads(json.dumps(wire)))
    assert isinstance(err, FileNotFoundError) and isinstance(err, RemoteError)
    assert (err.errno, err.strerror, err.filename) == (2, "No such file or directory", "/nonexistent/easyrpc-core-test")
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.errno, again.filename) == (type(err), 2, err.filename)
    assert proto.error_passthrough(err) == wire  # forwarded by a chained server as it came
    two = proto.error_from_wire(proto.error_to_wire(OSError(18, "cross", b"/a", None, 3)))
    assert (two.errno, two.strerror, two.filename, two.filename2) == (18, "cross", "/a", 3)  # type: ignore[attr-defined]
    plain = proto.error_from_wire(proto.error_to_wire(OSError("no errno")))
    assert plain.errno is None and plain.strerror is None  # type: ignore[attr-defined]
    for bad in ({"errno": "2"}, {"errno": True}, {"filename": [1]}, "x"):
        with pytest.raises(ProtocolError):
            proto.error_from_wire({"type": "OSError", "message": "m", "os": bad})


def test_a_remote_serialization_error_is_a_serialization_error() -> None:
    err = proto.error_from_wire(proto.error_wire("SerializationError", "the result of f cannot be sent"))
    assert isinstance(err, SerializationError) and isinstance(err, TypeError) and isinstance(err, RemoteError)
    assert isinstance(pickle.loads(pickle.dumps(err)), SerializationError)


def test_error_hierarchy() -> None:
    assert issubclass(easyrpc.ConnectionLost, ConnectionError)
    assert issubclass(easyrpc.CallTimeout, TimeoutError)
    assert issubclass(easyrpc.SerializationError, TypeError)
    assert issubclass(easyrpc.FunctionNotFound, RemoteError)
    for cls in (AuthenticationError, ProtocolError, RemoteError, easyrpc.ConnectionLost):
        assert issubclass(cls, easyrpc.EasyRpcError)


# --- signatures --------------------------------------------------------------------------
def sample(a: int, b: list[str] = "x", /, c=3, *args: float, d, e=None, **kw) -> dict:  # type: ignore[no-untyped-def]
    """Doc."""


def test_signature_export_and_import_match_the_origin() -> None:
    desc = describe_function(sample, "sample", "NS")
    spec = spec_from_description(json.loads(json.dumps(desc)))
    # this module uses PEP 563, so annotations are text already; they are shown unquoted
    assert str(spec.signature) == "(a: int, b: list[str] = 'x', /, c=3, *args: float, d, e=None, **kw) -> dict"
    assert spec.doc == "Doc."
    assert desc["signature"] == str(spec.signature)


def test_wire_arguments_omit_defaults_and_keep_order() -> None:
    spec = spec_from_description(describe_function(sample, "sample", "NS"))
    assert wire_arguments(spec, (1,), {"d": 4}) == ([1], {"d": 4})
    assert wire_arguments(spec, (1, 2, 3, 4, 5), {"d": 4, "z": 9}) == ([1, 2, 3, 4, 5], {"d": 4, "z": 9})
    assert wire_arguments(spec, (1, OMITTED), {"c": 7, "d": 1}) == ([1], {"c": 7, "d": 1})
    with pytest.raises(TypeError):
        wire_arguments(spec, (), {})


@pytest.mark.parametrize("desc", [
    {"name": "os.system", "kind": "function", "parameters": []},
    {"name": "import", "kind": "function", "parameters": []},
    {"name": "f", "kind": "function", "parameters": [{"name": "a=__import__('os')", "kind": "POSITIONAL_OR_KEYWORD"}]},
    {"name": "f", "kind": "function", "parameters": [{"name": "a", "kind": "EVIL"}]},
    {"name": "f", "kind": "function", "parameters": [{"name": "a", "kind": "POSITIONAL_OR_KEYWORD", "default": 5}]},
    {"name": "f", "kind": "function", "parameters": [{"name": "a", "kind": "POSITIONAL_OR_KEYWORD"}] * 2},
    {"name": "f", "kind": "coroutine", "parameters": []},
    {"name": "f", "kind": "function", "parameters": "a, b"},
    {"name": "ｆ", "kind": "function", "parameters": []},
    "f(a, b)",
])
def test_hostile_descriptions_are_rejected(desc: Any) -> None:
    with pytest.raises(ValueError):
        spec_from_description(desc)


def test_defaults_and_annotations_are_text_never_evaluated() -> None:
    payload = "__import__('os').system('echo pwned')"
    spec = spec_from_description({"name": "f", "kind": "function", "parameters": [
        {"name": "a", "kind": "POSITIONAL_OR_KEYWORD", "default": payload, "annotation": payload}]})
    param = spec.signature.parameters["a"]
    assert repr(param.default) == payload and repr(param.annotation) == payload
    from easyrpc._proxy_base import make_function

    fn = make_function(spec, lambda *a, **k: (a, k))
    assert fn() == ((), {"a": OMITTED}) or fn() == ((OMITTED,), {})
    assert str(inspect.signature(fn)) == f"(a: {payload} = {payload})"


class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("broken")


class _AsyncCall:
    async def __call__(self, x: int) -> int:
        return x


class _AsyncGenCall:
    async def __call__(self) -> Any:
        yield 1


class _GenCall:
    def __call__(self) -> Any:
        yield 1


async def _coro(a: int, b: int) -> int:
    return a + b


def test_callable_kind_sees_through_partials_and_call_methods() -> None:
    assert callable_kind(_AsyncCall()) == "async"
    assert callable_kind(functools.partial(_coro, 1)) == "async"
    assert callable_kind(functools.partial(functools.partial(_AsyncCall()), x=1)) == "async"
    assert callable_kind(_AsyncGenCall()) == "agen"
    assert callable_kind(_GenCall()) == "gen"
    assert callable_kind(_AsyncCall().__call__) == "async"
    assert callable_kind(sample) == "sync" and callable_kind(dict) == "sync" and callable_kind(len) == "sync"
    desc = describe_function(_AsyncGenCall(), "g", "NS")
    assert desc["kind"] == "generator" and desc["is_async"] is True
    assert describe_function(_AsyncCall(), "c", "NS")["is_async"] is True


def test_a_default_or_annotation_whose_repr_raises_is_shown_as_a_placeholder() -> None:
    def f(a: _BrokenRepr() = _BrokenRepr()) -> None:  # type: ignore[valid-type]  # noqa: B008
        pass

    f.__annotations__["a"] = _BrokenRepr()  # PEP 563 made it text: put the object back
    desc = describe_function(f, "f", "NS")
    assert desc["parameters"][0]["default"] == "<_BrokenRepr object (repr() failed)>"
    assert desc["parameters"][0]["annotation"] == "<_BrokenRepr object (repr() failed)>"
    assert "repr() failed" in desc["signature"]


@pytest.mark.parametrize(("params", "bad"), [
    ("_func_impl_, DEFAULT_x=1, x=2", {"nope": 1}),
    ("_func_, /, *RETURNHINT, **HINT_a", {"HINT_a": 1}),
    ("a, DEFAULT_a=0", {"b": 1}),
    ("DEFAULT_b=1, b=2", {"c": 1}),
])
@pytest.mark.parametrize("is_async", [False, True])
def test_proxy_functions_allow_any_parameter_names(params: str, bad: dict[str, Any], is_async: bool) -> None:
    """Names makefun's generated code uses (see its source) still bind like a local call
    (for an async one, where it is awaited) and a call that does not bind reaches nothing."""
    import asyncio

    from easyrpc._proxy_base import make_function

    namespace: dict[str, Any] = {}
    exec(f"def origin({params}): pass", namespace)  # noqa: S102 - test input, not wire text
    spec = spec_from_description(describe_function(namespace["origin"], "DEFAULT_f", "NS"))
    seen: list[Any] = []

    def impl(*args: Any, **kwargs: Any) -> Any:
        seen.append(wire_arguments(spec, args, kwargs))
        return "done"

    async def aimpl(*args: Any, **kwargs: Any) -> Any:
        return impl(*args, **kwargs)

    fn = make_function(spec, aimpl if is_async else impl)

    def call(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs)) if is_async else fn(*args, **kwargs)

    assert fn.__name__ == "DEFAULT_f" and str(inspect.signature(fn)) == f"({params})"
    assert inspect.iscoroutinefunction(fn) is is_async
    first = next(iter(spec.call_signature.parameters))
    assert call(1) == "done"
    assert seen[0] in (([1], {}), ([], {first: 1}))
    with pytest.raises(TypeError):
        call(**bad)
    assert len(seen) == 1  # nothing reached the implementation


# --- handshake ---------------------------------------------------------------------------
def test_tokens_bind_to_the_nonce_and_the_secret() -> None:
    s = Secret("abcd1234")
    nonce, cn = new_nonce(), new_nonce()
    token = s.client_token(nonce, cn, "DEFAULT", False)
    assert s.check_client_token(token, nonce)["ns"] == "DEFAULT"
    with pytest.raises(AuthenticationError):
        s.check_client_token(token, new_nonce())  # replay on another connection
    with pytest.raises(AuthenticationError):
        Secret("other").check_client_token(token, nonce)
    key = hmac.new(b"abcd1234", b"easyrpc/v1/auth", hashlib.sha256).digest()  # as docs/protocol.md derives it
    expired = jwt.encode({"v": proto.PROTOCOL_VERSION, "sn": nonce, "cn": cn, "ns": "D", "enc": False,
                          "iat": int(time.time()) - 100, "exp": int(time.time()) - 60}, key, algorithm="HS256")
    with pytest.raises(AuthenticationError):
        s.check_client_token(expired, nonce)
    unsigned = jwt.encode({"v": proto.PROTOCOL_VERSION, "sn": nonce}, None, algorithm="none")
    with pytest.raises(AuthenticationError):
        s.check_client_token(unsigned, nonce)


def test_secret_never_shows_itself() -> None:
    s = Secret("abcd1234")
    assert "abcd1234" not in repr(s) and "abcd1234" not in str(s)


def test_frame_cipher_detects_tamper_replay_and_reorder() -> None:
    s = Secret("abcd1234")
    sn, cn = new_nonce(), new_nonce()
    server, client = s.frame_cipher(sn, cn, True), s.frame_cipher(sn, cn, False)
    f1, f2 = client.seal(b"one"), client.seal(b"two")
    assert server.open(f1) == b"one"
    with pytest.raises(ProtocolError):
        server.open(f1)  # replay
    tampered = bytearray(f2)
    tampered[0] ^= 1
    with pytest.raises(ProtocolError):
        server.open(bytes(tampered))
    assert server.open(f2) == b"two"
    assert client.open(server.seal(b"back")) == b"back"
    other = Secret("abcd1234").frame_cipher(new_nonce(), cn, True)
    with pytest.raises(ProtocolError):
        other.open(client.seal(b"x"))  # a key from another handshake


def test_every_public_name_has_a_docstring() -> None:
    import easyrpc.aio
    import easyrpc.interceptors
    import easyrpc.proxy
    import easyrpc.server

    missing = []
    for mod in (easyrpc, easyrpc.exceptions, easyrpc.proxy, easyrpc.server, easyrpc.aio, easyrpc.interceptors):
        assert inspect.getdoc(mod), mod.__name__
        for name in mod.__all__:
            obj = getattr(mod, name)
            if name.startswith("__"):
                continue
            if not inspect.getdoc(obj):
                missing.append(f"{mod.__name__}.{name}")
            if inspect.isclass(obj) and obj.__module__.startswith("easyrpc"):
                for attr, value in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                    if (callable(func) or isinstance(func, property)) and not inspect.getdoc(func):
                        missing.append(f"{mod.__name__}.{name}.{attr}")
    assert missing == []


def test_an_item_may_carry_the_servers_smaller_stream_window() -> None:
    from easyrpc import _protocol as proto

    assert proto.parse_server(proto.encode_item(3, "x")) == proto.Item(3, "x", None)
    assert proto.parse_server(proto.encode_item(3, "x", 16)) == proto.Item(3, "x", 16)
    for bad in (0, -1, 1.5, "16", 2_000_000):
        with pytest.raises(ProtocolError, match="'w'"):
            proto.parse_server(b'{"k":"item","i":3,"v":1,"w":%s}' % json.dumps(bad).encode())
