"""npas_keras.export / inspect: standard and NPAS formats against the Keras model, through the
npas delegate; file sizes; scheme metadata round trip; clear errors on bad input."""
import os

import numpy as np
import pytest
import tf_keras as keras

import npas_keras
from npas_keras.export import flatbuffer as fb
from npas_keras.export import format as fmt
from npas_keras.export import has_npas_custom_ops, inspect, format_inspect
from npas_keras.schemes import Scheme, compute_mask


def _delegate_or_skip():
    from npas_keras import runtime
    try:
        runtime.delegate_path()
    except FileNotFoundError as exc:
        pytest.skip(f"the npas delegate is not built: {exc}")
    return runtime


def _gemm(layer, kernel):
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel.reshape(-1, kernel.shape[2] * kernel.shape[3]).T, \
            lambda m: m.T.reshape(kernel.shape)
    if isinstance(layer, keras.layers.Conv2D):
        k = kernel.transpose(3, 0, 1, 2)
        return k.reshape(k.shape[0], -1), lambda m: m.reshape(k.shape).transpose(1, 2, 3, 0)
    return kernel.T, lambda m: m.T


def apply_scheme(model, scheme_for, seed=0):
    """Zeros each prunable kernel with compute_mask (the way strip() leaves them) and records
    model.npas_schemes. scheme_for(layer) -> Scheme or None."""
    rng = np.random.default_rng(seed)
    model.npas_schemes = {}
    for layer in model.layers:
        scheme = scheme_for(layer)
        weights = layer.get_weights()
        if not weights:
            continue
        # non-trivial biases, so the bias input is exercised
        if len(weights) > 1:
            weights[1] = rng.standard_normal(weights[1].shape).astype(np.float32) * 0.1
        if scheme is not None:
            kh, kw = layer.kernel_size if hasattr(layer, "kernel_size") else (1, 1)
            matrix, back = _gemm(layer, weights[0])
            mask = compute_mask(matrix, scheme, kernel_hw=(kh, kw))
            weights[0] = back(matrix * mask).astype(np.float32)
            name = "depthwise_kernel" if isinstance(layer, keras.layers.DepthwiseConv2D) \
                else "kernel"
            model.npas_schemes[layer.name] = {name: scheme.to_json()}
        layer.set_weights(weights)
    return model


def small_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 16))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="valid",
                                     name="dw")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(48, activation="relu6", name="fc")(x)
    return keras.Model(inp, x)


SCHEMES = {
    "unstructured": Scheme("unstructured", density=0.25),
    "filter": Scheme("filter", density=0.5),
    "channel": Scheme("channel", density=0.5),
    "n_m": Scheme("n_m", n=2, m=8),
    "block_punched": Scheme("block_punched", density=0.25, block_shape=(4, 8)),
    "bcr": Scheme("bcr", density=0.25, block_shape=(8, 8)),
    "pattern": Scheme("pattern", density=4 / 9),
}


def _scheme_for(name):
    scheme = SCHEMES[name]

    def pick(layer):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            if name in ("channel",):   # depthwise has a single input channel per kernel
                return Scheme("unstructured", density=0.5)
            return scheme
        if isinstance(layer, keras.layers.Conv2D):
            return scheme
        if isinstance(layer, keras.layers.Dense):
            return Scheme("unstructured", density=0.25) if name == "pattern" else scheme
        return None
    return pick


def _run(runtime, content, x, delegate=True):
    interp = runtime.Interpreter(model_content=content, num_threads=1, delegate=delegate)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy(), interp


@pytest.mark.parametrize("name", list(SCHEMES))
def test_standard_and_npas_match_keras_through_the_delegate(name):
    runtime = _delegate_or_skip()
    model = apply_scheme(small_cnn(), _scheme_for(name))
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 16)).astype(np.float32)
    expected = model(x).numpy()
    standard = npas_keras.export(model, None)
    npas = npas_keras.export(model, None, format="npas")
    assert not has_npas_custom_ops(standard) and has_npas_custom_ops(npas)

    for content in (standard, npas):
        out, interp = _run(runtime, content, x)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    stats = runtime.delegate_stats(interp)
    assert sum(stats["claimed_by_op"].get(n, 0) for n in fmt.CUSTOM_NAMES.values()) == 3

    rows = inspect(npas)
    assert [r["op"] for r in rows] == list(fmt.CUSTOM_NAMES[k] for k in
                                           (fmt.KIND_CONV, fmt.KIND_DW, fmt.KIND_FC))
    assert all(r["kind"] == "custom" for r in rows)
    by_layer = {r["layer"]: r for r in rows}
    std_rows = {r["layer"]: r for r in inspect(standard)}
    for layer, weights in model.npas_schemes.items():
        recorded = next(iter(weights.values()))["name"]
        assert by_layer[layer]["scheme"] == recorded == std_rows[layer]["scheme"]
        assert by_layer[layer]["density"] == pytest.approx(std_rows[layer]["density"])
        assert by_layer[layer]["stored_bytes"] < std_rows[layer]["stored_bytes"]
    assert "NpasSparseConv2D" in format_inspect(rows)


def test_scheme_inferred_without_metadata_and_path_written(tmp_path):
    model = apply_scheme(small_cnn(), _scheme_for("n_m"))
    del model.npas_schemes
    path = npas_keras.export(model, tmp_path / "sub" / "m.tflite", format="npas")
    assert os.path.isfile(path)
    rows = {r["layer"]: r for r in inspect(path)}
    assert rows["fc"]["scheme"] == "n_m" and rows["fc"]["encoding"] == "n_m"
    assert rows["conv"]["scheme"] == "n_m"


def _dense_model(units, scheme, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((units,))
    model = keras.Model(inp, keras.layers.Dense(units, name="fc")(inp))
    return apply_scheme(model, lambda layer: scheme if isinstance(layer, keras.layers.Dense)
                        else None)


@pytest.mark.parametrize("scheme", [
    Scheme("unstructured", density=1 / 8), Scheme("unstructured", density=1 / 4),
    Scheme("block_punched", density=1 / 8, block_shape=(16, 16)),
    Scheme("bcr", density=1 / 4, block_shape=(16, 16)), Scheme("n_m", n=1, m=8),
    Scheme("filter", density=1 / 8), Scheme("channel", density=1 / 4),
], ids=lambda s: f"{s.name}-{s.density:.3f}")
def test_npas_file_size(scheme):
    model = _dense_model(512, scheme)
    standard = npas_keras.export(model, None)
    npas = npas_keras.export(model, None, format="npas")
    rows = inspect(npas)
    bound = sum(r["stored_bytes"] for r in rows)        # stored values + index bytes
    density = rows[0]["density"]
    assert density == pytest.approx(scheme.density, rel=0.02)
    assert len(npas) <= 1.15 * bound, (len(npas), bound)
    assert len(standard) / len(npas) >= 0.8 / density, (len(standard), len(npas), density)


def test_export_from_a_pruned_model_strips_it():
    model = small_cnn()
    pruned = npas_keras.prune(model, Scheme("block_punched", density=0.25, block_shape=(4, 8)),
                              verbose=False)              # one-shot masks (no schedule)
    data = npas_keras.export(pruned, None, format="npas")
    rows = {r["layer"]: r for r in inspect(data)}
    for layer in ("conv", "fc"):
        assert rows[layer]["scheme"] == "block_punched" and rows[layer]["kind"] == "custom"
        assert rows[layer]["density"] == pytest.approx(0.25, abs=0.02)


def test_int8_quantization():
    model = apply_scheme(small_cnn(), _scheme_for("unstructured"))
    rep = np.random.default_rng(0).standard_normal((16, 8, 8, 16)).astype(np.float32)
    data = npas_keras.export(model, None, quantize="int8", representative_data=rep)
    m, raw = fb.load_model(data)
    types = {fb.tensor_name(t): t.type for t in m.subgraphs[0].tensors}
    assert 9 in types.values()  # int8 tensors
    rows = inspect(data)
    assert rows and all(r["kind"] == "builtin" for r in rows)
    assert rows[0]["density"] == pytest.approx(0.25, abs=0.05)
    # npas format: the pruned int8 ops become quantized NPAS custom ops holding the same integers
    npas = npas_keras.export(model, None, format="npas", quantize="int8", representative_data=rep)
    assert has_npas_custom_ops(npas)
    nrows = inspect(npas)
    assert [r["kind"] for r in nrows] == ["custom"] * len(rows)
    assert all(r["bits"] == 8 for r in nrows)
    assert nrows[0]["density"] == rows[0]["density"]


def test_bad_arguments():
    model = small_cnn()
    with pytest.raises(ValueError, match="format"):
        npas_keras.export(model, None, format="onnx")
    with pytest.raises(ValueError, match="quantize"):
        npas_keras.export(model, None, quantize="fp16")
    with pytest.raises(ValueError, match="representative_data"):
        npas_keras.export(model, None, quantize="int8")
    with pytest.raises(TypeError):
        npas_keras.export("not a model", None)


@pytest.fixture(scope="module")
def npas_bytes():
    return npas_keras.export(apply_scheme(small_cnn(), _scheme_for("bcr")), None, format="npas")


def test_corrupt_files_give_clear_errors(npas_bytes, tmp_path):
    with pytest.raises(ValueError, match="truncated"):
        inspect(npas_bytes[:6])
    with pytest.raises(ValueError, match="identifier"):
        inspect(b"\0" * 64)
    with pytest.raises(ValueError):
        inspect(npas_bytes[: len(npas_bytes) // 3])
    assert not has_npas_custom_ops(b"garbage!")
    with pytest.raises(ValueError):
        has_npas_custom_ops(b"garbage!", strict=True)
    # a flipped byte in custom options / index data: the op and the problem are named
    model, raw = fb.load_model(npas_bytes)
    entry = next(e for e in fb.weight_ops(model, raw) if e["custom"])
    opts = fb.custom_options_bytes(entry["op"], raw)
    pos = npas_bytes.find(opts) + 30
    bad = bytearray(npas_bytes)
    bad[pos] ^= 4
    with pytest.raises(ValueError, match=r"NpasSparse.*checksum"):
        inspect(bytes(bad))
    sg = model.subgraphs[entry["subgraph"]]
    index = fb.buffer_data(model, raw, sg.tensors[entry["inputs"][2]].buffer).tobytes()
    bad = bytearray(npas_bytes)
    bad[npas_bytes.find(index)] ^= 1
    with pytest.raises(ValueError, match="index"):
        inspect(bytes(bad))


def test_npas_model_without_delegate_fails_clearly(npas_bytes):
    runtime = pytest.importorskip("npas_keras.runtime")
    with pytest.raises(ValueError, match="custom op"):
        runtime.Interpreter(model_content=npas_bytes, delegate=False)


def test_weights_shared_by_several_ops_stay_builtin():
    """One Dense applied twice (as an unrolled RNN reuses its kernel every step) is one weight
    tensor read by two FC ops: the npas format must leave it builtin, not rewrite it for one op
    and break the other."""
    runtime = _delegate_or_skip()
    keras.utils.set_random_seed(0)
    a, b = keras.Input((64,)), keras.Input((64,))
    shared = keras.layers.Dense(64, name="fc")
    model = keras.Model([a, b], keras.layers.Add()([shared(a), shared(b)]))
    model = apply_scheme(model, lambda layer: Scheme("unstructured", density=1 / 8)
                         if isinstance(layer, keras.layers.Dense) else None)
    m, _ = fb.load_model(npas_keras.export(model, None))
    fc_inputs = [fb._ints(op.inputs)[1] for op in m.subgraphs[0].operators
                 if fb.op_code(m, op) in fb.KIND_BY_BUILTIN]
    if len(fc_inputs) < 2 or len(set(fc_inputs)) != 1:
        pytest.skip(f"the converter did not share the weight tensor: {fc_inputs}")
    npas = npas_keras.export(model, None, format="npas")
    rows = inspect(npas)
    assert rows and all(r["kind"] == "builtin" for r in rows)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(2)]
    out, _ = _run_inputs(runtime, npas, xs)       # the sum is symmetric: input order is free
    np.testing.assert_allclose(out, model(xs).numpy(), rtol=1e-5, atol=1e-5)


def _run_inputs(runtime, content, xs):
    interp = runtime.Interpreter(model_content=content, num_threads=1)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), xs):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy(), interp
