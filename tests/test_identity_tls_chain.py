"""Identities from TLS client certificates, and through chains of servers (issue #26)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from flask import Flask
from werkzeug.serving import make_server

from easyrpc import AuthenticationError, FunctionNotFound
from easyrpc.proxy import EasyRpcProxy
from easyrpc.server import Access, EasyRpcServer, call_context

from .conftest import SECRET, Served, wait_for, watch_secret

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

GATEWAY_SECRET = "gateway-key-0b6e1f"
ROGUE_SECRET = "rogue-key-94ad27"
ALICE_SECRET = "alice-key-c3e850"
BOB_SECRET = "bob-key-5d71aa"
watch_secret(GATEWAY_SECRET, ROGUE_SECRET, ALICE_SECRET, BOB_SECRET)


def serve_whoami(rpc: EasyRpcServer) -> None:
    @rpc.origin(tags={"read"})
    def whoami() -> list[Any]:
        ctx = call_context()
        assert ctx is not None
        return [ctx.identity, ctx.relay, ctx.metadata.get("easyrpc-on-behalf-of")]

    @rpc.origin(tags={"read"})
    def whoami_stream() -> Iterator[Any]:
        ctx = call_context()
        assert ctx is not None
        yield ctx.identity
        yield ctx.relay

    @rpc.origin(tags={"admin"})
    def wipe() -> str:
        return "wiped"


# --- mTLS --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def mtls_server(ca: trustme.CA) -> Iterator[Served]:
    app = Flask("easyrpc-mtls")
    rpc = EasyRpcServer(app, "/ws/test", server_secret=SECRET,
                        access={"reporting-job": Access(tags={"read"}), "*": Access(functions=())})
    serve_whoami(rpc)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_ctx)
    httpd = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=server_ctx)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-mtls", daemon=True)
    thread.start()
    served = Served(app, httpd, thread, [rpc])
    yield served
    served.stop()


def _client_context(ca: trustme.CA, common_name: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    if common_name is not None:
        ca.issue_cert(f"{common_name}.example", common_name=common_name).configure_cert(ctx)
    return ctx


def test_a_client_certificate_subject_is_the_identity(mtls_server: Served, ca: trustme.CA, connect: Any) -> None:
    """With a verified client certificate and no client_id, its CN is the identity: the
    call context shows it and its Access applies."""
    p = connect(mtls_server, ssl_context=_client_context(ca, "reporting-job"))
    assert p.whoami() == ["reporting-job", None, None]
    assert list(p.whoami_stream()) == ["reporting-job", None]
    assert "wipe" not in p
    other = connect(mtls_server, ssl_context=_client_context(ca, "somebody-else"))
    assert {d["name"] for d in other.get_registered_functions()} == {"get_registered_functions"}


def test_a_revoked_certificate_subject_is_closed_and_refused(mtls_server: Served, ca: trustme.CA) -> None:
    """revoke() works for a certificate's subject too: its connection closes, and the same
    certificate cannot connect again."""
    rpc: EasyRpcServer = mtls_server.rpcs[0]
    ctx = _client_context(ca, "reporting-job")
    with EasyRpcProxy.create("127.0.0.1", mtls_server.port, "/ws/test", server_secret=SECRET, ssl_context=ctx,
                             reconnect=False) as p:
        assert p.whoami()[0] == "reporting-job"
        assert rpc.revoke("reporting-job") == 1
        assert wait_for(lambda: rpc.connection_count == 0)
    with pytest.raises(AuthenticationError, match="authentication failed"):
        EasyRpcProxy.create("127.0.0.1", mtls_server.port, "/ws/test", server_secret=SECRET, ssl_context=ctx)


def test_no_client_certificate_no_connection(mtls_server: Served, ca: trustme.CA) -> None:
    """The server requires a certificate: a client without one does not get in."""
    with pytest.raises((ConnectionError, AuthenticationError)):
        EasyRpcProxy.create("127.0.0.1", mtls_server.port, "/ws/test", server_secret=SECRET,
                            ssl_context=_client_context(ca, None), connect_timeout=3)


# --- chains -------------------------------------------------------------------------------------
def _chain(serve: Callable[..., Served], access: dict[str, Access] | None) -> dict[str, Served]:
    origin_app = Flask("easyrpc-origin")
    origin = EasyRpcServer(origin_app, "/ws/test", credentials={"gateway": GATEWAY_SECRET, "rogue": ROGUE_SECRET},
                           trusted_relays={"gateway"}, access=access)
    serve_whoami(origin)
    served = {"origin": serve(origin_app, origin)}
    for name, secret in (("gateway", GATEWAY_SECRET), ("rogue", ROGUE_SECRET)):
        app = Flask(f"easyrpc-{name}")
        relay = EasyRpcServer(app, "/ws/test", server_secret=SECRET,
                              credentials={"alice": ALICE_SECRET, "bob": BOB_SECRET})
        relay.create_server_proxy("127.0.0.1", served["origin"].port, "/ws/test", secret, client_id=name)
        served[name] = serve(app, relay)
        assert wait_for(lambda r=relay: "whoami" in r.functions_for("DEFAULT"))  # type: ignore[misc]
    return served


@pytest.fixture
def chain(serve: Callable[..., Served]) -> dict[str, Served]:
    """origin (trusts 'gateway', not 'rogue') <- gateway, and origin <- rogue; both relays
    accept alice and bob (by their client ids) and anyone with the shared secret."""
    return _chain(serve, None)


def test_a_trusted_relay_forwards_the_callers_identity(chain: dict[str, Served], connect: Any) -> None:
    """Through the trusted gateway the origin sees alice, relayed by gateway (calls and streams)."""
    alice = connect(chain["gateway"], secret=ALICE_SECRET, client_id="alice")
    assert alice.whoami() == ["alice", "gateway", "alice"]
    assert list(alice.whoami_stream()) == ["alice", "gateway"]


def test_a_relay_calling_for_nobody_is_itself(chain: dict[str, Served], connect: Any) -> None:
    """A caller without identity, even one claiming another in its metadata, reaches the
    origin as the relay itself."""
    anonymous = connect(chain["gateway"], metadata={"easyrpc-on-behalf-of": "admin"})
    assert anonymous.whoami() == ["gateway", None, None]


def test_an_untrusted_relay_cannot_forward_an_identity(chain: dict[str, Served], connect: Any) -> None:
    """Through the rogue relay the origin sees only 'rogue', and drops the name it sent."""
    alice = connect(chain["rogue"], secret=ALICE_SECRET, client_id="alice")
    assert alice.whoami() == ["rogue", None, None]
    assert list(alice.whoami_stream()) == ["rogue", None]
    spoofing = connect(chain["rogue"], metadata={"easyrpc-on-behalf-of": "gateway"})
    assert spoofing.whoami() == ["rogue", None, None]


def test_the_origin_applies_the_access_of_the_caller_a_trusted_relay_names(
        serve: Callable[..., Served], connect: Any) -> None:
    """With an access policy, a call relayed for alice must be allowed to alice as well as
    to the gateway: refused as not found otherwise; bob, unknown to the origin, gets
    nothing; a caller without identity is the gateway itself."""
    chain = _chain(serve, {"gateway": Access(), "rogue": Access(), "alice": Access(tags={"read"})})
    alice = connect(chain["gateway"], secret=ALICE_SECRET, client_id="alice")
    assert alice.whoami() == ["alice", "gateway", "alice"]
    with pytest.raises(FunctionNotFound, match="no function named 'wipe' in this namespace"):
        alice.wipe()
    bob = connect(chain["gateway"], secret=BOB_SECRET, client_id="bob")
    with pytest.raises(FunctionNotFound):
        bob.whoami()
    with pytest.raises(FunctionNotFound):
        list(bob.whoami_stream())
    assert connect(chain["gateway"]).wipe() == "wiped"
    assert connect(chain["rogue"], secret=BOB_SECRET, client_id="bob").wipe() == "wiped"  # the rogue's own access
