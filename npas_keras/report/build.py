"""JSON result files -> PNG figures + one HTML page."""
from __future__ import annotations

import json
import os
import re
from typing import Mapping, Sequence

from .html import write_html
from .plots import pareto_front, plot_layer_bars, plot_pareto, plot_speedup_vs_density

BENCH_COLUMNS = ["name", "model", "scheme", "density", "threads", "baseline", "baseline_ms",
                 "npas_ms", "speedup", "max_abs_err"]


def _search_rows(obj):
    if isinstance(obj, Mapping):
        for key in ("results", "trials"):
            if isinstance(obj.get(key), list):
                return obj[key]
        return None
    return obj


def classify(obj) -> str | None:
    """What a loaded JSON document holds: "bench" (DESIGN.md benchmark format), "demo" (from
    `npas demo --out`), "search" (trials with accuracy and latency_ms), "layers" (per-layer rows
    with a density), or None."""
    if isinstance(obj, Mapping) and isinstance(obj.get("cases"), list):
        return "bench"
    if isinstance(obj, Mapping) and obj.get("kind") == "npas-demo":
        return "demo"
    rows = _search_rows(obj)
    if isinstance(rows, list) and rows and all(isinstance(r, Mapping) for r in rows):
        if all("accuracy" in r and "latency_ms" in r for r in rows):
            return "search"
        if all("density" in r for r in rows) and any(("layer" in r or "op" in r) for r in rows):
            return "layers"
    if isinstance(obj, list) and obj and all(isinstance(r, Mapping) and "cases" in r for r in obj):
        return "bench"
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "figure"


def build_report(inputs: Sequence[str], out_dir: str, title: str = "npas-keras report",
                 progress=None) -> dict:
    """Reads each JSON file in `inputs`, writes PNGs into `out_dir` and `out_dir/report.html`.

    Returns {"html": path, "images": [paths], "skipped": [(path, reason)]}. ValueError when no
    input holds anything it can plot or tabulate.
    """
    os.makedirs(out_dir, exist_ok=True)
    sections, images, skipped = [], [], []
    for i, path in enumerate(inputs):
        if progress:
            progress(i, len(inputs))
        with open(path, encoding="utf-8") as f:
            try:
                obj = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from None
        kind = classify(obj)
        stem = _slug(os.path.splitext(os.path.basename(path))[0])
        if kind == "bench":
            png = plot_speedup_vs_density(obj, os.path.join(out_dir, f"{stem}_speedup.png"))
            images.append(png)
            cases = obj["cases"] if isinstance(obj, Mapping) else [c for b in obj for c in b["cases"]]
            text = ""
            if isinstance(obj, Mapping):
                text = (f"benchmark {obj.get('benchmark', '?')} on {obj.get('machine', '?')}; "
                        "baseline and candidate run interleaved, median of many runs.")
            sections.append({"title": f"Speed-up vs density: {os.path.basename(path)}",
                             "text": text, "images": [png], "table": cases,
                             "columns": [c for c in BENCH_COLUMNS
                                         if any(c in case for case in cases)]})
        elif kind == "search":
            rows = _search_rows(obj)
            png = plot_pareto(rows, os.path.join(out_dir, f"{stem}_pareto.png"))
            images.append(png)
            sections.append({"title": f"Accuracy vs latency: {os.path.basename(path)}",
                             "text": f"{len(rows)} trials; the table lists the Pareto front.",
                             "images": [png], "table": pareto_front(rows)})
        elif kind == "layers":
            rows = _search_rows(obj)
            png = plot_layer_bars(rows, os.path.join(out_dir, f"{stem}_layers.png"),
                                  title=os.path.basename(path))
            images.append(png)
            sections.append({"title": f"Per-layer: {os.path.basename(path)}",
                             "images": [png], "table": rows})
        elif kind == "demo":
            sec = {"title": f"Demo: {obj.get('dataset', '?')} / {obj.get('scheme', '?')}",
                   "text": (f"rate {obj.get('rate')}, {obj.get('threads')} thread(s), "
                            f"{obj.get('test_samples')} test images; latency is the median "
                            "ms per batch-1 inference."),
                   "images": [], "table": obj.get("rows", [])}
            layers = [r for r in obj.get("layers", []) if isinstance(r.get("density"), (int, float))]
            if layers:
                png = plot_layer_bars(layers, os.path.join(out_dir, f"{stem}_layers.png"),
                                      title="per-layer (exported model)")
                images.append(png)
                sec["images"].append(png)
            sections.append(sec)
            if layers:
                sections.append({"title": "Per-layer table", "table": layers})
        else:
            skipped.append((path, "not a benchmark, search, per-layer or demo result"))
    if progress:
        progress(len(inputs), len(inputs))
    if not sections:
        raise ValueError("nothing to report: " + "; ".join(f"{p}: {r}" for p, r in skipped))
    if skipped:
        sections.append({"title": "Skipped inputs",
                         "table": [{"file": p, "reason": r} for p, r in skipped]})
    html_path = write_html(os.path.join(out_dir, "report.html"), sections, title=title)
    return {"html": html_path, "images": images, "skipped": skipped}
