"""npas_keras.strip: remove the wrappers (zeros stay in place) and, for filter/channel pruning,
physically remove the pruned units so the layers get smaller.

Shrinking follows single-consumer chains  producer -> [pass-through layers] -> sink  where the
producer is a Dense / Conv1D / Conv2D, the pass-through layers are per-channel (BatchNormalization,
activations, Dropout, pooling, global pooling, Flatten) and the sink is a Dense / Conv1D / Conv2D.
A channel c of the producer is removed when it provably does not change the model's output:
  - the sink's weights for c are all zero (channel pruning of the sink), or
  - the producer's filter c is all zero (filter pruning), so c carries a constant value v_c through
    the chain; v_c == 0, or v_c is folded into the sink's bias (Dense sinks, 'valid' convolutions).
Anything else (residual Add, Concatenate, shared layers, model outputs, 'same' convolutions fed a
non-zero constant) keeps its zeros; the reasons are in ``model.npas_kept_zeros``.
"""
from __future__ import annotations

import logging
from typing import Dict, List

import numpy as np
import tensorflow as tf
import tf_keras as keras

from npas_keras.compat import check_model
from npas_keras.layers import PruneWrapper
from npas_keras.pruning.prune import iter_wrappers

__all__ = ["strip"]

log = logging.getLogger("npas_keras")

L = keras.layers
_ELEMENTWISE = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Softmax)
_IDENTITY = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout,
             L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D)
_GLOBAL = (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalMaxPooling1D,
           L.GlobalMaxPooling2D)


def _is_gemm(layer):
    if isinstance(layer, (L.DepthwiseConv2D, L.SeparableConv2D, L.Conv2DTranspose, L.Conv1DTranspose)):
        return False
    if isinstance(layer, (L.Conv1D, L.Conv2D)):
        return getattr(layer, "groups", 1) == 1 and layer.data_format == "channels_last"
    return isinstance(layer, L.Dense)


def _unwrapped_clone(model):
    def clone_fn(layer):
        inner = layer.layer if isinstance(layer, PruneWrapper) else layer
        return inner.__class__.from_config(inner.get_config())

    plain = keras.models.clone_model(model, clone_function=clone_fn)
    if not plain.built:
        plain.build(model.input_shape)
    records = {}
    for layer in model.layers:
        if isinstance(layer, PruneWrapper):
            layer.apply_masks()
            plain.get_layer(layer.layer.name).set_weights(layer.layer.get_weights())
            records[layer.layer.name] = {v.name: layer.scheme.to_json() for v in layer.views}
        elif layer.weights:
            plain.get_layer(layer.name).set_weights(layer.get_weights())
    return plain, records


class _Graph:
    def __init__(self, model):
        self.model = model
        self.ids = {id(l) for l in model.layers}
        self.output_ids = set()
        for t in model.outputs or []:
            hist = getattr(t, "_keras_history", None)
            if hist is not None:
                self.output_ids.add(id(hist.layer))

    def consumers(self, layer):
        return [n.outbound_layer for n in layer._outbound_nodes if id(n.outbound_layer) in self.ids]

    def walk(self, producer):
        """-> (chain, sink, None) or (None, None, reason)."""
        chain, cur, flattened = [], producer, False
        while True:
            if id(cur) in self.output_ids:
                return None, None, f"{cur.name} output is a model output"
            if len(cur._inbound_nodes) > 1:
                return None, None, f"{cur.name} is shared (called more than once)"
            cons = self.consumers(cur)
            if len(cons) != 1:
                return None, None, f"{cur.name} output has {len(cons)} consumers"
            c = cons[0]
            if _is_gemm(c):
                if flattened and not isinstance(c, L.Dense):
                    return None, None, f"{c.name} after Flatten is not Dense"
                return chain, c, None
            if isinstance(c, L.BatchNormalization):
                if flattened or c.axis not in ([-1], [len(c.input_shape) - 1], -1):
                    return None, None, f"{c.name}: BatchNormalization not on the channel axis"
            elif isinstance(c, L.Flatten):
                if flattened:
                    return None, None, f"{c.name}: second Flatten"
                flattened = True
            elif isinstance(c, _GLOBAL):
                if getattr(c, "data_format", "channels_last") != "channels_last":
                    return None, None, f"{c.name}: channels_first"
            elif isinstance(c, _IDENTITY):
                if getattr(c, "data_format", "channels_last") != "channels_last":
                    return None, None, f"{c.name}: channels_first"
            elif not isinstance(c, _ELEMENTWISE):
                return None, None, f"consumer {c.name} ({type(c).__name__}) cannot be shrunk"
            chain.append(c)
            cur = c


def _kernel_bias(layer, bias_add):
    ws = layer.get_weights()
    k = ws[0]
    b = ws[1] if layer.use_bias else None
    if b is not None and layer.name in bias_add:
        b = b + bias_add[layer.name]
    return k, b


def _apply_act(act, x):
    return np.asarray(act(tf.constant(x[None, :], tf.float32)))[0]


def _shrink(plain, records, exact: bool):
    g = _Graph(plain)
    out_keep: Dict[str, np.ndarray] = {}
    in_keep: Dict[str, tuple] = {}     # sink name -> (kind, keep channels, C, flatten_shape or None)
    bn_keep: Dict[str, np.ndarray] = {}
    bias_add: Dict[str, np.ndarray] = {}
    removed, kept_zeros = {}, {}

    def scheme_name(name):
        rec = records.get(name)
        if not rec:
            return None
        return next(iter(rec.values()))["name"]

    for P in plain.layers:
        if not _is_gemm(P):
            continue
        chain, S, reason = g.walk(P)
        pn = scheme_name(P.name)
        if S is None:
            if pn == "filter":
                kept_zeros[P.name] = reason
            continue
        sn = scheme_name(S.name)
        if pn != "filter" and sn != "channel":
            continue
        K, b = _kernel_bias(P, bias_add)
        C = K.shape[-1]
        row_zero = np.all(K.reshape(-1, C) == 0, axis=0)
        # constant value of each channel through the chain (known only for zero filters)
        v = np.zeros(C, np.float32) if b is None else b.astype(np.float32).copy()
        known = row_zero.copy()
        v = np.where(known, _apply_act(keras.activations.get(P.activation), v), 0.0)
        flatten_shape = None
        for c in chain:
            if isinstance(c, L.BatchNormalization):
                ws = dict(zip([w.name.split("/")[-1].split(":")[0] for w in c.weights], c.get_weights()))
                gamma = ws.get("gamma", np.ones(C)); beta = ws.get("beta", np.zeros(C))
                v = gamma * (v - ws["moving_mean"]) / np.sqrt(ws["moving_variance"] + c.epsilon) + beta
            elif isinstance(c, _ELEMENTWISE):
                v = np.asarray(c(tf.constant(v[None, :], tf.float32)))[0]
            elif isinstance(c, L.Flatten):
                flatten_shape = tuple(int(d) for d in c.input_shape[1:])
            v = np.where(known, v, 0.0).astype(np.float32)
        SK, _ = _kernel_bias(S, bias_add)
        if flatten_shape is not None:
            rows = SK.reshape(int(np.prod(flatten_shape[:-1])), C, -1)       # [pos, C, out]
            sink_zero = np.all(rows == 0, axis=(0, 2))
            contrib = rows.sum(axis=0)                                        # [C, out]
            foldable = True
        elif isinstance(S, L.Dense):
            sink_zero = np.all(SK == 0, axis=1)
            contrib = SK
            foldable = True
        else:
            sink_zero = np.all(SK.reshape(-1, C, SK.shape[-1]) == 0, axis=(0, 2))
            contrib = SK.reshape(-1, C, SK.shape[-1]).sum(axis=0)
            foldable = S.padding == "valid"
        removable = sink_zero | (known & (v == 0))
        if foldable:
            removable |= known
        elif not exact:
            removable |= known
        if removable.all():
            removable[np.argmax(~sink_zero) if (~sink_zero).any() else 0] = False
        blocked = int(np.sum(row_zero & ~removable))
        if blocked:
            kept_zeros[P.name] = (f"{blocked} zero filter(s) feed {S.name} ('same' padding) with a "
                                  "non-zero constant; kept as zeros (strip(exact=False) removes them)")
        if not removable.any():
            continue
        fold = (~sink_zero) & removable & known & (v != 0)
        if fold.any() and S.use_bias:
            add = (v[fold, None] * contrib[fold]).sum(axis=0)
            bias_add[S.name] = bias_add.get(S.name, 0) + add
        elif fold.any():
            kept_zeros[P.name] = f"{S.name} has no bias to fold constants into"
            removable &= ~fold
        keep = np.nonzero(~removable)[0]
        out_keep[P.name] = keep
        for c in chain:
            if isinstance(c, L.BatchNormalization):
                bn_keep[c.name] = keep
        in_keep[S.name] = (keep, C, flatten_shape)
        removed[P.name] = {"removed": int(removable.sum()), "kept": int(len(keep)), "sink": S.name}

    if not out_keep:
        return plain, removed, kept_zeros

    def clone_fn(layer):
        cfg = layer.get_config()
        if layer.name in out_keep:
            key = "units" if isinstance(layer, L.Dense) else "filters"
            cfg[key] = int(len(out_keep[layer.name]))
        return layer.__class__.from_config(cfg)

    small = keras.models.clone_model(plain, clone_function=clone_fn)
    if not small.built:
        small.build(plain.input_shape)
    for layer in plain.layers:
        if not layer.weights:
            continue
        new = small.get_layer(layer.name)
        if _is_gemm(layer) and (layer.name in out_keep or layer.name in in_keep or layer.name in bias_add):
            K, b = _kernel_bias(layer, bias_add)
            if layer.name in in_keep:
                keep, C, fshape = in_keep[layer.name]
                if fshape is not None:
                    K = K.reshape(int(np.prod(fshape[:-1])), C, -1)[:, keep, :].reshape(-1, K.shape[-1])
                elif isinstance(layer, L.Dense):
                    K = K[keep]
                else:
                    K = np.take(K, keep, axis=-2)
            if layer.name in out_keep:
                K = K[..., out_keep[layer.name]]
                if b is not None:
                    b = b[out_keep[layer.name]]
            new.set_weights([K, b] if b is not None else [K])
        elif layer.name in bn_keep:
            new.set_weights([w[bn_keep[layer.name]] for w in layer.get_weights()])
        else:
            new.set_weights(layer.get_weights())
    return small, removed, kept_zeros


def strip(model, *, shrink: bool = True, exact: bool = True, verbose: bool = True):
    """Returns a plain tf_keras model: wrappers removed, pruned weights exactly zero.

    shrink: physically remove filter-/channel-pruned units where that provably keeps the outputs
      (see the module docstring); exact=False also removes zero filters whose constant value
      cannot be folded (outputs then change slightly at 'same'-padded borders).

    Attributes on the result: ``npas_schemes`` {layer: {weight: scheme JSON}},
    ``npas_removed`` {producer: {"removed", "kept", "sink"}}, ``npas_kept_zeros`` {layer: reason}.
    """
    check_model(model)
    plain, records = _unwrapped_clone(model)
    removed, kept_zeros = {}, {}
    names = {s["name"] for r in records.values() for s in r.values()}
    if shrink and names & {"filter", "channel"}:
        plain, removed, kept_zeros = _shrink(plain, records, exact)
    plain.npas_schemes = records
    plain.npas_removed = removed
    plain.npas_kept_zeros = kept_zeros
    if kept_zeros and verbose:
        log.warning("npas_keras.strip kept zeros instead of removing units in:\n%s",
                    "\n".join(f"  {k}: {v}" for k, v in kept_zeros.items()))
    return plain
