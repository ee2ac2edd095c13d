"""Medians over runs, ratios to the floor (taken within each run), targets and tables."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .systems import FLOOR, GRPC, ORIGINAL, OURS, OURS_AIO, SYSTEMS, WORKLOADS, Workload

# raw[system][run] = {workload: result}; a result has "status" ("ok", "n/a", "error",
# "timeout", "skipped") and, when ok, the workload's metric fields.
Raw = dict[str, list[dict[str, dict[str, Any]]]]


@dataclass
class Cell:
    status: str
    value: float | None = None
    ratio: float | None = None  # value / floor's value, median of per-run ratios
    p50_us: float | None = None
    p99_us: float | None = None
    runs_ok: int = 0
    runs: int = 0
    reason: str = ""
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _metric(result: dict[str, Any] | None, workload: Workload) -> float | None:
    if not result or result.get("status") != "ok":
        return None
    value = result.get(workload.metric)
    return float(value) if isinstance(value, (int, float)) else None


def summarize(raw: Raw) -> dict[str, dict[str, Cell]]:
    """summary[system][workload] -> Cell."""
    floor_runs = raw.get(FLOOR, [])
    summary: dict[str, dict[str, Cell]] = {}
    for system, runs in raw.items():
        summary[system] = {}
        for wl in WORKLOADS:
            results = [run.get(wl.key) for run in runs]
            values = [v for v in (_metric(r, wl) for r in results) if v is not None]
            ratios = []
            for i, result in enumerate(results):
                mine = _metric(result, wl)
                base = _metric(floor_runs[i].get(wl.key), wl) if i < len(floor_runs) else None
                if mine is not None and base:
                    ratios.append(mine / base)
            cell = Cell(status="ok" if values else "", runs=len(runs), runs_ok=len(values))
            if values:
                cell.value = _median(values)
                cell.ratio = _median(ratios)
                if wl.key == "seq":
                    oks = [r for r in results if r and r.get("status") == "ok"]
                    cell.p50_us = _median([r["p50_us"] for r in oks])
                    cell.p99_us = _median([r["p99_us"] for r in oks])
            failed = [r for r in results if r and r.get("status") != "ok"]
            if not values:
                first = failed[0] if failed else {"status": "missing"}
                cell.status = first.get("status", "missing")
                cell.reason = first.get("reason", "")
            elif failed:
                cell.reason = "; ".join(sorted({f"{r['status']}: {r.get('reason', '')}" for r in failed}))
            notes = [r["note"] for r in results if r and r.get("note")]
            cell.note = notes[0] if notes else ""
            summary[system][wl.key] = cell
    return summary


# --- targets ---------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    system: str
    wanted: str
    value: float | None
    ok: bool | None
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _per_run_ratio(raw: Raw, a: tuple[str, str], b: tuple[str, str]) -> float | None:
    """Median over runs of metric(a) / metric(b), both taken in the same run."""
    by_key = {w.key: w for w in WORKLOADS}
    ratios = []
    for run_a, run_b in zip(raw.get(a[0], []), raw.get(b[0], []), strict=False):
        va = _metric(run_a.get(a[1]), by_key[a[1]])
        vb = _metric(run_b.get(b[1]), by_key[b[1]])
        if va is not None and vb:
            ratios.append(va / vb)
    return _median(ratios)


def targets(raw: Raw) -> list[Target]:
    """The team's targets for easyrpc, each a ratio of two figures of the same run."""
    out: list[Target] = []

    def add(name: str, system: str, a: tuple[str, str], b: tuple[str, str], wanted: str,
            check: Callable[[float], bool]) -> None:
        value = _per_run_ratio(raw, a, b)
        out.append(Target(name, system, wanted, value, None if value is None else check(value),
                          f"{a[0]}:{a[1]} / {b[0]}:{b[1]}"))

    for ours in (OURS, OURS_AIO):
        if ours not in raw:
            continue
        add("sequential vs original", ours, (ours, "seq"), (ORIGINAL, "seq"), ">= 1.8x", lambda v: v >= 1.8)
        add("sequential vs floor", ours, (ours, "seq"), (FLOOR, "seq"), ">= 0.9x", lambda v: v >= 0.9)
        add("8 threads vs original 8 tasks", ours, (ours, "threads8"), (ORIGINAL, "threads8"), ">= 1.2x",
            lambda v: v >= 1.2)
        add("8 threads vs own sequential", ours, (ours, "threads8"), (ours, "seq"), "> 1.0x", lambda v: v > 1.0)
        add("64 in flight vs original 8 tasks", ours, (ours, "inflight64"), (ORIGINAL, "threads8"), ">= 1.5x",
            lambda v: v >= 1.5)
        add("10 MB echo time vs floor", ours, (ours, "echo10mb"), (FLOOR, "echo10mb"), "<= 1.2x", lambda v: v <= 1.2)
        add("10 MB bytes echo time vs gRPC", ours, (ours, "bytes10mb"), (GRPC, "bytes10mb"), "<= 1.2x",
            lambda v: v <= 1.2)
        add("10 MB str echo vs gRPC", ours, (ours, "echo10mb"), (GRPC, "echo10mb"), "<= 1.2x", lambda v: v <= 1.2)
    return out


# --- formatting ------------------------------------------------------------------------
def fmt_value(value: float, workload: Workload) -> str:
    if workload.metric == "seconds":
        if value < 0.1:
            return f"{value * 1000:.2f} ms"
        return f"{value:.3f} s"
    return f"{value:,.0f}"


def fmt_cell(cell: Cell, workload: Workload, system: str) -> str:
    if cell.status != "ok" or cell.value is None:
        return cell.status
    text = fmt_value(cell.value, workload)
    if system != FLOOR and cell.ratio is not None:
        text += f" ({cell.ratio:.2f}x)"
    if cell.runs_ok < cell.runs:
        text += f" [{cell.runs_ok}/{cell.runs} runs]"
    return text


def headers(workloads: Sequence[Workload] = WORKLOADS) -> list[str]:
    cols = ["system"]
    for wl in workloads:
        cols.append(f"{wl.key} ({wl.unit})")
        if wl.key == "seq":
            cols.append("seq p50/p99 (us)")
    return cols


def rows(summary: dict[str, dict[str, Cell]], workloads: Sequence[Workload] = WORKLOADS) -> list[list[str]]:
    out = []
    for system in SYSTEMS:
        if system.key not in summary:
            continue
        cells = summary[system.key]
        row = [system.label]
        for wl in workloads:
            cell = cells[wl.key]
            row.append(fmt_cell(cell, wl, system.key))
            if wl.key == "seq":
                if cell.p50_us is not None and cell.p99_us is not None:
                    row.append(f"{cell.p50_us:.0f} / {cell.p99_us:.0f}")
                else:
                    row.append("-")
        out.append(row)
    return out


def notes(summary: dict[str, dict[str, Cell]], workloads: Sequence[Workload] = WORKLOADS) -> list[str]:
    """One line per cell that is not a plain measurement: why n/a, error, timeout, or a note."""
    out = []
    labels = {s.key: s.label for s in SYSTEMS}
    for system, cells in summary.items():
        for wl in workloads:
            cell = cells[wl.key]
            name = f"{labels.get(system, system)} / {wl.key}"
            if cell.status != "ok":
                out.append(f"{name}: {cell.status.upper()}" + (f" - {cell.reason}" if cell.reason else ""))
            elif cell.reason:  # some runs failed
                out.append(f"{name}: {cell.reason}")
            if cell.note:
                out.append(f"{name}: {cell.note}")
    return out


def text_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    for row in body:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(out)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in body:
        out.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    return "\n".join(out)


def target_lines(items: list[Target]) -> list[str]:
    labels = {s.key: s.label for s in SYSTEMS}
    out = []
    for t in items:
        verdict = "n/a" if t.ok is None else ("PASS" if t.ok else "FAIL")
        value = "-" if t.value is None else f"{t.value:.2f}x"
        out.append(f"{verdict:4}  {labels[t.system]:20} {t.name:34} {value:>7}  (wanted {t.wanted})")
    return out
