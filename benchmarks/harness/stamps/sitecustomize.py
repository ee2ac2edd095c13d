"""Stamps every socket send and receive of this process (``benchmarks/ab.py --split``).

Imported at start-up (Python imports ``sitecustomize`` from ``PYTHONPATH``) when
``EASYRPC_STAMPS`` names a file: each send, and each receive that returned data, appends
``(kind, time.perf_counter())`` (1: send, 2: receive) to :data:`STAMPS`, written to that
file as JSON at exit or on SIGTERM. ``perf_counter`` is CLOCK_MONOTONIC on Linux: the
same clock in every process of the machine.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import time
from typing import Any

STAMPS: list[tuple[int, float]] = []
_PATH = os.environ.get("EASYRPC_STAMPS")


def _install(path: str) -> None:
    clock, stamp = time.perf_counter, STAMPS.append
    cls = socket.socket

    def sending(method: Any) -> Any:
        def send(self: socket.socket, *args: Any) -> Any:
            stamp((1, clock()))
            return method(self, *args)
        return send

    def receiving(method: Any) -> Any:
        def recv(self: socket.socket, *args: Any) -> Any:
            got = method(self, *args)
            if got:
                stamp((2, clock()))
            return got
        return recv

    for name in ("send", "sendall", "sendmsg"):
        setattr(cls, name, sending(getattr(cls, name)))
    for name in ("recv", "recv_into"):
        setattr(cls, name, receiving(getattr(cls, name)))

    def write(*signal_args: Any) -> None:
        with open(path, "w") as f:
            json.dump(STAMPS[-200_000:], f)
        if signal_args:  # SIGTERM: this process is done
            os._exit(0)

    atexit.register(write)
    try:
        signal.signal(signal.SIGTERM, write)
    except ValueError:  # not the main thread
        pass


if _PATH:
    _install(_PATH)
