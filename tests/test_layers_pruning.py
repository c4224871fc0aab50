"""PruneWrapper on every layer kind: masks follow the scheme's definition, exact zeros through
training, config round trips, custom prunable layers, errors."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import npas_keras
from npas_keras.layers import PruneWrapper, custom_objects, prunable_weights
from npas_keras.pruning import iter_wrappers
from npas_keras.schemes import Scheme, satisfies

L = keras.layers


def _all_kinds_model():
    inp = L.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = L.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(8, 1, name="pw")(x)
    x = L.Reshape((64, 8))(x)
    x = L.Conv1D(8, 4, strides=4, name="c1d")(x)
    x = L.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = L.GRU(8, return_sequences=True, name="gru")(x)
    x = L.LSTM(8, name="lstm")(x)
    out = L.Dense(4, name="dense")(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def kinds_model():
    keras.utils.set_random_seed(0)
    return _all_kinds_model()


EXPECTED_VIEWS = {
    "conv": {"kernel": ((8, 27), (3, 3))},
    "sep": {"depthwise_kernel": ((8, 9), (1, 1)), "pointwise_kernel": ((8, 8), (1, 1))},
    "dw": {"depthwise_kernel": ((8, 9), (1, 1))},
    "pw": {"kernel": ((8, 8), (1, 1))},
    "c1d": {"kernel": ((8, 32), (1, 4))},
    "mha": {n: ((8, 8), (1, 1)) for n in ("query_kernel", "key_kernel", "value_kernel", "output_kernel")},
    "gru": {"kernel": ((24, 8), (1, 1)), "recurrent_kernel": ((24, 8), (1, 1))},
    "lstm": {"kernel": ((32, 8), (1, 1)), "recurrent_kernel": ((32, 8), (1, 1))},
    "dense": {"kernel": ((4, 8), (1, 1))},
}


def _explicit_check(M, scheme, kernel_hw):
    """The scheme's definition, written out independently of npas_keras.schemes.check."""
    out, red = M.shape
    kept = M.mean()
    if scheme.name == "unstructured":
        assert abs(kept - scheme.density) <= 1.0 / M.size + 1e-9
    elif scheme.name == "filter":
        rows = M.any(axis=1)
        assert np.all(M[rows]) and not M[~rows].any()          # whole rows
        assert rows.sum() == round(scheme.density * out)
    elif scheme.name == "channel":
        kh, kw = kernel_hw
        per_ch = M.reshape(out, kh * kw, red // (kh * kw))
        ch = per_ch.any(axis=(0, 1))
        assert np.all(per_ch[:, :, ch]) and not per_ch[:, :, ~ch].any()
    elif scheme.name == "n_m":
        full = (red // scheme.m) * scheme.m
        groups = M[:, :full].reshape(out, -1, scheme.m)
        assert np.all(groups.sum(-1) <= scheme.n)
    elif scheme.name == "block_punched":
        br, bc = scheme.block_shape
        for i in range(0, out, br):
            blk = M[i:i + br]
            # the same columns are kept in every row of a block
            assert np.all(blk == blk[:1]), (i, blk)
    elif scheme.name == "pattern":
        cin = red // 9
        kern = M.reshape(out, 9, cin).transpose(0, 2, 1)          # [out, cin, 9 positions]
        counts = kern.sum(-1)
        assert np.all((counts == 0) | (counts == scheme.pattern_size))
        pats = {tuple(k) for k in kern.reshape(-1, 9) if k.any()}
        assert len(pats) <= scheme.pattern_count


def _check_wrapper(w):
    for v, m in zip(w.views, w.mask_variables):
        mask = m.numpy() != 0
        M = v.to_matrix(mask)
        assert satisfies(M, w.scheme, kernel_hw=v.kernel_hw), (w.layer.name, v.name)
        _explicit_check(M, w.scheme, v.kernel_hw)
        val = v.variable.numpy()
        assert np.all(val[~mask] == 0), (w.layer.name, v.name)


@pytest.mark.parametrize("scheme", [
    Scheme("unstructured", rate=0.6),
    Scheme("filter", rate=0.5),
    Scheme("n_m", n=2, m=4),
    Scheme("block_punched", rate=0.5, block_shape=(4, 4)),
])
def test_masks_follow_scheme_on_every_layer_kind(kinds_model, scheme):
    pm = npas_keras.prune(kinds_model, scheme, verbose=False)
    wrapped = {w.layer.name: w for w in iter_wrappers(pm)}
    assert set(wrapped) == set(EXPECTED_VIEWS), pm.npas_skipped
    for name, w in wrapped.items():
        got = {v.name: (v.to_matrix(v.variable.numpy()).shape, tuple(v.kernel_hw)) for v in w.views}
        assert got == EXPECTED_VIEWS[name]
        _check_wrapper(w)
    # pruned model computes the same as the original with masked weights
    x = np.random.RandomState(0).rand(2, 8, 8, 3).astype("float32")
    assert np.all(np.isfinite(pm.predict(x, verbose=0)))


def test_gemm_view_matches_design_orders():
    conv = L.Conv2D(5, (3, 2), name="c")
    conv.build((None, 6, 6, 4))
    v = prunable_weights(conv)[0]
    k = np.random.rand(3, 2, 4, 5)
    np.testing.assert_array_equal(v.to_matrix(k), k.reshape(-1, 5).T)
    ky, kx, c, o = 2, 1, 3, 4
    assert v.to_matrix(k)[o, (ky * 2 + kx) * 4 + c] == k[ky, kx, c, o]
    np.testing.assert_array_equal(v.from_matrix(v.to_matrix(k)), k)
    dw = L.DepthwiseConv2D(3, depth_multiplier=2)
    dw.build((None, 6, 6, 3))
    v = prunable_weights(dw)[0]
    k = np.random.rand(3, 3, 3, 2)
    M = v.to_matrix(k)
    assert M.shape == (6, 9) and M[1 * 2 + 1, 2 * 3 + 0] == k[2, 0, 1, 1]


def test_pattern_on_3x3_conv_and_skip_elsewhere():
    keras.utils.set_random_seed(1)
    m = keras.Sequential([L.Input((6, 6, 4)), L.Conv2D(8, 3, name="c3"), L.Conv2D(4, 1, name="c1"),
                          L.Flatten(), L.Dense(2, name="d")])
    s = Scheme("pattern", rate=5 / 9, pattern_size=4, pattern_count=4)
    pm = npas_keras.prune(m, s, verbose=False)
    assert [w.layer.name for w in iter_wrappers(pm)] == ["c3"]
    assert "pattern" in pm.npas_skipped["c1"] and "c1" in pm.npas_skipped["c1"]
    assert "d" in pm.npas_skipped
    _check_wrapper(pm.get_layer("npas_c3"))
    # asked for explicitly by name -> error that names the layer
    with pytest.raises(ValueError, match="'d'"):
        npas_keras.prune(m, {"c3": s, "d": s})
    # a callable mapping is explicit too
    with pytest.raises(ValueError, match="c1"):
        npas_keras.prune(m, lambda layer: s if layer.name == "c1" else None)


def test_dict_and_callable_selection():
    m = keras.Sequential([L.Input((6,)), L.Dense(8, name="a"), L.Dense(4, name="b")])
    pm = npas_keras.prune(m, {"a": "filter", "b": None}, verbose=False)
    assert [w.layer.name for w in iter_wrappers(pm)] == ["a"]
    assert pm.npas_skipped == {"b": "not selected"}
    pm = npas_keras.prune(m, lambda layer: Scheme("unstructured", rate=0.25) if layer.name == "b" else None,
                          verbose=False)
    assert [w.layer.name for w in iter_wrappers(pm)] == ["b"]
    assert pm.get_layer("npas_b").scheme.rate == 0.25
    with pytest.raises(ValueError, match="not in the model"):
        npas_keras.prune(m, {"zzz": "filter"})


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    return x[:512], d.target[:512].astype("int32")


@pytest.mark.parametrize("optimizer", ["adam", "sgd_momentum"])
def test_exact_zeros_after_training(optimizer):
    keras.utils.set_random_seed(2)
    x, y = _digits()
    inp = L.Input((64,))
    h = L.Dense(32, activation="relu", name="h")(inp)
    h2 = L.Reshape((8, 4))(h)
    r = L.GRU(8, name="gru")(h2)
    out = L.Dense(10, name="out")(r)
    m = keras.Model(inp, out)
    pm = npas_keras.prune(m, Scheme("block_punched", rate=0.5, block_shape=(4, 4)), verbose=False)
    opt = keras.optimizers.Adam(1e-2) if optimizer == "adam" else keras.optimizers.SGD(0.1, momentum=0.9)
    pm.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {w.name: w.get_masks() for w in iter_wrappers(pm)}
    w0 = pm.get_layer("npas_h").layer.kernel.numpy().copy()
    pm.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=npas_keras.callbacks())
    for w in iter_wrappers(pm):
        for v, m_ in zip(w.views, w.mask_variables):
            mask = m_.numpy() != 0
            np.testing.assert_array_equal(mask, before[w.name][v.name])
            assert np.all(v.variable.numpy()[~mask] == 0.0), (w.name, v.name)
    assert not np.allclose(pm.get_layer("npas_h").layer.kernel.numpy(), w0)  # it did train


def test_wrapper_config_round_trip():
    d = L.Dense(6, name="d")
    d.build((None, 5))
    w = PruneWrapper(d, Scheme("bcr", rate=0.75, block_shape=(2, 2)),
                     schedule=__import__("tensorflow_model_optimization").sparsity.keras.PolynomialDecay(
                         0.0, 0.5, 0, 10, frequency=1))
    cfg = w.get_config()
    import json
    json.dumps(cfg)  # JSON-serialisable
    w2 = PruneWrapper.from_config(cfg)
    assert w2.scheme == w.scheme
    assert type(w2.schedule).__name__ == "PolynomialDecay"
    assert w2.schedule.get_config() == w.schedule.get_config()
    assert "PruneWrapper" in custom_objects()


class _ProtocolLayer(L.Layer):
    def build(self, input_shape):
        self.w = self.add_weight("w", shape=(int(input_shape[-1]), 8))
        self.b = self.add_weight("b", shape=(8,), initializer="zeros")

    def call(self, x):
        return tf.matmul(x, self.w) + self.b

    def get_prunable_weights(self):
        return [self.w]


def test_custom_layer_protocol_and_tfmot_prunable_layer():
    import tensorflow_model_optimization as tfmot

    class TfmotLayer(L.Dense, tfmot.sparsity.keras.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel]

    keras.utils.set_random_seed(3)
    inp = L.Input((6,))
    h = _ProtocolLayer(name="proto")(inp)
    out = TfmotLayer(4, name="tfm")(h)
    m = keras.Model(inp, out)
    pm = npas_keras.prune(m, Scheme("filter", rate=0.5), verbose=False)
    names = {w.layer.name for w in iter_wrappers(pm)}
    assert names == {"proto", "tfm"}
    for w in iter_wrappers(pm):
        _check_wrapper(w)
    x = np.random.rand(3, 6).astype("float32")
    ref = pm.get_layer("npas_tfm").layer(pm.get_layer("npas_proto").layer(x))
    np.testing.assert_allclose(pm(x).numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)


def test_keras3_model_is_rejected():
    import keras as keras3
    m3 = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(TypeError, match="tf_keras"):
        npas_keras.prune(m3, "unstructured")
    with pytest.raises(TypeError, match="tf_keras"):
        npas_keras.strip(m3)
    with pytest.raises(TypeError, match="Keras 3"):
        PruneWrapper(keras3.layers.Dense(2), "unstructured")


def test_bad_input_errors():
    m = keras.Sequential([L.Input((6,)), L.Dense(4, name="small")])
    with pytest.raises(ValueError, match="unknown|scheme"):
        npas_keras.prune(m, "no_such_scheme")
    with pytest.raises(ValueError, match="rate"):
        npas_keras.prune(m, Scheme("unstructured", rate=1.5))
    with pytest.raises(ValueError, match="rate"):
        npas_keras.prune(m, {"name": "unstructured", "rate": 0.0})
    with pytest.raises(ValueError, match="small"):
        npas_keras.prune(m, {"small": Scheme("block_punched", rate=0.5, block_shape=(16, 16))})
    with pytest.raises(ValueError, match="small"):   # global scheme that fits no layer at all
        npas_keras.prune(m, Scheme("block_punched", rate=0.5, block_shape=(16, 16)))
    with pytest.raises(ValueError, match="'nope'.*unknown|unknown.*nope|nope"):
        npas_keras.prune(m, {"small": "nope"})
    with pytest.raises(ValueError, match="build"):
        npas_keras.prune(keras.Sequential([L.Dense(3)]), "unstructured")
    with pytest.raises(ValueError, match="already"):
        npas_keras.prune(npas_keras.prune(m, "unstructured"), "unstructured")
