"""npas_keras.summary: per-layer, per-weight scheme, density and MACs before/after pruning."""
from __future__ import annotations

import json
from typing import List

import numpy as np

from npas_keras.compat import check_model
from npas_keras.layers import PruneWrapper, layer_kind, prunable_weights

__all__ = ["summary"]


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


def summary(model, print_fn=print) -> List[dict]:
    """Prints and returns one row per prunable weight.

    Works on pruned (wrapped) models, and on stripped models (schemes from ``npas_schemes``,
    density from the zeros). Row keys: layer, weight, shape, scheme, block_shape, density
    (fraction kept), macs_dense, macs_pruned (per sample; None where shapes are unknown).
    """
    check_model(model)
    records = getattr(model, "npas_schemes", None) or {}
    rows = []
    for outer in model.layers:
        if isinstance(outer, PruneWrapper):
            layer, scheme = outer, outer.scheme
            inner = outer.layer
            masks = {v.name: m.numpy() != 0 for v, m in zip(outer.views, outer.mask_variables)}
            views = outer.views
            scheme_of = {v.name: scheme for v in views}
        elif outer.name in records:
            inner, layer = outer, outer
            views = prunable_weights(outer)
            from npas_keras.schemes import Scheme
            scheme_of = {}
            for v in views:
                js = records[outer.name].get(v.name)
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
    if print_fn is not None:
        head = f"{'layer':<24}{'weight':<18}{'scheme':<15}{'block':<9}{'density':>8}{'MACs':>14}{'MACs pruned':>14}"
        print_fn(head)
        print_fn("-" * len(head))
        for r in rows:
            blk = "x".join(map(str, r["block_shape"])) if r["block_shape"] else "-"
            print_fn(f"{r['layer']:<24}{r['weight']:<18}{str(r['scheme']):<15}{blk:<9}"
                     f"{r['density']:>8.3f}{str(r['macs_dense']):>14}{str(r['macs_pruned']):>14}")
        td = sum(r["macs_dense"] or 0 for r in rows)
        tp = sum(r["macs_pruned"] or 0 for r in rows)
        print_fn(f"total MACs: {td} -> {tp}" + (f" ({tp / td:.3f})" if td else ""))
    return rows
