"""The hub's non-blocking reads under gevent (``easyrpc/_net/green.py``).

gevent's socket ``recv`` waits cooperatively when nothing is ready, whatever the flags:
``recv(n, MSG_DONTWAIT)`` does not raise ``BlockingIOError``. The hub's leader reads with
``FrameReader.receive_ready`` ("never blocking"); on a gevent socket it would park the
leader on one connection after a spurious readiness. Checked in a monkey-patched
subprocess (this process stays unpatched): the premise (a gevent socket alone waits),
and that the server's reader, given :func:`reading_socket`'s view, returns at once and
still reads what arrives.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from easyrpc._net.green import reading_socket

ROOT = Path(__file__).resolve().parent.parent
DELAY = 1.0  # seconds before the peer sends: a read that waits for it takes this long

SCRIPT = f"""
from gevent import monkey
monkey.patch_all()
import json, socket, threading, time
from easyrpc._net.green import reading_socket
from easyrpc._transport import FrameReader

def timed(fn):
    t0 = time.monotonic()
    try:
        result = fn()
    except BlockingIOError:
        result = "BlockingIOError"
    return result, time.monotonic() - t0

def sender(sock):
    time.sleep({DELAY})
    sock.send(b"\\x81\\x80" + bytes(4))  # an empty masked text frame

a, b = socket.socketpair()
a.settimeout(None)  # as the server's connection sets it: workers' sends block (cooperatively)
threading.Thread(target=sender, args=(b,), daemon=True).start()
plain = timed(lambda: a.recv(16, socket.MSG_DONTWAIT))

c, d = socket.socketpair()
c.settimeout(None)
threading.Thread(target=sender, args=(d,), daemon=True).start()
reader = FrameReader(reading_socket(c), 1 << 20, masked=True)
reader.incremental = True
ready = timed(reader.receive_ready)
time.sleep({DELAY} * 1.5)  # yields: the sender runs
later = timed(reader.receive_ready)
print(json.dumps({{"wrapped": type(reading_socket(c)).__name__, "plain": [repr(plain[0]), plain[1]],
                  "ready": list(ready), "later": list(later), "frame": repr(reader.pop())}}))
"""


@pytest.mark.timeout(60)
def test_receive_ready_never_waits_on_a_gevent_socket() -> None:
    pytest.importorskip("gevent")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=45,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["wrapped"] == "_NonWaitingReads", out
    # the premise: gevent's own recv(MSG_DONTWAIT) waited for the peer instead of raising
    assert out["plain"][0] == repr(b"\x81\x80" + bytes(4)) and out["plain"][1] >= DELAY * 0.8, out
    # through the view: nothing ready -> 0 at once; then the frame that arrived
    assert out["ready"][0] == 0 and out["ready"][1] < DELAY / 4, out
    assert out["later"][0] == 6, out
    assert out["frame"] == repr((1, b"")), out


def test_reading_socket_leaves_other_sockets_alone() -> None:
    a, b = socket.socketpair()
    try:
        assert reading_socket(a) is a  # not gevent: read as it is
    finally:
        a.close()
        b.close()
