"""Bit-operations (BOPs, as in DJPQ / Baalen et al.): per layer MACs x weight bits x activation
bits, counting only the MACs of kept (nonzero) weights."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple, Union

Bits = Union[int, Tuple[int, int]]

__all__ = ["bops", "summary", "layer_bits"]


def _rows(model_or_rows) -> List[dict]:
    if isinstance(model_or_rows, (list, tuple)):
        rows = list(model_or_rows)
        for r in rows:
            if not isinstance(r, Mapping) or "layer" not in r:
                raise ValueError("rows must be dicts with 'layer' and 'macs_pruned' (or 'macs') "
                                 "as returned by npas_keras.summary")
        return rows
    from npas_keras.pruning import summary as _summary
    rows = _summary(model_or_rows, print_fn=lambda *a, **k: None)
    # Layers npas_keras.summary does not list (never pruned by npas, e.g. a plain or foreign
    # model): Dense / Conv / DepthwiseConv kernels, MACs = output positions x nonzero weights.
    seen = {r["layer"] for r in rows}
    import numpy as np
    for layer in _iter(model_or_rows):
        inner = getattr(layer, "layer", layer)
        attr = {"Dense": "kernel", "Conv1D": "kernel", "Conv2D": "kernel",
                "DepthwiseConv2D": "depthwise_kernel"}.get(type(inner).__name__)
        if attr is None or inner.name in seen or not hasattr(inner, attr):
            continue
        k = np.asarray(getattr(inner, attr).numpy())
        try:
            shape = inner.output_shape
            pos = int(np.prod([int(d) for d in shape[1:-1]])) if len(shape) > 2 else 1
        except (AttributeError, RuntimeError, TypeError, ValueError):
            pos = None
        kept = int(np.count_nonzero(k))
        rows.append({"layer": inner.name, "weight": attr, "shape": k.shape, "scheme": None,
                     "block_shape": None, "density": kept / k.size if k.size else 0.0,
                     "macs_dense": None if pos is None else pos * int(k.size),
                     "macs_pruned": None if pos is None else pos * kept})
    return rows


def _iter(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers") and layer is not model:
            yield from _iter(layer)


def _check_bits(b, what):
    if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 32:
        raise ValueError(f"{what} must be an int in [1, 32], got {b!r}")
    return b


def layer_bits(bits: Union[Bits, Mapping[str, Bits]], layer: str,
               act_bits: Optional[int]) -> Tuple[int, int]:
    """(w_bits, a_bits) of `layer` under `bits` (an int, a (w, a) pair, or {layer: int | pair};
    layers not named default to 8). Activation bits default to `act_bits`, else 8."""
    if isinstance(bits, Mapping):
        b = bits.get(layer, 8)
    else:
        b = bits
    if isinstance(b, (tuple, list)):
        if len(b) != 2:
            raise ValueError(f"bits for {layer!r} must be an int or (w_bits, a_bits), got {b!r}")
        return _check_bits(b[0], "w_bits"), _check_bits(b[1], "a_bits")
    a = 8 if act_bits is None else act_bits
    return _check_bits(b, "w_bits"), _check_bits(a, "a_bits")


def bops(model_or_rows, bits: Union[Bits, Mapping[str, Bits]] = 8,
         act_bits: Optional[int] = None) -> Dict:
    """Bit-operations per layer of a (pruned, stripped or plain) tf_keras model.

    Args:
      model_or_rows: a model (rows from `npas_keras.summary`) or such rows: dicts with "layer"
        and "macs_pruned" (MACs of kept weights, per sample; "macs" is accepted too).
      bits: weight bits for every layer (int), a (w_bits, a_bits) pair, or {layer: int | pair}
        (layers not named: 8).
      act_bits: activation bits where `bits` gives only weight bits (default 8).

    Returns:
      {"total": BOPs per sample, "layers": [{"layer", "weight", "macs", "w_bits", "a_bits",
      "bops"}]} with bops = macs x w_bits x a_bits. Rows whose MACs are unknown (None) count 0
      and carry macs=None.
    """
    out, total = [], 0
    for r in _rows(model_or_rows):
        macs = r.get("macs_pruned", r.get("macs"))
        w, a = layer_bits(bits, r["layer"], act_bits)
        b = None if macs is None else int(macs) * w * a
        total += b or 0
        out.append({"layer": r["layer"], "weight": r.get("weight"), "macs": macs,
                    "w_bits": w, "a_bits": a, "bops": b})
    return {"total": total, "layers": out}


def summary(model_or_rows, bits: Union[Bits, Mapping[str, Bits]] = 8,
            act_bits: Optional[int] = None, print_fn=print) -> List[dict]:
    """`npas_keras.summary` rows with w_bits, a_bits and bops added (and printed as a table)."""
    rows = _rows(model_or_rows)
    res = bops(rows, bits, act_bits)
    merged = [dict(r, **{k: b[k] for k in ("w_bits", "a_bits", "bops")})
              for r, b in zip(rows, res["layers"])]
    if print_fn is not None:
        print_fn(f"{'layer':<24}{'density':>8}{'MACs':>14}{'w/a bits':>10}{'BOPs':>16}")
        for r in merged:
            d = r.get("density")
            print_fn(f"{str(r['layer']):<24}{'' if d is None else f'{d:.3f}':>8}"
                     f"{'' if r.get('macs_pruned', r.get('macs')) is None else r.get('macs_pruned', r.get('macs')):>14}"
                     f"{str(r['w_bits']) + '/' + str(r['a_bits']):>10}"
                     f"{'' if r['bops'] is None else r['bops']:>16}")
        print_fn(f"total BOPs per sample: {res['total']}")
    return merged
