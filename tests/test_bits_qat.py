"""bits_qat: quantization-aware fine-tuning on per-layer bit grids (straight-through estimator),
zeros frozen — checked against fake_quantize's grid and against a least-squares problem whose
answer is known."""
import numpy as np
import pytest
import tf_keras as keras

from npas_keras import quantization as q
from npas_keras.quantization.mixed import quantized_kernels


def _on_grid(model, bits):
    for layer in model.layers:
        b = bits.get(layer.name) if isinstance(bits, dict) else bits
        for _, var, dw in quantized_kernels(layer):
            w = var.numpy()
            if b is not None:
                np.testing.assert_array_equal(w, q.fake_quantize(w, b, depthwise=dw))


def test_least_squares_learns_on_the_grid_and_keeps_zeros():
    rng = np.random.default_rng(0)
    w_true = rng.normal(size=(16, 4)).astype(np.float32)
    mask = rng.random(w_true.shape) < 0.5
    w_true[mask] = 0
    x = rng.normal(size=(1024, 16)).astype(np.float32)
    y = x @ w_true
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(4, use_bias=False, name="fc")])
    start = w_true + rng.normal(scale=0.5, size=w_true.shape).astype(np.float32) * ~mask
    model.layers[0].set_weights([start])
    before = q.apply_bits(model, {"fc": 3})                     # post-training quantization
    before.compile(keras.optimizers.Adam(0.01), "mse")
    before = before.evaluate(x, y, verbose=0)
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    m.compile(keras.optimizers.Adam(0.01), "mse")
    m.fit(x, y, epochs=15, batch_size=64, verbose=0, callbacks=[q.bits_qat(m, {"fc": 3})])
    after = m.evaluate(x, y, verbose=0)
    w = m.layers[0].get_weights()[0]
    _on_grid(m, {"fc": 3})                      # exactly on the 3-bit grid (7 levels/channel)
    assert np.all(w[mask] == 0)                 # pruned positions stayed 0
    # reference: the truth itself rounded to the grid (post-training quantization of the answer)
    rounded = float(np.mean((x @ q.fake_quantize(w_true, 3) - y) ** 2))
    assert after < 0.25 * before and after <= 2 * rounded, (before, after, rounded)
    print("loss: post-training", before, "QAT", after, "truth rounded", rounded)
    # without the callback the same fit leaves the grid
    m2 = q.apply_bits(model, {"fc": 3})
    m2.compile(keras.optimizers.Adam(0.01), "mse")
    m2.fit(x, y, epochs=1, batch_size=64, verbose=0)
    w2 = m2.layers[0].get_weights()[0]
    assert not np.array_equal(w2, q.fake_quantize(w2, 3))


def test_gru_cell_kernels_stay_on_4_bit_grid():
    rng = np.random.default_rng(1)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6, 5)), keras.layers.GRU(8, name="gru"),
                              keras.layers.Dense(3, name="fc")])
    k, rk, b = model.layers[0].get_weights()
    k[:, ::3] = 0                               # pruned columns
    model.layers[0].set_weights([k, rk, b])
    bits = {"gru": 4, "fc": 8}
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(64, 6, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    m.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[q.bits_qat(m, bits)])
    _on_grid(m, bits)
    k2 = m.layers[0].get_weights()[0]
    assert np.all(k2[:, ::3] == 0)
    assert not np.array_equal(k2, q.fake_quantize(k, 4))    # it did train


def test_bad_bits_rejected():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
    with pytest.raises(ValueError, match="no such layer"):
        q.bits_qat(model, {"nope": 4})
    with pytest.raises(ValueError, match="bits must be an int"):
        q.bits_qat(model, {"fc": 1})
    with pytest.raises(ValueError, match="no kernel"):
        q.bits_qat(keras.Sequential([keras.Input((4,)), keras.layers.ReLU()]), 4)
