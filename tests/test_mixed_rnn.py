"""Mixed precision for recurrent layers: apply_bits / select_bits on GRU, LSTM and SimpleRNN
cells against a NumPy reference, and the int8 / 4-bit export of an (unrolled) GRU holding
exactly the weights apply_bits simulated."""
import numpy as np
import pytest

import tf_keras as keras

from npas_keras import quantization as q


def _digit_rows():
    """scikit-learn digits as sequences: 8 time steps (image rows) of 8 pixels."""
    from npas_keras.data import load_digits
    (x, y), (xt, yt) = load_digits()
    return x.reshape(-1, 8, 8), y, xt.reshape(-1, 8, 8), yt


def _rnn_model(kind, units=6, unroll=False, batch_size=None, seed=0):
    keras.utils.set_random_seed(seed)
    layer = getattr(keras.layers, kind)(units, name="rnn", unroll=unroll)
    m = keras.Sequential([keras.Input((8, 8), batch_size=batch_size), layer,
                          keras.layers.Dense(10, name="fc")])
    rng = np.random.default_rng(seed)
    cell = m.get_layer("rnn").cell
    k, r = cell.kernel.numpy(), cell.recurrent_kernel.numpy()
    k = rng.normal(scale=0.4, size=k.shape).astype(np.float32)
    k[:3] = 0                                  # pruned input columns: must stay exactly 0
    r = rng.normal(scale=0.3, size=r.shape).astype(np.float32)
    r[:, :units] *= rng.random((r.shape[0], units)) > 0.5
    cell.kernel.assign(k)
    cell.recurrent_kernel.assign(r)
    if getattr(cell, "bias", None) is not None:
        cell.bias.assign(rng.normal(scale=0.1, size=cell.bias.shape).astype(np.float32))
    return m


def _np_quantize(w, bits):
    """Symmetric per-output-channel (last axis) quantize-dequantize, written out directly."""
    out = np.empty_like(w)
    qmax = 2 ** (bits - 1) - 1
    for c in range(w.shape[-1]):
        col = w[:, c].astype(np.float64)
        s = np.abs(col).max() / qmax
        out[:, c] = 0 if s == 0 else np.clip(np.round(col / s), -qmax, qmax) * s
    return out


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _np_gru(x, kernel, recurrent, bias):
    """Keras GRU (reset_after=True, gates z, r, h) in NumPy: the last hidden state."""
    u = recurrent.shape[0]
    h = np.zeros((x.shape[0], u))
    for t in range(x.shape[1]):
        xi = x[:, t] @ kernel + bias[0]
        hi = h @ recurrent + bias[1]
        z = _sigmoid(xi[:, :u] + hi[:, :u])
        r = _sigmoid(xi[:, u:2 * u] + hi[:, u:2 * u])
        hh = np.tanh(xi[:, 2 * u:] + r * hi[:, 2 * u:])
        h = z * h + (1 - z) * hh
    return h


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "SimpleRNN"])
def test_apply_bits_quantizes_rnn_cells_per_output_channel(kind):
    m = _rnn_model(kind)
    m4 = q.apply_bits(m, {"rnn": 4, "fc": 8})
    cell, cell4 = m.get_layer("rnn").cell, m4.get_layer("rnn").cell
    for attr in ("kernel", "recurrent_kernel"):
        w, w4 = getattr(cell, attr).numpy(), getattr(cell4, attr).numpy()
        np.testing.assert_allclose(w4, _np_quantize(w, 4), rtol=0, atol=1e-6)
        assert np.all(w4[w == 0] == 0) and not np.allclose(w4, w)
        steps = w4 / (np.abs(w).max(0) / 7)    # on the 4-bit grid, 15 levels per channel
        assert np.allclose(steps, np.round(steps), atol=1e-4) and np.abs(steps).max() <= 7 + 1e-4
    np.testing.assert_array_equal(cell4.bias.numpy(), cell.bias.numpy())     # biases stay float
    np.testing.assert_allclose(m4.get_layer("fc").kernel.numpy(),
                               _np_quantize(m.get_layer("fc").kernel.numpy(), 8), atol=1e-6)
    assert m.get_layer("rnn").cell.kernel is not cell4.kernel                # a copy


def test_apply_bits_gru_output_matches_numpy_gru():
    """The fake-quantized GRU computes what a NumPy GRU computes with the quantized weights
    (real digits as inputs), and 4 bits move the output while 8 bits barely do."""
    x, _, _, _ = _digit_rows()
    x = x[:16]
    m = _rnn_model("GRU")
    sub = lambda mm: keras.Model(mm.inputs, mm.get_layer("rnn").output)  # noqa: E731
    for bits in (8, 4):
        mq = q.apply_bits(m, bits)
        c = m.get_layer("rnn").cell
        ref = _np_gru(x.astype(np.float64), _np_quantize(c.kernel.numpy(), bits),
                      _np_quantize(c.recurrent_kernel.numpy(), bits), c.bias.numpy())
        got = sub(mq).predict(x, verbose=0)
        np.testing.assert_allclose(got, ref, atol=2e-5)
    h = sub(m).predict(x, verbose=0)
    h8 = sub(q.apply_bits(m, 8)).predict(x, verbose=0)
    h4 = sub(q.apply_bits(m, 4)).predict(x, verbose=0)
    assert np.abs(h8 - h).max() < np.abs(h4 - h).max()


def test_select_bits_uses_both_gru_kernels():
    m = _rnn_model("GRU")
    r = q.select_bits(m, budget=0.6)
    cell = m.get_layer("rnn").cell
    k, rk = cell.kernel.numpy(), cell.recurrent_kernel.numpy()
    for bits in (8, 4):   # relative squared error over kernel and recurrent kernel together
        num = sum(float(np.sum((_np_quantize(w, bits) - w).astype(np.float64) ** 2))
                  for w in (k, rk))
        den = sum(float(np.sum(w.astype(np.float64) ** 2)) for w in (k, rk))
        assert r["errors"]["rnn"][bits] == pytest.approx(num / den, rel=1e-5)   # float32 rounding
    # rnn MACs (kept weights x 8 steps) dwarf fc's 60: lowering rnn alone meets 0.6
    assert r["bits"] == {"rnn": 4, "fc": 8} and r["met"]


def test_apply_bits_refuses_what_it_cannot_simulate():
    m = _rnn_model("GRU")
    with pytest.raises(ValueError, match="no layer named"):
        q.apply_bits(m, {"nope": 4})
    inp = keras.Input((4,))
    m2 = keras.Model(inp, keras.layers.Dense(3, name="d")(keras.layers.LayerNormalization(
        name="ln")(inp)))
    with pytest.raises(ValueError, match="no kernel it can fake-quantize"):
        q.apply_bits(m2, {"ln": 4})


def _tflite_gru_weights(model_bytes, units):
    """[(op index, dequantized GEMM weights [3u, in], int8 values, dequantized bias)] of the
    GRU's FC ops."""
    from npas_keras.export import flatbuffer as fb
    tm, raw = fb.load_model(model_bytes)
    out = []
    for e in fb.weight_ops(tm, raw):
        w = fb.constant_array(tm, raw, e["tensor"])
        if w is None or w.shape[0] != 3 * units:
            continue
        s = np.asarray(e["tensor"].quantization.scale, np.float64)
        bt = tm.subgraphs[e["subgraph"]].tensors[e["inputs"][2]]
        b = fb.constant_array(tm, raw, bt) * np.asarray(bt.quantization.scale, np.float64)
        out.append((e["op_index"], w.astype(np.float64) * s[:, None], w, b))
    return out


def _constant_bytes(data):
    """Bytes of the buffers the tensors of a .tflite hold (its constants; metadata left out)."""
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    used = {t.buffer for sg in model.subgraphs for t in sg.tensors}
    return sum(len(b.data) for i, b in enumerate(model.buffers) if i in used and b.data is not None)


def test_gru_export_holds_apply_bits_weights():
    """int8 export of apply_bits(8), weight_bits=4 export of apply_bits(4) and weight_bits=8
    export of apply_bits(8, power_of_two=True): every unrolled FULLY_CONNECTED of the GRU holds
    exactly the weights apply_bits simulated (so the Keras
    accuracy of the copy is that of the file, up to activation quantization), 4-bit values in
    [-8, 7]; the 4-bit file runs (stock LiteRT reference kernels and the npas delegate agree
    to a few LSB) and classifies like the Keras 4-bit model."""
    import npas_keras
    from npas_keras.runtime import Interpreter
    x, y, xt, yt = _digit_rows()
    trained = _rnn_model("GRU", units=8)
    trained.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trained.fit(x, y, epochs=5, verbose=0, batch_size=64)
    m = _rnn_model("GRU", units=8, unroll=True, batch_size=1)     # as exported: unrolled, b1
    m.set_weights(trained.get_weights())
    stored = {}
    # 8 bits on the converter's grid, 4 bits, and 8 bits on power-of-two steps (which the
    # converter alone would round to its own max|w| / 127 grid: weight_bits keeps them)
    for bits, pot in ((8, False), (4, False), (8, True)):
        mq = q.apply_bits(m, {"rnn": bits}, power_of_two=pot)
        wb = {"rnn": bits} if bits == 4 or pot else None
        data = npas_keras.export(mq, None, quantize="int8", representative_data=x[:64],
                                 weight_bits=wb)
        stored[bits, pot] = _constant_bytes(data)
        if bits == 4:
            data4, mq4 = data, mq
        cell = mq.get_layer("rnn").cell
        refs = (cell.kernel.numpy().T, cell.recurrent_kernel.numpy().T)   # both [24, 8] here:
        ops = _tflite_gru_weights(data, 8)                                # told apart by value
        which = []
        for _, deq, raw_w, b in ops:
            hits = [i for i, ref in enumerate(refs) if np.allclose(deq, ref, rtol=1e-6, atol=1e-7)]
            assert len(hits) == 1
            which.append(hits[0])
            if bits == 4:
                assert raw_w.min() >= -8 and raw_w.max() <= 7
            # int32 bias (requantized to input scale x 4-bit scale) still the cell's float bias:
            # input FCs add bias[0], recurrent FCs bias[1] (reset_after)
            np.testing.assert_allclose(b, cell.bias.numpy()[hits[0]], atol=0.02)
        # per step an input FC, and a recurrent FC except at t=0 (h0 = 0 is folded away)
        assert which.count(0) == 8 and which.count(1) == 7
        # and each is attributed to the GRU by value (its tensors carry no layer name), also
        # at 8 bits on the converter's own grid
        layers = [r["layer"] for r in npas_keras.inspect(data) if r["op"] == "FULLY_CONNECTED"]
        assert layers.count("rnn") == 15 and layers.count("fc") == 1, layers
    # requantized per-step biases that come out equal share a buffer again, as the converter
    # had them: the 4-bit file stores no more constant bytes than the 8-bit one
    assert stored[4, False] <= stored[8, False], stored
    # the 4-bit file through stock LiteRT (reference kernels) and the delegate
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    n = 60
    outs = []
    for it in (litert.Interpreter(model_content=data4, experimental_op_resolver_type=litert
                                  .OpResolverType.BUILTIN_REF),
               Interpreter(model_content=data4, delegate=True)):
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        sc, zp = i["quantization"]
        got = []
        for j in range(n):
            it.set_tensor(i["index"], np.clip(np.round(xt[j:j + 1] / sc + zp), -128, 127)
                          .astype(np.int8))
            it.invoke()
            got.append(it.get_tensor(o["index"])[0].astype(np.int32))
        outs.append(np.array(got))
    # the delegate leaves these dense FCs to XNNPACK, whose rounding differs from the reference
    # kernels by 1 LSB in places, carried on through 8 recurrent steps: compare classes
    assert np.mean(outs[0].argmax(1) == outs[1].argmax(1)) >= 0.95
    o = it.get_output_details()[0]
    logits = (outs[0] - o["quantization"][1]) * o["quantization"][0]
    keras_logits = mq4.predict(xt[:n], verbose=0, batch_size=1)
    assert np.mean(logits.argmax(1) == keras_logits.argmax(1)) >= 0.9


def test_gru_weight_bits_4_refuses_off_grid_cell():
    import npas_keras
    x, _, _, _ = _digit_rows()
    m = _rnn_model("GRU", units=8, unroll=True, batch_size=1)
    with pytest.raises(ValueError, match=r"'rnn' \(kernel\).*not on a 4-bit grid.*apply_bits"):
        npas_keras.export(m, None, quantize="int8", representative_data=x[:16],
                          weight_bits={"rnn": 4})
