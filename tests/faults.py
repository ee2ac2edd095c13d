"""Fault injection on loopback: a TCP relay that can cut, stall, slow down (dribble) or
re-fragment a connection, and a
server in a subprocess that can be killed, stopped (SIGSTOP) and restarted by its PID."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any


class Relay:
    """A TCP relay on 127.0.0.1:<port> to a target port, for fault injection.

    Each relayed connection runs two threads (``test-relay-up``: client -> server,
    ``test-relay-down``: server -> client), each a loop that re-checks :attr:`stopping`
    at least every 50 ms; :meth:`close` stops and joins them all. Directions are named
    ``"up"`` and ``"down"``. Shaping applies at once, to every relayed connection:

    * ``cut()`` resets every connection (RST, no WebSocket close frame);
      ``stall()`` stops forwarding both ways (a black hole), ``stall_downstream()``
      server -> client only; ``resume()`` undoes stalls and byte limits.
    * ``dribble(direction, rate)`` forwards at most *rate* bytes per second that way
      (``None``: full speed), in small steps, so bytes keep arriving slowly.
    * ``stall_after(direction, nbytes)`` forwards *nbytes* more that way, then stops
      (leaving the rest unread); ``wait_held(direction, timeout)`` waits until it has.
    * ``fragment(size)`` splits every write into pieces of at most *size* bytes, each
      sent on its own (``None``: as received).
    * ``forwarded(direction)`` is the number of bytes forwarded that way so far.
    * ``inject(data)`` sends bytes to every client as if the server had sent them
      (between whole chunks relayed down: a frame boundary while the server is quiet).

    Counts and limits are totals over all connections: tests use one at a time.
    """

    host = "127.0.0.1"
    _STEP = 0.05  # the longest any relay loop waits before it re-checks its state

    def __init__(self, target_port: int, *, record: bool = False) -> None:
        self.target_port = target_port
        # with record: every byte relayed each way, in order (for tests of what went by)
        self.recorded: dict[str, bytearray] | None = {"up": bytearray(), "down": bytearray()} if record else None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()  # pairs, and the shaping state below
        self.down_lock = threading.Lock()  # writes to the clients: relayed or injected, never mixed
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.stalled = threading.Event()
        self.stalled_down = threading.Event()  # only server -> client
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self._rate: dict[str, float | None] = {"up": None, "down": None}
        self._limit: dict[str, int | None] = {"up": None, "down": None}
        self._count: dict[str, int] = {"up": 0, "down": 0}
        self._held = {"up": threading.Event(), "down": threading.Event()}
        self._chunk: int | None = None
        self._spawn(self._accept_loop, "test-relay-accept")

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self.lock:
            self.threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        self.listener.settimeout(self._STEP)
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # fragments go out as they are
            with self.lock:
                self.pairs.append((client, upstream))
            self._spawn(self._pipe, "test-relay-up", client, upstream, "up")
            self._spawn(self._pipe, "test-relay-down", upstream, client, "down")

    def _allowance(self, direction: str) -> int:
        """How many bytes the pipe may read now (0: none; it waits a step)."""
        if self.stalled.is_set() or (direction == "down" and self.stalled_down.is_set()):
            return 0
        with self.lock:
            rate, limit, count = self._rate[direction], self._limit[direction], self._count[direction]
        n = 1 << 16
        if rate is not None:
            n = min(n, max(1, int(rate * self._STEP)))
        if limit is not None:
            if count >= limit:
                self._held[direction].set()
                return 0
            n = min(n, limit - count)
        return n

    def _pipe(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        poller = select.poll()
        poller.register(src, select.POLLIN | select.POLLERR | select.POLLHUP)
        try:
            while not self.stopping.is_set():
                n = self._allowance(direction)
                if n == 0:
                    self.stopping.wait(0.01)
                    continue
                if not poller.poll(self._STEP * 1000):  # poll, not select: any descriptor number
                    continue
                data = src.recv(n)
                if not data:
                    break
                started = time.monotonic()
                with self.lock:
                    chunk = self._chunk or len(data)
                    rate = self._rate[direction]
                with self.down_lock if direction == "down" else contextlib.nullcontext():
                    for pos in range(0, len(data), chunk):
                        dst.sendall(data[pos:pos + chunk])
                with self.lock:
                    self._count[direction] += len(data)
                    if self.recorded is not None:
                        self.recorded[direction] += data
                if rate is not None:  # pace: this step's bytes take len/rate seconds
                    self.stopping.wait(max(0.0, started + len(data) / rate - time.monotonic()))
        except (OSError, ValueError):  # a socket reset or closed by cut() / the other pipe
            pass
        for s in (src, dst):  # shut down first: it unblocks the other pipe's sendall
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def inject(self, data: bytes) -> None:
        """Send *data* to every relayed client, between whole chunks from the server (a
        frame boundary while the server is quiet)."""
        with self.lock:
            clients = [client for client, _ in self.pairs]
        with self.down_lock:
            for client in clients:
                try:
                    client.sendall(data)
                except OSError:
                    pass  # a connection that has ended

    def cut(self) -> None:
        """Reset every relayed connection (RST, no close frame)."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stall(self) -> None:
        """Stop forwarding both ways (the bytes stay unread in the kernel)."""
        self.stalled.set()

    def stall_downstream(self) -> None:
        """Stop relaying server -> client only: the client looks like a consumer that stopped reading."""
        self.stalled_down.set()

    def dribble(self, direction: str, rate: float | None) -> None:
        """Forward at most *rate* bytes per second in *direction* ("up" or "down"); None: no limit."""
        with self.lock:
            self._rate[direction] = rate

    def stall_after(self, direction: str, nbytes: int) -> None:
        """Forward *nbytes* more bytes in *direction*, then stop forwarding that way."""
        with self.lock:
            self._limit[direction] = self._count[direction] + nbytes
            self._held[direction].clear()

    def wait_held(self, direction: str, timeout: float = 10.0) -> bool:
        """Wait (at most *timeout* s) until a :meth:`stall_after` limit has been reached."""
        return self._held[direction].wait(timeout)

    def fragment(self, size: int | None) -> None:
        """Split every write (both ways) into pieces of at most *size* bytes; None: don't."""
        with self.lock:
            self._chunk = size

    def forwarded(self, direction: str) -> int:
        """Bytes forwarded in *direction* so far (all connections)."""
        with self.lock:
            return self._count[direction]

    def resume(self) -> None:
        """Undo stalls and byte limits (rates and fragmenting stay)."""
        with self.lock:
            self._limit = {"up": None, "down": None}
        self.stalled.clear()
        self.stalled_down.clear()

    def close(self) -> None:
        """Stop every relay thread and join it; close the listener."""
        self.stopping.set()
        self.cut()
        with self.lock:
            threads = list(self.threads)
        for t in threads:
            t.join(5)
        self.listener.close()


class ServerProcess:
    """tests/server_main.py in a subprocess, controlled by its PID only."""

    host = "127.0.0.1"

    def __init__(self, port: int = 0, *args: str) -> None:
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.port = port
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "tests.server_main", str(self.port), *self.args]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            self.kill()
            raise RuntimeError(f"server process did not start: {line!r}")
        self.port = int(line.split()[1])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def stop_signal(self) -> None:
        """SIGSTOP the server and wait (bounded) until the kernel reports it stopped."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    return
            time.sleep(0.005)
        raise RuntimeError("server process did not stop")

    def cont_signal(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
