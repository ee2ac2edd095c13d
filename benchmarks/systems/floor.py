"""The transport floor: a bare flask-sock echo route and a websocket-client peer, no RPC.

``python floor.py server --port P`` / ``python floor.py client --port P [...]``

What easyrpc does on top of this (framing its messages, JSON, matching replies to calls,
threads) is what the ratios to this floor measure.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from _common import SMALL_RESULT, SyncDriver, nested_list, run_sync_client, serve_until_terminated

PATH = "/ws/echo"
SMALL = b'{"good_func_a":[1,5,7]}'
DEEP_TEXT = "[" * 1000 + "]" * 1000
STOP = b"__stop_reader__"
NODELAY = os.environ.get("FLOOR_NODELAY", "1") == "1"


def serve(port: int) -> None:
    from flask import Flask
    from flask_sock import Sock
    from werkzeug.serving import make_server

    app = Flask(__name__)
    sock = Sock(app)

    @sock.route(PATH)  # type: ignore[untyped-decorator]
    def echo(ws: Any) -> None:
        if NODELAY:
            ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = ws.receive()
            if isinstance(data, str) and data.startswith("gen:"):
                for i in range(int(data[4:])):
                    ws.send(str(i))
                continue
            ws.send(data)

    httpd = make_server("127.0.0.1", port, app, threaded=True)
    serve_until_terminated(httpd.serve_forever, httpd.shutdown)


class FloorDriver(SyncDriver):
    def __init__(self, port: int) -> None:
        import websocket

        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{PATH}", timeout=60,
                                              skip_utf8_validation=True, enable_multithread=True)
        self._lock = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._reader: threading.Thread | None = None

    def small(self) -> Any:
        self.ws.send(SMALL)
        if self.ws.recv() != SMALL.decode():
            raise AssertionError("bad echo")
        return SMALL_RESULT

    def small_for_thread(self) -> Any:
        # Minimal multiplexing: the echo answers in order, so a FIFO of waiters matches
        # replies to senders; one reader thread wakes them.
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_loop, daemon=True)
            self._reader.start()

        def call() -> Any:
            done = threading.Event()
            with self._lock:
                self._waiters.append(done)
                self.ws.send(SMALL)
            if not done.wait(30):
                raise TimeoutError("no echo")
            return SMALL_RESULT

        return call

    def threads_note(self) -> str:
        return "FIFO of waiters + 1 reader thread"

    def end_threads(self) -> None:
        if self._reader is not None:
            with self._lock:
                self.ws.send(STOP)
            self._reader.join(30)
            self._reader = None

    def _read_loop(self) -> None:
        while True:
            try:
                data = self.ws.recv()
            except Exception:  # noqa: BLE001 - the socket closed: the reader is done
                return
            if data == STOP.decode():
                return
            with self._lock:
                waiter = self._waiters.popleft()
            waiter.set()

    def small_batch(self, n: int) -> None:
        for _ in range(n):
            self.ws.send(SMALL)
        for _ in range(n):
            self.ws.recv()

    def echo(self, value: Any) -> Any:
        if isinstance(value, list):  # the deep list: send its JSON text
            self.ws.send(DEEP_TEXT)
            if self.ws.recv() != DEEP_TEXT:
                raise AssertionError("bad echo")
            return nested_list()
        self.ws.send(value)
        return self.ws.recv()

    def echo_bytes(self, value: bytes) -> bytes:
        self.ws.send_binary(value)
        reply: bytes = self.ws.recv()
        return reply

    def gen(self, n: int) -> Iterator[int]:
        self.ws.send(f"gen:{n}")
        for _ in range(n):
            yield int(self.ws.recv())

    def gen_note(self) -> str:
        return "one frame per item"

    def close(self) -> None:
        self.ws.close()


def main() -> None:
    role, argv = sys.argv[1], sys.argv[2:]
    if role == "server":
        serve(int(argv[argv.index("--port") + 1]))
    else:
        run_sync_client(FloorDriver, argv)


if __name__ == "__main__":
    main()
