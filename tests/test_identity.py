"""Who is calling (issue #26): per-client credentials, revocation, authorization by
identity, identities in the call context, the interceptors and the logs; against a real
loopback server, with both clients."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from flask import Flask

from easyrpc import AuthenticationError, CallTimeout, ConnectionLost
from easyrpc._handshake import Secret, new_nonce
from easyrpc.interceptors import Interceptor
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import Access, CallInfo, EasyRpcServer, call_context

from .conftest import SECRET, Served, wait_for, watch_secret

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

REPORTING_SECRET = "reporting-key-5f2a9c"
ADMIN_SECRET = "admin-key-81d0e7"
watch_secret(REPORTING_SECRET, ADMIN_SECRET)

CREDENTIALS = {"reporting": REPORTING_SECRET, "admin": ADMIN_SECRET}
ACCESS = {"reporting": Access(tags={"read"}), "admin": Access(), "*": Access(functions={"ping"})}
ADMIN_ONLY = {"drop_table", "reset"}


class Seen(Interceptor):
    """Notes the identity of every call it sees."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def before(self, call: CallInfo) -> None:
        self.calls.append((call.function, call.identity))


def build(**options: Any) -> tuple[Flask, EasyRpcServer]:
    app = Flask("easyrpc-identity")
    options.setdefault("credentials", CREDENTIALS)
    options.setdefault("access", ACCESS)
    rpc = EasyRpcServer(app, "/ws/test", **options)

    @rpc.origin(tags={"read"})
    def report(n: int) -> list[int]:
        """A read-only report."""
        return list(range(n))

    @rpc.origin(tags="read")
    def whoami() -> list[Any]:
        ctx = call_context()
        assert ctx is not None
        return [ctx.identity, ctx.relay, ctx.metadata.get("easyrpc-on-behalf-of")]

    @rpc.origin(tags={"admin"})
    def drop_table(name: str) -> str:
        return f"dropped {name}"

    @rpc.origin(tags={"read"})
    def stream_report(n: int) -> Iterator[int]:
        yield from range(n)

    @rpc.origin
    def ping() -> str:
        return "pong"

    rpc.register(lambda force=False: f"reset {force}", name="reset", namespace="DEFAULT", tags=["admin"])
    return app, rpc


@pytest.fixture
def served(serve: Callable[..., Served]) -> Served:
    app, rpc = build(server_secret=SECRET, interceptors=[Seen()])
    s = serve(app, rpc)
    s.rpc = rpc  # type: ignore[attr-defined]
    return s


def names(proxy: Any) -> set[str]:
    return {d["name"] for d in proxy.get_registered_functions()}


def test_two_credentials_see_and_call_different_functions(served: Served, connect: Any) -> None:
    """'reporting' sees and calls only its read-tagged functions; 'admin' everything; the
    shared secret ('*') only ping."""
    reporting = connect(served, secret=REPORTING_SECRET, client_id="reporting")
    admin = connect(served, secret=ADMIN_SECRET, client_id="admin")
    shared = connect(served)
    assert names(reporting) == {"report", "whoami", "stream_report", "get_registered_functions"}
    assert names(admin) == {"report", "whoami", "stream_report", "ping", "get_registered_functions"} | ADMIN_ONLY
    assert names(shared) == {"ping", "get_registered_functions"}
    assert reporting.report(3) == [0, 1, 2]
    assert list(reporting.stream_report(3)) == [0, 1, 2]
    assert admin.drop_table("t") == "dropped t"
    assert shared.ping() == "pong"
    for name in ADMIN_ONLY:  # the client does not even offer them
        assert name not in reporting
        with pytest.raises(AttributeError):
            getattr(reporting, name)
    assert reporting.whoami() == ["reporting", None, None]
    assert admin.whoami() == ["admin", None, None]


def test_a_function_registered_later_is_pushed_only_where_allowed(served: Served, connect: Any) -> None:
    """A new admin-tagged function reaches the admin's list and never the reporting one's."""
    reporting = connect(served, secret=REPORTING_SECRET, client_id="reporting")
    admin = connect(served, secret=ADMIN_SECRET, client_id="admin")
    rpc: EasyRpcServer = served.rpc  # type: ignore[attr-defined]
    rpc.register(lambda: "secret stuff", name="admin_later", tags={"admin"})
    rpc.register(lambda: "public stuff", name="read_later", tags={"read"})
    assert wait_for(lambda: "admin_later" in admin and "read_later" in reporting)
    assert "admin_later" not in reporting
    assert admin.admin_later() == "secret stuff"
    assert reporting.read_later() == "public stuff"


def test_identity_is_in_call_context_interceptors_and_connection_log(
        served: Served, connect: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The server's interceptors see the identity of each call; its connection log line names it."""
    caplog.set_level(logging.INFO, logger="easyrpc")
    seen: Seen = served.rpc.interceptors[0]  # type: ignore[attr-defined]
    reporting = connect(served, secret=REPORTING_SECRET, client_id="reporting")
    assert reporting.report(1) == [0]
    assert ("report", "reporting") in seen.calls
    assert any("opened from" in r.getMessage() and "identity 'reporting'" in r.getMessage() for r in caplog.records)


# --- hand-built peers ----------------------------------------------------------------------
def _raw(served: Served) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://{served.host}:{served.port}/ws/test", timeout=5)


def _recv(ws: websocket.WebSocket) -> dict[str, Any]:
    msg = json.loads(ws.recv())
    assert isinstance(msg, dict)
    return msg


def _auth(ws: websocket.WebSocket, secret: str, client_id: str | None) -> dict[str, Any]:
    hello = _recv(ws)
    ws.send(json.dumps({"k": "auth", "token": Secret(secret).client_token(
        hello["nonce"], new_nonce(), "DEFAULT", False, client_id)}))
    return _recv(ws)


def test_a_hand_built_call_outside_the_scope_is_refused_as_not_found(served: Served, raw_sockets: list[Any]) -> None:
    """A call to drop_table from 'reporting' gets exactly the refusal of a name that does not
    exist, naming nothing else; the welcome and the builtin list only allowed functions."""
    ws = _raw(served)
    raw_sockets.append(ws)
    welcome = _auth(ws, REPORTING_SECRET, "reporting")
    assert welcome["k"] == "welcome"
    assert not ADMIN_ONLY & {d["name"] for d in welcome["fs"]}
    replies = []
    for call_id, fn in ((1, "drop_table"), (2, "no_such_function")):
        ws.send(json.dumps({"k": "call", "i": call_id, "f": fn, "a": ["x"], "kw": {}}))
        replies.append(_recv(ws))
    assert [r["e"]["type"] for r in replies] == ["FunctionNotFound", "FunctionNotFound"]
    assert replies[0]["e"]["message"] == replies[1]["e"]["message"].replace("no_such_function", "drop_table")
    assert "reset" not in json.dumps(replies) and "admin" not in json.dumps(replies)
    ws.send(json.dumps({"k": "call", "i": 3, "f": "get_registered_functions", "a": [], "kw": {}}))
    listed = _recv(ws)["v"]
    assert {d["name"] for d in listed} == {"report", "whoami", "stream_report", "get_registered_functions"}


def test_a_function_it_may_not_call_is_not_even_pushed(served: Served, raw_sockets: list[Any]) -> None:
    """Registering an admin function sends the reporting connection nothing (not even an
    unchanged list); registering a read one sends it its new list."""
    ws = _raw(served)
    raw_sockets.append(ws)
    assert _auth(ws, REPORTING_SECRET, "reporting")["k"] == "welcome"
    rpc: EasyRpcServer = served.rpc  # type: ignore[attr-defined]
    rpc.register(lambda: 0, name="admin_only_later", tags={"admin"})
    ws.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    ws.settimeout(5)
    rpc.register(lambda: 1, name="read_later", tags={"read"})
    pushed = _recv(ws)
    assert pushed["k"] == "funcs" and "read_later" in {d["name"] for d in pushed["fs"]}
    assert "admin_only_later" not in json.dumps(pushed)


@pytest.mark.parametrize("secret, client_id", [
    ("not-the-key", "reporting"),  # a known id, the wrong secret
    (REPORTING_SECRET, "nobody"),  # an unknown id
    (REPORTING_SECRET, "admin"),  # another id's name with this secret
    ("not-the-key", None),  # no id, a wrong shared secret
])
def test_an_unknown_id_is_refused_like_a_wrong_secret(served: Served, raw_sockets: list[Any], secret: str,
                                                      client_id: str | None) -> None:
    """Every bad credential gets the same refusal: code auth, reason 'authentication failed'."""
    ws = _raw(served)
    raw_sockets.append(ws)
    assert _auth(ws, secret, client_id) == {"k": "refused", "code": "auth", "reason": "authentication failed"}


def test_a_client_id_is_refused_by_a_server_with_only_a_shared_secret(serve: Callable[..., Served]) -> None:
    """A shared-secret server knows no ids: naming one (even with the shared secret) is refused."""
    app = Flask("easyrpc-shared")
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET)
    rpc.register(lambda: 1, name="one")
    s = serve(app, rpc)
    with pytest.raises(AuthenticationError, match="authentication failed"):
        EasyRpcProxy.create(s.host, s.port, "/ws/test", server_secret=SECRET, client_id="reporting")
    with EasyRpcProxy.create(s.host, s.port, "/ws/test", server_secret=SECRET) as p:
        assert p.one() == 1


def test_credentials_only_server_refuses_the_shared_secret_mode(serve: Callable[..., Served]) -> None:
    """With credentials and no server_secret, a proxy naming no id is refused."""
    app, rpc = build()
    s = serve(app, rpc)
    with pytest.raises(AuthenticationError):
        EasyRpcProxy.create(s.host, s.port, "/ws/test", server_secret=SECRET)
    with EasyRpcProxy.create(s.host, s.port, "/ws/test", server_secret=ADMIN_SECRET, client_id="admin") as p:
        assert p.ping() == "pong"


# --- revocation and rotation ---------------------------------------------------------------
def test_a_revoked_credential_is_closed_and_cannot_reconnect(served: Served, connect: Any) -> None:
    """revoke('reporting') closes its connections (calls fail with ConnectionLost), refuses
    its reconnections, and leaves other identities alone; add_credential lets a new key in."""
    rpc: EasyRpcServer = served.rpc  # type: ignore[attr-defined]
    reporting = connect(served, secret=REPORTING_SECRET, client_id="reporting", max_backoff=0.2, connect_timeout=1.0)
    admin = connect(served, secret=ADMIN_SECRET, client_id="admin")
    assert reporting.report(2) == [0, 1]
    assert rpc.revoke("reporting") == 1
    assert wait_for(lambda: rpc.connection_count == 1)  # the admin's alone
    with pytest.raises((ConnectionLost, CallTimeout)):  # at once, or once no reconnection came in time
        reporting.report(2)
    with pytest.raises(AuthenticationError, match="authentication failed"):
        EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret=REPORTING_SECRET, client_id="reporting")
    time.sleep(0.5)  # the revoked proxy's background reconnections are all refused
    assert rpc.connection_count == 1
    assert admin.drop_table("x") == "dropped x"
    # a rotated key lets it in again
    rpc.add_credential("reporting", "reporting-rotated-77e1")
    watch_secret("reporting-rotated-77e1")
    with EasyRpcProxy.create(served.host, served.port, "/ws/test", server_secret="reporting-rotated-77e1",
                             client_id="reporting") as p:
        assert p.report(1) == [0]


def test_a_lookup_rotates_and_revokes_while_the_server_runs(serve: Callable[..., Served]) -> None:
    """credentials=lookup: asked at each handshake; once it answers None, disconnect() ends
    the identity's connections and they cannot come back."""
    keys = {"job": "job-key-3c9d"}
    watch_secret("job-key-3c9d")
    app, rpc = build(credentials=keys.get, access=None)
    s = serve(app, rpc)
    p = EasyRpcProxy.create(s.host, s.port, "/ws/test", server_secret="job-key-3c9d", client_id="job", max_backoff=0.2,
                            connect_timeout=1.0)
    try:
        assert p.whoami() == ["job", None, None]
        del keys["job"]
        assert rpc.disconnect("job") == 1
        with pytest.raises((ConnectionLost, CallTimeout)):
            p.ping()
        with pytest.raises(AuthenticationError):
            EasyRpcProxy.create(s.host, s.port, "/ws/test", server_secret="job-key-3c9d", client_id="job")
    finally:
        p.close()


def test_no_credential_secret_is_logged(serve: Callable[..., Served], caplog: pytest.LogCaptureFixture) -> None:
    """Good, refused and revoked connections of every credential: no log line shows a secret."""
    caplog.set_level(logging.DEBUG)
    app, rpc = build(server_secret=SECRET)
    s = serve(app, rpc)
    for secret, client_id in ((REPORTING_SECRET, "reporting"), (ADMIN_SECRET, "admin"), (SECRET, None)):
        with EasyRpcProxy.create(s.host, s.port, "/ws/test", server_secret=secret, client_id=client_id) as p:
            p.get_registered_functions()
        with pytest.raises(AuthenticationError) as err:
            EasyRpcProxy.create(s.host, s.port, "/ws/test", server_secret=secret + "x", client_id=client_id)
        assert secret not in str(err.value)
    rpc.revoke("admin")
    shown = [repr(rpc), repr(vars(rpc)), repr(rpc.keys), repr(vars(rpc.keys))]
    text = "\n".join([r.getMessage() for r in caplog.records] + shown)
    for secret in (REPORTING_SECRET, ADMIN_SECRET, SECRET):
        assert secret not in text


def test_namespaces_limit_an_identity_through_groups_too(serve: Callable[..., Served], connect: Any) -> None:
    """Access(namespaces={'books'}): a connection of namespace 'tools' sees nothing; through
    the group 'all' it sees the books functions only."""
    app, rpc = build(access={"reporting": Access(namespaces={"books"}), "admin": Access()})
    rpc.register(lambda: "ledger", name="ledger", namespace="books")
    rpc.register(lambda: "hammer", name="hammer", namespace="tools")
    rpc.create_namespace_group("all", "books", "tools")
    s = serve(app, rpc)
    tools = connect(s, secret=REPORTING_SECRET, client_id="reporting", namespace="tools")
    assert names(tools) == {"get_registered_functions"}
    both = connect(s, secret=REPORTING_SECRET, client_id="reporting", namespace="all")
    assert names(both) == {"ledger", "get_registered_functions"}
    assert both.ledger() == "ledger"
    admin = connect(s, secret=ADMIN_SECRET, client_id="admin", namespace="all")
    assert {"ledger", "hammer"} <= names(admin)
