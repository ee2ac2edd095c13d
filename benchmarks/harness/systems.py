"""The systems compared, and what each workload measures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SYSTEMS_DIR = Path(__file__).resolve().parent.parent / "systems"


@dataclass(frozen=True)
class System:
    key: str
    label: str
    script: str  # in benchmarks/systems/
    env: str | None  # a venv of envs.REQUIREMENTS, or None for the runner's interpreter
    client_role: str = "client"
    dist: str | None = None  # distribution whose version is reported

    def _python(self, python: str) -> list[str]:
        # A foreign venv ignores PYTHON* variables and the user site (-E -s), so it sees
        # its own packages and the script's directory only, never this checkout's easyrpc.
        return [python, "-E", "-s"] if self.env is not None else [python]

    def server_cmd(self, python: str, port: int) -> list[str]:
        return [*self._python(python), str(SYSTEMS_DIR / self.script), "server", "--port", str(port)]

    def client_cmd(self, python: str, port: int, scale: str, workloads: list[str]) -> list[str]:
        return [*self._python(python), str(SYSTEMS_DIR / self.script), self.client_role, "--port", str(port),
                "--scale", scale, "--workloads", ",".join(workloads)]


FLOOR = "floor"
OURS = "easyrpc"
OURS_AIO = "easyrpc-aio"
ORIGINAL = "original"
GRPC = "grpc"

SYSTEMS: tuple[System, ...] = (
    System(FLOOR, "transport floor (flask-sock echo + websocket-client)", "floor.py", None, dist="flask-sock"),
    System(OURS, "easyrpc (blocking)", "easyrpc_bench.py", None, "client-sync", dist="easyrpc"),
    System(OURS_AIO, "easyrpc (aio)", "easyrpc_bench.py", None, "client-aio", dist="easyrpc"),
    System(ORIGINAL, "original easyrpc 0.251 (aio)", "original_easyrpc.py", "original", dist="easyrpc"),
    System("rpyc", "RPyC", "rpyc_bench.py", "rpyc", dist="rpyc"),
    System("pyro5", "Pyro5", "pyro5_bench.py", "pyro5", dist="Pyro5"),
    System("xmlrpc", "xmlrpc (stdlib)", "xmlrpc_bench.py", None),
    System(GRPC, "gRPC (sync, generic handlers, JSON)", "grpc_bench.py", "grpc", dist="grpcio"),
)


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    metric: str  # the field of a client's result that is compared
    unit: str
    higher_is_better: bool


WORKLOADS: tuple[Workload, ...] = (
    Workload("seq", "sequential good_func_a(1, 5, 7)", "calls_per_s", "calls/s", True),
    Workload("threads8", "8 threads (async: 8 tasks), one proxy", "calls_per_s", "calls/s", True),
    Workload("inflight64", "64 calls in flight from one thread", "calls_per_s", "calls/s", True),
    Workload("echo10mb", "10 MB string echo", "seconds", "s/round trip", False),
    Workload("bytes10mb", "10 MB bytes echo", "seconds", "s/round trip", False),
    Workload("gen100k", "100,000-item generator", "items_per_s", "items/s", True),
    Workload("deep1000", "depth-1,000 nested list echo", "seconds", "s/round trip", False),
)
WORKLOAD_KEYS = tuple(w.key for w in WORKLOADS)

# Seconds a client may spend on one workload before it is killed and "timeout" recorded.
TIMEOUTS: dict[str, dict[str, float]] = {
    "quick": {"seq": 30, "threads8": 30, "inflight64": 30, "echo10mb": 20, "bytes10mb": 20, "gen100k": 60, "deep1000": 30},
    "full": {"seq": 90, "threads8": 90, "inflight64": 90, "echo10mb": 30, "bytes10mb": 30, "gen100k": 180, "deep1000": 60},
}
STARTUP_TIMEOUT = 30.0  # a server listening / a client connected
