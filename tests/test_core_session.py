"""The server's message rules without sockets: ServerSession fed client messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from easyrpc import _protocol as proto
from easyrpc._core.session import BadText, Notice, Run, Send, ServerSession

pytestmark = pytest.mark.timeout(10)

FUNCTIONS = {"echo": "the echo registration", "count": "the count registration"}


def session(max_in_flight: int = 8) -> ServerSession[object, str]:
    return ServerSession(FUNCTIONS.get, max_in_flight)


def call(call_id: int, fn: str = "echo", **extra: Any) -> bytes:
    return json.dumps({"k": "call", "i": call_id, "f": fn, "a": [1], "kw": {}, **extra}).encode()


def failure(action: Any) -> tuple[int, str]:
    assert isinstance(action, Send), action
    msg = proto.parse_server(action.payload)
    assert isinstance(msg, proto.Failure), msg
    return msg.id, msg.error.remote_type


def test_a_call_of_a_known_function_runs_and_reserves_its_id() -> None:
    s = session()
    action = s.receive(call(1))
    assert isinstance(action, Run) and action.call.id == 1 and action.call.args == [1]
    assert action.reg == "the echo registration"
    assert 1 in s.tasks
    assert s.receive(call(1)) == Notice("request id 1 is already in flight; call ignored")
    task = object()
    s.started(1, task)
    assert not s.finished(1, object())  # another task of that id: not this one's to end
    assert s.finished(1, task)
    assert not s.finished(1, task)  # once
    assert isinstance(s.receive(call(1)), Run)  # the id is free again


def test_an_unknown_function_is_not_found_and_reserves_nothing() -> None:
    s = session()
    assert failure(s.receive(call(7, fn="nope"))) == (7, "FunctionNotFound")
    assert s.tasks == {}


def test_calls_past_max_in_flight_are_refused_as_busy() -> None:
    s = session(max_in_flight=2)
    assert isinstance(s.receive(call(1)), Run)
    assert isinstance(s.receive(call(2, fn="count", w=16)), Run)
    assert failure(s.receive(call(3))) == (3, "ServerBusy")
    assert failure(s.receive(call(4, fn="nope"))) == (4, "ServerBusy")  # busy is said first


def test_an_invalid_call_with_a_usable_id_is_refused_by_id_otherwise_noticed() -> None:
    s = session()
    assert failure(s.receive(b'{"k":"call","i":5,"f":"echo","a":"not a list"}')) == (5, "ProtocolError")
    assert isinstance(s.receive(call(6)), Run)
    # the same id is in flight: answering it would answer the running call
    assert isinstance(s.receive(b'{"k":"call","i":6,"f":"echo","a":"not a list"}'), Notice)
    assert isinstance(s.receive(b'{"k":"call","f":"echo"}'), Notice)
    assert isinstance(s.receive(b"not json"), Notice)
    assert isinstance(s.receive(b'{"k":"what"}'), Notice)
    assert s.receive(b'{"k":"auth","token":"x"}') == Notice("already authenticated")


def test_cancel_credit_ping_and_pong() -> None:
    s = session()
    assert s.receive(b'{"k":"cancel","i":3}') == proto.Cancel(3)
    assert s.receive(b'{"k":"credit","i":3,"n":32}') == proto.Credit(3, 32)
    pong = s.receive(b'{"k":"ping","t":9}')
    assert isinstance(pong, Send) and proto.parse_server(pong.payload) == proto.Pong(9)
    assert s.receive(b'{"k":"pong","t":9}') is None


def test_text_that_is_not_utf8_is_bad_text() -> None:
    assert isinstance(session().receive(b'{"k":"ping","t":1,"x":"\xff"}'), BadText)
