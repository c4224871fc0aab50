"""npas_keras.quantization: BOPs (hand-computed), mixed-precision selection, fake quantization,
pruning-preserving QAT."""
import numpy as np
import pytest

import tf_keras as keras

from npas_keras import quantization as q


def _model():
    inp = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(4, 3, padding="valid", name="conv")(inp)   # 3x3 output positions
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(3, name="fc")(x)                          # 36 -> 3
    m = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    k, b = m.get_layer("conv").get_weights()
    k = rng.normal(size=k.shape).astype(np.float32)
    k[:, :, 1, :] = 0                          # half of the 72 conv weights pruned -> 36 kept
    m.get_layer("conv").set_weights([k, b])
    k2, b2 = m.get_layer("fc").get_weights()
    k2 = rng.normal(size=k2.shape).astype(np.float32)
    k2[:10, :] = 0                             # 30 of 108 pruned -> 78 kept
    m.get_layer("fc").set_weights([k2, b2])
    return m


def test_bops_hand_computed():
    m = _model()
    r = q.bops(m, bits=8)
    by = {row["layer"]: row for row in r["layers"]}
    assert by["conv"]["macs"] == 9 * 36      # positions x kept weights
    assert by["fc"]["macs"] == 78
    assert by["conv"]["bops"] == 9 * 36 * 8 * 8
    assert r["total"] == (9 * 36 + 78) * 64
    r4 = q.bops(m, bits={"fc": 4, "conv": (4, 4)})
    by4 = {row["layer"]: row for row in r4["layers"]}
    assert by4["fc"]["bops"] == 78 * 4 * 8 and by4["conv"]["bops"] == 324 * 16
    rows = [{"layer": "a", "macs_pruned": 10}, {"layer": "b", "macs": 5}, {"layer": "c",
                                                                            "macs_pruned": None}]
    r = q.bops(rows, bits=(2, 3))
    assert r["total"] == 10 * 6 + 5 * 6 and r["layers"][2]["bops"] is None
    with pytest.raises(ValueError):
        q.bops(rows, bits=0)
    with pytest.raises(ValueError):
        q.bops([{"macs": 3}])


def test_summary_table():
    lines = []
    rows = q.summary(_model(), bits={"fc": 4}, print_fn=lines.append)
    assert {r["layer"]: r["w_bits"] for r in rows} == {"conv": 8, "fc": 4}
    assert any("total BOPs" in l for l in lines)


def test_public_summary_bits_and_bops_hand_computed():
    """npas_keras.summary: every weight layer (pruned or not), float (32/32) by default, bits per
    layer, BOPs = kept MACs x w_bits x a_bits; q.summary is the same table at 8 bits."""
    import npas_keras
    from npas_keras.schemes import Scheme
    keras.utils.set_random_seed(5)
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)        # 4x4 positions x 72 weights
    out = keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(x))   # 64 -> 3: 192 weights
    m = keras.Model(inp, out)
    k, b = m.get_layer("fc").get_weights()
    k.reshape(-1)[:92] = 0                                  # 100 of 192 kept
    m.get_layer("fc").set_weights([k, b])
    pm = npas_keras.prune(m, {"conv": Scheme("filter", rate=0.5)}, verbose=False)
    lines = []
    rows = npas_keras.summary(pm, print_fn=lines.append)
    by = {r["layer"]: r for r in rows}
    assert set(by) == {"conv", "fc"} and by["fc"]["scheme"] is None
    assert (by["conv"]["macs_dense"], by["conv"]["macs_pruned"]) == (16 * 72, 16 * 36)
    assert (by["fc"]["macs_dense"], by["fc"]["macs_pruned"]) == (192, 100)
    assert by["fc"]["density"] == pytest.approx(100 / 192)
    assert all((r["w_bits"], r["a_bits"]) == (32, 32) for r in rows)
    assert by["conv"]["bops"] == 576 * 32 * 32 and by["fc"]["bops"] == 100 * 32 * 32
    assert lines[-1] == f"total BOPs per sample: {676 * 1024}"
    assert any("32/32" in l for l in lines)
    # per-layer bits: conv 4-bit weights (8-bit activations), fc unnamed -> 8/8
    by = {r["layer"]: r for r in npas_keras.summary(pm, bits={"conv": 4}, print_fn=None)}
    assert (by["conv"]["w_bits"], by["conv"]["a_bits"], by["conv"]["bops"]) == (4, 8, 576 * 32)
    assert (by["fc"]["w_bits"], by["fc"]["a_bits"], by["fc"]["bops"]) == (8, 8, 100 * 64)
    by = {r["layer"]: r for r in npas_keras.summary(pm, bits=(8, 16), print_fn=None)}
    assert by["conv"]["bops"] == 576 * 128
    # the stripped model gives the same rows; q.summary = npas_keras.summary at 8 bits
    s = npas_keras.strip(pm, shrink=False, verbose=False)      # zeros in place, no shrinking
    want = npas_keras.summary(s, bits=8, print_fn=None)
    assert [(r["layer"], r["macs_pruned"], r["bops"]) for r in want] == \
           [("conv", 576, 576 * 64), ("fc", 100, 100 * 64)]
    assert q.summary(s, print_fn=None) == want
    assert q.bops(s)["total"] == 676 * 64
    with pytest.raises(ValueError):
        npas_keras.summary(pm, bits=0, print_fn=None)
    with pytest.raises(ValueError):
        npas_keras.summary(pm, bits={"conv": (4, 8, 8)}, print_fn=None)


def test_summary_bops_gru_hand_computed():
    """A GRU's input and recurrent kernels are used once per time step: 5 steps x (2x9 + 3x9)."""
    import npas_keras
    inp = keras.Input((5, 2))
    out = keras.layers.Dense(2, name="fc")(keras.layers.GRU(3, name="gru")(inp))
    m = keras.Model(inp, out)
    by = {(r["layer"], r["weight"]): r for r in npas_keras.summary(m, bits=8, print_fn=None)}
    gru = [r for (l, _), r in by.items() if l == "gru"]
    assert sorted(r["macs_pruned"] for r in gru) == [5 * 2 * 9, 5 * 3 * 9]
    assert q.bops(m, bits=4)["total"] == (5 * 45 + 6) * 4 * 8


def test_fake_quantize_keeps_zeros_and_levels():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 3, 8, 6)).astype(np.float32)
    w[w < 0.2] = 0
    for bits in (8, 4):
        fq = q.fake_quantize(w, bits)
        assert np.all(fq[w == 0] == 0)
        m = fq.reshape(-1, 6)
        scale = np.abs(w.reshape(-1, 6)).max(0) / (2 ** (bits - 1) - 1)
        lv = m / scale
        assert np.allclose(lv, np.round(lv), atol=1e-3)
        assert np.abs(lv).max() <= 2 ** (bits - 1) - 1 + 1e-3
    p2 = q.fake_quantize(w, 4, power_of_two=True).reshape(-1, 6)
    for c in range(6):
        nz = np.abs(p2[:, c][p2[:, c] != 0])
        step = nz.min()
        assert np.isclose(np.log2(step) % 1, 0) or np.allclose(nz / 2 ** np.floor(np.log2(step)),
                                                               np.round(nz / 2 ** np.floor(np.log2(step))))
    with pytest.raises(ValueError):
        q.fake_quantize(w, 1)


def test_select_bits_meets_budget():
    m = _model()
    full = q.bops(m, 8)["total"]
    # conv: 324 MACs, fc: 78 MACs. Budget 0.7 -> only lowering conv (saves 324*32) reaches it.
    r = q.select_bits(m, budget=0.7)
    assert r["met"] and r["bops"] <= 0.7 * full
    assert r["bits"] == {"conv": 4, "fc": 8}
    assert r["bops"] == 324 * 32 + 78 * 64
    r = q.select_bits(m, budget=0.5)
    assert r["bits"] == {"conv": 4, "fc": 4} and r["met"]
    r = q.select_bits(m, budget=1.0)
    assert r["bits"] == {"conv": 8, "fc": 8} and r["steps"] == []
    # rows only: no weights, errors by bit count
    r = q.select_bits(q.bops(m, 8)["layers"] and
                      [{"layer": "a", "macs_pruned": 100}, {"layer": "b", "macs_pruned": 10}],
                      budget=0.6)
    assert r["bits"]["a"] == 4
    with pytest.raises(ValueError):
        q.select_bits(m, budget=0)


def test_apply_bits_simulates():
    m = _model()
    x = np.random.default_rng(2).normal(size=(4, 5, 5, 2)).astype(np.float32)
    m4 = q.apply_bits(m, {"conv": 4})
    k = m.get_layer("conv").get_weights()[0]
    k4 = m4.get_layer("conv").get_weights()[0]
    assert np.all(k4[k == 0] == 0) and not np.allclose(k4, k)
    assert np.allclose(m4.get_layer("fc").get_weights()[0], m.get_layer("fc").get_weights()[0])
    y, y4 = m.predict(x, verbose=0), m4.predict(x, verbose=0)
    assert np.abs(y - y4).max() < 0.5 * np.abs(y).max()


def test_prune_preserving_qat_keeps_zeros():
    import npas_keras
    from npas_keras.schemes import Scheme
    inp = keras.Input((16,))
    out = keras.layers.Dense(8, name="d")(keras.layers.Dense(32, activation="relu", name="h")(inp))
    model = keras.Model(inp, out)
    pm = npas_keras.prune(model, Scheme("unstructured", rate=0.5), verbose=False)
    qat = q.prune_preserving_qat(pm)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(64, 16)).astype(np.float32), rng.normal(size=(64, 8)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(x, y, epochs=1, verbose=0)
    kernels = [v.numpy() for v in qat.weights if v.name.endswith("kernel:0")]
    assert kernels and all(np.mean(k == 0) >= 0.45 for k in kernels)


def test_qat_model_exports_to_int8_keeping_zeros_and_outputs():
    """export() converts a PQAT model as it is (tfmot's QuantizeWrappers are not npas wrappers to
    strip): the int8 weights keep the float zeros, and the int8 model computes what the QAT
    model computes, within int8 rounding."""
    import npas_keras
    from ai_edge_litert import interpreter as litert
    from npas_keras.schemes import Scheme
    inp = keras.Input((16,))
    out = keras.layers.Dense(8, name="d")(keras.layers.Dense(32, activation="relu", name="h")(inp))
    pm = npas_keras.prune(keras.Model(inp, out), Scheme("unstructured", rate=0.5), verbose=False)
    qat = q.prune_preserving_qat(pm)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(64, 16)).astype(np.float32), rng.normal(size=(64, 8)).astype(np.float32)
    qat.compile("adam", "mse")
    qat.fit(x, y, epochs=1, verbose=0)
    float_zeros = sorted(int(np.sum(v.numpy() == 0)) for v in qat.weights
                         if v.name.endswith("kernel:0"))
    model_bytes = npas_keras.export(qat, None, quantize="int8", representative_data=x)
    int8_zeros = sorted(r["zeros"] for r in q.int8_weight_zeros(model_bytes))
    assert len(int8_zeros) == 2 and all(i >= f >= 100 for i, f in zip(int8_zeros, float_zeros))
    interp = litert.Interpreter(model_content=model_bytes)
    interp.allocate_tensors()
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert d_in["dtype"] == np.int8 and d_out["dtype"] == np.int8
    (s_in, z_in), (s_out, z_out) = d_in["quantization"], d_out["quantization"]
    got = []
    for row in x:
        interp.set_tensor(d_in["index"], np.clip(np.round(row[None] / s_in + z_in), -128, 127)
                          .astype(np.int8))
        interp.invoke()
        got.append((interp.get_tensor(d_out["index"])[0].astype(np.float32) - z_out) * s_out)
    want = qat.predict(x, verbose=0)
    assert np.abs(np.array(got) - want).max() < 0.05 * np.abs(want).max()
