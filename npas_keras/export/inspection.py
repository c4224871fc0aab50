"""`npas_keras.inspect`: what an exported .tflite holds, per weight op (no TensorFlow import)."""
from __future__ import annotations

import json

import numpy as np

from npas_keras.export import flatbuffer as fb
from npas_keras.export import format as fmt

COLUMNS = ("op", "layer", "scheme", "block_shape", "density", "bits", "stored_bytes", "kind")


def inspect(path_or_bytes) -> list[dict]:
    """One row per weight op (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D and the NPAS custom
    ops): ``op``, ``layer``, ``scheme``, ``block_shape``, ``density``, ``stored_bytes`` (bytes the
    weights take in the file: values + index for custom ops), ``kind`` ("custom" or "builtin"),
    plus ``encoding``, ``dense_bytes``, ``bits`` (stored weight bits: 32, 8 or 4), ``shape``,
    ``tensor``, ``subgraph``, ``op_index``.

    Custom ops are fully decoded (checksums, every index), so a corrupt file raises ValueError
    naming the op and the problem."""
    model, raw = fb.load_model(path_or_bytes)
    meta = fb.read_schemes_metadata(model) or {}
    by_op = {}
    for r in meta.get("layers", []):
        if isinstance(r, dict) and "subgraph" in r and "op_index" in r:
            by_op[(r["subgraph"], r["op_index"])] = r
    rows = []
    for entry in fb.weight_ops(model, raw):
        sg = model.subgraphs[entry["subgraph"]]
        m = by_op.get((entry["subgraph"], entry["op_index"]), {})
        row = dict(op=entry["custom"] or entry["builtin"], layer=m.get("layer"),
                   scheme=m.get("scheme"), block_shape=m.get("block_shape"), density=None,
                   stored_bytes=None, kind="custom" if entry["custom"] else "builtin",
                   encoding=None, dense_bytes=None, bits=m.get("bits"), shape=m.get("shape"),
                   tensor=m.get("tensor"),
                   subgraph=entry["subgraph"], op_index=entry["op_index"])
        if entry["custom"]:
            opts, matrix = fb.decode_custom_op(model, raw, sg, entry)
            scales = opts.extra.get("scales")
            row.update(density=float((matrix != 0).mean()), encoding=opts.encoding_name,
                       stored_bytes=opts.values_bytes + opts.index_bytes +
                       (0 if scales is None else scales.nbytes),
                       dense_bytes=(1 if opts.quantized else 4) * opts.rows * opts.cols,
                       bits=fmt.VALUE_BITS[opts.value_type])
            if row["scheme"] is None:
                try:
                    sj = json.loads(opts.scheme_json) if opts.scheme_json else {}
                except ValueError:
                    sj = {}
                if isinstance(sj, dict):
                    row["scheme"] = sj.get("scheme")
                    row["layer"] = row["layer"] or sj.get("layer")
        else:
            t = entry["tensor"]
            row["tensor"] = row["tensor"] or fb.tensor_name(t)
            row["shape"] = row["shape"] or [int(v) for v in (t.shape if t.shape is not None
                                                            else [])]
            w = fb.constant_array(model, raw, t)
            if w is not None:
                row["density"] = float((w != 0).mean()) if w.size else 1.0
                row["stored_bytes"] = row["dense_bytes"] = int(w.nbytes)
                if row["scheme"] is None:
                    shape = w.shape
                    khw = (shape[1], shape[2]) if w.ndim == 4 else (1, 1)
                    desc = fb._describe(fmt.gemm_view(entry["kind"], w.astype(np.float32)), khw)
                    row["scheme"], row["block_shape"] = desc["scheme"], \
                        fb._jsonable(desc.get("block_shape"))
        rows.append(row)
    return rows


def _cell(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v)
    return str(v)


def format_inspect(rows, columns=COLUMNS + ("encoding",)) -> str:
    """A plain-text table of `inspect` rows, with a total line."""
    table = [[c for c in columns]] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
             for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    stored = sum(r.get("stored_bytes") or 0 for r in rows)
    dense = sum(r.get("dense_bytes") or 0 for r in rows)
    ncustom = sum(1 for r in rows if r.get("kind") == "custom")
    lines.append(f"{len(rows)} weight ops ({ncustom} NPAS custom), weights stored in {stored} "
                 f"bytes (dense: {dense} bytes)")
    return "\n".join(lines)


def print_inspect(path_or_bytes, file=None):
    print(format_inspect(inspect(path_or_bytes)), file=file)
