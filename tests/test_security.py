"""Encryption and TLS end to end (API §6); hostile peers are in test_hostile.py."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from werkzeug.serving import make_server

from easyrpc import AuthenticationError
from easyrpc.proxy import EasyRpcProxy

from .apps import build_app
from .conftest import SECRET, Served


@pytest.fixture
def encrypted(serve: Any) -> Any:
    app, rpc, counter = build_app(encryption_enabled=True)
    served = serve(app, rpc)
    served.rpc = rpc
    return served


def test_encrypted_calls_streams_and_errors_work(encrypted: Any, connect: Any) -> None:
    p = connect(encrypted, encryption_enabled=True)
    assert p.good_func_a(1, 5, 7) == {"good_func_a": [1, 5, 7]}
    assert list(p.count_up(300)) == list(range(300))
    with pytest.raises(KeyError):
        p.fail("KeyError")
    big = "y" * 2_000_000
    assert p.echo(big) == big


def test_encrypted_frames_are_binary_and_carry_no_plaintext(encrypted: Any) -> None:
    """What crosses the wire after the handshake is sealed: no function name or argument in clear."""
    import websocket

    from easyrpc import _protocol as proto
    from easyrpc._handshake import Secret, new_nonce

    ws = websocket.create_connection(f"ws://127.0.0.1:{encrypted.port}/ws/test", timeout=5)
    try:
        hello = proto.parse_server(ws.recv())
        assert isinstance(hello, proto.Hello) and hello.encryption
        secret, cn = Secret(SECRET), new_nonce()
        ws.send(proto.encode("auth", token=secret.client_token(hello.nonce, cn, "DEFAULT", True)))
        welcome = proto.parse_server(ws.recv())
        assert isinstance(welcome, proto.Welcome)
        cipher = secret.frame_cipher(hello.nonce, cn, is_server=False)
        ws.send_binary(cipher.seal(proto.encode_call(1, "echo", ["secret-argument-text"], {})))
        opcode, frame = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_BINARY
        assert b"secret-argument-text" not in frame
        assert proto.parse_server(cipher.open(frame)) == proto.Result(1, "secret-argument-text")
        # a replayed frame (same counter) closes the connection
        sealed = cipher.seal(proto.encode_call(2, "echo", [1], {}))
        ws.send_binary(sealed)
        assert proto.parse_server(cipher.open(ws.recv_data()[1])) == proto.Result(2, 1)
        ws.send_binary(sealed)
        ws.settimeout(3)
        opcode, _ = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_CLOSE
    finally:
        ws.close()


def test_encryption_mismatch_is_a_clear_authentication_error(encrypted: Any, serve: Any, connect: Any) -> None:
    start = time.monotonic()
    with pytest.raises(AuthenticationError, match="encryption mismatch"):
        connect(encrypted, encryption_enabled=False)
    app, rpc, _ = build_app()
    plain = serve(app, rpc)
    with pytest.raises(AuthenticationError, match="encryption mismatch"):
        connect(plain, encryption_enabled=True)
    assert time.monotonic() - start < 2.0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[Served]:
    app, rpc, _ = build_app()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    httpd = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=server_ctx)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-tls", daemon=True)
    thread.start()
    served = Served(app, httpd, thread, [rpc])
    yield served
    served.stop()


def test_wss_with_a_client_ssl_context(tls_server: Served, ca: trustme.CA, connect: Any) -> None:
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)
    p = connect(tls_server, ssl_context=client_ctx)
    assert p.good_func_a(1, 5, 7) == {"good_func_a": [1, 5, 7]}
    assert list(p.count_up(100)) == list(range(100))


def test_wss_rejects_an_untrusted_certificate(tls_server: Served) -> None:
    untrusting = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # system CAs only
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        EasyRpcProxy.create("127.0.0.1", tls_server.port, "/ws/test", server_secret=SECRET, ssl_context=untrusting)
