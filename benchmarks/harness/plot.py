"""Draw results/latest.json as a PNG bar chart: one panel per workload.

Run by run.py with the ``tools`` venv's matplotlib: ``python plot.py latest.json out.png``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

COLOURS = {"floor": "#9e9e9e", "easyrpc": "#1f77b4", "easyrpc-aio": "#6baed6", "original": "#ff7f0e"}
OTHER = "#74a089"


def fmt(value: float, metric: str) -> str:
    if metric == "seconds":
        return f"{value * 1000:.1f} ms" if value < 0.1 else f"{value:.2f} s"
    return f"{value:,.0f}"


def main(src: str, dst: str) -> None:
    data: dict[str, Any] = json.loads(open(src).read())
    systems = data["systems"]
    workloads = data["workloads"]
    summary = data["summary"]
    cols = 3
    rows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 0.45 * len(systems) * rows + 1.6 * rows), squeeze=False)
    labels = [s["label"].split(" (flask")[0] for s in systems][::-1]
    for ax, wl in zip(axes.flat, workloads, strict=False):
        values, texts, colours = [], [], []
        for s in systems[::-1]:
            cell = summary.get(s["key"], {}).get(wl["key"], {})
            value = cell.get("value") if cell.get("status") == "ok" else None
            values.append(value or 0.0)
            colours.append(COLOURS.get(s["key"], OTHER))
            if value is None:
                texts.append(cell.get("status", "-"))
            else:
                ratio = cell.get("ratio")
                extra = f"  ({ratio:.2f}x floor)" if ratio is not None and s["key"] != "floor" else ""
                texts.append(fmt(value, wl["metric"]) + extra)
        y = range(len(values))
        ax.barh(list(y), values, color=colours)
        ax.set_yticks(list(y), labels, fontsize=8)
        top = max(values) if any(values) else 1.0
        for i, (v, t) in enumerate(zip(values, texts, strict=True)):
            ax.text(v + top * 0.01, i, t, va="center", fontsize=7)
        ax.set_xlim(0, top * 1.55)
        better = "higher is better" if wl["higher_is_better"] else "lower is better"
        ax.set_title(f"{wl['title']}\n{wl['unit']}, {better}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(workloads):]:
        ax.axis("off")
    meta = data["meta"]
    fig.suptitle(f"easyrpc benchmarks - {meta['date']} - nproc {meta['nproc']}, Python {meta['python']} - "
                 f"{meta['scale']} scale, median of {meta['runs']} runs", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
