"""Calls in the other direction, without sockets: the marks, the messages, the table."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from easyrpc import _protocol as proto
from easyrpc._core import callbacks as cbs
from easyrpc._core.session import ServerSession
from easyrpc.exceptions import ProtocolError


def _encode_with_callbacks(args: list[Any], kwargs: dict[str, Any]) -> tuple[bytes, list[Any]]:
    table: cbs.CallbackTable[Any, object] = cbs.CallbackTable()
    owner = object()

    def mark(value: Any) -> tuple[str, int] | None:
        return ("callback", table.register(value, owner)) if callable(value) else None

    return proto.encode_call(7, "f", args, kwargs, other=mark), [table, owner]


def test_a_callable_at_any_depth_becomes_a_marked_id() -> None:
    def a() -> None: ...

    def b() -> None: ...

    when = dt.date(2020, 2, 29)
    data, (table, owner) = _encode_with_callbacks([{"deep": [a]}], {"progress": b, "when": when})
    obj = json.loads(data)
    assert obj["a"] == [{"deep": [1]}] and obj["kw"]["progress"] == 2
    assert obj["x"] == {"callback": [["a", 0, "deep", 0], ["kw", "progress"]], "date": [["kw", "when"]]}
    assert table.find(1) is a and table.find(2) is b
    msg = proto.parse_client(data)
    assert isinstance(msg, proto.Call) and msg.kwargs["when"] == when
    assert [(key, cb_id) for _, key, cb_id in msg.callbacks or []] == [(0, 1), ("progress", 2)]
    assert table.release(owner) == 2 and table.find(1) is None


def test_a_call_without_callables_has_no_callback_places() -> None:
    msg = proto.parse_client(proto.encode_call(1, "f", [1], {"x": "callback"}))
    assert isinstance(msg, proto.Call) and msg.callbacks is None


@pytest.mark.parametrize("marks", [
    {"callback": [["a", 0]]},            # a string where an id must be
    {"callback": [["v", 0]]},            # not an argument
    {"callback": [["a"]]},               # the arguments themselves
    {"callback": [["a", 5]]},            # nowhere
    {"callback": []},
    {"callback": "a"},
])
def test_bad_callback_marks_are_a_protocol_error(marks: Any) -> None:
    raw = json.dumps({"k": "call", "i": 1, "f": "f", "a": ["x"], "kw": {}, "x": marks})
    with pytest.raises(ProtocolError):
        proto.parse_client(raw)


def test_cb_round_trip_and_answers() -> None:
    data = cbs.encode_callback(3, 9, [dt.time(1, 2)], {"k": 1}, 2.5)
    msg = cbs.parse_server(data)
    assert msg == cbs.Callback(3, 9, [dt.time(1, 2)], {"k": 1}, 2.5)
    assert cbs.parse_server(cbs.encode_callback(4, "on_event", [], {}, None)) == cbs.Callback(4, "on_event", [], {})
    assert cbs.parse_server(proto.encode("cbcancel", i=3)) == cbs.CallbackCancel(3)
    assert cbs.parse_client(json.loads(cbs.encode_callback_result(3, {"v": None}))) == cbs.CallbackResult(3, {"v": None})
    failure = cbs.parse_client(json.loads(cbs.encode_callback_failure(3, proto.error_wire("KeyError", "'x'"))))
    assert isinstance(failure, cbs.CallbackFailure) and isinstance(failure.error, KeyError)
    assert isinstance(cbs.parse_server(proto.encode_result(1, 2)), proto.Result)  # other kinds as before


@pytest.mark.parametrize("raw", [
    {"k": "cb", "i": 1, "f": 1.5, "a": [], "kw": {}},
    {"k": "cb", "i": 1, "f": "x" * 201},
    {"k": "cb", "i": -1, "f": 1},
    {"k": "cb", "i": 1, "f": 1, "a": {}},
    {"k": "cb", "i": 1, "f": 1, "t": 0},
    {"k": "cbcancel"},
    {"k": "nonsense"},
])
def test_malformed_server_calls_are_a_protocol_error(raw: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        cbs.parse_server(json.dumps(raw))


def test_the_session_hands_answers_on_and_refuses_bad_ones() -> None:
    session: ServerSession[Any, Any] = ServerSession(lambda name: None, 10)
    assert session.receive(cbs.encode_callback_result(5, 1)) == cbs.CallbackResult(5, 1)
    refusal = session.receive(json.dumps({"k": "cbok", "i": 5}))  # no value
    assert type(refusal).__name__ == "Notice"


def test_nothing_known_gets_a_refusal_that_names_nothing() -> None:
    assert cbs.not_found(12)[0] == "CallbackExpired"
    kind, message = cbs.not_found("secret_name")
    assert kind == "FunctionNotFound" and "secret_name" not in message


def test_the_table_keeps_offered_functions_apart_from_callbacks() -> None:
    table: cbs.CallbackTable[str, object] = cbs.CallbackTable()
    owner = object()
    cb_id = table.register("callback", owner)
    table.offer("on_event", "offered")
    assert table.find(cb_id) == "callback" and table.find("on_event") == "offered"
    assert table.find(str(cb_id)) is None and table.find(999) is None
    assert table.has_owners()
    table.release(owner)
    assert not table.has_owners() and table.find("on_event") == "offered"
    assert table.withdraw("on_event") and not table.withdraw("on_event")
