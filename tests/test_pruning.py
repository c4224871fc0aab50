"""Schedules and callbacks, strip (incl. physical filter removal), save/load, TFLite, ADMM,
tfmot pruning-preserving QAT, summary."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import npas_keras
from npas_keras.layers import PruneWrapper, custom_objects
from npas_keras.pruning import ADMMCallback, iter_wrappers
from npas_keras.schemes import Scheme, satisfies

L = keras.layers


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    return x[:640], d.target[:640].astype("int32")


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([L.Input((64,)), L.Dense(32, activation="relu", name="h1"),
                             L.Dense(16, activation="relu", name="h2"), L.Dense(10, name="out")])


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
                             L.Conv2D(8, 3, padding="same", activation="relu", name="c2"),
                             L.Flatten(name="flatten"), L.Dense(10, name="out")])


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_schedule_callback_and_tensorboard(digits, tmp_path):
    import tensorflow_model_optimization as tfmot
    x, y = digits
    sched = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=12, frequency=2)
    pm = npas_keras.prune(_mlp(), Scheme("unstructured", rate=0.75), schedule=sched, verbose=False)
    # with a schedule masks start all-ones
    assert all(m.numpy().all() for w in iter_wrappers(pm) for m in w.mask_variables)
    pm.compile("adam", _loss())
    pm.fit(x, y, batch_size=64, epochs=2, verbose=0,
           callbacks=npas_keras.callbacks(log_dir=str(tmp_path)))   # 20 steps > end_step
    for w in iter_wrappers(pm):
        assert int(w.pruning_step.numpy()) == 20
        for v, m in zip(w.views, w.mask_variables):
            M = v.to_matrix(m.numpy() != 0)
            assert satisfies(M, Scheme("unstructured", rate=0.75), kernel_hw=v.kernel_hw)
            assert abs(np.mean(v.variable.numpy() == 0) - 0.75) < 0.02
    assert any(f.startswith("events") for f in os.listdir(tmp_path))


def test_strip_and_save_load_round_trips(digits, tmp_path):
    x, y = digits
    pm = npas_keras.prune(_cnn(), Scheme("block_punched", rate=0.5, block_shape=(4, 4)), verbose=False)
    pm.compile("adam", _loss())
    pm.fit(x.reshape(-1, 8, 8, 1), y, batch_size=64, epochs=1, verbose=0, callbacks=npas_keras.callbacks())
    xi = x[:16].reshape(-1, 8, 8, 1)
    ref = pm.predict(xi, verbose=0)
    # wrapped model: .keras (registered class) and .h5 (custom_objects)
    for fname, kw in (("w.keras", {}), ("w.h5", {"custom_objects": custom_objects()})):
        keras.models.save_model(pm, tmp_path / fname)
        back = keras.models.load_model(tmp_path / fname, **kw)
        assert isinstance(back.get_layer("npas_c1"), PruneWrapper)
        np.testing.assert_allclose(back.predict(xi, verbose=0), ref, rtol=1e-5, atol=1e-5)
        for a, b in zip(iter_wrappers(pm), iter_wrappers(back)):
            np.testing.assert_array_equal(a.mask_variables[0].numpy(), b.mask_variables[0].numpy())
            assert a.scheme == b.scheme
    # stripped: plain layers, zeros in place, schemes recorded
    s = npas_keras.strip(pm)
    assert not any(isinstance(l, PruneWrapper) for l in s.layers)
    assert [l.name for l in s.layers] == ["c1", "c2", "flatten", "out"]
    assert s.npas_schemes["c1"]["kernel"]["name"] == "block_punched"
    np.testing.assert_allclose(s.predict(xi, verbose=0), ref, rtol=1e-5, atol=1e-5)
    w = pm.get_layer("npas_c2")
    np.testing.assert_array_equal(s.get_layer("c2").kernel.numpy() == 0, w.mask_variables[0].numpy() == 0)
    for fname in ("s.keras", "s.h5"):
        keras.models.save_model(s, tmp_path / fname)
        back = keras.models.load_model(tmp_path / fname)
        np.testing.assert_allclose(back.predict(xi, verbose=0), ref, rtol=1e-5, atol=1e-5)
    # TFLite conversion of the stripped model
    tfl = tf.lite.TFLiteConverter.from_keras_model(s).convert()
    interp = tf.lite.Interpreter(model_content=tfl)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.set_tensor(inp["index"], xi[:1])
    interp.invoke()
    np.testing.assert_allclose(interp.get_tensor(out["index"]), ref[:1], rtol=1e-4, atol=1e-4)


def _randomize(m, seed=0):
    rs = np.random.RandomState(seed)
    for l in m.layers:
        if isinstance(l, L.BatchNormalization):
            l.set_weights([rs.rand(*w.shape).astype("float32") + 0.5 for w in l.get_weights()])
        elif l.weights:
            l.set_weights([rs.randn(*w.shape).astype("float32") for w in l.get_weights()])
    return m


CHAINS = {
    "dense_dense": lambda: keras.Sequential([L.Input((6,)), L.Dense(8, activation="relu"),
                                             L.Dense(6, activation="tanh"), L.Dense(3)]),
    "conv_conv_flatten_dense": lambda: keras.Sequential([
        L.Input((8, 8, 3)), L.Conv2D(8, 3, padding="same", activation="relu"),
        L.Conv2D(6, 3, padding="same"), L.Flatten(), L.Dense(3)]),
    "conv_bn_act_pool_conv": lambda: keras.Sequential([
        L.Input((8, 8, 3)), L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.Activation("relu"),
        L.MaxPooling2D(), L.Conv2D(6, 3, padding="valid"), L.GlobalAveragePooling2D(), L.Dense(3)]),
}


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_filter_strip_makes_smaller_model_with_identical_outputs(chain):
    keras.utils.set_random_seed(4)
    m = _randomize(CHAINS[chain]())
    pm = npas_keras.prune(m, Scheme("filter", rate=0.5), verbose=False)
    s = npas_keras.strip(pm, verbose=False)
    assert s.count_params() < m.count_params()
    first = s.layers[0]
    assert (first.units if isinstance(first, L.Dense) else first.filters) == 4
    assert s.npas_removed[first.name]["removed"] == 4
    x = np.random.RandomState(1).rand(4, *m.input_shape[1:]).astype("float32")
    np.testing.assert_allclose(s.predict(x, verbose=0), pm.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_strip_keeps_zeros_where_it_cannot_shrink():
    keras.utils.set_random_seed(5)
    i = L.Input((6, 6, 4))
    a = L.Conv2D(4, 3, padding="same", name="c")(i)
    b = L.Add()([a, i])
    o = L.Dense(2, name="d")(L.Flatten()(b))
    m = _randomize(keras.Model(i, o))
    pm = npas_keras.prune(m, {"c": Scheme("filter", rate=0.5)}, verbose=False)
    s = npas_keras.strip(pm, verbose=False)
    assert s.get_layer("c").filters == 4 and "Add" in s.npas_kept_zeros["c"]
    assert np.sum(np.all(s.get_layer("c").kernel.numpy().reshape(-1, 4) == 0, axis=0)) == 2
    x = np.random.rand(2, 6, 6, 4).astype("float32")
    np.testing.assert_allclose(s.predict(x, verbose=0), pm.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_admm_converges_to_feasible_mask(digits):
    x, y = digits
    m = _mlp(6)
    m.compile(keras.optimizers.Adam(1e-2), _loss(), metrics=["accuracy"])
    scheme = Scheme("block_punched", rate=0.75, block_shape=(4, 4))
    pm = npas_keras.admm(m, scheme, x, y, admm_epochs=4, retrain_epochs=1, rho=0.05, rho_growth=2.0,
                         batch_size=32)
    hist = pm.npas_admm_history
    res = [h["primal_residual"] for h in hist]
    assert len(res) == 5 and res[-1] < 0.3 * res[0] and res[-1] < res[-2], res
    for w in iter_wrappers(pm):
        for v, mk in zip(w.views, w.mask_variables):
            M = v.to_matrix(mk.numpy() != 0)
            assert satisfies(M, scheme, kernel_hw=v.kernel_hw)
            assert np.all(v.variable.numpy()[mk.numpy() == 0] == 0)
    acc = pm.evaluate(x, y, verbose=0)[1]
    assert acc > 0.5


def test_admm_callback_adds_penalty_and_removes_it(digits):
    x, y = digits
    pm = npas_keras.prune(_mlp(7), Scheme("unstructured", rate=0.5), initial_masks=False, verbose=False)
    pm.compile("adam", _loss())
    cb = ADMMCallback(rho=1.0, update_every=5)
    pm.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[cb])
    assert len(cb.history) == 1 + 10 // 5
    assert all(w._npas_admm is None for w in iter_wrappers(pm))
    pm(x[:4], training=True)   # an eager call re-collects the losses: no ADMM term any more
    assert pm.losses == []


def test_pqat_keeps_zeros(digits):
    import tensorflow_model_optimization as tfmot
    x, y = digits
    pm = npas_keras.prune(_mlp(8), Scheme("n_m", n=2, m=4), verbose=False)
    s = npas_keras.strip(pm)
    zeros = {l.name: l.kernel.numpy() == 0 for l in s.layers}
    q = tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(s),
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    q.compile("adam", _loss())
    q.fit(x, y, batch_size=64, epochs=1, verbose=0)
    for name, z in zeros.items():
        ql = q.get_layer("quant_" + name)
        # QuantizeWrapper swaps layer.kernel for a tensor; read the variable itself
        k = [v for v in ql.weights if v.name.endswith("/kernel:0")][0].numpy()
        assert np.all(k[z] == 0), name
        assert z.mean() == pytest.approx(0.5)


def test_summary_hand_computed():
    keras.utils.set_random_seed(9)
    m = keras.Sequential([L.Input((8, 8, 2)), L.Conv2D(4, 3, padding="same", name="conv"),
                          L.GlobalAveragePooling2D(), L.Dense(3, name="fc")])
    pm = npas_keras.prune(m, {"conv": Scheme("filter", rate=0.5),
                              "fc": Scheme("block_punched", rate=0.5, block_shape=(1, 2))}, verbose=False)
    lines = []
    rows = npas_keras.summary(pm, print_fn=lines.append)
    by = {r["layer"]: r for r in rows}
    # conv: 8*8 output positions * 3*3*2*4 weights = 4608 MACs; half the filters -> 2304
    assert by["conv"]["macs_dense"] == 8 * 8 * 3 * 3 * 2 * 4 == 4608
    assert by["conv"]["macs_pruned"] == 2304 and by["conv"]["density"] == 0.5
    assert by["conv"]["scheme"] == "filter" and by["conv"]["block_shape"] is None
    # fc: 4*3 = 12 MACs, density 0.5 -> 6
    assert (by["fc"]["macs_dense"], by["fc"]["macs_pruned"]) == (12, 6)
    assert by["fc"]["block_shape"] == (1, 2)
    assert any("total MACs: 4620 -> 2310" in l for l in lines)
    # the stripped model (zeros in place, no shrinking) reports the same numbers
    s = npas_keras.strip(pm, shrink=False)
    rows2 = npas_keras.summary(s, print_fn=None)
    assert [(r["layer"], r["macs_dense"], r["macs_pruned"]) for r in rows2] == \
           [(r["layer"], r["macs_dense"], r["macs_pruned"]) for r in rows]
