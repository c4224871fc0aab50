"""Bit-operations (BOPs, as in DJPQ / Baalen et al.): per layer MACs x weight bits x activation
bits, counting only the MACs of kept (nonzero) weights. The one place that counts them:
`npas_keras.summary` adds these columns to its rows through `add_bops`."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple, Union

Bits = Union[int, Tuple[int, int]]

__all__ = ["bops", "summary", "layer_bits", "add_bops"]


def _rows(model_or_rows) -> List[dict]:
    """Rows of `npas_keras.summary` (every layer with a prunable weight), or the rows given."""
    if isinstance(model_or_rows, (list, tuple)):
        rows = list(model_or_rows)
        for r in rows:
            if not isinstance(r, Mapping) or "layer" not in r:
                raise ValueError("rows must be dicts with 'layer' and 'macs_pruned' (or 'macs') "
                                 "as returned by npas_keras.summary")
        return rows
    from npas_keras.pruning.summary import summary as _summary
    return _summary(model_or_rows, print_fn=None)


def _check_bits(b, what):
    if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 32:
        raise ValueError(f"{what} must be an int in [1, 32], got {b!r}")
    return b


def layer_bits(bits: Union[Bits, Mapping[str, Bits]], layer: str,
               act_bits: Optional[int]) -> Tuple[int, int]:
    """(w_bits, a_bits) of `layer` under `bits` (an int, a (w, a) pair, or {layer: int | pair};
    layers not named default to 8). Activation bits default to `act_bits`, else 32 for 32-bit
    (float) weights and 8 for any other width (integer inference quantizes both)."""
    if isinstance(bits, Mapping):
        b = bits.get(layer, 8)
    else:
        b = bits
    if isinstance(b, (tuple, list)):
        if len(b) != 2:
            raise ValueError(f"bits for {layer!r} must be an int or (w_bits, a_bits), got {b!r}")
        return _check_bits(b[0], "w_bits"), _check_bits(b[1], "a_bits")
    w = _check_bits(b, "w_bits")
    a = act_bits if act_bits is not None else (32 if w == 32 else 8)
    return w, _check_bits(a, "a_bits")


def add_bops(rows, bits: Union[Bits, Mapping[str, Bits]] = 8,
             act_bits: Optional[int] = None) -> List[dict]:
    """Copies of `rows` (dicts with "layer" and "macs_pruned" or "macs") with w_bits, a_bits and
    bops = macs x w_bits x a_bits added (bops None where the MACs are unknown)."""
    out = []
    for r in _rows(list(rows)):
        macs = r.get("macs_pruned", r.get("macs"))
        w, a = layer_bits(bits, r["layer"], act_bits)
        out.append(dict(r, w_bits=w, a_bits=a, bops=None if macs is None else int(macs) * w * a))
    return out


def bops(model_or_rows, bits: Union[Bits, Mapping[str, Bits]] = 8,
         act_bits: Optional[int] = None) -> Dict:
    """Bit-operations per layer of a (pruned, stripped or plain) tf_keras model.

    Args:
      model_or_rows: a model (rows from `npas_keras.summary`) or such rows: dicts with "layer"
        and "macs_pruned" (MACs of kept weights, per sample; "macs" is accepted too).
      bits: weight bits for every layer (int), a (w_bits, a_bits) pair, or {layer: int | pair}
        (layers not named: 8).
      act_bits: activation bits where `bits` gives only weight bits (default 8; 32 for 32-bit
        weights).

    Returns:
      {"total": BOPs per sample, "layers": [{"layer", "weight", "macs", "w_bits", "a_bits",
      "bops"}]} with bops = macs x w_bits x a_bits. Rows whose MACs are unknown (None) count 0
      and carry macs=None.
    """
    rows = add_bops(_rows(model_or_rows), bits, act_bits)
    layers = [{"layer": r["layer"], "weight": r.get("weight"),
               "macs": r.get("macs_pruned", r.get("macs")), "w_bits": r["w_bits"],
               "a_bits": r["a_bits"], "bops": r["bops"]} for r in rows]
    return {"total": sum(r["bops"] or 0 for r in rows), "layers": layers}


def summary(model_or_rows, bits: Union[Bits, Mapping[str, Bits]] = 8,
            act_bits: Optional[int] = None, print_fn=print) -> List[dict]:
    """`npas_keras.summary` with 8-bit defaults (it also takes rows): rows with w_bits, a_bits
    and bops, printed as its table."""
    from npas_keras.pruning.summary import print_table
    rows = add_bops(_rows(model_or_rows), bits, act_bits)
    if print_fn is not None:
        print_table(rows, print_fn)
    return rows
