"""Benchmark easyrpc against the original easyrpc, RPyC, Pyro5, xmlrpc, gRPC and the bare transport.

    python benchmarks/run.py [--quick] [--runs N]

See benchmarks/README.md. Every server and client runs in its own subprocess on 127.0.0.1;
the runner only starts them, collects their JSON lines and writes the reports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import envs, report
from harness.procs import Server, free_port, run_client
from harness.systems import STARTUP_TIMEOUT, SYSTEMS, TIMEOUTS, WORKLOAD_KEYS, WORKLOADS, System, Workload

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PLOT_SCRIPT = BENCH_DIR / "harness" / "plot.py"
PIN_SCRIPT = BENCH_DIR / "harness" / "pin.py"
PLOT_TIMEOUT = 180.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls per workload (about 3 minutes in all)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; each figure is their median (default 3)")
    parser.add_argument("--systems", default="", help=f"comma-separated subset of: {', '.join(s.key for s in SYSTEMS)}")
    parser.add_argument("--workloads", default="", help=f"comma-separated subset of: {', '.join(WORKLOAD_KEYS)}")
    parser.add_argument("--pin", action="store_true",
                        help="run every client on CPU 0 and every server on CPU 1 (Linux); never published by default")
    parser.add_argument("--publish", action=argparse.BooleanOptionalAction, default=None,
                        help="also write benchmarks/results.md and results.png (default: only for a full, unfiltered run)")
    args = parser.parse_args(argv)
    if args.pin and not hasattr(os, "sched_setaffinity"):
        parser.error("--pin needs os.sched_setaffinity (Linux)")
    if args.pin and (os.cpu_count() or 1) < 2:
        parser.error("--pin needs two CPUs")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.runs < 3:
        print(f"note: --runs {args.runs}: figures are medians of fewer than 3 runs", file=sys.stderr)
    return args


def select(names: str, known: list[str], what: str) -> list[str]:
    if not names:
        return known
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return [k for k in known if k in chosen]


def machine_info(started_at: dt.datetime) -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        # the run's span: start to end
        "date": f"{started_at:%Y-%m-%d %H:%M}-{dt.datetime.now(dt.timezone.utc):%H:%M} UTC",
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
    }


def git_state() -> str:
    """The commit measured, with "+dirty" when easyrpc/ has uncommitted changes."""
    repo = str(BENCH_DIR.parent)
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=30, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "easyrpc"], capture_output=True,
                               text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """*cmd*, run on CPU *cpu* alone (None: as it is)."""
    return cmd if cpu is None else [sys.executable, str(PIN_SCRIPT), str(cpu), *cmd]


def run_system(system: System, python: str, scale: str, workloads: list[str], timed_out: set[tuple[str, str]],
               log_dir: Path, run: int, pin: bool = False) -> dict[str, dict[str, Any]]:
    """One run of one system: its server, then its client over *workloads*.

    With *pin*, the client runs on CPU 0 and the server on CPU 1.

    A workload that times out kills the client (and the server is restarted for the
    rest); it is not retried in later runs.
    """
    results: dict[str, dict[str, Any]] = {}
    for w in workloads:
        if (system.key, w) in timed_out:
            results[w] = {"status": "timeout", "reason": "timed out in an earlier run; not retried"}
    pending = [w for w in workloads if w not in results]
    attempts = 0
    while pending and attempts <= len(workloads):
        attempts += 1
        port = free_port()
        stem = f"{system.key}-run{run + 1}"
        server = Server(pinned(system.server_cmd(python, port), 1 if pin else None), port,
                        log_dir / f"{stem}-server.log", STARTUP_TIMEOUT)
        try:
            server.start()
        except RuntimeError as exc:
            for w in pending:
                results[w] = {"status": "error", "reason": f"server: {exc}"}
            break
        try:
            outcome = run_client(pinned(system.client_cmd(python, port, scale, pending), 0 if pin else None),
                                 pending, TIMEOUTS[scale],
                                 STARTUP_TIMEOUT, log_dir / f"{stem}-client.log")
        finally:
            server.stop()
        results.update(outcome.results)
        done = set(outcome.results)
        if outcome.timed_out is not None:
            limit = TIMEOUTS[scale][outcome.timed_out]
            results[outcome.timed_out] = {"status": "timeout", "reason": f"no result within {limit:.0f} s"}
            timed_out.add((system.key, outcome.timed_out))
            done.add(outcome.timed_out)
        elif outcome.failed is not None:
            if outcome.failed_during is None:  # could not even start: the rest fails alike
                for w in pending:
                    results.setdefault(w, {"status": "error", "reason": outcome.failed})
                break
            results[outcome.failed_during] = {"status": "error", "reason": outcome.failed}
            done.add(outcome.failed_during)
        pending = [w for w in pending if w not in done]
    for w in pending:
        results.setdefault(w, {"status": "error", "reason": "not run (too many restarts)"})
    return {w: results[w] for w in workloads}


def progress_line(system: System, results: dict[str, dict[str, Any]], elapsed: float) -> str:
    bits = []
    by_key = {w.key: w for w in WORKLOADS}
    for name, res in results.items():
        wl = by_key[name]
        if res.get("status") == "ok":
            bits.append(f"{name}={report.fmt_value(float(res[wl.metric]), wl)}")
        else:
            bits.append(f"{name}={res.get('status')}")
    return f"  {system.label:52} {elapsed:5.1f}s  " + "  ".join(bits)


def render_markdown(meta: dict[str, Any], versions: dict[str, str], summary: dict[str, dict[str, report.Cell]],
                    target_items: list[report.Target], png_name: str | None, workloads: list[Workload]) -> str:
    labels = {s.key: s.label for s in SYSTEMS}
    lines = [
        "# easyrpc benchmark results",
        "",
        f"- date: {meta['date']}",
        f"- machine: nproc={meta['nproc']}, {meta['cpu']}, {meta['platform']}",
        f"- CPUs: {meta.get('pinned') or 'not pinned (the scheduler places every process)'}",
        f"- load average (1/5/15 min) before: {meta['loadavg_before']}, after: {meta['loadavg_after']}",
        f"- python: {meta['python']}",
        f"- easyrpc measured: working tree at {meta['easyrpc_tree']}",
        f"- command: `{meta['command']}` ({meta['scale']} scale, median of {meta['runs']} runs)",
        "- versions: " + ", ".join(f"{labels[k]} {v}" for k, v in versions.items() if k in labels),
        "",
        "Each cell is the median of the runs; `(N.NNx)` is the median over runs of the ratio to the",
        "transport floor measured in the same run (for calls/s and items/s higher is better; for",
        "seconds lower is better, so 1.10x there means 10% slower than the floor).",
        "",
        report.markdown_table(report.headers(workloads), report.rows(summary, workloads)),
        "",
        "## Notes",
        "",
    ]
    lines += [f"- {n}" for n in report.notes(summary, workloads)]
    lines += ["", "## Targets (ratios within each run, median over runs)", "", "```"]
    lines += report.target_lines(target_items)
    lines += ["```", ""]
    if png_name:
        lines += [f"![benchmark chart]({png_name})", ""]
    return "\n".join(lines)


def plot(json_path: Path, png_path: Path, log_dir: Path) -> str | None:
    """Draw the chart with the tools venv's matplotlib; the reason if it could not."""
    try:
        python = envs.ensure("tools", log_dir / "venv-tools.log")
    except envs.EnvError as exc:
        return str(exc)
    try:
        proc = subprocess.run([str(python), str(PLOT_SCRIPT), str(json_path), str(png_path)],
                              capture_output=True, text=True, timeout=PLOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return f"plotting timed out after {PLOT_TIMEOUT:.0f} s"
    if proc.returncode != 0:
        return f"plotting failed: {proc.stderr.strip()[-500:]}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = "quick" if args.quick else "full"
    systems = [s for s in SYSTEMS if s.key in select(args.systems, [s.key for s in SYSTEMS], "system")]
    workloads = select(args.workloads, list(WORKLOAD_KEYS), "workload")
    publish = args.publish if args.publish is not None else (
        not args.pin and not args.quick and args.runs >= 3
        and len(systems) == len(SYSTEMS) and len(workloads) == len(WORKLOAD_KEYS))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS_DIR / "logs"
    if log_dir.exists():
        shutil.rmtree(log_dir)
    log_dir.mkdir()
    started = time.monotonic()
    started_at = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    tree_before = git_state()
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before starting; other work on this machine "
              "will skew the figures (2 cores)", flush=True)

    ours = envs.version_in(sys.executable, "easyrpc")
    if ours == "?" or subprocess.run([sys.executable, "-c", "import easyrpc.server, easyrpc.proxy, easyrpc.aio"],
                                     capture_output=True, timeout=60, check=False).returncode != 0:
        print(f"easyrpc is not importable by {sys.executable}: install it (pip install -e .) first", file=sys.stderr)
        return 2

    print(f"setting up interpreters (venvs in {envs.VENVS_DIR}) ...", flush=True)
    pythons: dict[str, str] = {}
    setup_errors: dict[str, str] = {}
    versions: dict[str, str] = {}
    for system in systems:
        if system.env is None:
            pythons[system.key] = sys.executable
        else:
            try:
                pythons[system.key] = str(envs.ensure(system.env, log_dir / f"venv-{system.env}.log"))
            except envs.EnvError as exc:
                setup_errors[system.key] = str(exc)
                print(f"  {system.label}: {exc}", flush=True)
                continue
        versions[system.key] = envs.version_in(pythons[system.key], system.dist) if system.dist else platform.python_version()

    raw: report.Raw = {s.key: [] for s in systems}
    timed_out: set[tuple[str, str]] = set()
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs} ({scale})", flush=True)
        for system in systems:
            t0 = time.monotonic()
            if system.key in setup_errors:
                results = {w: {"status": "error", "reason": f"setup: {setup_errors[system.key]}"} for w in workloads}
            else:
                results = run_system(system, pythons[system.key], scale, workloads, timed_out, log_dir, run, args.pin)
            raw[system.key].append(results)
            print(progress_line(system, results, time.monotonic() - t0), flush=True)

    summary = report.summarize(raw)
    target_items = report.targets(raw)
    tree_after = git_state()
    tree = tree_before if tree_after == tree_before else f"{tree_before} at the start, {tree_after} at the end"
    meta = {**machine_info(started_at), "scale": scale, "easyrpc_tree": tree, "runs": args.runs,
            "pinned": "clients on CPU 0, servers on CPU 1" if args.pin else None,
            "seconds": round(time.monotonic() - started, 1),
            "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "command": " ".join(["python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])}

    chosen = [w for w in WORKLOADS if w.key in workloads]
    header, body = report.headers(chosen), report.rows(summary, chosen)
    print()
    if args.pin:
        print(f"pinned: {meta['pinned']}")
    print(report.text_table(header, body))
    print()
    print("(Nx) = ratio to the transport floor in the same run, median over runs; for seconds lower is better.")
    for line in report.notes(summary, chosen):
        print(f"  - {line}")
    print()
    print("targets:")
    for line in report.target_lines(target_items):
        print(f"  {line}")

    data = {
        "meta": meta,
        "versions": versions,
        "systems": [{"key": s.key, "label": s.label, "version": versions.get(s.key, "?")} for s in systems],
        "workloads": [w.__dict__ for w in chosen],
        "summary": {s: {w: c.as_json() for w, c in cells.items() if w in workloads} for s, cells in summary.items()},
        "targets": [t.as_json() for t in target_items],
        "raw": raw,
    }
    json_path = RESULTS_DIR / "latest.json"
    json_path.write_text(json.dumps(data, indent=1))
    png_path = RESULTS_DIR / "latest.png"
    problem = plot(json_path, png_path, log_dir)
    print()
    print(f"wrote {json_path.relative_to(BENCH_DIR.parent)}")
    if problem:
        print(f"no chart: {problem}")
    else:
        print(f"wrote {png_path.relative_to(BENCH_DIR.parent)}")
    md = render_markdown(meta, versions, summary, target_items, None if problem else "latest.png", chosen)
    (RESULTS_DIR / "latest.md").write_text(md)
    if publish:
        md = render_markdown(meta, versions, summary, target_items, None if problem else "results.png", chosen)
        (BENCH_DIR / "results.md").write_text(md)
        if not problem:
            shutil.copyfile(png_path, BENCH_DIR / "results.png")
        print("wrote benchmarks/results.md" + ("" if problem else " and benchmarks/results.png"))
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
