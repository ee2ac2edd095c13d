"""The close-code table (easyrpc._core.close_codes): which codes a peer may send, which
the server echoes, and the closes easyrpc makes (docs/protocol.md §8). No sockets."""

from __future__ import annotations

import ast
import pathlib

import pytest

import easyrpc
from easyrpc._core import close_codes
from easyrpc._core.close_codes import CLOSE_CODES, ECHOED_CODES, NORMAL, echo_code, may_send
from easyrpc._core.frames import FrameError, check_close


@pytest.mark.parametrize("code", sorted(ECHOED_CODES) + [3000, 3999, 4000, 4999])
def test_the_server_echoes_a_peers_close_code_it_may_echo(code: int) -> None:
    assert echo_code(code.to_bytes(2, "big") + b"reason") == code


@pytest.mark.parametrize("code", [1012, 1013, 1014, 1004, 1005, 1006, 1015, 2999, 5000, 999, 0, 65535])
def test_the_server_answers_other_close_codes_with_1000(code: int) -> None:
    assert echo_code(code.to_bytes(2, "big")) == NORMAL == 1000


@pytest.mark.parametrize("body", [b"", b"\x03"])
def test_a_close_frame_without_a_code_is_answered_with_1000(body: bytes) -> None:
    assert echo_code(body) == NORMAL


def test_echoed_codes_are_codes_a_peer_may_send() -> None:
    assert ECHOED_CODES < CLOSE_CODES
    assert {1004, 1005, 1006, 1015} & CLOSE_CODES == set()


def test_the_frame_parser_accepts_exactly_the_close_codes_a_peer_may_send() -> None:
    accepted = set()
    for code in range(0, 65536):
        try:
            check_close(code.to_bytes(2, "big"))
        except FrameError as exc:
            assert exc.code == close_codes.PROTOCOL_ERROR
        else:
            accepted.add(code)
    assert accepted == {code for code in range(65536) if may_send(code)} == CLOSE_CODES | set(range(3000, 5000))


def test_the_close_table_matches_the_protocol_document() -> None:
    """docs/protocol.md §8, row by row."""
    assert close_codes.REFUSED == (1008, "refused")
    assert close_codes.AUTH_TIMEOUT == (1008, "authentication timeout")
    assert close_codes.SHUTTING_DOWN == (1001, "server shutting down")
    assert close_codes.ENCRYPTION_REQUIRED == (1008, "encryption required")
    assert close_codes.BAD_SEAL == (1008, "bad frame")
    assert close_codes.INVALID_UTF8 == (1007, "invalid UTF-8")
    assert close_codes.bad_frame(close_codes.PROTOCOL_ERROR) == (1002, "bad frame")
    assert close_codes.bad_frame(close_codes.TOO_BIG) == (1009, "bad frame")
    assert FrameError("x").code == 1002


def test_the_server_names_close_codes_only_through_the_core_table() -> None:
    """No number of the 1000-1015 range is spelled in the server's drivers or the rest of
    the core: each comes from easyrpc._core.close_codes."""
    root = pathlib.Path(easyrpc.__file__).parent
    paths = [*sorted((root / "_server").glob("*.py")), root / "server.py",
             *sorted(p for p in (root / "_core").glob("*.py") if p.name != "close_codes.py")]
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and type(node.value) is int and 1000 <= node.value <= 1015:
                found.append(f"{path.name}:{node.lineno}: {node.value}")
    assert found == []
