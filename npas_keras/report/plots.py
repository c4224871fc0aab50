"""PNG plots (matplotlib, Agg; no pyplot global state, so it is safe in tests and threads)."""
from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _new_figure(width=7.0, height=4.5):
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _cases(bench) -> list[dict]:
    """Accepts one benchmark dict, a list of them, or a bare list of cases."""
    if isinstance(bench, Mapping):
        if "cases" not in bench:
            raise ValueError("benchmark JSON needs a 'cases' list (see DESIGN.md)")
        return list(bench["cases"])
    out = []
    for item in bench:
        if isinstance(item, Mapping) and "cases" in item:
            out.extend(item["cases"])
        else:
            out.append(item)
    return out


def plot_speedup_vs_density(bench, path: str, title: str | None = None) -> str:
    """One curve per (model, scheme, threads): speed-up over the baseline against density.

    `bench`: {"benchmark", "machine", "cases": [{"model", "scheme", "density", "threads",
    "speedup", ...}]} (or a list of those). Cases without a numeric density or speed-up are
    skipped; ValueError when none is left.
    """
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for case in _cases(bench):
        density, speedup = case.get("density"), case.get("speedup")
        if speedup is None and case.get("baseline_ms") and case.get("npas_ms"):
            speedup = case["baseline_ms"] / case["npas_ms"]
        if not isinstance(density, (int, float)) or not isinstance(speedup, (int, float)):
            continue
        if not (math.isfinite(density) and math.isfinite(speedup)):
            continue
        model = os.path.basename(str(case.get("model", "?")))
        key = (model, str(case.get("scheme", "?")), case.get("threads", 1))
        groups[key].append((float(density), float(speedup)))
    if not groups:
        raise ValueError("no case with a numeric density and speedup to plot")
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for (model, scheme, threads), pts in sorted(groups.items(), key=lambda kv: str(kv[0])):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                label=f"{model} / {scheme} / {threads}t")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("density (fraction of weights kept)")
    ax.set_ylabel("speed-up over baseline (x)")
    ax.set_xlim(left=0)
    if isinstance(bench, Mapping):
        title = title or f"{bench.get('benchmark', 'benchmark')} ({bench.get('machine', '?')})"
    ax.set_title(title or "speed-up vs density")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _layer_name(row, i):
    for key in ("layer", "name", "op"):
        if row.get(key):
            return str(row[key])
    return f"#{i}"


def plot_layer_bars(rows: Sequence[Mapping], path: str, title: str = "per-layer") -> str:
    """Bars per layer: density, plus latency (ms) and/or stored bytes when the rows have them.

    `rows`: dicts with at least "density" (inspect rows: op, layer, scheme, block_shape, density,
    stored_bytes; summary rows: layer, density, ...). Rows without a density are skipped.
    """
    rows = [r for r in rows if isinstance(r.get("density"), (int, float))]
    if not rows:
        raise ValueError("no row with a numeric 'density' to plot")
    names = [_layer_name(r, i) for i, r in enumerate(rows)]
    panels = [("density", "density (kept)")]
    for key, label in (("latency_ms", "latency (ms)"), ("stored_bytes", "stored bytes")):
        if any(isinstance(r.get(key), (int, float)) for r in rows):
            panels.append((key, label))
    fig = _new_figure(width=max(6.0, 0.45 * len(rows) + 2), height=2.6 * len(panels) + 0.8)
    xs = list(range(len(rows)))
    for k, (key, label) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1)
        values = [float(r.get(key) or 0.0) for r in rows]
        ax.bar(xs, values, color=f"C{k}")
        ax.set_ylabel(label)
        if key == "density":
            ax.set_ylim(0, 1.05)
        ax.set_xticks(xs)
        ax.set_xticklabels(names if k == len(panels) - 1 else [""] * len(xs),
                           rotation=60, ha="right", fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
        if k == 0:
            ax.set_title(title)
    return _save(fig, path)


def pareto_front(points: Iterable[Mapping], x: str = "latency_ms", y: str = "accuracy"):
    """Points not dominated by another (lower-or-equal `x` and higher-or-equal `y`, one strict),
    sorted by `x`."""
    pts = [p for p in points
           if isinstance(p.get(x), (int, float)) and isinstance(p.get(y), (int, float))]
    pts.sort(key=lambda p: (p[x], -p[y]))
    front, best = [], -math.inf
    for p in pts:
        if p[y] > best:
            front.append(p)
            best = p[y]
    return front


def plot_pareto(results: Sequence[Mapping], path: str, title: str = "accuracy vs latency",
                x: str = "latency_ms", y: str = "accuracy") -> str:
    """Scatter of all trials and the Pareto front (step line) in accuracy vs latency."""
    pts = [p for p in results
           if isinstance(p.get(x), (int, float)) and isinstance(p.get(y), (int, float))]
    if not pts:
        raise ValueError(f"no result with numeric {x!r} and {y!r} to plot")
    front = pareto_front(pts, x, y)
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter([p[x] for p in pts], [p[y] for p in pts], s=18, alpha=0.5, label="trials")
    ax.plot([p[x] for p in front], [p[y] for p in front], marker="o", color="C3",
            drawstyle="steps-post", label="Pareto front")
    for p in front:
        if p.get("name"):
            ax.annotate(str(p["name"]), (p[x], p[y]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
