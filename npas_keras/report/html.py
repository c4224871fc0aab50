"""One self-contained HTML page: images as base64 data URIs, tables inline, no external files."""
from __future__ import annotations

import base64
import datetime
import html
import os
from typing import Mapping, Sequence

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.s { text-align: left; }
img { max-width: 100%; display: block; margin: 1em 0; }
p.note { color: #666; font-size: 0.85em; }
"""


def _fmt(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3g}"
        return f"{value:.4g}"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def table_html(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """An HTML table of dict rows (columns: given, or the union of keys in first-seen order)."""
    if not rows:
        return "<p class='note'>(no rows)</p>"
    if columns is None:
        columns = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr>"]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            cls = "" if isinstance(v, (int, float)) and not isinstance(v, bool) else " class='s'"
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def image_data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def write_html(path: str, sections: Sequence[Mapping], title: str = "npas-keras report") -> str:
    """Writes one HTML file. Each section: {"title", "text"?, "images"?: [png paths],
    "table"?: [row dicts], "columns"?: [names]}. PNGs are embedded as base64 data URIs, so the
    page can be mailed or attached on its own."""
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='note'>generated {datetime.datetime.now().isoformat(timespec='seconds')}"
        " by npas-keras</p>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(str(section.get('title', '')))}</h2>")
        if section.get("text"):
            parts.append(f"<p>{html.escape(str(section['text']))}</p>")
        for image in section.get("images", ()):
            alt = html.escape(os.path.basename(image))
            parts.append(f"<img alt='{alt}' src='{image_data_uri(image)}'>")
        if section.get("table") is not None:
            parts.append(table_html(section["table"], section.get("columns")))
    parts.append("</body></html>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return path
