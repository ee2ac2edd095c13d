"""The core's WebSocket framing, without sockets: bytes fed in, messages and close codes out.

* Every validation rule of :class:`FrameParser` raises :class:`FrameError` with its close
  code, whether the bytes come in one piece or one byte at a time.
* Round trips ``build_frame`` -> ``feed`` -> ``next_message`` in both directions and for
  every header size; big frames fed whole, byte by byte and through ``big_room``.
* Fragmentation with control frames in between, ``max_message`` changed between messages.
* The core imports no I/O: no socket, thread, select, TLS, asyncio, Flask or websocket code.

Hostile frames are built by ``tests/rawpeer.frame`` (a builder of the tests' own).
"""

from __future__ import annotations

import ast
import mmap
import os
import pathlib
import pkgutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

import easyrpc
import easyrpc._core
from easyrpc._core import masking
from easyrpc._core.close_codes import CLOSE_CODES
from easyrpc._core.frames import (
    BIG_FRAME,
    MASK_CHUNK,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameParser,
    MaskKeys,
    apply_mask,
    build_frame,
    check_close,
    close_payload,
    frame_header,
    masked_chunks,
    masked_frame_header,
)
from easyrpc.exceptions import ProtocolError

from .rawpeer import BAD_FRAMES, close_body, frame, mask_bytes

MiB = 1 << 20
FORBIDDEN = {"socket", "threading", "_thread", "select", "selectors", "ssl", "asyncio", "flask", "flask_sock",
             "simple_websocket", "websocket", "wsproto", "werkzeug"}


def messages(parser: FrameParser) -> list[tuple[int, bytes]]:
    """Every message complete so far, payloads as bytes."""
    out = []
    while (msg := parser.next_message()) is not None:
        out.append((msg[0], bytes(msg[1])))
    return out


def feed_bytewise(parser: FrameParser, data: bytes) -> list[tuple[int, bytes]]:
    """Feed *data* one byte at a time, collecting messages as a driver would after each."""
    out = []
    for i in range(len(data)):
        parser.feed(data[i:i + 1])
        out += messages(parser)
    return out


def receive_via_room(parser: FrameParser, data: bytes, piece: int) -> list[tuple[int, bytes]]:
    """Deliver *data* as a zero-copy driver does: into big_room() when a big frame lacks
    bytes (at most *piece* at a time), else through feed()."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        room = parser.big_room()
        if room is None:
            parser.feed(data[pos:pos + piece])
            pos += min(piece, len(data) - pos)
        else:
            with room:
                n = min(len(room), piece, len(data) - pos)
                room[:n] = data[pos:pos + n]
            parser.big_received(n)
            pos += n
        out += messages(parser)
    return out


# --- round trips ----------------------------------------------------------------------------
_SIZES = [0, 1, 125, 126, 1000, 65535, 65536, BIG_FRAME - 1, BIG_FRAME, 3 * MiB + 5]


@pytest.mark.parametrize("size", _SIZES, ids=[f"{n}B" for n in _SIZES])
@pytest.mark.parametrize("masked", [True, False], ids=["client-frames", "server-frames"])
def test_build_frame_round_trips_through_the_parser_at_every_header_size(masked: bool, size: int) -> None:
    """A frame built for either direction (7-, 16-, 64-bit lengths; big ones gathered
    apart) parses back to its payload, and the message behind it follows."""
    payload = os.urandom(size)
    parser = FrameParser(masked=masked)
    parser.feed(build_frame(OP_BINARY, payload, mask=masked) + build_frame(OP_TEXT, b"next", mask=masked))
    assert messages(parser) == [(OP_BINARY, payload), (OP_TEXT, b"next")]
    assert parser.drained()


def test_build_frame_masks_with_the_key_from_its_source() -> None:
    """A masked frame is header, the source's key, then the payload XORed with it;
    an unmasked one is header and payload, as a hand-built frame."""
    key = b"\x01\x02\x03\x04"
    payload = b"hello, world"
    assert build_frame(OP_TEXT, payload, mask=True, keys=lambda: key) == (
        bytes((0x81, 0x80 | len(payload))) + key + mask_bytes(payload, key))
    assert build_frame(OP_TEXT, payload, mask=False) == frame(OP_TEXT, payload, masked=False)
    assert build_frame(OP_TEXT, b"ab", mask=False, fin=False) == frame(OP_TEXT, b"ab", fin=False, masked=False)


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 1 << 40])
def test_frame_header_matches_rfc_6455_lengths(length: int) -> None:
    """7-bit, 16-bit and 64-bit length forms, with the mask bit when asked."""
    head = frame_header(OP_BINARY, length)
    masked_head = masked_frame_header(OP_BINARY, length)
    assert head[0] == 0x82 and masked_head[1] & 0x80 and not head[1] & 0x80
    if length < 126:
        assert head[1] == length and len(head) == 2
    elif length < 65536:
        assert head[1] == 126 and int.from_bytes(head[2:4], "big") == length
    else:
        assert head[1] == 127 and int.from_bytes(head[2:10], "big") == length
    assert masked_head[0] == head[0] and masked_head[2:] == head[2:]


def test_masked_chunks_make_one_frame_the_server_parses() -> None:
    """A big client frame sent as bounded pieces (header + key, then MASK_CHUNK-sized
    masked pieces) parses back to the payload."""
    payload = os.urandom(2 * MASK_CHUNK + 7)
    pieces = list(masked_chunks(OP_BINARY, payload, MaskKeys().next))
    assert max(len(p) for p in pieces) <= MASK_CHUNK
    parser = FrameParser(masked=True)
    for piece in pieces:
        parser.feed(piece)
    assert messages(parser) == [(OP_BINARY, payload)]


def test_mask_keys_are_4_bytes_and_not_repeated() -> None:
    """Keys come from a CSPRNG pool: 4 bytes each, refilled past its end, no repeats to speak of."""
    keys = MaskKeys()
    drawn = [keys.next() for _ in range(3000)]  # past one 4 KiB pool
    assert all(len(k) == 4 for k in drawn)
    assert len(set(drawn)) > 2990


def test_mask_keys_hold_the_lock_they_are_given_while_drawing() -> None:
    """A driver framing on several threads passes a lock; each draw holds it."""

    class CountingLock:
        def __init__(self) -> None:
            self.held = 0

        def __enter__(self) -> None:
            self.held += 1

        def __exit__(self, *exc: object) -> None:
            pass

    lock = CountingLock()
    keys = MaskKeys(lock)
    assert len(keys.next() + keys.next()) == 8
    assert lock.held == 2


def test_apply_mask_is_its_own_inverse() -> None:
    data = os.urandom(1001)
    assert apply_mask(b"abcd", apply_mask(b"abcd", data)) == data
    assert apply_mask(b"abcd", data) == mask_bytes(data, b"abcd")
    assert apply_mask(b"abcd", b"") == b""


def test_the_c_mask_and_the_integer_mask_agree_on_every_length_and_buffer() -> None:
    """websockets' C XOR, where installed, gives what the big-integer fallback gives, for
    bytes, bytearrays, memoryviews and mappings, at any length and offset."""
    pytest.importorskip("websockets.speedups")
    assert masking._c_mask is not None  # loaded without importing the websockets package
    key = os.urandom(4)
    for n in [*range(0, 40), 1001, MASK_CHUNK + 3]:
        data = os.urandom(n)
        mapped = mmap.mmap(-1, n + 8) if n else bytearray(8)
        mapped[3:3 + n] = data
        expected = masking._mask_with_ints(key, data)
        assert expected == mask_bytes(data, key)
        for buf in (data, bytearray(data), memoryview(data), memoryview(mapped)[3:3 + n]):
            assert apply_mask(key, buf) == expected


def test_many_frames_in_one_feed_all_come_out_in_order() -> None:
    """One feed holding 500 frames gives 500 messages, then None until more comes."""
    sent = [(OP_TEXT if i % 2 else OP_BINARY, b"m%d" % i * (i % 7)) for i in range(500)]
    parser = FrameParser(masked=True)
    parser.feed(b"".join(build_frame(op, p, mask=True) for op, p in sent))
    assert messages(parser) == sent
    assert parser.next_message() is None and parser.drained()


@pytest.mark.parametrize("masked", [True, False])
def test_frames_fed_byte_by_byte_come_out_once_complete(masked: bool) -> None:
    """Split anywhere (inside the header, the length, the key, the payload), each message
    comes out exactly once, when its last byte arrives."""
    sent = [(OP_TEXT, b"x" * 5), (OP_BINARY, os.urandom(300)), (OP_PING, b"p"), (OP_BINARY, os.urandom(70_000))]
    data = b"".join(build_frame(op, p, mask=masked) for op, p in sent)
    parser = FrameParser(masked=masked)
    last = 0
    for i in range(len(data)):
        parser.feed(data[i:i + 1])
        got = messages(parser)
        if got:
            assert got == [sent[last]]
            last += 1
    assert last == len(sent)


# --- big frames -----------------------------------------------------------------------------
@pytest.mark.parametrize("masked", [True, False])
def test_big_frame_fed_byte_by_byte(masked: bool) -> None:
    """A big frame (gathered in its own buffer) fed one byte at a time comes out whole,
    once, followed by the small message after it."""
    payload = os.urandom(BIG_FRAME + 3)
    data = build_frame(OP_BINARY, payload, mask=masked) + build_frame(OP_TEXT, b"after", mask=masked)
    parser = FrameParser(masked=masked)
    assert feed_bytewise(parser, data) == [(OP_BINARY, payload), (OP_TEXT, b"after")]
    assert parser.drained()


@pytest.mark.parametrize("masked", [True, False])
def test_big_frame_fed_in_one_piece_is_not_copied(masked: bool) -> None:
    """Fed whole, a big payload comes out as one buffer (its own mapping: no copy of the whole)."""
    payload = os.urandom(4 * MiB)
    parser = FrameParser(masked=masked)
    head = build_frame(OP_BINARY, payload, mask=masked)
    parser.feed(head[:100])
    assert parser.next_message() is None and parser.big_missing == len(head) - 100
    parser.feed(head[100:])
    opcode, data = parser.next_message() or (0, b"")
    assert opcode == OP_BINARY and bytes(data) == payload and isinstance(data, (bytearray, mmap.mmap))


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("piece", [1000, 65536, 5 * MiB])
def test_big_frames_received_through_big_room(masked: bool, piece: int) -> None:
    """A driver receiving into big_room() (never more than the frame lacks) gets the big
    fragments, the pings between them and the frames after them, in order."""
    first, second = os.urandom(BIG_FRAME + 10), os.urandom(2 * BIG_FRAME)
    data = (build_frame(OP_BINARY, first, mask=masked, fin=False) + build_frame(OP_PING, b"?", mask=masked)
            + build_frame(OP_CONT, second, mask=masked) + build_frame(OP_TEXT, b"tail", mask=masked))
    parser = FrameParser(masked=masked)
    assert parser.big_room() is None
    assert receive_via_room(parser, data, piece) == [(OP_PING, b"?"), (OP_BINARY, first + second), (OP_TEXT, b"tail")]
    assert parser.drained() and parser.big_room() is None


def test_big_room_offers_only_what_the_frame_lacks() -> None:
    """The room ends where the frame ends (the next frame's bytes go through feed), and
    big_received refuses a count the room could not have held."""
    payload = os.urandom(BIG_FRAME + 5)
    data = build_frame(OP_BINARY, payload, mask=False)
    parser = FrameParser(masked=False)
    parser.feed(data[:20])
    assert parser.next_message() is None
    lacking = parser.big_missing
    assert lacking == len(data) - 20
    room = parser.big_room()
    assert room is not None and len(room) == lacking
    with room:
        room[:] = data[20:]
    with pytest.raises(ValueError):
        parser.big_received(lacking + 1)
    parser.big_received(lacking)
    assert parser.big_missing == 0 and parser.big_room() is None
    opcode, data = parser.next_message() or (0, b"")
    assert (opcode, bytes(data)) == (OP_BINARY, payload)
    with pytest.raises(ValueError):
        parser.big_received(1)


def test_a_frame_that_only_claims_to_be_huge_costs_only_what_is_sent() -> None:
    """A 1 TiB length with no limit: the parser waits for it, holding only what came."""
    parser = FrameParser(masked=False)
    parser.feed(frame(OP_BINARY, b"abc", masked=False, declared=1 << 40))
    assert parser.next_message() is None
    assert parser.big_missing == (1 << 40) - 3
    room = parser.big_room()
    assert room is not None and len(room) <= 1 << 24
    room.release()
    assert not parser.drained()


# --- fragments, control frames, limits -------------------------------------------------------
@pytest.mark.parametrize("masked", [True, False])
def test_fragmented_message_around_interleaved_control_frames(masked: bool) -> None:
    """text(fin=0) ping cont(fin=0) pong cont close: the controls come out where they
    came, the message once whole (exactly at the limit)."""
    data = (frame(OP_TEXT, b"hel", fin=False, masked=masked) + frame(OP_PING, b"there?", masked=masked)
            + frame(OP_CONT, b"lo ", fin=False, masked=masked) + frame(OP_PONG, b"p", masked=masked)
            + frame(OP_CONT, b"world", masked=masked) + frame(OP_CLOSE, close_body(1000, b"bye"), masked=masked))
    expected = [(OP_PING, b"there?"), (OP_PONG, b"p"), (OP_TEXT, b"hello world"), (OP_CLOSE, close_body(1000, b"bye"))]
    parser = FrameParser(11, masked=masked)
    parser.feed(data)
    assert messages(parser) == expected
    assert feed_bytewise(FrameParser(11, masked=masked), data) == expected


def test_max_message_may_change_between_messages() -> None:
    """A limit raised or lowered between messages applies from the next frame on
    (the server raises it after authentication)."""
    parser = FrameParser(10, masked=True)
    parser.feed(build_frame(OP_TEXT, b"x" * 10, mask=True))
    assert messages(parser) == [(OP_TEXT, b"x" * 10)]
    parser.max_message = 100
    parser.feed(build_frame(OP_TEXT, b"y" * 100, mask=True))
    assert messages(parser) == [(OP_TEXT, b"y" * 100)]
    parser.max_message = None
    big = os.urandom(BIG_FRAME)
    parser.feed(build_frame(OP_BINARY, big, mask=True))
    assert messages(parser) == [(OP_BINARY, big)]
    parser.max_message = 5
    parser.feed(build_frame(OP_TEXT, b"z" * 6, mask=True))
    with pytest.raises(FrameError) as info:
        parser.next_message()
    assert info.value.code == 1009




def _parse_until_error(parser: FrameParser, data: bytes, bytewise: bool) -> FrameError:
    with pytest.raises(FrameError) as info:
        if bytewise:
            for i in range(len(data)):
                parser.feed(data[i:i + 1])
                for opcode, _ in messages(parser):  # control frames before the bad one come out first
                    assert opcode in (OP_PING, OP_PONG)
        else:
            parser.feed(data)
            for opcode, _ in messages(parser):
                assert opcode in (OP_PING, OP_PONG)
    return info.value


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("masked", "max_message", "data", "code"), BAD_FRAMES)
def test_each_bad_frame_raises_frame_error_with_its_close_code(
        masked: bool, max_message: int | None, data: bytes, code: int, bytewise: bool) -> None:
    """Each malformed or oversized frame raises FrameError (a ProtocolError) carrying the
    close code it calls for, however its bytes are split."""
    error = _parse_until_error(FrameParser(max_message, masked=masked), data, bytewise)
    assert isinstance(error, ProtocolError)
    assert error.code == code, error


def test_a_bad_control_frame_is_refused_from_its_header_alone() -> None:
    """An over-long or fragmented control frame is refused before its payload arrives."""
    for head in (frame(OP_PING, b"p" * 126)[:4], frame(OP_PING, b"p", fin=False)[:2]):
        parser = FrameParser(masked=True)
        parser.feed(head)
        with pytest.raises(FrameError):
            parser.next_message()


@pytest.mark.parametrize("code", sorted(CLOSE_CODES) + [3000, 4999])
def test_close_codes_a_peer_may_send_are_accepted(code: int) -> None:
    """Every registered code a peer may send, and the private range, with a UTF-8 reason."""
    body = close_body(code, "d\u00e9j\u00e0".encode())
    parser = FrameParser(masked=True)
    parser.feed(frame(OP_CLOSE, body))
    assert parser.next_message() == (OP_CLOSE, body)


def test_close_payload_fits_a_control_frame_and_passes_the_checks() -> None:
    """close_payload cuts a long reason to 120 bytes; the result is a valid close body;
    an empty body (no status) is valid too."""
    body = close_payload(1001, "r" * 500)
    assert len(body) == 122 and body[:2] == b"\x03\xe9"
    check_close(body)
    check_close(b"")
    parser = FrameParser(masked=False)
    parser.feed(build_frame(OP_CLOSE, body, mask=False) + build_frame(OP_CLOSE, b"", mask=False))
    assert messages(parser) == [(OP_CLOSE, body), (OP_CLOSE, b"")]


def test_drained_until_every_byte_fed_is_returned() -> None:
    parser = FrameParser(masked=True)
    assert parser.drained()
    data = build_frame(OP_TEXT, b"abc", mask=True)
    parser.feed(data[:3])
    assert parser.next_message() is None and not parser.drained()
    parser.feed(data[3:])
    assert not parser.drained()
    assert parser.next_message() == (OP_TEXT, b"abc")
    assert parser.drained()


# --- the core imports no I/O -----------------------------------------------------------------
def core_modules() -> Iterator[str]:
    yield "easyrpc._core"
    for info in pkgutil.iter_modules(easyrpc._core.__path__):
        yield f"easyrpc._core.{info.name}"


def test_the_core_has_the_modules_we_check() -> None:
    assert {"easyrpc._core.frames", "easyrpc._core.keepalive", "easyrpc._core.session", "easyrpc._core.close_codes",
            "easyrpc._core.cipher", "easyrpc._core.handshake"} <= set(core_modules())


@pytest.mark.parametrize("module", list(core_modules()))
def test_core_module_source_imports_no_io(module: str) -> None:
    """Each core module's own imports: no I/O package, and inside easyrpc only the core,
    the exception tree and the message codec (``_protocol``, ``_codec``, ``_values``:
    sans-I/O too, checked by tests/test_core.py)."""
    root = pathlib.Path(easyrpc.__file__).parent.parent
    path = root.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the module's package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                if node.module:
                    imported.add(".".join([*package, node.module]))
                else:  # from .. import name: the names are modules of the package
                    imported |= {".".join([*package, a.name]) for a in node.names}
            else:
                imported.add(node.module or "")
    assert not {name.split(".")[0] for name in imported} & FORBIDDEN
    inside = {name for name in imported if name.split(".")[0] == "easyrpc"}
    allowed = {"easyrpc.exceptions", "easyrpc._protocol", "easyrpc._codec", "easyrpc._parts", "easyrpc._values"}
    assert all(name.startswith("easyrpc._core") or name in allowed for name in inside), inside


def test_importing_the_core_loads_no_io_module() -> None:
    """In a fresh interpreter, importing every core module (and what they import, without
    easyrpc's own __init__) adds no I/O module to sys.modules."""
    root = pathlib.Path(easyrpc.__file__).parent
    code = f"""
import sys, types
pkg = types.ModuleType("easyrpc")
pkg.__path__ = [{str(root)!r}]
sys.modules["easyrpc"] = pkg  # the package without its __init__ (which loads the server)
before = set(sys.modules)
import importlib
for name in {list(core_modules())!r}:
    importlib.import_module(name)
print(" ".join(sorted(set(sys.modules) - before)))
"""
    loaded = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True,
                            timeout=60).stdout.split()
    assert "easyrpc._core.frames" in loaded and "easyrpc.exceptions" in loaded
    assert not {name.split(".")[0] for name in loaded} & FORBIDDEN, loaded
