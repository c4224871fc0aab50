"""Fused int8 partitions (delegate/fused_int8.cc): an unrolled, pruned int8 GRU's small ADD / SUB /
MUL / LOGISTIC / TANH / SPLIT / SPLIT_V ops run with its FCs as one delegate node, with TFLite's
int8 arithmetic: outputs equal the stock interpreter's reference kernels. fuse=0 and non-AVX2 CPUs
keep the unfused behaviour."""
import numpy as np
import pytest

import tf_keras as keras

import npas_keras
from npas_keras.runtime import Interpreter, delegate_stats

litert = pytest.importorskip("ai_edge_litert.interpreter")

ELEMENTWISE = {"ADD", "SUB", "MUL", "LOGISTIC", "TANH", "SPLIT", "SPLIT_V"}


def _block_prune(kernel, rng, density):
    """Zeros in 16-output groups sharing kept inputs (the block_punched layout the FC kernels use)."""
    k = kernel.copy()
    for g in range(0, k.shape[1], 16):
        k[rng.random(k.shape[0]) >= density, g:g + 16] = 0
    return k


def _gru(density, seed=0, units=32, steps=6, features=12):
    """An unrolled GRU (batch 1) and a linear classifier, kernels block-pruned to `density`."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    m = keras.Sequential([keras.Input((steps, features), batch_size=1),
                          keras.layers.GRU(units, unroll=True, name="gru"),
                          keras.layers.Dense(16, name="fc")])
    k, r, b = m.get_layer("gru").get_weights()
    m.get_layer("gru").set_weights([_block_prune(k, rng, density),
                                    _block_prune(r, rng, density), b])
    fk, fb = m.get_layer("fc").get_weights()
    m.get_layer("fc").set_weights([_block_prune(fk, rng, density), fb])
    rep = rng.normal(size=(32, steps, features)).astype(np.float32)
    return npas_keras.export(m, None, quantize="int8", representative_data=rep)


def _gates(seed=0, rows=None):
    """Every fused op kind outside a GRU's own pattern: a ReLU fused into ADD, SUB of two tensors,
    MUL by a broadcast constant, between two pruned FCs; one SPLIT output is a model output too.
    With `rows`, (rows, 24) inputs: the SPLIT deals out several rows (no views)."""
    import tensorflow as tf
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inp = keras.Input((24,) if rows is None else (rows, 24), batch_size=1)
    h = keras.layers.Dense(96, name="fc1")(inp)
    a, b, c = keras.layers.Lambda(lambda t: tf.split(t, 3, axis=-1))(h)
    s = keras.layers.ReLU()(keras.layers.Add()([a, b]))
    d = keras.layers.Subtract()([keras.layers.Activation("sigmoid")(c), keras.layers.Activation("tanh")(a)])
    e = keras.layers.Multiply()([s, d])
    f = keras.layers.Lambda(lambda t: t * 0.5)(e)
    out = keras.layers.Dense(32, name="fc2")(keras.layers.Add()([f, b]))
    m = keras.Model(inp, [out, a])
    for name in ("fc1", "fc2"):
        k, bias = m.get_layer(name).get_weights()
        m.get_layer(name).set_weights([_block_prune(k, rng, 0.125), bias])
    rep = rng.normal(size=(32,) + inp.shape[1:]).astype(np.float32)
    return npas_keras.export(m, None, quantize="int8", representative_data=rep)


def _run(interp, x, output=0):
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[output]["index"]).astype(np.int32)


def _reference(content):
    """TFLite's own int8 kernels, without XNNPACK (whose ADD / MUL round differently)."""
    return litert.Interpreter(
        model_content=content,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def _fusion_available():
    """Fusion runs on AVX2 / AVX-512 CPUs only (the delegate's ISA, as its stats report it)."""
    it = Interpreter(model_content=_gru(0.125))
    it.allocate_tensors()
    return delegate_stats(it)["isa"] in ("avx2", "avx512")


needs_avx2 = pytest.mark.skipif(not _fusion_available(), reason="fusion needs an AVX2 CPU")


@needs_avx2
@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_gru_runs_fused_and_matches_reference(seed):
    content = _gru(0.125, seed=seed)
    interp = Interpreter(model_content=content)
    ref = _reference(content)
    rng = np.random.default_rng(10 + seed)
    for _ in range(4):
        x = rng.integers(-128, 128, size=(1, 6, 12), dtype=np.int8)
        got, want = _run(interp, x), _run(ref, x)
        assert np.array_equal(got, want), f"max diff {np.abs(got - want).max()}"
    stats = delegate_stats(interp)
    ops = stats["claimed_by_op"]
    assert ELEMENTWISE <= set(ops), ops
    fcs = [n for n in stats["nodes"] if n["op"] == "FULLY_CONNECTED"]
    # Every FC runs fused, but for one the converter now and then leaves behind a DEQUANTIZE
    # (the first step's gates in float), which is not an int8 op to fuse.
    assert len(fcs) >= 2 * 6 and sum(not n["claimed"] for n in fcs) <= 1, fcs
    assert stats["claimed_by_kernel"]["int8_fused"] == sum(ops[o] for o in ELEMENTWISE)


@needs_avx2
@pytest.mark.parametrize("rows", [None, 2])
def test_every_fused_op_kind_matches_reference(rows):
    content = _gates(rows=rows)
    interp = Interpreter(model_content=content)
    ref = _reference(content)
    # With 2 rows the stock FC takes its GEMM path, which rounds a few ties differently from the
    # reference arithmetic the delegate follows (test_int8_delegate.py): 1 LSB allowed there.
    tolerance = 0 if rows is None else 1
    rng = np.random.default_rng(3)
    for _ in range(8):
        x = rng.integers(-128, 128, size=(1, 24) if rows is None else (1, rows, 24), dtype=np.int8)
        for output in (0, 1):
            diff = np.abs(_run(interp, x, output) - _run(ref, x, output)).max()
            assert diff <= tolerance, f"output {output}: max diff {diff}"
    ops = delegate_stats(interp)["claimed_by_op"]
    assert {"ADD", "SUB", "MUL", "LOGISTIC", "TANH", "SPLIT"} <= set(ops), ops


def test_fuse_off_keeps_elementwise_ops_out():
    content = _gru(0.125)
    interp = Interpreter(model_content=content, delegate_options={"fuse": 0})
    x = np.zeros((1, 6, 12), np.int8)
    assert np.abs(_run(interp, x) - _run(_reference(content), x)).max() <= 1
    assert not ELEMENTWISE & set(delegate_stats(interp)["claimed_by_op"])


@needs_avx2
def test_dense_gru_runs_fused_too():
    """Dense weights fuse as well (measured faster than XNNPACK's partitions on an int8 GRU)."""
    content = _gru(1.0, seed=2)
    interp = Interpreter(model_content=content)
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, size=(1, 6, 12), dtype=np.int8)
    assert np.array_equal(_run(interp, x), _run(_reference(content), x))
    assert ELEMENTWISE <= set(delegate_stats(interp)["claimed_by_op"])


@needs_avx2
def test_resizing_a_fused_input_is_a_clear_error():
    interp = Interpreter(model_content=_gates())  # the model input feeds the fused partition
    interp.allocate_tensors()
    interp.resize_tensor_input(interp.get_input_details()[0]["index"], [2, 24])
    with pytest.raises(RuntimeError, match="fused int8 partition"):
        interp.allocate_tensors()


def test_fuse_option_is_validated():
    with pytest.raises(ValueError, match="fuse"):
        Interpreter(model_content=_gru(0.125), delegate_options={"fuse": 2})
