"""Mixed-precision weights (8 or 4 bits per layer), scored in BOPs: a simple DJPQ-style greedy
selection. Every layer starts at the highest candidate width; layers are lowered in order of
(BOPs saved) / (added weight-quantization error) until the model's BOPs fit the budget.

Quantization here is symmetric per output channel (zero point 0, so pruned zeros stay exactly
zero), optionally with power-of-two scales (a shift instead of a multiplier on integer hardware).
`apply_bits` fake-quantizes weights in a copy of the model (to measure accuracy; `bits_qat`
fine-tunes a model on the same grid, zeros frozen); that copy's
4-bit kernels lie on a grid k * s per output channel, which `npas_keras.export(copy, ...,
quantize="int8", weight_bits=bits)` stores exactly as 4-bit values (packed two per byte in the
npas format, run by the delegate; docs/quantization.md).
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional

import numpy as np

from npas_keras.quantization.bops import _rows, bops

__all__ = ["fake_quantize", "select_bits", "apply_bits", "quantized_kernels", "bits_qat"]

_KERNEL = {"Dense": "kernel", "Conv2D": "kernel", "Conv1D": "kernel",
           "DepthwiseConv2D": "depthwise_kernel"}


def _channels(w: np.ndarray, depthwise: bool) -> np.ndarray:
    """2-D view [reduction, output channel] of a kernel."""
    if depthwise and w.ndim == 4:
        return w.reshape(w.shape[0] * w.shape[1], -1)
    return w.reshape(-1, w.shape[-1])


def fake_quantize(w, bits: int, *, depthwise: bool = False, power_of_two: bool = False):
    """Symmetric per-output-channel quantize-dequantize of a Keras kernel (last axis = output
    channel; depthwise `[kh, kw, c, m]`: per (c, m)). Zeros map to zero. Scale per channel =
    max|w| / (2^(bits-1) - 1), rounded up to a power of two with `power_of_two`."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int in [2, 16], got {bits!r}")
    w = np.asarray(w, np.float32)
    m = _channels(w, depthwise)
    qmax = 2 ** (bits - 1) - 1
    amax = np.max(np.abs(m), axis=0)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    if power_of_two:
        scale = np.exp2(np.ceil(np.log2(scale)))
    q = np.clip(np.round(m / scale), -qmax, qmax) * scale
    return q.astype(np.float32).reshape(w.shape)


def _iter(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers") and layer is not model:
            yield from _iter(layer)


def _cell_of(layer):
    """The cell of a recurrent layer (GRU / LSTM / SimpleRNN: `layer.cell` with `kernel` and
    `recurrent_kernel`), else None. Stacked cells are not handled."""
    cell = getattr(layer, "cell", None)
    if cell is not None and hasattr(cell, "kernel") and hasattr(cell, "recurrent_kernel"):
        return cell
    return None


def quantized_kernels(layer):
    """[(name, variable, depthwise)] of the kernels `apply_bits` fake-quantizes in `layer`
    (an npas PruneWrapper is looked through): Dense / Conv1D / Conv2D `kernel`, DepthwiseConv2D
    `depthwise_kernel`, and a recurrent cell's `kernel` and `recurrent_kernel`. Every one is
    quantized per output channel = its last axis, which for a recurrent cell is one gate unit
    (`[in, 3u]` GRU, `[in, 4u]` LSTM): the int8 exporter quantizes the cell's matmuls (the
    unrolled FULLY_CONNECTED ops, weights `kernel.T`) per output row the same way. Biases and
    other weights stay float. [] for any other layer."""
    inner = getattr(layer, "layer", layer)
    kind = type(inner).__name__
    attr = _KERNEL.get(kind)
    if attr is not None and hasattr(inner, attr):
        return [(attr, getattr(inner, attr), kind == "DepthwiseConv2D")]
    cell = _cell_of(inner)
    if cell is not None:
        return [(a, getattr(cell, a), False) for a in ("kernel", "recurrent_kernel")]
    return []


def _kernels(model) -> Dict[str, list]:
    """{layer name: [(kernel ndarray, depthwise)]} of the layers apply_bits can quantize."""
    out = {}
    for layer in _iter(model):
        ks = quantized_kernels(layer)
        if ks:
            out[getattr(layer, "layer", layer).name] = [(np.asarray(v.numpy()), dw)
                                                       for _, v, dw in ks]
    return out


def _error(kernels, bits, power_of_two):
    """Relative squared quantization error of a layer's kernels together (one kernel for
    Dense / Conv; kernel and recurrent kernel for an RNN cell): sum of squared changes / sum of
    squared weights."""
    num = den = 0.0
    for w, depthwise in kernels:
        den += float(np.sum(w.astype(np.float64) ** 2))
        d = fake_quantize(w, bits, depthwise=depthwise, power_of_two=power_of_two) - w
        num += float(np.sum(d.astype(np.float64) ** 2))
    return num / den if den > 0 else 0.0


def select_bits(model_or_rows, budget: float = 0.75, candidates: Iterable[int] = (8, 4),
                act_bits: int = 8, power_of_two: bool = False,
                sensitivity: Optional[Mapping[str, float]] = None) -> Dict:
    """Chooses per-layer weight bits so that BOPs <= budget x BOPs(all at max(candidates)).

    Greedy (DJPQ-style trade of bits against error, scored in BOPs): each step lowers the layer
    (to its next smaller candidate) with the largest BOPs saved per unit of added error, where
    error = relative squared weight-quantization error of the layer (its kept weights; zeros
    are exact) unless `sensitivity` = {layer: weight of that error} scales it (e.g. from a
    validation-loss probe). Layers without weights (rows only) get error 1 per bit removed.

    Returns {"bits": {layer: w_bits}, "bops", "bops_max", "ratio", "met" (budget reached),
    "errors": {layer: {bits: error}}, "steps": [(layer, from, to)]}.
    """
    cands = sorted({int(c) for c in candidates}, reverse=True)
    if not cands or any(c < 2 or c > 16 for c in cands):
        raise ValueError(f"candidates must be bit widths in [2, 16], got {candidates!r}")
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be in (0, 1] (a fraction of the all-{cands[0]}-bit BOPs)")
    rows = _rows(model_or_rows)
    kernels = {} if isinstance(model_or_rows, (list, tuple)) else _kernels(model_or_rows)
    layers = []
    for r in rows:
        if r.get("macs_pruned", r.get("macs")) is not None and r["layer"] not in layers:
            layers.append(r["layer"])
    bits = {l: cands[0] for l in layers}
    errors = {}
    for l in layers:
        ks = kernels.get(l)
        errors[l] = {b: (_error(ks, b, power_of_two) if ks else float(cands[0] - b))
                     for b in cands}
    sens = dict(sensitivity or {})
    total_max = bops(rows, bits, act_bits)["total"]
    target = budget * total_max
    steps = []

    def total(bb):
        return bops(rows, bb, act_bits)["total"]

    current = total_max
    while current > target:
        best, best_score = None, None
        for l in layers:
            i = cands.index(bits[l])
            if i + 1 >= len(cands):
                continue
            nb = dict(bits, **{l: cands[i + 1]})
            saved = current - total(nb)
            if saved <= 0:
                continue
            added = (errors[l][cands[i + 1]] - errors[l][bits[l]]) * sens.get(l, 1.0)
            score = saved / max(added, 1e-12)
            if best_score is None or score > best_score:
                best, best_score = l, score
        if best is None:
            break
        i = cands.index(bits[best])
        steps.append((best, bits[best], cands[i + 1]))
        bits[best] = cands[i + 1]
        current = total(bits)
    return {"bits": bits, "bops": current, "bops_max": total_max,
            "ratio": current / total_max if total_max else 1.0, "met": current <= target,
            "errors": errors, "steps": steps}


def apply_bits(model, bits, power_of_two: bool = False):
    """A copy of a (stripped or plain) tf_keras model with each layer's kernels fake-quantized to
    its bit width (`bits`: int or {layer: int}; layers not named are left float), per output
    channel as the int8 exporter does it (`quantized_kernels`: Dense / Conv / DepthwiseConv
    kernels, and GRU / LSTM / SimpleRNN kernel and recurrent kernel). Use it to measure the
    accuracy of a `select_bits` choice (zeros stay zero), and export it with the same
    `weight_bits` to store the 4-bit layers in 4 bits. ValueError when `bits` names a layer the
    model lacks or one with no kernel it can quantize (it would stay float unnoticed)."""
    import tf_keras as keras
    from npas_keras.compat import check_model
    check_model(model)
    from npas_keras.export.converter import _has_wrappers
    if _has_wrappers(model):
        from npas_keras.pruning import strip
        model = strip(model, verbose=False)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    if isinstance(bits, Mapping):
        names = {layer.name: layer for layer in _iter(clone)}
        missing = sorted(n for n in bits if n not in names)
        unsupported = sorted(n for n in bits if n in names and not quantized_kernels(names[n]))
        if missing or unsupported:
            raise ValueError(
                "apply_bits: " + "; ".join(
                    ([f"no layer named {missing}"] if missing else []) +
                    ([f"{unsupported} have no kernel it can fake-quantize (Dense, Conv1D/2D, "
                      "DepthwiseConv2D, GRU/LSTM/SimpleRNN cells)"] if unsupported else [])))
    for layer in _iter(clone):
        b = bits.get(layer.name) if isinstance(bits, Mapping) else bits
        if b is None:
            continue
        for _, var, depthwise in quantized_kernels(layer):
            var.assign(fake_quantize(var.numpy(), int(b), depthwise=depthwise,
                                     power_of_two=power_of_two))
    for attr in ("npas_schemes",):
        if hasattr(model, attr):
            setattr(clone, attr, getattr(model, attr))
    return clone


def bits_qat(model, bits, power_of_two: bool = False):
    """A Keras callback that fine-tunes `model` (stripped, float: the weights `apply_bits`
    would start from) with its kernels held on their `bits` grids: quantization-aware training
    with a straight-through estimator, for the 4-bit layers tfmot's int8 QAT cannot express.

    At the start of `fit` each kernel `apply_bits` would quantize is copied to a float shadow,
    its exact zeros (the pruned positions) are recorded, and the variable is set to
    `fake_quantize(shadow)`. From then on the variable always holds the quantized weights, so
    the forward pass, the gradients and every evaluation (validation included) see them; after
    each batch the optimizer's step (taken at the quantized point) is added to the shadow, the
    pruned positions are set back to 0 and the variable is re-quantized. The weights end exactly
    on the grid with the zeros kept: export with `npas_keras.export(model, ..., quantize="int8",
    weight_bits=bits)`. Pass the float model, not an `apply_bits` copy: that copy's weights
    rounded to 0 would count as pruned and stay 0.

        m = keras.models.clone_model(stripped); m.set_weights(stripped.get_weights())
        m.compile(...); m.fit(x, y, epochs=1, callbacks=[q.bits_qat(m, choice["bits"])])

    `bits`: int or {layer name: int} as for `apply_bits` (layers not named stay float)."""
    import tf_keras as keras

    names = {layer.name: layer for layer in _iter(model)}
    if isinstance(bits, Mapping):
        missing = sorted(n for n in bits if n not in names or not quantized_kernels(names[n]))
        if missing:
            raise ValueError(f"bits_qat: {missing}: no such layer with a kernel to quantize")
    targets = []   # (variable, bits, depthwise)
    for layer in names.values():
        b = bits.get(layer.name) if isinstance(bits, Mapping) else bits
        if b is not None:
            targets += [(var, b, dw) for _, var, dw in quantized_kernels(layer)]
    if not targets:
        raise ValueError("bits_qat: no kernel to quantize in this model")
    for b in {b for _, b, _ in targets}:
        fake_quantize(np.zeros((1, 1), np.float32), b)   # a bad width fails here, not in fit

    class _BitsQAT(keras.callbacks.Callback):
        def _put(self, i, shadow):
            var, b, dw = targets[i]
            q = fake_quantize(shadow, b, depthwise=dw, power_of_two=power_of_two)
            var.assign(q)
            return q

        def on_train_begin(self, logs=None):
            self.shadow = [np.array(v.numpy(), np.float32) for v, _, _ in targets]
            self.keep = [s != 0 for s in self.shadow]
            self.held = [self._put(i, s) for i, s in enumerate(self.shadow)]

        def on_train_batch_end(self, batch, logs=None):
            for i, (var, _, _) in enumerate(targets):
                self.shadow[i] += var.numpy() - self.held[i]   # the optimizer's step
                self.shadow[i] *= self.keep[i]
                self.held[i] = self._put(i, self.shadow[i])

    return _BitsQAT()
