"""npas_keras.summary: per-layer, per-weight scheme, density, MACs before/after pruning, bits and
BOPs."""
from __future__ import annotations

import json
from typing import List

import numpy as np
import tf_keras as keras

from npas_keras.compat import check_model
from npas_keras.layers import PruneWrapper, layer_kind, prunable_weights

__all__ = ["summary", "print_table"]


def _prod(dims):
    try:
        return int(np.prod([int(d) for d in dims]))
    except (TypeError, ValueError):
        return None


def _shape(getter):
    try:
        s = getter()
    except (AttributeError, RuntimeError, ValueError):
        return None
    if isinstance(s, list):
        s = s[0]
    return tuple(s) if s is not None else None


def _positions(layer, outer, view_name):
    """How many times each weight is used per sample (output positions / time steps)."""
    kind = layer_kind(layer)
    if kind == "rnn":
        s = _shape(lambda: outer.input_shape)
        return _prod(s[1:2]) if s else None
    if kind == "mha":
        part = view_name.split("_")[0]
        shape = {"query": layer._query_shape, "key": layer._key_shape or layer._value_shape,
                 "value": layer._value_shape, "output": layer._query_shape}[part]
        return _prod(list(shape)[1:-1]) if shape is not None else None
    s = _shape(lambda: outer.output_shape)
    return _prod(s[1:-1]) if s else None


def _layers(model):
    """The model's layers, nested models flattened (a PruneWrapper counts as one layer)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def summary(model, bits=32, act_bits=None, print_fn=print) -> List[dict]:
    """Prints and returns one row per prunable weight of every layer that has one.

    Works on pruned (wrapped) models, on stripped models (schemes from ``npas_schemes``, density
    from the zeros) and on plain models (scheme None, density from the zeros), so the totals
    cover the whole model. Row keys: layer, weight, shape, scheme, block_shape, density
    (fraction kept), macs_dense, macs_pruned (per sample; None where shapes are unknown), and
    w_bits, a_bits, bops = macs_pruned x w_bits x a_bits (bit-operations per sample, DJPQ).

    ``bits``: weight bits of every layer (default 32: float), a (w_bits, a_bits) pair, or
    {layer: int | pair} (layers not named: 8); activation bits default to ``act_bits``, else 32
    for 32-bit weights and 8 otherwise (see npas_keras.quantization.bops, which counts them).
    """
    check_model(model)
    records = getattr(model, "npas_schemes", None) or {}
    rows = []
    for outer in _layers(model):
        if isinstance(outer, PruneWrapper):
            layer, scheme = outer, outer.scheme
            inner = outer.layer
            masks = {v.name: m.numpy() != 0 for v, m in zip(outer.views, outer.mask_variables)}
            views = outer.views
            scheme_of = {v.name: scheme for v in views}
        elif layer_kind(outer) is not None:
            inner, layer = outer, outer
            views = prunable_weights(outer)
            from npas_keras.schemes import Scheme
            record = records.get(outer.name)
            record = record if isinstance(record, dict) else {}   # {weight: scheme JSON}
            scheme_of = {}
            for v in views:
                js = record.get(v.name)
                scheme_of[v.name] = Scheme.from_json(js) if js else None
            masks = {v.name: v.variable.numpy() != 0 for v in views}
        else:
            continue
        for v in views:
            sch = scheme_of.get(v.name)
            mask = masks[v.name]
            pos = _positions(inner, layer, v.name)
            size = int(np.prod(v.shape))
            kept = int(mask.sum())
            rows.append({
                "layer": inner.name, "weight": v.name, "shape": v.shape,
                "scheme": None if sch is None else sch.name,
                "block_shape": None if sch is None or sch.block_shape is None else tuple(sch.block_shape),
                "density": kept / size if size else 0.0,
                "macs_dense": None if pos is None else pos * size,
                "macs_pruned": None if pos is None else pos * kept,
            })
    from npas_keras.quantization.bops import add_bops  # BOPs arithmetic lives in one place
    rows = add_bops(rows, bits, act_bits)
    if print_fn is not None:
        print_table(rows, print_fn)
    return rows


def print_table(rows, print_fn=print):
    """The summary table of `rows` (from `summary`, or any rows with its keys)."""
    head = (f"{'layer':<24}{'weight':<18}{'scheme':<15}{'block':<9}{'density':>8}{'MACs':>14}"
            f"{'MACs pruned':>14}{'w/a bits':>10}{'BOPs':>16}")
    print_fn(head)
    print_fn("-" * len(head))
    for r in rows:
        blk = "x".join(map(str, r["block_shape"])) if r.get("block_shape") else "-"
        d = r.get("density")
        print_fn(f"{str(r['layer']):<24}{str(r.get('weight', '-')):<18}{str(r.get('scheme')):<15}"
                 f"{blk:<9}{'-' if d is None else f'{d:.3f}':>8}{str(r.get('macs_dense')):>14}"
                 f"{str(r.get('macs_pruned', r.get('macs'))):>14}"
                 f"{str(r['w_bits']) + '/' + str(r['a_bits']):>10}{str(r['bops']):>16}")
    td = sum(r.get("macs_dense") or 0 for r in rows)
    tp = sum(r.get("macs_pruned", r.get("macs")) or 0 for r in rows)
    print_fn(f"total MACs: {td} -> {tp}" + (f" ({tp / td:.3f})" if td else ""))
    print_fn(f"total BOPs per sample: {sum(r['bops'] or 0 for r in rows)}")
