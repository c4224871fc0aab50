"""`npas_keras.export`: tf_keras model -> .tflite (standard ops or NPAS custom ops)."""
from __future__ import annotations

import json
import os

import numpy as np

from npas_keras.export import flatbuffer as fb
from npas_keras.export import format as fmt

FORMATS = ("standard", "npas")
QUANTIZE = (None, "int8")
_WEIGHT_ATTR = {"Dense": "kernel", "Conv2D": "kernel", "Conv1D": "kernel",
                "DepthwiseConv2D": "depthwise_kernel"}


def export(model, path=None, format="standard", representative_data=None, quantize=None,
           weight_bits=None):
    """Converts a tf_keras model (pruned with wrappers, stripped, or plain) to TensorFlow Lite.

    format="standard": builtin ops, zeros in place (any TFLite runtime runs it).
    format="npas": pruned FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D become NPAS custom ops with
        compact weights (tflite_custom_ops/FORMAT.md); runs only with the npas delegate.
    quantize="int8" (needs representative_data: an array of inputs, a list of arrays for several
        inputs, or a generator function in TFLite's representative-dataset form) gives a
        full-integer model. format="npas" then writes pruned int8 ops as quantized NPAS custom
        ops (int8 values, per-channel scales).
    weight_bits (with quantize="int8"): 4, 8, or {layer name: 4 | 8} (e.g. the "bits" of
        `quantization.select_bits`); layers not named stay 8-bit. A 4-bit layer's kernel must
        already lie on a 4-bit grid k * s per output channel (`quantization.apply_bits`); it is
        stored as int8 k with scale s (same real weights) in the standard format and packed two
        weights per byte in the npas format. A layer off the grid raises ValueError. An
        8-bit layer whose kernel lies on an 8-bit grid other than the converter's
        max|w| / 127 (`apply_bits` / `bits_qat` with power_of_two=True) is likewise stored as
        its own k and s, so the file holds the trained weights exactly.
        GRU / LSTM / SimpleRNN layers take 4 bits too (kernel and recurrent kernel): their
        FULLY_CONNECTED ops (unrolled: one per time step, all reading one weight tensor) get
        int8 k with scale s; a tensor read by several ops stays builtin in both formats.

    Both formats record per-layer scheme metadata ("npas_schemes"), read back by
    `npas_keras.inspect`. Writes `path` and returns it; with path=None returns the bytes.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    bits = _check_weight_bits(weight_bits, quantize)
    if quantize == "int8" and representative_data is None:
        raise ValueError("quantize='int8' needs representative_data (sample inputs) to "
                         "calibrate activation ranges")
    from npas_keras.compat import check_model
    check_model(model)
    schemes = getattr(model, "npas_schemes", None)
    if _has_wrappers(model):
        from npas_keras.pruning import strip
        model = strip(model)
        check_model(model, "stripped model")
    schemes = getattr(model, "npas_schemes", None) or schemes or {}
    grids = _weight_grids(model, bits) if bits else {}   # refuses off-grid 4-bit layers up front
    tflite = _convert(model, representative_data, quantize)
    op_info = _match_layers(model, tflite, schemes)
    if bits:
        _attach_grids(tflite, op_info, bits, grids, schemes)
    model_bytes, _ = fb.analyze_and_rewrite(tflite, op_info, npas=(format == "npas"),
                                            export_format=format)
    if path is None:
        return model_bytes
    path = os.fspath(path)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(path, "wb") as f:
        f.write(model_bytes)
    return path


# --------------------------------------------------------------------------------------------

def _check_weight_bits(weight_bits, quantize):
    """weight_bits -> {layer: 4 | 8}, {"*": 4 | 8} for all layers, or {} (nothing to do)."""
    if weight_bits is None:
        return {}
    if quantize != "int8":
        raise ValueError("weight_bits needs quantize='int8' (4-bit weights are stored as "
                         "quantized integers)")
    items = weight_bits.items() if isinstance(weight_bits, dict) else [("*", weight_bits)]
    out = {}
    for name, b in items:
        if isinstance(b, bool) or b not in (4, 8):
            raise ValueError(f"weight_bits must be 4 or 8 per layer, got {b!r} for {name!r}")
        out[str(name)] = int(b)
    return out


def _rnn_cell(layer):
    """The cell of a GRU / LSTM / SimpleRNN layer (its `kernel` and `recurrent_kernel`), else
    None."""
    cell = getattr(layer, "cell", None)
    if cell is not None and hasattr(cell, "kernel") and hasattr(cell, "recurrent_kernel"):
        return cell
    return None


def _weight_grids(model, bits):
    """{layer: {"k", "scales", "bias", "bits"}} for the layers whose weights are stored on their
    own grid (format.weight_grid), from their Keras kernels: every 4-bit layer (ValueError when
    its kernel is off a 4-bit grid), and each 8-bit layer whose kernel lies on an 8-bit grid
    other than the converter's max|w| / 127 (apply_bits / bits_qat with power-of-two scales),
    which the converter's own rounding would move. A recurrent layer gets {"rnn": [grid of
    kernel.T, grid of recurrent_kernel.T]} (each with "weight" and "bits"), matched to its
    FULLY_CONNECTED ops by value after conversion. ValueError for an unknown layer."""
    layers = {l.name: l for l in _iter_layers(model) if type(l).__name__ in _WEIGHT_ATTR}
    rnns = {l.name: l for l in _iter_layers(model) if _rnn_cell(l) is not None}
    missing = sorted(set(bits) - set(layers) - set(rnns) - {"*"})
    if missing:
        raise ValueError(f"weight_bits names layers the model does not have (or that have no "
                         f"Dense/Conv/DepthwiseConv kernel or recurrent cell): {missing}")

    def grid(name, b, matrix, what=""):
        """(k, scales), or None for an 8-bit kernel on the converter's grid or on none."""
        try:
            k, scales = fmt.weight_grid(matrix, b)
        except ValueError as exc:
            if b == 8:
                return None
            raise ValueError(f"layer {name!r}{what} cannot be exported with 4-bit weights: "
                             f"{exc}. Put its kernel on a 4-bit grid first, e.g. "
                             f"npas_keras.quantization.apply_bits(model, {{{name!r}: 4}}), "
                             "or give it 8 bits") from None
        live = scales > 0
        if b == 8 and np.allclose(scales[live], np.abs(matrix[live]).max(axis=1) / 127,
                                  rtol=1e-6, atol=0):
            return None
        return k, scales

    grids = {}
    for name, layer in layers.items():
        b = bits.get(name, bits.get("*", 8))
        g = grid(name, b, _keras_gemm(layer))
        if g is not None:
            bias = getattr(layer, "bias", None)
            grids[name] = {"k": g[0], "scales": g[1], "bits": b,
                           "bias": None if bias is None else np.asarray(bias.numpy(), np.float32)}
    for name, layer in rnns.items():
        b = bits.get(name, bits.get("*", 8))
        cell, cands = _rnn_cell(layer), []
        for attr in ("kernel", "recurrent_kernel"):
            g = grid(name, b, np.asarray(getattr(cell, attr).numpy(), np.float32).T, f" ({attr})")
            # bias None: the converter splits and folds RNN biases per op; each op's own int32
            # bias (with its scale) is requantized instead
            if g is not None:
                cands.append({"k": g[0], "scales": g[1], "bits": b, "bias": None,
                              "weight": attr})
        if cands:
            grids[name] = {"rnn": cands}
    return grids


def _attach_grids(tflite, op_info, bits, grids, schemes=None):
    """op_info[op]["grid"] = the grid of the op's layer; ValueError when a layer with a grid has
    no op, or (weight_bits=4) a weight op has no layer whose grid could be checked. A recurrent
    layer's grids go to the FULLY_CONNECTED ops (unmatched, or matched to that layer and weight)
    whose int8 weights are the int8 quantization of that grid (flatbuffer.grid_mismatch): an
    unrolled GRU has one such op per time step, all reading one weight tensor."""
    found = set()
    for info in op_info.values():
        if info["layer"] in grids and "rnn" not in grids[info["layer"]]:
            info["grid"] = grids[info["layer"]]
            found.add(info["layer"])
    rnn = [(name, g) for name, gg in grids.items() if "rnn" in gg for g in gg["rnn"]]
    if rnn:
        tm, raw = fb.load_model(tflite)
        for entry in fb.weight_ops(tm, raw):
            key = (entry["subgraph"], entry["op_index"])
            known = op_info.get(key)  # _match_layers may have named the recurrent layer already
            if (known is not None and "rnn" not in grids.get(known["layer"], {})) or \
                    entry["kind"] != fmt.KIND_FC or entry["custom"] is not None:
                continue
            weights = fb.constant_array(tm, raw, entry["tensor"])
            hits = [(name, g) for name, g in rnn
                    if (known is None or (name, g["weight"]) == (known["layer"], known["weight"]))
                    and fb.grid_mismatch(entry, weights, g["k"], g["scales"]) is None]
            if len(hits) != 1:
                continue
            name, g = hits[0]
            scheme = _scheme_for(schemes or {}, name, g["weight"])
            op_info[key] = {"layer": name, "weight": g["weight"], "scheme": scheme,
                            "grid": {k: g[k] for k in ("k", "scales", "bias", "bits")}}
            found.add(name)
    lost = sorted(set(grids) - found)
    if lost:
        raise ValueError(f"layers stored on their own 4- or 8-bit grid without a matching int8 "
                         f"op in the converted model: {lost}")
    if bits.get("*") == 4:
        tm, raw = fb.load_model(tflite)
        if len(list(fb.weight_ops(tm, raw))) > len(op_info):
            raise ValueError("weight_bits=4: some weight ops of the converted model are not "
                             "matched to a Keras layer, so their 4-bit grid cannot be checked; "
                             "name the layers in a dict instead")


def _iter_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers") and layer is not model:
            yield from _iter_layers(layer)


def _has_wrappers(model) -> bool:
    """True when the model holds npas PruneWrappers, which are stripped before conversion.
    Other wrappers (tfmot's QuantizeWrapper of a QAT model, Bidirectional) convert as they are:
    strip cannot rebuild them and does not need to."""
    from npas_keras.layers.wrapper import PruneWrapper
    return any(isinstance(layer, PruneWrapper) for layer in _iter_layers(model))


def _representative(data):
    if callable(data):
        return data
    if isinstance(data, np.ndarray) or (isinstance(data, (list, tuple)) and data and
                                        all(isinstance(d, np.ndarray) for d in data)):
        arrays = [data] if isinstance(data, np.ndarray) else list(data)

        def gen():
            for i in range(min(len(arrays[0]), 200)):
                yield [a[i:i + 1].astype(np.float32) for a in arrays]
        return gen

    def gen_iter():
        for item in data:
            yield [np.asarray(x, np.float32) for x in (item if isinstance(item, (list, tuple))
                                                      else [item])]
    return gen_iter


def _convert(model, representative_data, quantize) -> bytes:
    import tensorflow as tf

    def configure(conv):
        if quantize == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = _representative(representative_data)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        return conv

    try:
        return configure(tf.lite.TFLiteConverter.from_keras_model(model)).convert()
    except Exception as first:  # fall back to a concrete function of the model's call
        try:
            specs = [tf.TensorSpec(i.shape, i.dtype) for i in model.inputs]
            fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0],
                                               training=False))
            conc = fn.get_concrete_function(*specs)
            return configure(tf.lite.TFLiteConverter.from_concrete_functions([conc], model)) \
                .convert()
        except Exception:
            raise RuntimeError(f"TFLite conversion failed: {first}") from first


def _keras_gemm(layer):
    """The GEMM view of a layer's prunable kernel, in the TFLite builtin order, or None."""
    kind = type(layer).__name__
    attr = _WEIGHT_ATTR.get(kind)
    if attr is None or not hasattr(layer, attr):
        return None
    k = np.asarray(getattr(layer, attr).numpy(), np.float32)
    if kind == "Dense":
        return k.T
    if kind in ("Conv2D", "Conv1D"):
        k = k if k.ndim == 4 else k[None]
        return k.transpose(3, 0, 1, 2).reshape(k.shape[3], -1)
    if kind == "DepthwiseConv2D":
        return k.reshape(k.shape[0] * k.shape[1], -1).T
    return None


def _scheme_for(schemes, layer_name, weight_name):
    """The scheme recorded for one layer's weight, as JSON data (dict), or None."""
    scheme = _scheme_entry(schemes, layer_name, weight_name)
    if scheme is not None and hasattr(scheme, "to_json"):
        scheme = scheme.to_json()
    if isinstance(scheme, str):
        try:
            scheme = json.loads(scheme)
        except ValueError:
            pass
    return scheme


def _scheme_entry(schemes, layer_name, weight_name):
    entry = schemes.get(layer_name) if isinstance(schemes, dict) else None
    if entry is None:
        return None
    if not isinstance(entry, dict) or "name" in entry or "scheme" in entry:
        return entry  # a scheme given directly for the layer
    if weight_name in entry:
        return entry[weight_name]
    for key, value in entry.items():
        if str(key).split("/")[-1].split(":")[0] == weight_name:
            return value
    return next(iter(entry.values())) if len(entry) == 1 else None


def _int8_quantization_of(entry, q8, gemm):
    """True when the int8 GEMM view q8 of a weight op is the per-channel int8 quantization of a
    Keras kernel's GEMM view: within one step of its scales, and zero wherever the kernel is."""
    if gemm is None or gemm.shape != q8.shape:
        return False
    scales = fb.weight_scales(entry, q8.shape[0])
    if isinstance(scales, str):
        return False
    return bool(np.all(np.abs(q8 * scales[:, None] - gemm) <= scales[:, None] * 1.0001) and
                np.all(q8[gemm == 0] == 0))


def _match_layers(model, tflite, schemes):
    """(subgraph, op_index) -> {"layer", "weight", "scheme"} for the weight ops of `tflite`: by
    the layer name in the op's tensor names, else by value (the float weights, or int8 weights
    that quantize them). The FULLY_CONNECTED ops of a recurrent layer (unrolled: one per time
    step) carry no layer name; they match its cell's kernel or recurrent kernel by value."""
    layers = [l for l in _iter_layers(model) if type(l).__name__ in _WEIGHT_ATTR]
    names = {l.name: l for l in layers}
    rnn_gemms = [(l.name, attr, np.asarray(getattr(_rnn_cell(l), attr).numpy(), np.float32).T)
                 for l in _iter_layers(model) if _rnn_cell(l) is not None
                 for attr in ("kernel", "recurrent_kernel")]
    gemms = {}
    tm, raw = fb.load_model(tflite)
    out = {}
    for entry in fb.weight_ops(tm, raw):
        sg = tm.subgraphs[entry["subgraph"]]
        op = entry["op"]
        text = fb.tensor_name(entry["tensor"])
        if len(op.outputs):
            text += ";" + fb.tensor_name(sg.tensors[op.outputs[0]])
        parts = {p for chunk in text.split(";") for p in chunk.split("/")}
        cands = [n for n in names if n in parts]
        w = fb.constant_array(tm, raw, entry["tensor"])
        matrix = None if w is None or w.dtype.kind not in "fi" else \
            fmt.gemm_view(entry["kind"], w.astype(np.float32))
        int8 = w is not None and w.dtype == np.int8

        def same_values(gemm):
            if matrix is None or gemm is None:
                return False
            if int8:
                return _int8_quantization_of(entry, matrix, gemm)
            return gemm.shape == matrix.shape and np.allclose(gemm, matrix)

        def layer_values(name):
            if name not in gemms:
                gemms[name] = _keras_gemm(names[name])
            return same_values(gemms[name])

        chosen = None
        if len(cands) == 1:
            chosen = cands[0]
        else:
            pool = cands or list(names)
            exact = [n for n in pool if layer_values(n)]
            if len(exact) == 1:
                chosen = exact[0]
        if chosen is None:
            if entry["kind"] == fmt.KIND_FC and entry["custom"] is None:
                hits = [(n, attr) for n, attr, g in rnn_gemms if same_values(g)]
                if len(hits) == 1:
                    name, attr = hits[0]
                    out[(entry["subgraph"], entry["op_index"])] = {
                        "layer": name, "weight": attr, "scheme": _scheme_for(schemes, name, attr)}
            continue
        weight = _WEIGHT_ATTR[type(names[chosen]).__name__]
        scheme = _scheme_for(schemes, chosen, weight)
        out[(entry["subgraph"], entry["op_index"])] = {"layer": chosen, "weight": weight,
                                                       "scheme": scheme}
    return out
