"""A whole connection driven through the sans-I/O core alone: no socket, no thread.

A client end and a server end, each built only from ``easyrpc._core`` pieces (frames,
handshake, the server's session, the client's request table, credit, keepalive, close
codes), exchange real frame bytes through two in-memory pipes, with a fake clock: the
handshake (clear and encrypted), calls, refusals, a stream under credit, cancellation,
time limits, keepalive, a hostile frame and the close. This is what the I/O drivers
(``easyrpc._client``, ``easyrpc._server``) wrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from easyrpc import _protocol as proto
from easyrpc._core.close_codes import NORMAL, PROTOCOL_ERROR, echo_code
from easyrpc._core.credit import ReceiveCredit, SendCredit
from easyrpc._core.frames import OP_BINARY, OP_CLOSE, OP_TEXT, FrameError, FrameParser, build_frame, close_payload
from easyrpc._core.handshake import Authenticated, ClientHandshake, Opened, SendAuth, ServerHandshake
from easyrpc._core.keepalive import Drop, Keepalive, Ping
from easyrpc._core.requests import RequestTable, call_deadline, reply_of
from easyrpc._core.session import Notice, Run, Send, ServerSession
from easyrpc._handshake import FrameCipher, Secret
from easyrpc._signature import describe_function
from easyrpc.exceptions import FunctionNotFound, RemoteError, ServerBusy

SECRET = "core-connection-secret"
T0 = 500.0


def add(a: int, b: int = 2) -> int:
    """Add."""
    return a + b


def count(n: int) -> Any:
    yield from range(n)


FUNCTIONS = {"add": add, "count": count}


@dataclass
class Ends:
    """The two ends of one connection and the pipes between them."""

    cipher_c: FrameCipher | None = None  # the client's
    cipher_s: FrameCipher | None = None  # the server's
    to_server: FrameParser = field(default_factory=lambda: FrameParser(1 << 20, masked=True))
    to_client: FrameParser = field(default_factory=lambda: FrameParser(masked=False))
    session: ServerSession[str, Any] = field(default_factory=lambda: ServerSession(FUNCTIONS.get, 3))
    table: RequestTable[str] = field(default_factory=RequestTable)

    # --- the client writes, the server reads ------------------------------------------
    def client_sends(self, payload: bytes) -> None:
        if self.cipher_c is not None:
            self.to_server.feed(build_frame(OP_BINARY, self.cipher_c.seal(payload), mask=True))
        else:
            self.to_server.feed(build_frame(OP_TEXT, payload, mask=True))

    def server_reads(self) -> bytes:
        msg = self.to_server.next_message()
        assert msg is not None, "nothing arrived at the server"
        opcode, data = msg
        if self.cipher_s is not None:
            assert opcode == OP_BINARY
            return self.cipher_s.open(data)
        assert opcode == OP_TEXT
        return data

    # --- the server writes, the client reads ------------------------------------------
    def server_sends(self, payload: bytes) -> None:
        if self.cipher_s is not None:
            self.to_client.feed(build_frame(OP_BINARY, self.cipher_s.seal(payload), mask=False))
        else:
            self.to_client.feed(build_frame(OP_TEXT, payload, mask=False))

    def client_reads(self) -> proto.ServerMessage:
        msg = self.to_client.next_message()
        assert msg is not None, "nothing arrived at the client"
        opcode, data = msg
        if self.cipher_c is not None:
            assert opcode == OP_BINARY
            data = self.cipher_c.open(data)
        return proto.parse_server(data)

    # --- a call, end to end -----------------------------------------------------------
    def call(self, name: str, *args: Any, window: int = 0) -> int:
        call_id = self.table.add(name)
        self.client_sends(proto.encode_call(call_id, name, list(args), {}, window, None))
        return call_id

    def serve_one(self) -> Any:
        """The server takes one message and acts on it (running a plain call at once)."""
        action = self.session.receive(self.server_reads())
        if isinstance(action, Run) and action.reg is add:
            self.session.started(action.call.id, "task")
            result = add(*action.call.args, **action.call.kwargs)
            assert self.session.finished(action.call.id, "task")
            self.server_sends(proto.encode_result(action.call.id, result))
        elif isinstance(action, Send):
            self.server_sends(action.payload)
        return action


def open_connection(encryption: bool) -> Ends:
    """The handshake, through frame bytes both ways."""
    ends = Ends()
    server = ServerHandshake(Secret(SECRET), encryption, 10.0, T0)
    client = ClientHandshake(Secret(SECRET), "DEFAULT", encryption)
    ends.to_client.feed(build_frame(OP_TEXT, server.hello, mask=False))
    opcode, hello = ends.to_client.next_message() or (0, b"")
    auth = client.receive(hello)
    assert isinstance(auth, SendAuth)
    ends.to_server.feed(build_frame(OP_TEXT, auth.payload, mask=True))
    opcode, data = ends.to_server.next_message() or (0, b"")
    accepted = server.receive(data, T0 + 0.01)
    assert isinstance(accepted, Authenticated) and accepted.namespace == "DEFAULT"
    functions = [describe_function(fn, name, "DEFAULT") for name, fn in FUNCTIONS.items()]
    ends.to_client.feed(build_frame(OP_TEXT, server.welcome(functions), mask=False))
    opcode, data = ends.to_client.next_message() or (0, b"")
    opened = client.receive(data)
    assert isinstance(opened, Opened) and opened.cid == accepted.cid
    assert [f["name"] for f in opened.functions] == ["add", "count"]
    ends.cipher_c, ends.cipher_s = opened.cipher, server.cipher()
    assert (ends.cipher_c is not None) == (ends.cipher_s is not None) == encryption
    return ends


@pytest.fixture(params=[False, True], ids=["clear", "encrypted"])
def ends(request: pytest.FixtureRequest) -> Ends:
    return open_connection(request.param)


def test_calls_get_their_own_results(ends: Ends) -> None:
    ids = [ends.call("add", i, 10) for i in range(3)]
    for _ in ids:
        ends.serve_one()
    for expected in (10, 11, 12):
        reply = reply_of(ends.client_reads())
        assert reply is not None and reply.final and reply.error is None
        assert ends.table.remove(reply.call_id, "add")
        assert reply.value == expected
    assert len(ends.table) == 0 and len(ends.session.tasks) == 0


def test_refusals_are_typed_errors_for_the_caller_and_the_connection_carries_on(ends: Ends) -> None:
    ends.call("nope")
    assert isinstance(ends.serve_one(), Send)
    refusal = reply_of(ends.client_reads())
    assert refusal is not None and isinstance(refusal.error, FunctionNotFound)
    assert isinstance(refusal.error, RemoteError)
    # a duplicate id is not run twice
    ends.session.tasks[99] = "running"
    ends.client_sends(proto.encode_call(99, "add", [1], {}, 0, None))
    assert isinstance(ends.serve_one(), Notice)
    # busy: the session holds max_in_flight (3) calls
    ends.session.tasks.update({100: "a", 101: "b"})
    ends.call("add", 1)
    assert isinstance(ends.serve_one(), Send)
    busy = reply_of(ends.client_reads())
    assert busy is not None and isinstance(busy.error, ServerBusy)
    ends.session.tasks.clear()
    ends.call("add", 2, 3)
    ends.serve_one()
    ok = reply_of(ends.client_reads())
    assert ok is not None and ok.value == 5


def test_a_stream_runs_under_credit_and_ends(ends: Ends) -> None:
    call_id = ends.call("count", 20, window=8)
    action = ends.session.receive(ends.server_reads())
    assert isinstance(action, Run) and action.reg is count and action.call.window == 8
    ends.session.started(call_id, "stream")
    gen = count(*action.call.args)
    send = SendCredit(action.call.window, most=4)  # the server grants less than asked
    receive = ReceiveCredit(8)
    got: list[int] = []
    done = False
    for _ in range(200):  # bounded
        while send.take():  # the server produces while it has credit
            try:
                ends.server_sends(proto.encode_item(call_id, next(gen), send.announce()))
            except StopIteration:
                ends.server_sends(proto.encode("end", i=call_id))
                break
        reply = reply_of(ends.client_reads())
        assert reply is not None and reply.call_id == call_id
        if reply.ended:
            done = True
            break
        if reply.window is not None:
            receive.limit(reply.window)
        got.append(reply.value)
        n = receive.took()
        if n:
            ends.client_sends(proto.encode("credit", i=call_id, n=n))
            credit = ends.session.receive(ends.server_reads())
            assert isinstance(credit, proto.Credit) and credit.n == n
            send.grant(credit.n)
    assert done and got == list(range(20))
    assert receive.window == 4  # the announced window, not the 8 asked for


def test_a_call_past_its_deadline_is_cancelled_on_the_server(ends: Ends) -> None:
    deadline, waits_for_connection = call_deadline(T0, 0.5, stream=False, connected=True, connect_timeout=10)
    assert deadline == T0 + 0.5 and not waits_for_connection
    call_id = ends.call("add", 1)
    action = ends.session.receive(ends.server_reads())
    assert isinstance(action, Run)
    ends.session.started(call_id, "slow task")
    # T0 + 0.5 passes with no reply: the client drops the call and tells the server
    assert ends.table.remove(call_id, "add")
    ends.client_sends(proto.encode("cancel", i=call_id))
    cancel = ends.session.receive(ends.server_reads())
    assert isinstance(cancel, proto.Cancel) and cancel.id == call_id
    assert ends.session.finished(call_id, "slow task")
    # a late result finds nobody waiting
    ends.server_sends(proto.encode_result(call_id, 3))
    late = reply_of(ends.client_reads())
    assert late is not None and ends.table.get(late.call_id) is None


def test_keepalive_pings_a_quiet_peer_and_drops_a_silent_one(ends: Ends) -> None:
    client_alive = Keepalive(1.0, 1.0, T0)
    server_alive = Keepalive(1.0, 1.0, T0)
    assert server_alive.due(T0 + 0.5) is None
    ping = server_alive.due(T0 + 1.0)
    assert isinstance(ping, Ping)
    ends.server_sends(proto.encode("ping", t=ping.token))
    msg = ends.client_reads()
    client_alive.received(T0 + 1.0)
    assert isinstance(msg, proto.Ping) and msg.token == ping.token
    ends.client_sends(proto.encode("pong", t=msg.token))
    assert ends.session.receive(ends.server_reads()) is None  # a pong needs no answer
    server_alive.received(T0 + 1.1)
    assert server_alive.due(T0 + 1.5) is None
    # then the client falls silent: dropped after interval + timeout
    assert isinstance(server_alive.due(T0 + 2.2), Ping)
    dropped = server_alive.due(T0 + 3.2)
    assert isinstance(dropped, Drop) and dropped.silent == pytest.approx(2.1)


def test_a_ping_from_the_client_is_answered_by_the_session(ends: Ends) -> None:
    ends.client_sends(proto.encode("ping", t=7))
    answer = ends.session.receive(ends.server_reads())
    assert isinstance(answer, Send)
    ends.server_sends(answer.payload)
    pong = ends.client_reads()
    assert isinstance(pong, proto.Pong) and pong.token == 7


def test_an_unmasked_frame_from_a_client_is_a_protocol_error(ends: Ends) -> None:
    ends.to_server.feed(build_frame(OP_TEXT, b'{"k":"ping","t":1}', mask=False))
    with pytest.raises(FrameError) as err:
        ends.to_server.next_message()
    assert err.value.code == PROTOCOL_ERROR


def test_the_close_is_answered_with_the_peers_code(ends: Ends) -> None:
    ends.to_server.feed(build_frame(OP_CLOSE, close_payload(NORMAL, "bye"), mask=True))
    opcode, body = ends.to_server.next_message() or (0, b"")
    assert opcode == OP_CLOSE and echo_code(body) == NORMAL
    ends.to_client.feed(build_frame(OP_CLOSE, close_payload(echo_code(body), ""), mask=False))
    opcode, body = ends.to_client.next_message() or (0, b"")
    assert opcode == OP_CLOSE and int.from_bytes(body[:2], "big") == NORMAL
