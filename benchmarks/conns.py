"""Many connections to one server: easyrpc against gRPC, 1 to 512 connections.

    python benchmarks/conns.py [--conns 1,16,128,512] [--seconds 4] [--warmup 1]
                               [--systems easyrpc,grpc] [--easyrpc-path DIR]
    python benchmarks/conns.py --hold 2000 [--systems ...]
    python benchmarks/conns.py ... --server gthread|gevent|werkzeug [--threads N]

For each N and each system: ONE server process on 127.0.0.1, then TWO client processes
(``_conns_client.py``) holding N/2 connections each (N=1: one process with one), one
socket and one thread (``bench-conn-<i>``) per connection. Each thread makes sequential
``good_func_a(1, 5, 7)`` calls. The clients connect, make a few warm-up calls on every
connection and report ``ready`` on stdout; once both are ready the benchmark writes
``go`` to their stdin, so the windows line up: every connection then calls back to back
for ``--warmup`` seconds (not counted) and ``--seconds`` seconds (counted: the calls that
complete in that window). Measured:

- calls/s: calls completed in the window by all connections / ``--seconds``;
- p50 / p99 latency over those calls (each client sends its latencies, or a uniform
  sample of 200,000 with its weight; the benchmark merges them);
- server CPU per call: utime + stime of the server process (``/proc/<pid>/stat``) over
  the window, read by this process at its start and end, / (calls/s x that span);
- server RSS (``VmRSS``) and thread count (``Threads``) from ``/proc/<pid>/status``, and
  the server's established TCP connections on its port (``/proc/net/tcp``), at the end
  of the window: the TCP count shows that N connections really are N sockets;
- errors: failed connects, failed or wrong calls, threads still in a call at the end.

Servers:

- easyrpc: ``_bench_server.py`` (Flask + ``EasyRpcServer``, werkzeug
  ``make_server(threaded=True)``: one thread per connection), run by this interpreter.
  Whatever ``easyrpc`` this interpreter imports is measured; ``--easyrpc-path DIR`` puts
  DIR first on the server's and clients' PYTHONPATH (A/B runs of two checkouts). The
  module each side loads and its checkout's commit are recorded.
  ``--server gthread`` or ``--server gevent`` serves the same app under gunicorn
  instead (1 worker, ``-k gthread --threads N`` or ``-k gevent``; ``--threads`` also
  sets ``--worker-connections``, which bounds both worker classes, default 1000): this
  process opens the listening socket on a free port and passes it down (``fd://``), and
  the worker prints ``READY <port>`` once it has loaded the app. gunicorn is stopped by
  its arbiter's PID (SIGTERM, then SIGKILL); the arbiter stops its worker.
- gRPC: ``systems/grpc_bench.py`` (grpcio sync server, generic handlers, JSON) in the
  ``.venvs/grpc`` venv (built by ``harness/envs.py`` if needed), with
  ``max_workers = N + 8``: a sync gRPC server runs each RPC on one pool thread, so N
  connections each with one call in flight need N workers or calls queue for a thread
  (which would measure the pool's size, not gRPC); the 8 spare cover the few calls that
  overlap a connection's next one. The executor starts threads only as calls need them.
  The client makes one channel per connection, each with
  ``("grpc.use_local_subchannel_pool", 1)``: channels with equal arguments otherwise
  share one subchannel, i.e. ONE TCP connection, and N channels would not be N
  connections. The TCP column checks it.

``--hold N`` runs a different check instead: two client processes open N/2 connections
each, make one call on each, and hold them idle; the table gives how many answered, the
server's RSS, threads and established connections while they are held.

Every process runs on 127.0.0.1, every wait is bounded, and every process is stopped
through its own Popen handle (stdin closed, then terminate, then kill). This process and
its children raise the soft RLIMIT_NOFILE to the hard limit.

Writes ``benchmarks/results/conns.json`` and ``conns.md`` (``conns-hold.*`` for --hold; a
``-gthread`` or ``-gevent`` suffix with --server);
children's stderr goes to ``benchmarks/results/logs/conns-*.log``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import queue
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from harness import envs

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LOG_DIR = RESULTS_DIR / "logs"
CLIENT_SCRIPT = BENCH_DIR / "_conns_client.py"
EASYRPC_SERVER = BENCH_DIR / "_bench_server.py"
GRPC_SERVER = BENCH_DIR / "systems" / "grpc_bench.py"
SYSTEMS = ("easyrpc", "grpc")
LABELS = {"easyrpc": "easyrpc", "grpc": "gRPC"}
STARTUP_TIMEOUT = 30.0
STOP_GRACE = 10.0
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
GRPC_SPARE_WORKERS = 8
HOLD_SETTLE = 1.0  # seconds between the last client's ready and the reading
SERVERS = ("werkzeug", "gthread", "gevent")
# Runs gunicorn on _bench_server.build_app's app: argv = worker class, listening fd,
# threads/connections. The worker prints READY once the app is loaded (gevent has
# monkey-patched it by then: the app is loaded in the worker, never preloaded).
GUNICORN_RUNNER = """
import sys
from gunicorn.app.base import BaseApplication
from gunicorn.config import KNOWN_SETTINGS

kind, fd, capacity = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
port = __import__("socket").socket(fileno=__import__("os").dup(fd)).getsockname()[1]

class BenchApp(BaseApplication):
    def load_config(self):
        names = {s.name for s in KNOWN_SETTINGS}
        options = {"bind": [f"fd://{fd}"], "worker_class": kind, "workers": 1, "timeout": 0,
                   "graceful_timeout": 5, "keepalive": 30, "backlog": max(2048, capacity),
                   "worker_connections": capacity, "loglevel": "warning",
                   "post_worker_init": lambda worker: print(f"READY {port} {worker.pid}", flush=True)}
        if kind == "gthread":
            options["threads"] = capacity
        if "control_socket_disable" in names:
            options["control_socket_disable"] = True
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        import logging
        import _bench_server
        logging.getLogger("easyrpc").setLevel(logging.WARNING)
        return _bench_server.build_app(False)[0]

BenchApp().run()
"""


# --- /proc ------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def status_fields(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def established(port: int) -> int:
    """Established TCP connections whose local end is 127.0.0.1:*port* (the server's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def raise_fd_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --- processes --------------------------------------------------------------------------
class Child:
    """A subprocess with piped stdin/stdout (lines) and stderr to a log; stopped by its handle."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None, *,
                 stdin_stops: bool = True, pass_fds: tuple[int, ...] = (), cwd: Path | None = None) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.stdin_stops = stdin_stops  # False: the end of stdin does not stop it (SIGTERM does)
        self._log: IO[bytes] = log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=env, pass_fds=pass_fds, cwd=cwd)
        self.worker_pid: int | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, name=f"pump-{self.proc.pid}", daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int:
        """The process measured: this one, or the gunicorn worker it reported (``READY <port> <pid>``)."""
        return self.worker_pid or self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, timeout: float, *, event: str | None = None, prefix: str | None = None) -> Any:
        """The next JSON line with ``"event": event`` (or the next line starting with *prefix*)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no {event or prefix!r} within {timeout:.0f} s (see {self.log_path})") from None
            if line is None:
                code = self.proc.wait(STOP_GRACE)
                raise RuntimeError(f"exited with code {code} before {event or prefix!r} (see {self.log_path})")
            if prefix is not None and line.startswith(prefix):
                return line[len(prefix):].strip()
            if event is not None:
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("event") == event:
                    return data

    def send(self, line: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # it exited; expect() reports that

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """Close stdin, wait; then terminate, then kill (this handle only)."""
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        actions = (None, self.proc.terminate, self.proc.kill) if self.stdin_stops else (self.proc.terminate,
                                                                                         self.proc.kill)
        for action in actions:
            if self.proc.poll() is not None:
                break
            if action is not None:
                action()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        self._pump.join(STOP_GRACE)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


def easyrpc_env(path: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([path, *filter(None, [env.get("PYTHONPATH")])])
    return env


def easyrpc_origin(env: dict[str, str]) -> dict[str, str]:
    """Where the children's ``easyrpc`` comes from, and that checkout's commit."""
    code = ("import easyrpc, os; print(getattr(easyrpc, '__version__', '?'));"
            "print(os.path.dirname(os.path.dirname(os.path.abspath(easyrpc.__file__))))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                              cwd=str(BENCH_DIR), check=False)
    except subprocess.TimeoutExpired:
        return {"path": "?", "commit": "?", "version": "?"}
    if proc.returncode != 0:
        raise SystemExit(f"easyrpc is not importable: {proc.stderr.strip()[-300:]}")
    version, _, where = proc.stdout.strip().partition("\n")
    commit = "?"
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=30, check=False)
        if head.returncode == 0:
            commit = head.stdout.strip()
            dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--", "easyrpc"], capture_output=True,
                                   text=True, timeout=30, check=False).stdout.strip()
            commit += "+dirty" if dirty else ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"path": where, "commit": commit, "version": version}


class Setup:
    def __init__(self, args: argparse.Namespace) -> None:
        self.env = easyrpc_env(args.easyrpc_path)
        self.grpc_python: str | None = None
        self.kind = args.server
        self.capacity = args.threads
        if "grpc" in args.systems:
            self.grpc_python = str(envs.ensure("grpc", LOG_DIR / "venv-grpc.log"))

    def server(self, system: str, n: int, tag: str) -> tuple[Child, int]:
        log = LOG_DIR / f"conns-{tag}-{system}{'' if self.kind == 'werkzeug' else '-' + self.kind}-server.log"
        if system == "easyrpc" and self.kind != "werkzeug":
            capacity = self.capacity or n + 100
            listener = socket.create_server(("127.0.0.1", 0), backlog=max(2048, capacity))
            try:
                child = Child([sys.executable, "-c", GUNICORN_RUNNER, self.kind, str(listener.fileno()), str(capacity)],
                              log, self.env, stdin_stops=False, pass_fds=(listener.fileno(),), cwd=BENCH_DIR)
            finally:
                listener.close()  # gunicorn holds its own copy
        elif system == "easyrpc":
            child = Child([sys.executable, str(EASYRPC_SERVER), "--port", "0"], log, self.env)
        else:
            assert self.grpc_python is not None
            child = Child([self.grpc_python, "-E", "-s", str(GRPC_SERVER), "server", "--port", "0",
                           "--workers", str(n + GRPC_SPARE_WORKERS)], log, stdin_stops=False)
        try:
            port, *worker = (int(x) for x in child.expect(STARTUP_TIMEOUT, prefix="READY ").split())
            child.worker_pid = worker[0] if worker else None
        except BaseException:
            child.stop()
            raise
        return child, port

    def client(self, system: str, port: int, k: int, first: int, tag: str, args: argparse.Namespace,
               hold: bool) -> Child:
        log = LOG_DIR / f"conns-{tag}-{system}-client{first}.log"
        opts = ["--system", system, "--port", str(port), "--conns", str(k), "--first-id", str(first),
                "--seconds", str(args.seconds), "--warmup", str(args.warmup)] + (["--hold"] if hold else [])
        if system == "easyrpc":
            return Child([sys.executable, str(CLIENT_SCRIPT), *opts], log, self.env)
        assert self.grpc_python is not None
        return Child([self.grpc_python, "-E", "-s", str(CLIENT_SCRIPT), *opts], log)


def split(n: int) -> list[int]:
    return [1] if n == 1 else [n // 2, n - n // 2]


def ready_timeout(n: int) -> float:
    return 60.0 + 0.2 * n


# --- one measurement ---------------------------------------------------------------------
def weighted_percentile(samples: list[tuple[float, float]], q: float) -> float | None:
    """*samples*: (value, weight), sorted by value."""
    total = sum(w for _, w in samples)
    if not samples or total <= 0:
        return None
    target = q * total
    acc = 0.0
    for value, weight in samples:
        acc += weight
        if acc >= target:
            return value
    return samples[-1][0]


def start_clients(setup: Setup, clients: list[Child], system: str, port: int, n: int, tag: str,
                  args: argparse.Namespace, *, hold: bool) -> list[Any]:
    """Start the client processes holding *n* connections between them (appended to
    *clients* as they start, so the caller stops every one); their "ready" reports."""
    first = 0
    for k in split(n):
        clients.append(setup.client(system, port, k, first, tag, args, hold=hold))
        first += k
    return [c.expect(ready_timeout(n), event="ready") for c in clients]


def measure(setup: Setup, system: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    tag = f"n{n}"
    server, port = setup.server(system, n, tag)
    clients: list[Child] = []
    out: dict[str, Any] = {"system": system, "connections": n, "status": "ok"}
    try:
        readies = start_clients(setup, clients, system, port, n, tag, args, hold=False)
        out["connect_s"] = max(r["connect_s"] for r in readies)
        out["connected"] = sum(r["connected"] for r in readies)
        out["warm"] = sum(r["warm"] for r in readies)
        connect_errors = [e for r in readies for e in r["connect_errors"]]
        failed_connects = n - out["connected"]
        out["client_threads"] = [r["threads"] for r in readies]

        for c in clients:
            c.send("go")
        time.sleep(args.warmup)
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        client_cpu0 = sum(cpu_seconds(c.pid) for c in clients)
        time.sleep(args.seconds)
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        client_cpu1 = sum(cpu_seconds(c.pid) for c in clients)
        status = status_fields(server.pid)
        out["server_tcp"] = established(port)
        results = [c.expect(args.warmup + args.seconds + 60, event="result") for c in clients]
        for c in clients:
            c.send("exit")

        calls = sum(r["calls"] for r in results)
        samples = sorted((lat, r["weight"]) for r in results for lat in r["lat_us"])
        calls_per_s = calls / args.seconds
        span_calls = calls_per_s * (t1 - t0)
        out.update({
            "calls": calls,
            "calls_per_s": calls_per_s,
            "p50_ms": (weighted_percentile(samples, 0.50) or float("nan")) / 1000,
            "p99_ms": (weighted_percentile(samples, 0.99) or float("nan")) / 1000,
            "server_cpu_s": cpu1 - cpu0,
            "server_cpu_per_call_us": (cpu1 - cpu0) / span_calls * 1e6 if span_calls else None,
            "client_cpu_per_call_us": (client_cpu1 - client_cpu0) / span_calls * 1e6 if span_calls else None,
            "server_rss_mb": status.get("VmRSS", 0) / 1024,
            "server_threads": status.get("Threads", 0),
            "errors": failed_connects + sum(r["errors"] for r in results),
            "error_texts": (connect_errors + [t for r in results for t in r["error_texts"]])[:10],
            "stuck": sum(r["stuck"] for r in results),
        })
        if system == "grpc":
            out["server_workers"] = n + GRPC_SPARE_WORKERS
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        out["status"] = "error"
        out["reason"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        for c in clients:
            c.stop()
        server.stop()
    return out


def hold(setup: Setup, system: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    tag = f"hold{n}"
    server, port = setup.server(system, n, tag)
    base_status = status_fields(server.pid)
    clients: list[Child] = []
    out: dict[str, Any] = {"system": system, "connections": n, "status": "ok",
                           "server_rss_mb_idle": base_status.get("VmRSS", 0) / 1024,
                           "server_threads_idle": base_status.get("Threads", 0)}
    try:
        readies = start_clients(setup, clients, system, port, n, tag, args, hold=True)
        time.sleep(HOLD_SETTLE)
        status = status_fields(server.pid)
        out.update({
            "connected": sum(r["connected"] for r in readies),
            "answered": sum(r["answered"] for r in readies),
            "all_answered": sum(r["answered"] for r in readies) == n,
            "connect_s": max(r["connect_s"] for r in readies),
            "server_rss_mb": status.get("VmRSS", 0) / 1024,
            "server_threads": status.get("Threads", 0),
            "server_tcp": established(port),
            "client_threads": [r["threads"] for r in readies],
            "errors": [e for r in readies for e in r["connect_errors"] + r["call_errors"]][:10],
        })
        for c in clients:
            c.send("exit")
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        out["status"] = "error"
        out["reason"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        for c in clients:
            c.stop(grace=30.0)
        server.stop()
    return out


# --- tables -------------------------------------------------------------------------------
def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def load_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| connections | system | calls/s | p50 ms | p99 ms | server CPU/call us | server RSS MB | server threads "
             "| server TCP conns | errors |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['connections']} | {LABELS[r['system']]} | error: {r.get('reason', '')} "
                         "| | | | | | | |")
            continue
        lines.append(
            f"| {r['connections']} | {LABELS[r['system']]} | {r['calls_per_s']:,.0f} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {_num(r['server_cpu_per_call_us'], '.0f')} | {r['server_rss_mb']:.1f} "
            f"| {r['server_threads']} | {r['server_tcp']} | {r['errors']} |")
    return lines


def ratio_table(rows: list[dict[str, Any]]) -> list[str]:
    by = {(r["system"], r["connections"]): r for r in rows if r["status"] == "ok"}
    ns = sorted({r["connections"] for r in rows})
    keys = [("calls_per_s", "calls/s"), ("p50_ms", "p50"), ("p99_ms", "p99"),
            ("server_cpu_per_call_us", "server CPU/call"), ("server_rss_mb", "server RSS"),
            ("server_threads", "server threads")]
    lines = ["| connections | " + " | ".join(label for _, label in keys) + " |",
             "|---:|" + "---:|" * len(keys)]
    for n in ns:
        a, b = by.get(("easyrpc", n)), by.get(("grpc", n))
        if a is None or b is None:
            continue
        cells = []
        for key, _ in keys:
            x, y = a.get(key), b.get(key)
            cells.append(f"{x / y:.2f}x" if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y else "-")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def hold_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| connections held | system | answered | server RSS MB (idle -> held) | server threads (idle -> held) "
             "| server TCP conns | connect s | errors |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['connections']} | {LABELS[r['system']]} | error: {r.get('reason', '')} | | | | | |")
            continue
        lines.append(
            f"| {r['connections']} | {LABELS[r['system']]} | {r['answered']}/{r['connections']} "
            f"| {r['server_rss_mb_idle']:.1f} -> {r['server_rss_mb']:.1f} "
            f"| {r['server_threads_idle']} -> {r['server_threads']} | {r['server_tcp']} | {r['connect_s']:.1f} "
            f"| {len(r['errors'])} |")
    return lines


def describe(origin: dict[str, str] | None) -> str:
    if not origin:
        return "-"
    return f"{origin.get('version', '?')} from {origin['path']} at {origin['commit']}"


# --- main -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", default="1,16,128,512", help="connection counts (default 1,16,128,512)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per point (default 4)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds under load before measuring (default 1)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of: easyrpc,grpc")
    parser.add_argument("--easyrpc-path", default=None,
                        help="a checkout put first on the easyrpc server's and clients' PYTHONPATH")
    parser.add_argument("--server", choices=SERVERS, default="werkzeug",
                        help="the easyrpc server's WSGI server: werkzeug (threaded, default), or gunicorn "
                             "with 1 worker of class gthread or gevent")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="gunicorn's --threads (gthread) and --worker-connections (both); "
                             "default: connections + 100")
    parser.add_argument("--hold", type=int, default=0, metavar="N",
                        help="instead: hold N idle connections (2 processes x N/2), one call each; server RSS/threads")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown or not args.systems:
        parser.error(f"--systems: unknown {', '.join(unknown)} (known: {', '.join(SYSTEMS)})")
    try:
        args.conns = [int(x) for x in args.conns.split(",") if x.strip()]
    except ValueError:
        parser.error("--conns: comma-separated integers")
    if not args.conns or min(args.conns) < 1 or args.hold < 0 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--conns must be >= 1, --hold >= 0, --seconds > 0, --warmup >= 0")
    if args.easyrpc_path:
        args.easyrpc_path = str(Path(args.easyrpc_path).resolve())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    fd_limit = raise_fd_limit()
    started_at = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f}: other work on this machine skews the figures", flush=True)
    setup = Setup(args)
    meta: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/conns.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": f"{started_at:%Y-%m-%d %H:%M} UTC",
        "nproc": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        "fd_limit": list(fd_limit), "loadavg_before": [round(x, 2) for x in load_before],
        "server": args.server if args.server == "werkzeug" else f"gunicorn -k {args.server} -w 1",
    }
    if "easyrpc" in args.systems:
        meta["easyrpc"] = easyrpc_origin(setup.env)
    if setup.grpc_python:
        meta["grpcio"] = envs.version_in(setup.grpc_python, "grpcio")
    print(f"easyrpc: {describe(meta.get('easyrpc'))}; grpcio: {meta.get('grpcio', '-')}", flush=True)

    rows: list[dict[str, Any]] = []
    if args.hold:
        for system in args.systems:
            print(f"holding {args.hold} connections to one {LABELS[system]} server ...", flush=True)
            r = hold(setup, system, args.hold, args)
            rows.append(r)
            print(f"  {r.get('answered', '-')} answered, server RSS {r.get('server_rss_mb', 0):.1f} MB, "
                  f"{r.get('server_threads', '-')} threads, {r.get('server_tcp', '-')} TCP {r.get('reason', '')}",
                  flush=True)
        table = hold_table(rows)
        stem = "conns-hold" + ("" if args.server == "werkzeug" else f"-{args.server}")
        title = f"# {args.hold} idle connections held by one server"
        extra: list[str] = []
    else:
        for n in args.conns:
            for system in args.systems:
                t = time.monotonic()
                r = measure(setup, system, n, args)
                rows.append(r)
                text = (f"{r['calls_per_s']:,.0f} calls/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                        f"{r['errors']} errors" if r["status"] == "ok" else r.get("reason", ""))
                print(f"  N={n:<4} {LABELS[system]:8} {time.monotonic() - t:5.1f}s  {text}", flush=True)
        table = load_table(rows)
        stem = "conns" + ("" if args.server == "werkzeug" else f"-{args.server}")
        title = "# Many connections to one server"
        extra = ratio_table(rows) if len(args.systems) == 2 else []
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    md = [title, "", f"- date: {meta['date']}; nproc={meta['nproc']}; python {meta['python']}",
          f"- command: `{meta['command']}`", f"- easyrpc server: {meta['server']}",
          f"- easyrpc: {describe(meta.get('easyrpc'))}; grpcio: {meta.get('grpcio', '-')}",
          f"- load average before: {meta['loadavg_before']}, after: {meta['loadavg_after']}", "", *table]
    if extra:
        md += ["", "easyrpc / gRPC (calls/s: higher is better for easyrpc; the rest: lower is):", "", *extra]
    errors = [f"- {LABELS[r['system']]} N={r['connections']}: {t}" for r in rows for t in r.get("error_texts", [])]
    if errors:
        md += ["", "errors (first of each run):", "", *errors]
    print()
    print("\n".join(md[7:]))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS_DIR / f"{stem}.md").write_text("\n".join(md) + "\n")
    print(f"\nwrote benchmarks/results/{stem}.json and {stem}.md")
    bad = any(r["status"] != "ok" or (r.get("errors") if not args.hold else not r.get("all_answered")) for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
