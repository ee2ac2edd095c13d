"""The client's request rules without sockets: the table, replies, limits."""

from __future__ import annotations

import pytest

from easyrpc import _protocol as proto
from easyrpc._core.requests import Reply, RequestTable, call_deadline, reply_of
from easyrpc.exceptions import RemoteError


def test_ids_are_unique_while_in_flight_and_reused_only_after() -> None:
    table: RequestTable[str] = RequestTable()
    a, b = table.add("a"), table.add("b")
    assert a != b and len(table) == 2 and table.get(a) == "a"
    assert table.remove(a, "a") and not table.remove(a, "a")
    assert list(table) == [b] and len(table) == 1
    assert not table.remove(b, "not b") and table.get(b) == "b"


def test_ids_wrap_before_max_id_and_skip_ids_still_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proto, "MAX_ID", 5)
    table: RequestTable[str] = RequestTable()
    names = ["a", "b", "c", "d"]
    assert [table.add(n) for n in names] == [1, 2, 3, 4]
    assert table.remove(2, "b")
    # 5 is MAX_ID (never used): the next id wraps to 1, which is in flight, then 2 (free)
    assert table.add("x") == 2
    with pytest.raises(RuntimeError, match="no request id is free"):  # 1..4 are all in flight
        table.add("y")


def test_max_in_flight_makes_the_table_full() -> None:
    table: RequestTable[int] = RequestTable(max_in_flight=2)
    table.add(1)
    assert not table.full
    second = table.add(2)
    assert table.full
    table.remove(second, 2)
    assert not table.full


def test_take_removes_what_it_returns() -> None:
    table: RequestTable[tuple[str, bool]] = RequestTable()
    for item in (("a", True), ("b", False), ("c", True)):
        table.add(item)
    sent = table.take(lambda it: not it[1])  # keep the unsent
    assert sent == [("a", True), ("c", True)]
    assert table.values() == [("b", False)]
    assert table.take() == [("b", False)] and len(table) == 0


def test_replies_say_which_request_they_finish() -> None:
    error = RemoteError("ValueError", "bad", "")
    assert reply_of(proto.Result(7, {"v": 1})) == Reply(7, {"v": 1})
    assert reply_of(proto.Failure(7, error)) == Reply(7, error=error)
    item = reply_of(proto.Item(7, 3, window=8))
    assert item is not None and item.item and not item.final and item.value == 3 and item.window == 8
    end = reply_of(proto.End(7))
    assert end is not None and end.final and end.ended and end.error is None
    for other in (proto.Ping("t"), proto.Pong("t"), proto.Functions([]), proto.Notice("n"), proto.Bye("b")):
        assert reply_of(other) is None


def test_replies_parsed_from_the_wire() -> None:
    msg = proto.parse_server(proto.encode_result(3, [1, 2]))
    assert reply_of(msg) == Reply(3, [1, 2])
    failure = reply_of(proto.parse_server(proto.encode_failure(4, proto.error_wire("KeyError", "'k'"))))
    assert failure is not None and isinstance(failure.error, KeyError) and failure.final


def test_a_calls_limit_counts_from_the_call() -> None:
    assert call_deadline(100.0, 2.0, stream=False, connected=True, connect_timeout=10) == (102.0, False)
    assert call_deadline(100.0, 2.0, stream=False, connected=False, connect_timeout=10) == (102.0, False)


def test_without_a_limit_a_request_waits_for_a_connection_at_most_connect_timeout() -> None:
    assert call_deadline(100.0, None, stream=False, connected=True, connect_timeout=10) == (None, False)
    assert call_deadline(100.0, None, stream=False, connected=False, connect_timeout=10) == (110.0, True)


def test_a_streams_limit_is_per_item_not_per_request() -> None:
    assert call_deadline(100.0, 2.0, stream=True, connected=True, connect_timeout=10) == (None, False)
    assert call_deadline(100.0, 2.0, stream=True, connected=False, connect_timeout=10) == (110.0, True)
