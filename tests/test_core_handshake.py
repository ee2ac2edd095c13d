"""The handshake's two state machines, without sockets.

Both ends are driven against each other by feeding one's output to the other (through
real frame bytes in one test), with fake times: clear and encrypted, refusals with their
codes, a late, garbled, replayed or out-of-turn auth, and the server misbehaving towards
the client. See docs/protocol.md §4 (and §8 for the closes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from easyrpc import _protocol as proto
from easyrpc._core import close_codes
from easyrpc._core.close_codes import AUTH_TIMEOUT, INVALID_UTF8, REFUSED, SHUTTING_DOWN
from easyrpc._core.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameParser, build_frame
from easyrpc._core.handshake import (
    Authenticated,
    ClientHandshake,
    ClientState,
    Failed,
    Opened,
    PeerClosed,
    Pong,
    Refused,
    SendAuth,
    ServerHandshake,
    ServerState,
    TimedOut,
)
from easyrpc._handshake import Secret, new_nonce
from easyrpc._signature import describe_function
from easyrpc.exceptions import AuthenticationError, ProtocolError

SECRET = "s3cret-for-tests"
T0 = 1000.0  # the server's clock at the upgrade (any monotonic value)


def add(a: int, b: int = 2) -> int:
    """Add."""
    return a + b


FUNCTIONS = [describe_function(add, "add", "DEFAULT")]


def server_end(encryption: bool = False, secret: str = SECRET, auth_timeout: float = 10.0) -> ServerHandshake:
    return ServerHandshake(Secret(secret), encryption, auth_timeout, T0)


def auth_for(server: ServerHandshake, secret: str = SECRET, namespace: str = "DEFAULT", encryption: bool = False) -> bytes:
    """The auth message a client with *secret* answers *server*'s hello with."""
    event = ClientHandshake(Secret(secret), namespace, encryption).receive(server.hello)
    assert isinstance(event, SendAuth)
    return event.payload


def token_with(server: ServerHandshake, secret: str = SECRET, **claims: Any) -> bytes:
    """An auth message carrying a token signed with *secret*'s key, with *claims* changed."""
    now = int(time.time())
    body = {"v": proto.PROTOCOL_VERSION, "sn": json.loads(server.hello)["nonce"], "cn": new_nonce(), "ns": "DEFAULT",
            "enc": False, "iat": now, "exp": now + 30, **claims}
    key = hmac.new(secret.encode(), b"easyrpc/v1/auth", hashlib.sha256).digest()
    return proto.encode("auth", token=jwt.encode(body, key, algorithm="HS256"))


# --- both ends together ------------------------------------------------------------------
@pytest.mark.parametrize("encryption", [False, True], ids=["clear", "encrypted"])
def test_client_and_server_machines_open_a_connection_through_frame_bytes(encryption: bool) -> None:
    """hello -> auth -> welcome, each message as frame bytes through the other end's frame
    parser: both ends open, agree on the cid and functions, and (encrypted) on the keys."""
    server = server_end(encryption)
    client = ClientHandshake(Secret(SECRET), "DEFAULT", encryption)
    to_client, to_server = FrameParser(masked=False), FrameParser(8192, masked=True)
    assert (server.state, client.state) == (ServerState.HELLO_SENT, ClientState.AWAIT_HELLO)

    to_client.feed(build_frame(OP_TEXT, server.hello, mask=False))
    msg = to_client.next_message()
    assert msg is not None
    auth = client.receive_frame(*msg)
    assert isinstance(auth, SendAuth) and client.state is ClientState.AWAIT_WELCOME

    to_server.feed(build_frame(OP_TEXT, auth.payload, mask=True))
    msg = to_server.next_message()
    assert msg is not None
    accepted = server.receive_frame(*msg, T0 + 1)
    assert isinstance(accepted, Authenticated) and server.state is ServerState.AUTHENTICATED
    assert accepted.namespace == "DEFAULT" and len(accepted.cid) == 32 and int(accepted.cid, 16) >= 0

    to_client.feed(build_frame(OP_TEXT, server.welcome(FUNCTIONS), mask=False))
    msg = to_client.next_message()
    assert msg is not None
    opened = client.receive_frame(*msg)
    assert isinstance(opened, Opened)
    assert (server.state, client.state) == (ServerState.OPEN, ClientState.OPEN)
    assert opened.cid == accepted.cid and opened.functions == FUNCTIONS

    server_cipher = server.cipher()
    if not encryption:
        assert server_cipher is None and opened.cipher is None
        return
    assert server_cipher is not None and opened.cipher is not None
    assert server_cipher.open(opened.cipher.seal(b"call")) == b"call"
    assert opened.cipher.open(server_cipher.seal(b"reply")) == b"reply"


def test_each_connection_gets_its_own_nonce_and_cid() -> None:
    one, two = server_end(), server_end()
    assert json.loads(one.hello)["nonce"] != json.loads(two.hello)["nonce"]
    a, b = one.receive(auth_for(one), T0), two.receive(auth_for(two), T0)
    assert isinstance(a, Authenticated) and isinstance(b, Authenticated) and a.cid != b.cid


def test_the_hello_says_version_nonce_and_encryption() -> None:
    hello = proto.parse_server(server_end(encryption=True).hello)
    assert isinstance(hello, proto.Hello)
    assert hello.version == proto.PROTOCOL_VERSION and hello.encryption is True and len(hello.nonce) == 44


# --- refusals ----------------------------------------------------------------------------
def test_a_wrong_secret_is_refused_with_code_auth_and_the_client_sees_the_refusal() -> None:
    """No hang: the refusal is one message and a 1008 close, and the client ends REFUSED."""
    server = server_end()
    client = ClientHandshake(Secret("not-the-secret"), "DEFAULT", False)
    auth = client.receive(server.hello)
    assert isinstance(auth, SendAuth)
    refused = server.receive(auth.payload, T0 + 0.1)
    assert refused == Refused("auth", "authentication failed")
    assert server.state is ServerState.REFUSED
    assert refused.close == REFUSED == (close_codes.POLICY, "refused")
    seen = client.receive(refused.message)
    assert seen == refused and client.state is ClientState.REFUSED


def test_a_token_replayed_on_another_connection_is_refused() -> None:
    first, second = server_end(), server_end()
    auth = auth_for(first)
    assert isinstance(first.receive(auth, T0), Authenticated)
    assert second.receive(auth, T0) == Refused("auth", "authentication failed")


@pytest.mark.parametrize("garble", ["signature", "payload", "truncated", "not-a-jwt", "expired", "alg-none"])
def test_a_garbled_or_forged_token_is_refused_with_code_auth(garble: str) -> None:
    server = server_end()
    token = json.loads(auth_for(server))["token"]
    head, body, sig = token.split(".")
    if garble == "signature":
        token = f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    elif garble == "payload":
        token = f"{head}.{body[:-2]}{'x' if body[-2] != 'x' else 'y'}{body[-1]}.{sig}"
    elif garble == "truncated":
        token = token[: len(token) // 2]
    elif garble == "not-a-jwt":
        token = "hello"
    elif garble == "alg-none":
        token = jwt.encode(json.loads(token_with(server).decode()) | {"v": proto.PROTOCOL_VERSION}, None, algorithm="none")
    if garble == "expired":
        auth = token_with(server, iat=int(time.time()) - 100, exp=int(time.time()) - 60)
    else:
        auth = proto.encode("auth", token=token)
    refused = server.receive(auth, T0)
    assert isinstance(refused, Refused) and refused.code == "auth", refused
    assert refused.reason.startswith("authentication failed")
    assert server.state is ServerState.REFUSED


@pytest.mark.parametrize("first", [
    b'{"k":"ping","t":1}', b'{"k":"call","i":1,"f":"add"}', b'{"k":"auth"}', b"[1,2]", b"not json",
    b'{"k":"auth","token":5}',
])
def test_anything_but_an_auth_first_is_refused_with_code_protocol(first: bytes) -> None:
    server = server_end()
    refused = server.receive(first, T0)
    assert isinstance(refused, Refused) and refused.code == "protocol", refused
    assert refused.reason.startswith("handshake failed: ")
    assert refused.close == REFUSED


def test_a_non_auth_message_names_what_was_expected() -> None:
    assert server_end().receive(b'{"k":"ping","t":1}', T0) == Refused(
        "protocol", "handshake failed: expected an auth message")


def test_a_first_message_that_is_not_utf8_closes_with_1007_and_no_refusal() -> None:
    server = server_end()
    event = server.receive(b'{"k":"auth","token":"\xff"}', T0)
    assert isinstance(event, Failed) and event.close == INVALID_UTF8 == (close_codes.INVALID_DATA, "invalid UTF-8")
    assert server.state is ServerState.FAILED


@pytest.mark.parametrize("server_encrypts", [True, False])
def test_an_encryption_mismatch_in_the_token_is_refused_with_code_encryption(server_encrypts: bool) -> None:
    """The client's token says enc != the server's setting (encryption required but not
    offered, or offered but disabled): refused, code encryption."""
    server = server_end(encryption=server_encrypts)
    state = "enabled" if server_encrypts else "disabled"
    refused = server.receive(token_with(server, enc=not server_encrypts), T0)
    assert refused == Refused("encryption", f"encryption mismatch: the server has encryption {state}")


@pytest.mark.parametrize("version", [1, 3])
def test_another_protocol_version_in_the_token_is_refused_with_code_version(version: int) -> None:
    """A peer from before binary parts (version 1), or a newer one, gets a clear refusal."""
    server = server_end()
    refused = server.receive(token_with(server, v=version), T0)
    assert refused == Refused("version", f"protocol version {version} is not supported; server speaks 2")


@pytest.mark.parametrize("claimed", [2.0, "2", [2], True], ids=["float", "str", "list", "true"])
def test_a_version_claim_that_is_not_the_integer_version_is_refused(claimed: Any) -> None:
    server = server_end()
    refused = server.receive(token_with(server, v=claimed), T0)
    assert isinstance(refused, Refused) and refused.code == "version"


def test_a_huge_version_claim_gives_a_short_refusal_the_client_can_read() -> None:
    server = server_end()
    refused = server.receive(token_with(server, v="9" * 2000), T0)  # repr: over MAX_REASON
    assert isinstance(refused, Refused) and refused.code == "version" and len(refused.reason) < 200
    assert isinstance(proto.parse_server(refused.message), proto.Refused)  # within MAX_REASON


@pytest.mark.parametrize("nonce", ["short", "é" * 44, "a b" * 10, "x" * 129, 12345678901234567890],
                         ids=["short", "non-ascii", "spaces", "long", "number"])
@pytest.mark.parametrize("encryption", [False, True], ids=["clear", "encrypted"])
def test_a_bad_client_nonce_is_refused_before_the_welcome(nonce: Any, encryption: bool) -> None:
    server = server_end(encryption=encryption)
    refused = server.receive(token_with(server, cn=nonce, enc=encryption), T0)
    assert isinstance(refused, Refused) and refused.code in ("protocol", "auth")
    with pytest.raises(RuntimeError):
        server.welcome([])  # never welcomed


def test_the_client_refuses_a_hello_whose_nonce_cannot_salt_the_keys() -> None:
    client = ClientHandshake(Secret(SECRET), "DEFAULT", True)
    with pytest.raises(ProtocolError, match="nonce"):
        client.receive(_hello(nonce="é" * 44, enc=True))


def test_a_token_for_the_server_role_is_refused() -> None:
    server = server_end()
    assert server.receive(token_with(server, role="server"), T0) == Refused("auth", "authentication failed")


def test_an_unknown_namespace_is_not_refused_the_driver_lists_its_functions() -> None:
    """protocol.md §13.6: any namespace string authenticates; the welcome then carries
    whatever the driver lists for it (only the builtin for an unknown one)."""
    server = server_end()
    accepted = server.receive(auth_for(server, namespace="no-such-namespace"), T0)
    assert accepted == Authenticated("no-such-namespace", server.cid)
    welcome = proto.parse_server(server.welcome([]))
    assert isinstance(welcome, proto.Welcome) and welcome.functions == [] and welcome.cid == server.cid


# --- the auth deadline and control frames ------------------------------------------------
def test_the_auth_deadline_passes_at_the_auth_timeout_from_the_hello() -> None:
    server = server_end(auth_timeout=10.0)
    assert server.deadline == T0 + 10.0
    assert server.tick(T0 + 9.999) is None and not server.expired(T0 + 9.999)
    assert server.expired(T0 + 10.0)
    timed_out = server.tick(T0 + 10.0)
    assert timed_out == TimedOut(10.0) and server.state is ServerState.TIMED_OUT
    assert timed_out.close == AUTH_TIMEOUT == (close_codes.POLICY, "authentication timeout")
    assert server.tick(T0 + 11.0) == timed_out  # it stays timed out


def test_a_good_auth_after_the_deadline_is_not_accepted() -> None:
    server = server_end(auth_timeout=0.5)
    auth = auth_for(server)
    assert server.receive(auth, T0 + 0.5) == TimedOut(0.5)
    assert server.state is ServerState.TIMED_OUT and server.cid == ""


def test_pings_before_the_auth_are_answered_and_do_not_extend_the_deadline() -> None:
    server = server_end(auth_timeout=1.0)
    for step in range(5):
        assert server.receive_frame(OP_PING, b"still here", T0 + step * 0.19) == Pong(b"still here")
        assert server.receive_frame(OP_PONG, b"", T0 + step * 0.19) is None
    assert server.state is ServerState.HELLO_SENT
    assert server.receive_frame(OP_PING, b"late", T0 + 1.0) == TimedOut(1.0)


def test_a_close_frame_before_the_auth_ends_the_handshake_quietly() -> None:
    server = server_end()
    event = server.receive_frame(OP_CLOSE, b"\x03\xe8", T0)
    assert event == PeerClosed() and event.close is None and server.state is ServerState.FAILED


def test_the_auth_may_come_in_a_binary_frame() -> None:
    server = server_end()
    assert isinstance(server.receive_frame(OP_BINARY, auth_for(server), T0), Authenticated)


def test_a_server_shutting_down_closes_an_authenticated_peer_with_1001() -> None:
    server = server_end()
    assert isinstance(server.receive(auth_for(server), T0), Authenticated)
    assert server.shutting_down() == SHUTTING_DOWN == (close_codes.GOING_AWAY, "server shutting down")
    assert server.state is ServerState.FAILED
    with pytest.raises(RuntimeError):
        server.welcome([])


def test_the_server_machine_refuses_to_be_driven_out_of_order() -> None:
    server = server_end()
    with pytest.raises(RuntimeError):
        server.welcome([])  # not authenticated
    with pytest.raises(RuntimeError):
        server.cipher()
    assert isinstance(server.receive(auth_for(server), T0), Authenticated)
    with pytest.raises(RuntimeError):
        server.receive(auth_for(server), T0)  # a second auth


# --- the client against a misbehaving server ---------------------------------------------
def _hello(**fields: Any) -> bytes:
    return proto.encode("hello", **({"v": proto.PROTOCOL_VERSION, "nonce": new_nonce(), "enc": False} | fields))


def test_the_client_refuses_a_hello_of_another_version_before_sending_anything() -> None:
    client = ClientHandshake(Secret(SECRET), "DEFAULT", False)
    with pytest.raises(AuthenticationError, match="protocol version mismatch: server speaks 1, this proxy 2"):
        client.receive(_hello(v=1))
    assert client.state is ClientState.FAILED


@pytest.mark.parametrize("ours", [False, True])
def test_the_client_refuses_an_encryption_mismatch_in_the_hello(ours: bool) -> None:
    client = ClientHandshake(Secret(SECRET), "DEFAULT", ours)
    with pytest.raises(AuthenticationError, match="encryption mismatch"):
        client.receive(_hello(enc=not ours))
    assert client.state is ClientState.FAILED


@pytest.mark.parametrize(("opcode", "payload", "error"), [
    (OP_CLOSE, b"\x03\xe8", r"closed the connection during the handshake \(1000\)"),
    (OP_CLOSE, b"\x03\xe9server shutting down", r"during the handshake \(1001 'server shutting down'\)"),
    (OP_CLOSE, b"", "closed the connection during the handshake$"),
    (OP_BINARY, b"{}", "expected a text frame"),
    (OP_TEXT, b'{"k":"welcome","cid":"c","proof":"p","fs":[]}', "did not start the handshake"),
    (OP_TEXT, b"garbage", None),
])
def test_the_client_fails_on_a_server_speaking_out_of_turn(opcode: int, payload: bytes, error: str | None) -> None:
    client = ClientHandshake(Secret(SECRET), "DEFAULT", False)
    with pytest.raises(ProtocolError, match=error):
        client.receive_frame(opcode, payload)
    assert client.state is ClientState.FAILED


def test_the_client_fails_on_a_second_hello_instead_of_the_welcome() -> None:
    client = ClientHandshake(Secret(SECRET), "DEFAULT", False)
    assert isinstance(client.receive(_hello()), SendAuth)
    with pytest.raises(ProtocolError, match="unexpected reply to authentication"):
        client.receive(_hello())
    assert client.state is ClientState.FAILED


@pytest.mark.parametrize(("forgery", "error"), [
    ("other secret", "authentication failed"), ("other cid", "could not prove it knows the secret")])
def test_the_client_fails_on_a_welcome_whose_proof_does_not_hold(forgery: str, error: str) -> None:
    """A server that does not know the secret (or whose proof is for another cid) is not
    trusted: AuthenticationError, nothing opened."""
    secret = "another-secret" if forgery == "other secret" else SECRET
    server = server_end(secret=secret)
    client = ClientHandshake(Secret(SECRET), "DEFAULT", False)
    auth = client.receive(server.hello)
    assert isinstance(auth, SendAuth)
    # the impostor accepts any token: it is fed one of its own
    assert isinstance(server.receive(auth_for(server, secret=secret), T0), Authenticated)
    welcome = json.loads(server.welcome([]))
    if forgery == "other cid":
        welcome["cid"] = "0" * 32
    with pytest.raises(AuthenticationError, match=error):
        client.receive(json.dumps(welcome).encode())
    assert client.state is ClientState.FAILED


def test_the_client_machine_takes_nothing_once_open() -> None:
    server, client = server_end(), ClientHandshake(Secret(SECRET), "DEFAULT", False)
    auth = client.receive(server.hello)
    assert isinstance(auth, SendAuth) and isinstance(server.receive(auth.payload, T0), Authenticated)
    assert isinstance(client.receive(server.welcome([])), Opened)
    with pytest.raises(ProtocolError):
        client.receive(server.hello)
