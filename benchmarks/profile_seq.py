"""Profile easyrpc's sequential workload on both sides: cProfile (all threads) and py-spy.

    python benchmarks/profile_seq.py [--seconds 8] [--aio] [--top 15] [--tool both|cprofile|py-spy]

Starts an easyrpc server and a client making back-to-back ``good_func_a(1, 5, 7)`` calls,
each in its own process, and profiles both, once per tool:

* cProfile, through harness/cprof.py: every thread gets its own profiler timed by
  ``time.thread_time`` (CPU, not wall time), merged per process. Deterministic, with
  instrumentation overhead. Shares are of the process's CPU time; "us/call" divides by
  the RPC calls the server ran.
* py-spy (from the ``tools`` venv): sampling, counting only the thread holding the GIL
  (``--gil``; py-spy's idle detection does not work on this VM).

Thread bootstrap and benchmark-loop frames are hidden (``--all-frames`` shows them). The
stats go to benchmarks/results/profile-{client,server}.{prof,txt}.
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from harness import envs
from harness.procs import Server, free_port
from harness.systems import STARTUP_TIMEOUT, SYSTEMS_DIR

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
CPROF = BENCH_DIR / "harness" / "cprof.py"
SCRIPT = SYSTEMS_DIR / "easyrpc_bench.py"
WARMUP = 2
SIDES = ("client", "server")
# Frames on every stack of a thread or of the benchmark loop itself: hidden unless --all-frames.
WRAPPER_FILES = ("easyrpc_bench.py", "_common.py", "cprof.py", "runpy.py", "<frozen runpy>")
WRAPPER_FUNCS = ("Thread.run", "Thread._bootstrap", "Thread._bootstrap_inner", "run", "_bootstrap", "_bootstrap_inner")


def is_wrapper(func: str, filename: str) -> bool:
    name = Path(filename).name
    if name.endswith(WRAPPER_FILES) or func in ("<module>", "<built-in method builtins.exec>"):
        return True
    if "importlib" in filename:  # imports at start-up
        return True
    return name == "threading.py" and func in WRAPPER_FUNCS


def run_pair(server_prefix: list[str], client_prefix: list[str], role: str, seconds: int,
             during: Callable[[int, int], None] | None) -> None:
    """Server and client processes; *during(client_pid, server_pid)* runs after the warm-up."""
    port = free_port()
    log_dir = RESULTS_DIR / "logs"
    with Server([*server_prefix, str(SCRIPT), "server", "--port", str(port)], port, log_dir / "profile-server.log",
                STARTUP_TIMEOUT) as server:
        assert server.proc is not None
        duration = seconds + WARMUP + (3 if during else 0)
        with (log_dir / "profile-client.log").open("ab") as client_log:
            client = subprocess.Popen([*client_prefix, str(SCRIPT), role, "--port", str(port), "--duration", str(duration)],
                                      stdin=subprocess.DEVNULL, stdout=client_log, stderr=subprocess.STDOUT)
            try:
                if during is not None:
                    time.sleep(WARMUP)
                    during(client.pid, server.proc.pid)
                client.wait(duration + 60)
            finally:
                if client.poll() is None:
                    client.kill()
                    client.wait(10)
        # leaving the with block: SIGTERM, so a profiled server writes its stats


# --- cProfile --------------------------------------------------------------------------
def cprofile(role: str, seconds: int, top: int, all_frames: bool, mode: str) -> None:
    outs = {side: RESULTS_DIR / f"profile-{side}.prof" for side in SIDES}
    for out in outs.values():
        out.unlink(missing_ok=True)
    run_pair([sys.executable, str(CPROF), str(outs["server"])], [sys.executable, str(CPROF), str(outs["client"])],
             role, seconds, None)
    rpc_calls = 0
    for side in SIDES:
        if not outs[side].exists():
            print(f"cProfile: no stats from the {side} (see {RESULTS_DIR / 'logs'})")
            return
    server_stats = pstats.Stats(str(outs["server"])).stats  # type: ignore[attr-defined]
    for (filename, _, func), (_, nc, _, _, _) in server_stats.items():
        if func == "good_func_a" and filename.endswith("easyrpc_bench.py"):
            rpc_calls = nc
    for side in SIDES:
        stats = pstats.Stats(str(outs[side])).stats  # type: ignore[attr-defined]
        total = sum(tt for (_, _, tt, _, _) in stats.values())
        ranked = sorted(stats.items(), key=lambda kv: kv[1][3], reverse=True)
        print(f"\ncProfile, {side} ({mode} proxy, sequential good_func_a): {total:.2f} s CPU in all threads, "
              f"{rpc_calls} calls -> {1e6 * total / max(rpc_calls, 1):.0f} us CPU per call")
        print(f"  {'cum%':>6} {'self%':>6} {'us/call':>8} {'ncalls':>9}  function (file:line)")
        shown = 0
        for (filename, line, func), (_, nc, tt, ct, _) in ranked:
            if shown >= top:
                break
            if not all_frames and is_wrapper(func, filename):
                continue
            where = "/".join(Path(filename).parts[-2:]) if filename != "~" else ""
            print(f"  {100 * ct / total:6.1f} {100 * tt / total:6.1f} {1e6 * ct / max(rpc_calls, 1):8.1f} {nc:9d}  "
                  f"{func} ({where}:{line})")
            shown += 1
        print(f"  stats: {outs[side].relative_to(BENCH_DIR.parent)} (pstats)")


# --- py-spy ----------------------------------------------------------------------------
def top_sampled(raw: Path, top: int, all_frames: bool) -> tuple[int, list[tuple[str, float, float]]]:
    """From py-spy's raw collapsed stacks: total samples, then (function, cum %, self %) rows."""
    cumulative: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in set(frames):
            cumulative[frame] += count
        own[frames[-1]] += count

    def hidden(frame: str) -> bool:
        func, _, rest = frame.partition(" (")
        return not all_frames and is_wrapper(func, rest.rstrip(")"))

    ranked = [(f, n) for f, n in cumulative.most_common() if not hidden(f)][:top]
    return total, [(f, 100.0 * n / total, 100.0 * own[f] / total) for f, n in ranked] if total else []


def pyspy(role: str, seconds: int, rate: int, top: int, all_frames: bool, mode: str) -> None:
    tools = envs.ensure("tools", RESULTS_DIR / "logs" / "venv-tools.log")
    exe = tools.parent / "py-spy"
    outs = {side: RESULTS_DIR / f"profile-{side}.txt" for side in SIDES}
    failures: list[str] = []

    def sample(client_pid: int, server_pid: int) -> None:
        spies = {
            side: subprocess.Popen(
                [str(exe), "record", "-p", str(pid), "-d", str(seconds), "-r", str(rate), "-f", "raw", "--nolineno",
                 "--gil", "-o", str(outs[side])],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for side, pid in (("client", client_pid), ("server", server_pid))
        }
        for side, spy in spies.items():
            try:
                _, err = spy.communicate(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, err = spy.communicate(timeout=10)
            if spy.returncode != 0:
                failures.append(f"py-spy on the {side} failed: {err.strip()[-500:]}")

    run_pair([sys.executable], [sys.executable], role, seconds, sample)
    if failures:
        print("\n".join(failures))
        return
    for side in SIDES:
        total, rows = top_sampled(outs[side], top, all_frames)
        print(f"\npy-spy, {side} ({mode} proxy, sequential good_func_a): {total} samples holding the GIL "
              f"out of {seconds * rate} in {seconds} s, all threads")
        print(f"  {'cum%':>6} {'self%':>6}  function (file)")
        for func, cum, own in rows:
            print(f"  {cum:6.1f} {own:6.1f}  {func}")
        print(f"  raw stacks: {outs[side].relative_to(BENCH_DIR.parent)} (flamegraph.pl input)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8, help="profiling time per tool (default 8)")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--tool", choices=("both", "cprofile", "py-spy"), default="both")
    parser.add_argument("--aio", action="store_true", help="profile the asyncio proxy instead of the blocking one")
    parser.add_argument("--all-frames", action="store_true", help="also list thread bootstrap and benchmark-loop frames")
    args = parser.parse_args(argv)
    (RESULTS_DIR / "logs").mkdir(parents=True, exist_ok=True)
    role = "client-aio" if args.aio else "client-sync"
    mode = "asyncio" if args.aio else "blocking"
    if args.tool in ("both", "cprofile"):
        cprofile(role, args.seconds, args.top, args.all_frames, mode)
    if args.tool in ("both", "py-spy"):
        pyspy(role, args.seconds, args.rate, args.top, args.all_frames, mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
