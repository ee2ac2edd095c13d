"""The server the soak, memory and encryption benchmarks run in a subprocess, and their shared helpers.

As a script::

    python benchmarks/_bench_server.py [--port 0] [--encryption]

serves an :class:`~easyrpc.server.EasyRpcServer` on 127.0.0.1 (werkzeug, threaded) at
``/ws/bench``, prints ``READY <port>`` once listening, and stops when its stdin closes or
it receives SIGTERM. As a module (the benchmarks import it; it imports neither Flask nor
easyrpc at module level, so a client's memory baseline stays clean) it offers
:class:`BenchServer`, which starts and stops that subprocess through its own Popen handle,
and :func:`proc_stats`, which reads a process's memory, threads and descriptors from /proc.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used, so a client process never loads Flask
    from flask import Flask

    from easyrpc.server import EasyRpcServer

HOST = "127.0.0.1"
PATH = "/ws/bench"
SECRET = "abcd1234"
STOP_GRACE = 10.0
MAX_SLEEP = 5.0  # the longest a server function may sleep
MIB = 1024 * 1024


# --- /proc readings (both sides) -------------------------------------------------------------
@dataclass(frozen=True)
class ProcStats:
    """One process's resident memory, threads and open descriptors."""

    rss_mib: float
    hwm_mib: float  # peak resident set (VmHWM) since start or the last reset
    threads: int
    fds: int


def _status_kib(pid: int | str, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/{pid}/status")
    return int(match.group(1))


def proc_stats(pid: int | str = "self") -> ProcStats:
    """RSS, peak RSS, thread count and open fd count of *pid* (``"self"``: this process)."""
    return ProcStats(
        rss_mib=_status_kib(pid, "VmRSS") / 1024,
        hwm_mib=_status_kib(pid, "VmHWM") / 1024,
        threads=len(os.listdir(f"/proc/{pid}/task")),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


def reset_peak(pid: int | str = "self") -> bool:
    """Reset *pid*'s VmHWM to its current RSS (Linux ``clear_refs`` 5); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def thread_groups() -> dict[str, int]:
    """This process's threads counted by name, digits dropped (``easyrpc-worker_3`` -> ``easyrpc-worker_``)."""
    return dict(Counter(re.sub(r"\d+", "", t.name) for t in threading.enumerate()))


# --- the server subprocess, seen from the benchmark ----------------------------------------
class BenchServer:
    """The bench server in a subprocess on a free port of 127.0.0.1; a context manager.

    Stopped by closing its stdin (it then closes the easyrpc server and werkzeug), then,
    if it lingers, terminate() and kill() on this handle only.
    """

    def __init__(self, *, encryption: bool = False, startup_timeout: float = 30.0) -> None:
        self.encryption = encryption
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump: threading.Thread | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server is not running")
        return self.proc.pid

    def start(self) -> BenchServer:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--port", "0"]
        if self.encryption:
            cmd.append("--encryption")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._pump = threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), name="bench-server-out",
                                      daemon=True)
        self._pump.start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("READY "):
                self.port = int(line.split()[1])
                return self
        self.stop()
        raise RuntimeError("the bench server did not report READY")

    def _read_stdout(self, stream: IO[str] | None) -> None:
        if stream is not None:
            for line in stream:
                self._lines.put(line.strip())
        self._lines.put(None)

    def stats(self) -> ProcStats:
        return proc_stats(self.pid)

    def stop(self) -> int | None:
        """Stop the subprocess (gracefully, then by force); its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for action in (None, proc.terminate, proc.kill):
            if action is not None:
                action()
            try:
                proc.wait(STOP_GRACE)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._pump is not None:
            self._pump.join(STOP_GRACE)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the server side ------------------------------------------------------------------------
def build_app(encryption: bool) -> tuple[Flask, EasyRpcServer]:
    """The Flask app and the easyrpc server with the benchmark functions."""
    from flask import Flask

    from easyrpc.server import EasyRpcServer

    app = Flask(__name__)
    rpc = EasyRpcServer(app, PATH, server_secret=SECRET, encryption_enabled=encryption)

    @rpc.origin
    def echo(x: Any) -> Any:
        return x

    @rpc.origin
    def good_func_a(a: Any, b: Any, c: Any) -> dict[str, list[Any]]:
        return {"good_func_a": [a, b, c]}

    @rpc.origin
    def gen(n: int) -> Iterator[int]:
        yield from range(n)

    @rpc.origin
    def slow(seconds: float) -> float:
        """Sleep (at most MAX_SLEEP seconds): for calls whose time limit expires."""
        time.sleep(min(float(seconds), MAX_SLEEP))
        return seconds

    @rpc.origin
    def slow_gen(n: int, seconds: float) -> Iterator[int]:
        """Yield *n* items, sleeping before each (at most MAX_SLEEP seconds)."""
        for i in range(n):
            time.sleep(min(float(seconds), MAX_SLEEP))
            yield i

    @rpc.origin
    def fail(message: str) -> None:
        raise ValueError(message)

    @rpc.origin
    def stats(collect: bool = False) -> dict[str, Any]:
        """This server's connections, calls, streams, memory, Python blocks, threads (by name)
        and fds; after a garbage collection if *collect*."""
        if collect:
            gc.collect()
        mine = proc_stats()
        return {
            "py_blocks": sys.getallocatedblocks(),
            "connection_count": rpc.connection_count,
            "active_calls": rpc.active_calls - 1,  # not counting this call
            "active_streams": rpc.active_streams,
            "rss_mib": mine.rss_mib,
            "threads": mine.threads,
            "fds": mine.fds,
            "thread_groups": thread_groups(),
        }

    return app, rpc


def serve(port: int, encryption: bool) -> None:
    """Serve until stdin closes or SIGTERM arrives, then close easyrpc and werkzeug."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per WebSocket request
    app, rpc = build_app(encryption)
    httpd = make_server(HOST, port, app, threaded=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the benchmark closed our stdin
        stop.set()

    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="serve", daemon=True)
    serving.start()
    print(f"READY {httpd.server_port}", flush=True)
    while not stop.wait(0.5):
        pass
    rpc.close(grace=2.0)
    httpd.shutdown()
    serving.join(STOP_GRACE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--encryption", action="store_true", help="encryption_enabled=True")
    args = parser.parse_args()
    serve(args.port, args.encryption)


if __name__ == "__main__":
    main()
