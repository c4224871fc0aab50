"""Figures and a self-contained HTML report from npas-keras JSON results.

- `plot_speedup_vs_density`: benchmark JSON (DESIGN.md's format) -> speed-up vs density curves.
- `plot_layer_bars`: per-layer rows (from `npas_keras.inspect` or `npas_keras.summary`) -> bars of
  density (and latency / stored bytes when the rows have them).
- `plot_pareto`: search results (list of {"accuracy", "latency_ms", ...}) -> scatter with the
  Pareto front (lower latency and higher accuracy are better).
- `plot_masks`: one panel per pruning scheme, the mask it gives on a seeded random matrix
  (docs/images/scheme_masks.png).
- `write_html`: one HTML page, images embedded as base64 data URIs, tables inline.
- `build_report`: reads JSON files, decides what each holds, writes the PNGs and the page.

Matplotlib runs on the Agg backend (no display needed).
"""
from .plots import (pareto_front, plot_layer_bars, plot_pareto,  # noqa: F401
                    plot_speedup_vs_density)
from .html import write_html, table_html  # noqa: F401
from .build import build_report, classify  # noqa: F401
from .masks import MASK_SCHEMES, plot_masks  # noqa: F401

__all__ = ["pareto_front", "plot_layer_bars", "plot_pareto", "plot_speedup_vs_density",
           "write_html", "table_html", "build_report", "classify", "MASK_SCHEMES",
           "plot_masks"]
