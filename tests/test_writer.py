"""The connection writer over a real socket pair: a failure while building a frame
leaves the writer usable (no thread is left marked as writing)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from easyrpc._core.frames import OP_BINARY, FrameParser
from easyrpc._net.writer import FrameWriter


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def _frames(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    parser = FrameParser(masked=False)
    out: list[tuple[int, bytes]] = []
    while len(out) < count:
        parser.feed(sock.recv(65536))
        while (msg := parser.next_message()) is not None:
            out.append((msg[0], bytes(msg[1])))
    return out


@pytest.mark.parametrize("nonblocking", [False, True], ids=["blocking", "hub"])
def test_a_seal_that_fails_leaves_the_writer_usable(pair: tuple[socket.socket, socket.socket],
                                                    nonblocking: bool) -> None:
    a, b = pair
    writer = FrameWriter(a, nonblocking=lambda: nonblocking, want_write=lambda _: None, on_error=lambda _: None)
    calls = []

    def seal(data: bytes) -> bytes:
        calls.append(data)
        if len(calls) == 1:
            raise MemoryError("no room to seal")
        return b"sealed:" + data

    with pytest.raises(MemoryError):
        writer.send(OP_BINARY, b"one", seal)
    assert writer.send(OP_BINARY, b"two", seal)
    assert writer.send_many(OP_BINARY, [b"three"], seal)
    assert writer.wait_idle(1.0)  # nobody is left "writing"
    assert _frames(b, 2) == [(OP_BINARY, b"sealed:two"), (OP_BINARY, b"sealed:three")]
