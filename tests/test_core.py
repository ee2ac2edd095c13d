"""The sans-I/O core, tested without sockets: codec, envelopes, signatures, errors, tokens."""

from __future__ import annotations

import ast
import inspect
import json
import pathlib
import time
from typing import Any

import jwt
import pytest

import easyrpc
from easyrpc import _codec
from easyrpc import _protocol as proto
from easyrpc._handshake import Secret, new_nonce
from easyrpc._signature import OMITTED, describe_function, spec_from_description, wire_arguments
from easyrpc.exceptions import (
    AuthenticationError,
    ProtocolError,
    RemoteError,
    SerializationError,
    make_remote_error,
)

CORE = ["_protocol.py", "_codec.py", "_signature.py", "_handshake.py", "_frames.py", "exceptions.py"]
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
    # exceptions.py guards its class cache with a lock; that is its only thread use
    allowed = {"threading"} if module == "exceptions.py" else set()
    assert not (imported & FORBIDDEN) - allowed


def test_public_all_lists_exist() -> None:
    import easyrpc.aio
    import easyrpc.exceptions
    import easyrpc.proxy
    import easyrpc.server

    for mod in (easyrpc, easyrpc.exceptions, easyrpc.proxy, easyrpc.server, easyrpc.aio):
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


def test_lone_surrogates_are_escaped_not_invalid_utf8() -> None:
    data = _codec.dumps(["\ud800x"])
    data.decode("utf-8")  # valid UTF-8 on the wire
    assert _codec.loads(data) == ["\ud800x"]


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


@pytest.mark.parametrize("data", [b"\xff\xfe", b"{", b"", "not json"])
def test_undecodable_frames_are_protocol_errors(data: Any) -> None:
    with pytest.raises(ProtocolError):
        proto.parse_client(data)
    with pytest.raises(ProtocolError):
        proto.parse_server(data)


def test_request_id_extraction_is_defensive() -> None:
    assert proto.request_id({"i": 5}) == 5
    for bad in (None, [], {"i": "5"}, {"i": -1}, {"i": True}, {"i": 2**60}):
        assert proto.request_id(bad) is None


def test_pending_table() -> None:
    table: proto.PendingTable[str] = proto.PendingTable()
    a, b = table.add("a"), table.add("b")
    assert a != b and len(table) == 2
    assert table.pop(a) == "a" and table.pop(a) is None
    assert list(table) == [b] and table.get(b) == "b"
    assert table.pop(b) == "b" and len(table) == 0


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
    key = s._auth_key
    expired = jwt.encode({"v": 1, "sn": nonce, "cn": cn, "ns": "D", "enc": False,
                          "iat": int(time.time()) - 100, "exp": int(time.time()) - 60}, key, algorithm="HS256")
    with pytest.raises(AuthenticationError):
        s.check_client_token(expired, nonce)
    unsigned = jwt.encode({"v": 1, "sn": nonce}, None, algorithm="none")
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
    import easyrpc.proxy
    import easyrpc.server

    missing = []
    for mod in (easyrpc, easyrpc.exceptions, easyrpc.proxy, easyrpc.server, easyrpc.aio):
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
