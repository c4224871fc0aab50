"""The npas delegate inside the real LiteRT interpreter: outputs equal the stock kernels', for every
kernel family and a grid of layer geometries; what it claims and declines; options; resizes."""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from test_delegate_support import (assert_close, convert, op_names, patch_model, prune_layer,
                                   random_inputs, reference, require_delegate, run)

CLAIMABLE = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"}
FORCED = {"min_sparsity": 0}


@pytest.fixture(scope="module", autouse=True)
def _delegate_built():
    require_delegate()


def _relu6():
    import tensorflow as tf

    return tf.nn.relu6


# (input shape with batch, units, bias, activation, structure)
FC_CASES = [
    ((1, 16), 24, True, "relu", "block_punched"),
    ((3, 37), 5, False, None, "n_m"),
    ((1, 64), 70, True, "relu6", "unstructured"),
    ((2, 5, 8), 6, True, None, "bcr"),          # rank 3: FULLY_CONNECTED keep_num_dims
    ((3, 128), 33, True, None, "block_punched"),
]

# (input shape, filters, kernel, stride, dilation, padding, bias, activation, structure)
CONV_CASES = [
    ((1, 7, 7, 3), 16, 1, 1, 1, "same", True, "relu", "unstructured"),
    ((2, 9, 9, 8), 17, 3, 1, 1, "same", True, None, "block_punched"),
    ((1, 11, 10, 16), 33, 3, 2, 1, "valid", False, "relu6", "n_m"),
    ((1, 9, 9, 5), 20, 5, 1, 1, "valid", True, None, "bcr"),
    ((1, 8, 8, 12), 70, 5, 2, 1, "same", True, "relu", "block_punched"),
    ((1, 10, 10, 6), 24, 3, 1, 2, "same", True, None, "unstructured"),
    ((2, 7, 7, 32), 48, 3, 2, 1, "same", True, None, "n_m"),
    ((1, 6, 6, 20), 9, 1, 2, 1, "valid", False, None, "block_punched"),
    ((1, 5, 5, 70), 64, 3, 1, 1, "same", True, "relu", "pattern"),
    ((1, 9, 9, 4), 8, 3, 1, 2, "valid", True, "clip", "unstructured"),
]

# (input shape, kernel, stride, dilation, padding, multiplier, bias, activation, structure)
DW_CASES = [
    ((1, 8, 8, 8), 3, 1, 1, "same", 1, True, None, "unstructured"),
    ((2, 9, 9, 5), 3, 2, 1, "valid", 2, True, "relu", "unstructured"),
    ((1, 7, 7, 17), 5, 1, 1, "same", 1, False, None, "block_punched"),
    ((1, 10, 10, 16), 3, 1, 2, "same", 2, True, "relu6", "unstructured"),
    ((1, 9, 9, 70), 3, 2, 1, "same", 1, True, None, "n_m"),
]


def _activation(name):
    return _relu6() if name == "relu6" else (None if name == "clip" else name)


def _group_model(kind, seed=0):
    import tensorflow as tf
    import tf_keras as keras

    rng = np.random.default_rng(seed)
    cases = {"fc": FC_CASES, "conv": CONV_CASES, "dw": DW_CASES}[kind]
    inputs, outputs, pruned = [], [], []
    for case in cases:
        shape = case[0]
        x = keras.Input(shape[1:], batch_size=shape[0])
        if kind == "fc":
            _, units, bias, act, structure = case
            layer = keras.layers.Dense(units, use_bias=bias, activation=_activation(act))
        elif kind == "conv":
            _, filters, k, s, d, pad, bias, act, structure = case
            layer = keras.layers.Conv2D(filters, k, strides=s, dilation_rate=d, padding=pad,
                                        use_bias=bias, activation=_activation(act))
        else:
            _, k, s, d, pad, mult, bias, act, structure = case
            layer = keras.layers.DepthwiseConv2D(k, strides=s, dilation_rate=d, padding=pad,
                                                 depth_multiplier=mult, use_bias=bias,
                                                 activation=_activation(act))
        y = layer(x)
        if act == "clip":  # the converter may fuse this as RELU_N1_TO_1
            y = keras.layers.Lambda(lambda t: tf.clip_by_value(t, -1.0, 1.0))(y)
        inputs.append(x)
        outputs.append(y)
        pruned.append((layer, structure))
    model = keras.Model(inputs, outputs)
    for layer, structure in pruned:
        prune_layer(layer, structure, rng)
    return convert(model, [c[0] for c in cases])


@functools.lru_cache(maxsize=None)
def group_model(kind):
    return _group_model(kind)


def _claimable_count(content):
    return sum(op in CLAIMABLE for op in op_names(content))


def _npas(content, options=None, num_threads=1):
    from npas_keras import runtime

    return runtime.Interpreter(model_content=content, num_threads=num_threads,
                               delegate_options=options)


# ---- correctness over the grid, every kernel family --------------------------------------------
@pytest.mark.parametrize("kernel", ["row_block", "pixel_vector", "dense"])
@pytest.mark.parametrize("kind", ["fc", "conv", "dw"])
def test_forced_kernel_matches_stock(kind, kernel):
    from npas_keras import runtime

    content = group_model(kind)
    inputs = random_inputs(content, seed=1)
    want = reference(content, inputs)
    interp = _npas(content, dict(FORCED, kernel=kernel))
    got = run(interp, inputs)
    assert_close(got, want, f"{kind}/{kernel}")
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] == _claimable_count(content), stats["declined_by_reason"]
    assert stats["declined"] == 0
    if kind != "dw":
        assert stats["claimed_by_kernel"] == {kernel: stats["claimed"]}
    else:
        assert stats["claimed_by_kernel"] == {"depthwise": stats["claimed"]}
    assert stats["packed_bytes"] > 0
    assert sum(stats["claimed_by_structure"].values()) == stats["claimed"]


@pytest.mark.parametrize("kind", ["fc", "conv", "dw"])
def test_auto_matches_stock(kind):
    """Default options: whatever the measurements decide, the answers are the stock ones."""
    from npas_keras import runtime

    content = group_model(kind)
    inputs = random_inputs(content, seed=2)
    interp = _npas(content)
    assert_close(run(interp, inputs), reference(content, inputs), kind)
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] + stats["declined"] == _claimable_count(content)
    for node in stats["nodes"]:
        if node["claimed"]:  # claimed only when measured faster than our dense kernel
            assert node["best_ms"] * 1.2 <= node["dense_ms"] + 1e-12, node


def test_two_threads_match_stock():
    content = group_model("conv")
    inputs = random_inputs(content, seed=3)
    for kernel in ("row_block", "pixel_vector"):
        got = run(_npas(content, dict(FORCED, kernel=kernel), num_threads=2), inputs)
        assert_close(got, reference(content, inputs), f"2 threads {kernel}")


def test_thread_count_chosen_in_place_keeps_outputs():
    """At 2 threads each node's first invokes alternate 1 and 2 threads (timed, the faster
    kept): every invoke, before and after the choice, matches stock (float32 sums may differ
    in the last bit between thread counts: the split changes the tile widths at the edges)."""
    content = group_model("conv")
    inputs = random_inputs(content, seed=4)
    want = reference(content, inputs)
    interp = _npas(content, FORCED, num_threads=2)
    assert_close(run(interp, inputs), want, "2 threads, first invoke")
    for i in range(24):
        interp.invoke()
        got = [interp.get_tensor(d["index"]) for d in interp.get_output_details()]
        assert_close(got, want, f"2 threads, invoke {i + 2}")


@pytest.mark.parametrize("kind", ["fc", "conv", "dw"])
def test_input_resize(kind):
    """Batch and spatial resizes after delegation: outputs resized, offsets rebuilt, repacked."""
    content = group_model(kind)
    shapes = []
    for d in _npas(content).get_input_details():
        s = list(d["shape"])
        s[0] = 3
        if kind != "fc":
            s[1] += 3
            s[2] += 2
        shapes.append(tuple(s))
    inputs = random_inputs(content, seed=4, shapes=shapes)
    want = reference(content, inputs, resize=True)
    for kernel in ("row_block", "pixel_vector"):
        interp = _npas(content, dict(FORCED, kernel=kernel))
        run(interp, random_inputs(content, seed=5))  # first at the converted shapes
        assert_close(run(interp, inputs, resize=True), want, f"{kind} resized {kernel}")


# ---- what is recognised, claimed and declined ----------------------------------------------------
def test_structure_counts_in_stats():
    """Each branch's zeros are reported as the structure they were made with."""
    import tf_keras as keras
    from npas_keras import runtime

    rng = np.random.default_rng(7)
    # distinct row counts identify the nodes in the stats
    plan = [("n_m", 40), ("unstructured", 41), ("block_punched", 48), ("pattern", 42)]
    inputs, outputs, layers = [], [], []
    for structure, rows in plan:
        x = keras.Input((6, 6, 16), batch_size=1)
        layer = keras.layers.Conv2D(rows, 3, padding="same")
        inputs.append(x)
        outputs.append(layer(x))
        layers.append((layer, structure))
    model = keras.Model(inputs, outputs)
    for layer, structure in layers:
        prune_layer(layer, structure, rng)
    content = convert(model, [(1, 6, 6, 16)] * len(plan))
    interp = _npas(content, dict(FORCED, kernel="row_block"))
    data = random_inputs(content)
    assert_close(run(interp, data), reference(content, data), "structures")
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] == len(plan)
    by_rows = {n["rows"]: n["structure"] for n in stats["nodes"]}
    acceptable = {"n_m": {"n_m"}, "unstructured": {"unstructured"},
                  "block_punched": {"block_punched", "bcr"}, "pattern": {"pattern"}}
    for structure, rows in plan:
        assert by_rows[rows] in acceptable[structure], (structure, by_rows)
    assert sum(stats["claimed_by_structure"].values()) == len(plan)


def _declined(stats):
    return {n["reason"] for n in stats["nodes"] if not n["claimed"]}


def test_dense_weights_left_to_xnnpack():
    """No zeros: declined without measurement under the defaults (never slower than stock)."""
    import tf_keras as keras
    from npas_keras import runtime

    model = keras.Sequential([keras.Input((8, 8, 4), batch_size=1),
                              keras.layers.Conv2D(8, 3, padding="same"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    content = convert(model, [(1, 8, 8, 4)])
    interp = _npas(content)
    data = random_inputs(content)
    assert_close(run(interp, data), reference(content, data), "dense")
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] == 0 and stats["declined"] == 2
    assert _declined(stats) <= {"below_min_sparsity", "dense_weights"}


def test_min_sparsity_and_schemes_filters():
    from npas_keras import runtime

    content = group_model("fc")
    data = random_inputs(content)
    want = reference(content, data)
    interp = _npas(content, {"min_sparsity": 0.95, "kernel": "row_block"})
    assert_close(run(interp, data), want, "min_sparsity")
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] == 0 and _declined(stats) == {"below_min_sparsity"}

    content = group_model("conv")  # has 2:4 layers with reductions that are multiples of 4
    data = random_inputs(content)
    interp = _npas(content, {"min_sparsity": 0, "kernel": "row_block", "schemes": "n_m"})
    assert_close(run(interp, data), reference(content, data), "schemes")
    stats = runtime.delegate_stats(interp)
    assert set(stats["claimed_by_structure"]) <= {"n_m"}
    assert stats["claimed"] >= 1
    assert "scheme_not_allowed" in _declined(stats)


def test_int8_model_runs_on_int8_kernels():
    """Full-integer models go to the int8 kernels (test_int8_delegate.py checks them to 1 LSB)."""
    import tf_keras as keras
    from npas_keras import runtime

    model = keras.Sequential([keras.Input((8, 8, 3), batch_size=1),
                              keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(5)])
    content = convert(model, [(1, 8, 8, 3)], quantize_int8=True)
    interp = _npas(content, dict(FORCED, kernel="row_block"))
    data = random_inputs(content)
    assert_close(run(interp, data), reference(content, data), "int8")
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] == 2
    assert set(stats["claimed_by_kernel"]) <= {"int8_row_block", "int8_dense"}


def test_non_constant_weights_declined():
    import tensorflow as tf
    from npas_keras import runtime

    @tf.function(input_signature=[tf.TensorSpec([2, 8]), tf.TensorSpec([4, 8])])
    def matmul(a, b):
        return tf.matmul(a, b, transpose_b=True)

    content = tf.lite.TFLiteConverter.from_concrete_functions(
        [matmul.get_concrete_function()]).convert()
    assert op_names(content) == ["FULLY_CONNECTED"]
    interp = _npas(content, dict(FORCED, kernel="dense"))
    data = random_inputs(content)
    assert_close(run(interp, data), reference(content, data), "non-constant")
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] == 0 and _declined(stats) == {"weights_not_constant"}


def test_unsupported_fused_activation_declined():
    """A FULLY_CONNECTED with a fused TANH (patched in: the converter emits a separate TANH)."""
    import tf_keras as keras
    from npas_keras import runtime

    model = keras.Sequential([keras.Input((12,), batch_size=1),
                              keras.layers.Dense(6, activation="tanh")])
    content = convert(model, [(1, 12)])
    assert op_names(content) == ["FULLY_CONNECTED", "TANH"]
    # The TANH op itself stays with the stock kernels: the FC is claimed.
    interp = _npas(content, dict(FORCED, kernel="row_block"))
    data = random_inputs(content)
    assert_close(run(interp, data), reference(content, data), "tanh op")
    assert runtime.delegate_stats(interp)["claimed"] == 1

    def fuse_tanh(model, schema):
        for op in model.subgraphs[0].operators:
            if isinstance(op.builtinOptions, schema.FullyConnectedOptionsT):
                op.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.TANH

    # The stock FULLY_CONNECTED refuses a fused TANH at prepare; the delegate must not claim it
    # (and so change the behaviour): the same error comes from the stock kernel.
    patched = patch_model(content, fuse_tanh)
    with pytest.raises(RuntimeError, match="FULLY_CONNECTED"):
        reference(patched, data)
    interp = _npas(patched, dict(FORCED, kernel="row_block"))
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] == 0 and _declined(stats) == {"unsupported_activation"}
    with pytest.raises(RuntimeError, match="FULLY_CONNECTED"):
        run(interp, data)


def test_undecodable_npas_custom_op_declined():
    """An op renamed to an NPAS custom op with garbage options: declined with the decoder's
    reason; the stock interpreter refuses such a model with an error naming the delegate."""
    import tf_keras as keras
    from npas_keras import runtime

    model = keras.Sequential([keras.Input((12,), batch_size=1), keras.layers.Dense(6)])
    content = convert(model, [(1, 12)])

    def to_custom(model, schema):
        code = model.operatorCodes[model.subgraphs[0].operators[0].opcodeIndex]
        code.builtinCode = schema.BuiltinOperator.CUSTOM
        code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = "NpasSparseFullyConnected"
        op = model.subgraphs[0].operators[0]
        op.builtinOptionsType = 0
        op.builtinOptions = None
        op.customOptions = list(b"not an npas header")
        x, w = list(op.inputs)[:2]
        op.inputs = [x, w, w, -1]  # activation, "values", "index data", no bias

    patched = patch_model(content, to_custom)
    assert runtime.npas_custom_ops(patched) == ["NpasSparseFullyConnected"]
    with pytest.raises(ValueError, match="npas delegate"):
        runtime.Interpreter(model_content=patched, delegate=False)
    interp = _npas(patched)
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] == 0
    assert _declined(stats) == {"custom_op_decode_failed"}
    with pytest.raises(RuntimeError):
        interp.allocate_tensors()


# ---- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("options,match", [
    ({"num_thread": 2}, "unknown npas delegate option 'num_thread'"),
    ({"num_threads": 0}, "num_threads"),
    ({"min_sparsity": 1.0}, r"min_sparsity.*\[0, 1\)"),
    ({"min_speedup": "fast"}, "min_speedup"),
    ({"schemes": "bcr,diagonal"}, "diagonal"),
    ({"kernel": "simd"}, "kernel"),
    ({"verbose": 3}, "verbose"),
])
def test_bad_options_raise_value_error(options, match):
    from npas_keras import runtime

    with pytest.raises(ValueError, match=match):
        runtime.load_delegate(options)


@pytest.mark.parametrize("key,value,match", [
    ("colour", "red", "unknown option 'colour'"),
    ("num_threads", "2x", "bad value '2x' for option 'num_threads'"),
    ("min_sparsity", "-0.1", "min_sparsity"),
    ("schemes", ",", "empty scheme list"),
    ("kernel", "fastest", "auto, row_block, pixel_vector or dense"),
])
def test_c_side_rejects_bad_options(key, value, match):
    """Bypassing the Python checks, the delegate itself refuses and explains why."""
    from ai_edge_litert import interpreter as litert
    from npas_keras import runtime

    with pytest.raises(ValueError, match=match):
        litert.load_delegate(runtime.delegate_path(), {key: value})
    assert key in runtime._last_error(runtime.delegate_path())


def test_good_options_accepted():
    from npas_keras import runtime

    d = runtime.load_delegate({"num_threads": 2, "min_sparsity": 0.5, "min_speedup": 1.0,
                               "schemes": ["bcr", "n_m"], "kernel": "auto", "verbose": 0,
                               "tuning_cache": os.devnull})
    assert runtime.delegate_stats(d)["claimed"] == 0


def test_verbose_logs_claims_and_declines(capfd):
    content = group_model("fc")
    run(_npas(content, {"kernel": "row_block", "min_sparsity": 0.6, "verbose": 2}),
        random_inputs(content))
    err = capfd.readouterr().err
    assert "npas: claimed node" in err and "kernel=row_block" in err
    assert "npas: declined node" in err and "below_min_sparsity" in err


def test_tuning_cache_reused(tmp_path):
    from npas_keras import runtime

    cache = tmp_path / "tuning.txt"
    content = group_model("conv")
    data = random_inputs(content)
    want = reference(content, data)
    options = {"tuning_cache": str(cache), "min_speedup": 0.01, "min_sparsity": 0}
    first = _npas(content, options)
    assert_close(run(first, data), want, "cache first")
    s1 = runtime.delegate_stats(first)
    assert cache.exists() and len(cache.read_text().splitlines()) > 1
    assert not any(n.get("from_cache") for n in s1["nodes"])
    second = _npas(content, options)
    assert_close(run(second, data), want, "cache second")
    s2 = runtime.delegate_stats(second)
    assert s2["claimed"] == s1["claimed"] > 0
    assert all(n["from_cache"] for n in s2["nodes"] if n["claimed"])
    assert s2["claimed_by_kernel"] == s1["claimed_by_kernel"]


def test_converter_sparsity_encoding_declined():
    """EXPERIMENTAL_SPARSITY stores the weights sparse behind a DENSIFY op: the FC's weights are
    then not a constant at prepare time, so the node stays with the stock kernels."""
    import tensorflow as tf
    import tf_keras as keras
    from npas_keras import runtime

    model = keras.Sequential([keras.Input((64,), batch_size=1), keras.layers.Dense(32)])
    w = model.layers[0].get_weights()
    w[0][np.random.default_rng(0).random(w[0].shape) < 0.9] = 0
    model.layers[0].set_weights(w)
    fn = tf.function(lambda a: model(a), input_signature=[tf.TensorSpec([1, 64])])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    content = conv.convert()
    assert op_names(content) == ["DENSIFY", "FULLY_CONNECTED"]
    interp = _npas(content, dict(FORCED, kernel="row_block"))
    data = random_inputs(content)
    assert_close(run(interp, data), reference(content, data), "densify")
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] == 0 and _declined(stats) == {"weights_not_constant"}


@functools.lru_cache(maxsize=None)
def _exported_pair(conv_structure):
    """(standard-ops model, NPAS-custom-ops model) of one pruned model, via npas_keras.export."""
    import tf_keras as keras
    import npas_keras

    rng = np.random.default_rng(11)
    model = keras.Sequential([
        keras.Input((8, 8, 6)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="relu"),
    ])
    for layer, structure in zip([model.layers[0], model.layers[1], model.layers[3]],
                                [conv_structure, "unstructured", "n_m"]):
        prune_layer(layer, structure, rng)
    return (npas_keras.export(model, format="standard"), npas_keras.export(model, format="npas"))


CUSTOM_OPS = {"NpasSparseConv2D", "NpasSparseDepthwiseConv2D", "NpasSparseFullyConnected"}


@pytest.mark.parametrize("conv_structure", ["unstructured", "block_punched"])
def test_npas_custom_ops_run_with_every_kernel(conv_structure):
    """Models exported with NPAS custom ops: always claimed (nothing else can run them), with
    the same answers as the standard-op export on the stock interpreter, also after a resize."""
    from npas_keras import runtime

    standard, custom = _exported_pair(conv_structure)
    assert set(runtime.npas_custom_ops(custom)) == CUSTOM_OPS
    data = random_inputs(standard)
    want = reference(standard, data)
    batch3 = [np.concatenate([x] * 3) for x in data]
    want3 = reference(standard, batch3, resize=True)
    for options in ({"kernel": "row_block"}, {"kernel": "pixel_vector"}, {"kernel": "dense"},
                    {}, {"min_sparsity": 0.99, "schemes": "bcr", "min_speedup": 100}):
        interp = _npas(custom, options)
        assert_close(run(interp, data), want, f"custom ops {options}")
        stats = runtime.delegate_stats(interp)
        assert set(stats["claimed_by_op"]) == CUSTOM_OPS and stats["declined"] == 0, stats
        assert_close(run(interp, batch3, resize=True), want3, f"custom ops resized {options}")
