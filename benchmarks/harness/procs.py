"""Server and client subprocesses, each stopped through its own Popen handle.

Nothing here binds anything but 127.0.0.1, every wait has a timeout, and a process that
does not stop when asked is killed.
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
STOP_GRACE = 5.0


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[Any], grace: float = STOP_GRACE) -> int | None:
    """Terminate *proc* (this handle only), kill it if it lingers; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
    return proc.returncode


class Server:
    """One system's server process on 127.0.0.1:*port*; use as a context manager."""

    def __init__(self, cmd: list[str], port: int, log_path: Path, startup_timeout: float) -> None:
        self.cmd = cmd
        self.port = port
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode} (see {self.log_path})")
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not listening after {self.startup_timeout:.0f} s (see {self.log_path})")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ClientOutcome:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    timed_out: str | None = None  # the workload that ran out of time (the client was killed)
    failed: str | None = None  # why the client stopped early, if it did
    failed_during: str | None = None  # the workload it was running then (None: while starting)


def run_client(cmd: list[str], workloads: list[str], timeouts: dict[str, float], startup_timeout: float,
               log_path: Path, on_result: Callable[[str, dict[str, Any]], None] | None = None) -> ClientOutcome:
    """Run a client over *workloads*, killing it if one overruns its timeout.

    The client prints JSON lines (``start``/``result`` events, see systems/_common.py).
    Stops at the first timeout or early exit; the caller restarts for the rest.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    outcome = ClientOutcome()
    lines: queue.Queue[str | None] = queue.Queue()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True)
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=pump, name="client-stdout", daemon=True)
        reader.start()
        current: str | None = None
        deadline = time.monotonic() + startup_timeout
        try:
            while len(outcome.results) < len(workloads):
                remaining = deadline - time.monotonic()
                try:
                    line = lines.get(timeout=max(0.0, remaining))
                except queue.Empty:
                    if current is None:
                        outcome.failed = f"client did not start within {startup_timeout:.0f} s"
                    else:
                        outcome.timed_out = current
                    break
                if line is None:
                    code = proc.wait(STOP_GRACE)
                    outcome.failed = f"client exited with code {code} during {current or 'startup'} (see {log_path})"
                    outcome.failed_during = current
                    break
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a stray print of the system under test
                if event.get("event") == "start":
                    current = event["workload"]
                    deadline = time.monotonic() + timeouts[current]
                elif event.get("event") == "result":
                    name = event.pop("workload")
                    event.pop("event")
                    outcome.results[name] = event
                    if on_result is not None:
                        on_result(name, event)
                    current = None
                    deadline = time.monotonic() + startup_timeout  # until the next start
        finally:
            if outcome.timed_out is not None or outcome.failed is not None:
                _stop(proc, grace=1.0)
            else:
                try:
                    proc.wait(STOP_GRACE * 2)  # closing its proxy
                except subprocess.TimeoutExpired:
                    _stop(proc)
            reader.join(STOP_GRACE)
            stdout.close()
    return outcome
