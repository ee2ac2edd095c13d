"""Fault injection on loopback: a TCP relay that can cut or stall a connection, and a
server in a subprocess that can be killed, stopped (SIGSTOP) and restarted by its PID."""

from __future__ import annotations

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
    """Forwards 127.0.0.1:<port> to a target port; ``cut()`` resets every connection
    without a WebSocket close frame, ``stall()`` stops forwarding (a black hole),
    ``inject(data)`` sends bytes to the clients as if the server had sent them."""

    host = "127.0.0.1"

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.down_lock = threading.Lock()  # writes to the clients: relayed or injected, never mixed
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.stalled = threading.Event()
        self.stalled_down = threading.Event()  # only server -> client
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept_loop, "test-relay-accept")

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        self.listener.settimeout(0.05)
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
            with self.lock:
                self.pairs.append((client, upstream))
            self._spawn(self._pump, "test-relay-pump", client, upstream)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        socks = [a, b]
        while not self.stopping.is_set():
            if self.stalled.is_set():
                time.sleep(0.01)
                continue
            try:
                # while the downstream is stalled, leave the server's data unread
                watch = [a] if self.stalled_down.is_set() else socks
                readable, _, _ = select.select(watch, [], [], 0.05)
                for s in readable:
                    data = s.recv(1 << 16)
                    if not data:
                        raise OSError("closed")
                    if s is a:
                        b.sendall(data)
                    else:
                        with self.down_lock:
                            a.sendall(data)
            except (OSError, ValueError):
                break
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

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

    def stall(self) -> None:
        self.stalled.set()

    def stall_downstream(self) -> None:
        """Stop relaying server -> client only: the client looks like a consumer that stopped reading."""
        self.stalled_down.set()

    def resume(self) -> None:
        self.stalled.clear()
        self.stalled_down.clear()

    def close(self) -> None:
        self.stopping.set()
        self.cut()
        for t in self.threads:
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
