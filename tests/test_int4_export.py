"""4-bit weights in the npas export format (tflite_custom_ops/FORMAT.md, "Quantized form"):
nibble packing against a NumPy reference, the Python and C++ decoders of quantized ops against
each other, `export(..., quantize="int8", weight_bits=...)` on a pruned digits CNN run by the
delegate against the stock interpreter on the equivalent builtin int8 model, file sizes, and the
refusals (off-grid layers, corrupt or truncated 4-bit ops)."""
import struct
import zlib

import numpy as np
import pytest

from npas_keras.export import format as fmt

import npas_decoder_shim as shim  # tests/ is on sys.path


def _reference_pack(v):
    """The FORMAT.md definition, byte by byte: value 2i in the low nibble of byte i, 2i+1 in the
    high nibble, two's complement."""
    out = []
    for i in range(0, len(v), 2):
        lo = int(v[i]) & 15
        hi = int(v[i + 1]) & 15 if i + 1 < len(v) else 0
        out.append(lo | hi << 4)
    return np.array(out, np.uint8)


@pytest.mark.parametrize("n", [0, 1, 2, 15, 16, 17, 101])
def test_int4_packing_round_trips(n):
    rng = np.random.default_rng(n)
    v = np.concatenate([np.arange(-8, 8), rng.integers(-8, 8, max(0, n - 16))])[:n]
    packed = fmt.pack_int4(v)
    np.testing.assert_array_equal(packed, _reference_pack(v))
    assert len(packed) == (n + 1) // 2
    np.testing.assert_array_equal(fmt.unpack_int4(packed, n), v)
    np.testing.assert_array_equal(fmt.unpack_int4(packed.tobytes(), n), v)


def test_int4_packing_rejects_out_of_range():
    for bad in ([8], [-9], [0.5]):
        with pytest.raises(ValueError, match=r"\[-8, 7\]"):
            fmt.pack_int4(np.array(bad))


def test_weight_grid_recovers_apply_bits_weights():
    from npas_keras.quantization import fake_quantize
    rng = np.random.default_rng(0)
    w = rng.normal(size=(24, 10)).astype(np.float32) * (rng.random((24, 10)) < 0.4)
    w[:, 3] = 0                                    # an all-zero output channel (Keras last axis)
    for pot in (False, True):
        q = fake_quantize(w, 4, power_of_two=pot)  # Keras [in, out]
        k, s = fmt.weight_grid(q.T, 4)
        np.testing.assert_allclose(k * s[:, None], q.T, rtol=1e-6, atol=0)
        assert k.min() >= -8 and k.max() <= 7 and s[3] == 0
        np.testing.assert_array_equal(k == 0, q.T == 0)
    with pytest.raises(ValueError, match="output channel 0 is not on a 4-bit grid"):
        fmt.weight_grid(w.T + np.float32(0.01), 4)
    for pot in (False, True):                      # 8 bits: k in [-127, 127]
        q = fake_quantize(w, 8, power_of_two=pot)
        k, s = fmt.weight_grid(q.T, 8)
        np.testing.assert_allclose(k * s[:, None], q.T, rtol=1e-6, atol=0)
        assert k.min() >= -127 and s[3] == 0
        live = s > 0
        if pot:                                    # the power-of-two steps themselves
            assert np.all(np.log2(s[live]) == np.round(np.log2(s[live])))
        else:                                      # the converter's max|w| / 127 grid
            assert np.all(np.abs(k[live]).max(axis=1) == 127)
    with pytest.raises(ValueError, match="output channel 0 is not on a 8-bit grid"):
        fmt.weight_grid(w.T + np.float32(0.01), 8)


# --- the C++ decoder (ctypes shim) against the Python reference on quantized ops -------------

@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    try:
        lib = shim.build(str(tmp_path_factory.mktemp("shim4")))
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot build the decoder shim: {exc}")
    return shim.Decoder(lib)


def _quantized_op(kind, k, value_type, rows_scales=None, kh=1, kw=1, in_channels=None):
    """(options, values bytes, index bytes, scales bytes) of a quantized op holding `k`."""
    rows, cols = k.shape
    enc, index, vals, params = fmt.encode_matrix(k.astype(np.float32), kind, kh, kw,
                                                 value_bits=fmt.VALUE_BITS[value_type])
    vals = vals.astype(np.int8)
    vbytes = (fmt.pack_int4(vals) if value_type == fmt.VALUES_INT4 else vals).tobytes()
    scales = (np.linspace(0.01, 0.2, rows) if rows_scales is None else rows_scales) \
        .astype("<f4").tobytes()
    if in_channels is None:
        in_channels = cols if kind == fmt.KIND_FC else (
            cols // (kh * kw) if kind == fmt.KIND_CONV else rows)
    o = fmt.CustomOptions(op_kind=kind, out_channels=rows, kh=kh, kw=kw, in_channels=in_channels,
                          rows=rows, cols=cols, padding=0 if kind == fmt.KIND_FC else 1,
                          encoding=enc, params=params, n_values=len(vals),
                          index_bytes=len(index), crc_values=fmt.crc32(vbytes),
                          crc_index=fmt.crc32(index.tobytes()), value_type=value_type,
                          crc_scales=fmt.crc32(scales), scheme_json='{"scheme": "t"}')
    return o.pack(), vbytes, index.astype(np.uint8).tobytes(), scales


def _decode_both(decoder, name, opts, vb, ib, sb, value_type, capacity):
    vtype = 9 if value_type == fmt.VALUES_INT8 else 3
    ok, w, scales, meta, err = decoder.decode_q(name, opts, vb, ib, sb, capacity,
                                                values_type=vtype)
    try:
        o = fmt.unpack_options(opts, name)
        ref = fmt.decode_matrix(o, np.frombuffer(vb, np.uint8), np.frombuffer(ib, np.uint8))
        fmt.check_scales(o, np.frombuffer(sb, "<f4"))
        py_ok = True
    except ValueError as exc:
        ref, py_ok, err = None, False, f"{err} | python: {exc}"
    assert ok == py_ok, err
    return ok, w, scales, ref, meta, err


@pytest.mark.parametrize("value_type", [fmt.VALUES_INT4, fmt.VALUES_INT8])
@pytest.mark.parametrize("kind", [fmt.KIND_FC, fmt.KIND_CONV, fmt.KIND_DW])
def test_cpp_and_python_decoders_agree_on_quantized_ops(decoder, kind, value_type):
    rng = np.random.default_rng(kind * 7 + value_type)
    lo, hi = (-8, 8) if value_type == fmt.VALUES_INT4 else (-127, 128)
    kh = kw = 1 if kind == fmt.KIND_FC else 3
    rows, cols = (13, 33) if kind == fmt.KIND_FC else (10, 9 * 3) if kind == fmt.KIND_CONV \
        else (12, 9)
    k = rng.integers(lo, hi, (rows, cols)) * (rng.random((rows, cols)) < 0.3)
    k.ravel()[:3] = 1                               # at least a few values, odd counts too
    name = fmt.CUSTOM_NAMES[kind]
    opts, vb, ib, sb = _quantized_op(kind, k, value_type, kh=kh, kw=kw)
    ok, w, scales, ref, meta, err = _decode_both(decoder, name, opts, vb, ib, sb, value_type,
                                                 rows * cols)
    assert ok, err
    np.testing.assert_array_equal(ref, k)           # Python: GEMM view of the integers
    builtin = fmt.builtin_layout(kind, k, kh, kw).ravel()
    np.testing.assert_array_equal(w, builtin)       # C++: builtin layout
    np.testing.assert_array_equal(scales, np.frombuffer(sb, "<f4"))
    assert meta[13] == value_type


def test_corrupt_or_truncated_int4_op_is_rejected_by_both_decoders(decoder):
    name = fmt.CUSTOM_NAMES[fmt.KIND_FC]
    for seed in range(50):                           # an odd value count: a padding nibble
        rng = np.random.default_rng(seed)
        k = rng.integers(-8, 8, (8, 15)) * (rng.random((8, 15)) < 0.5)
        opts, vb, ib, sb = _quantized_op(fmt.KIND_FC, k, fmt.VALUES_INT4)
        if fmt.unpack_options(opts, name).n_values % 2:
            break
    assert fmt.unpack_options(opts, name).n_values % 2

    def reseal(o, v, s=sb):
        b = bytearray(o)
        struct.pack_into("<I", b, 88, zlib.crc32(v) & 0xFFFFFFFF)
        struct.pack_into("<I", b, 100, zlib.crc32(s) & 0xFFFFFFFF)
        struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])) & 0xFFFFFFFF)
        return bytes(b)

    flipped = bytearray(vb)
    flipped[len(vb) // 2] ^= 0x10
    odd_pad = bytearray(vb)
    odd_pad[-1] |= 0x80                              # nonzero padding nibble
    bad_scales = np.frombuffer(sb, "<f4").copy()
    bad_scales[2] = 0.0
    cases = {
        "flipped value bit": (opts, bytes(flipped), ib, sb),
        "truncated values": (opts, vb[:-1], ib, sb),
        "truncated options": (opts[:-9], vb, ib, sb),
        "truncated index": (opts, vb, ib[:-1], sb),
        "nonzero padding nibble": (reseal(opts, bytes(odd_pad)), bytes(odd_pad), ib, sb),
        "zero scale": (reseal(opts, vb, bad_scales.tobytes()), vb, ib, bad_scales.tobytes()),
        "scales missing a channel": (opts, vb, ib, sb[:-4]),
        "version 1 header on int4 data": (opts[:4] + struct.pack("<H", 1) + opts[6:], vb, ib, sb),
    }
    for what, (o, v, i, s) in cases.items():
        ok, *_rest, err = _decode_both(decoder, name, o, v, i, s, fmt.VALUES_INT4, k.size)
        assert not ok, what
        assert err, what
    # int4 values declared as int8 (wrong tensor type) are refused by the C++ decoder too
    ok, *_ = decoder.decode_q(name, opts, vb, ib, sb, k.size, values_type=9)
    assert not ok


def test_mutated_quantized_ops_decoders_agree(decoder):
    """Random byte mutations (checksums resealed half the time, so the structural checks are
    reached): both decoders accept or reject together and agree on what they accept."""
    rng = np.random.default_rng(11)
    for trial in range(300):
        kind = int(rng.integers(0, 3))
        vt = fmt.VALUES_INT4 if trial % 3 else fmt.VALUES_INT8
        kh = kw = 1 if kind == fmt.KIND_FC else 3
        rows = int(rng.integers(1, 9))
        cols = int(rng.integers(1, 20)) if kind == fmt.KIND_FC else \
            9 * int(rng.integers(1, 4)) if kind == fmt.KIND_CONV else 9
        k = rng.integers(-8, 8, (rows, cols)) * (rng.random((rows, cols)) < 0.5)
        k.ravel()[0] = 1
        name = fmt.CUSTOM_NAMES[kind]
        parts = list(_quantized_op(kind, k, vt, kh=kh, kw=kw))
        target = int(rng.integers(0, 4))
        b = bytearray(parts[target])
        if b:
            for _ in range(int(rng.integers(1, 3))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        parts[target] = bytes(b)
        if trial % 2 and len(parts[0]) >= 112:         # reseal every checksum
            o = bytearray(parts[0])
            struct.pack_into("<II", o, 88, zlib.crc32(parts[1]) & 0xFFFFFFFF,
                             zlib.crc32(parts[2]) & 0xFFFFFFFF)
            struct.pack_into("<I", o, 100, zlib.crc32(parts[3]) & 0xFFFFFFFF)
            struct.pack_into("<I", o, len(o) - 4, zlib.crc32(bytes(o[:-4])) & 0xFFFFFFFF)
            parts[0] = bytes(o)
        ok, w, scales, ref, meta, err = _decode_both(decoder, name, *parts, vt, 4096)
        if ok:
            o = fmt.unpack_options(parts[0], name)
            np.testing.assert_array_equal(w, fmt.builtin_layout(o.op_kind, ref, o.kh, o.kw)
                                          .astype(np.int8).ravel())


# --- end to end: pruned digits CNN, 4-bit conv + FC ------------------------------------------

@pytest.fixture(scope="module")
def digits_models():
    """A pruned digits CNN (Conv2D + Dense + Dense), 4-bit conv and first FC (apply_bits), and its
    exports: standard int8, standard with weight_bits, npas int8, npas 4-bit. (File sizes of a
    Fashion-MNIST CNN, dense int8 included: benchmarks/int4_sizes.py.)"""
    tf = pytest.importorskip("tensorflow")  # noqa: F841
    import tf_keras as keras
    import npas_keras
    from npas_keras.data import load_digits
    from npas_keras.quantization import apply_bits
    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = load_digits()
    model = keras.Sequential([keras.Input((8, 8, 1)),
                              keras.layers.Conv2D(16, 3, padding="same", activation="relu",
                                                  name="conv"),
                              keras.layers.Flatten(),
                              keras.layers.Dense(64, activation="relu", name="fc1"),
                              keras.layers.Dense(10, name="fc2")])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    pm = npas_keras.prune(model, npas_keras.Scheme("block_punched", rate=0.75,
                                                   block_shape=(8, 8)))
    pm.compile("adam", loss, metrics=["accuracy"])
    pm.fit(x, y, epochs=1, verbose=0, callbacks=npas_keras.callbacks())
    stripped = npas_keras.strip(pm)
    bits = {"conv": 4, "fc1": 4}
    m4 = apply_bits(stripped, bits)
    rep = x[:100]
    exp = dict(quantize="int8", representative_data=rep)
    out = dict(
        x=xt[:40], y=yt[:40], model4=m4, bits=bits,
        std8=npas_keras.export(m4, None, **exp),
        std4=npas_keras.export(m4, None, weight_bits=bits, **exp),
        npas8=npas_keras.export(m4, None, format="npas", **exp),
        npas4=npas_keras.export(m4, None, format="npas", weight_bits=bits, **exp))
    return out


def _quantize_input(interp, x):
    d = interp.get_input_details()[0]
    s, z = d["quantization"]
    return d["index"], np.clip(np.round(x / s + z), -128, 127).astype(np.int8)


def _run(interp, x):
    interp.allocate_tensors()
    idx, xq = _quantize_input(interp, x)
    outs = []
    for i in range(len(x)):
        interp.set_tensor(idx, xq[i:i + 1])
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).astype(np.int32))
    return np.concatenate(outs)


def _stock(content, reference=True):
    """TFLite's reference int8 kernels, or its optimized builtin ones (no XNNPACK). Their
    FULLY_CONNECTED differ: the reference rounds once ((acc * M + 2^(s-1)) >> s), the optimized
    kernel twice like every conv (the delegate's arithmetic), so the two disagree by 1 LSB on a
    few FC outputs."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    t = litert.OpResolverType
    return litert.Interpreter(model_content=content, experimental_op_resolver_type=t.BUILTIN_REF
                              if reference else t.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def test_npas_4bit_export_structure_and_sizes(digits_models):
    import npas_keras
    from npas_keras.export import flatbuffer as fb
    rows = {r["layer"]: r for r in npas_keras.inspect(digits_models["npas4"])}
    assert rows["conv"]["kind"] == rows["fc1"]["kind"] == "custom"
    assert rows["conv"]["bits"] == rows["fc1"]["bits"] == 4
    assert rows["fc2"]["bits"] == 8
    # the 4-bit ops hold the standard export's integers (k in [-8, 7]) and its scales
    std, raw_s = fb.load_model(digits_models["std4"])
    npas, raw_n = fb.load_model(digits_models["npas4"])
    builtin = {e["op_index"]: e for e in fb.weight_ops(std, raw_s)}
    for e in fb.weight_ops(npas, raw_n):
        if e["custom"] is None:
            continue
        opts, k = fb.decode_custom_op(npas, raw_n, npas.subgraphs[0], e)
        b = builtin[e["op_index"]]
        w = fmt.gemm_view(b["kind"], fb.constant_array(std, raw_s, b["tensor"]))
        np.testing.assert_array_equal(k, w)
        scales = fb.weight_scales(b, w.shape[0])
        np.testing.assert_array_equal(opts.extra["scales"], scales)
        if opts.value_type == fmt.VALUES_INT4:
            assert k.min() >= -8 and k.max() <= 7
    sizes = {name: len(digits_models[name]) for name in ("std8", "std4", "npas8", "npas4")}
    print("file bytes:", sizes)
    assert sizes["npas4"] < sizes["npas8"] < sizes["std8"]


def test_npas_4bit_runs_in_delegate_like_stock_builtin(digits_models):
    from npas_keras.runtime import Interpreter, delegate_stats
    x = digits_models["x"]
    ref = _run(_stock(digits_models["std4"]), x)           # TFLite reference int8 kernels
    it = Interpreter(model_content=digits_models["npas4"])
    got = _run(it, x)
    stats = delegate_stats(it)
    assert stats["claimed"] == 3, stats                   # custom ops: always claimed
    # our int8 arithmetic on the equivalent builtin model (forced claims) is the same, bit for bit
    forced = _run(Interpreter(model_content=digits_models["std4"],
                              delegate_options={"kernel": "row_block", "min_sparsity": 0}), x)
    np.testing.assert_array_equal(got, forced)
    for name, stock in (("reference", ref), ("optimized", _run(_stock(digits_models["std4"],
                                                                     reference=False), x))):
        diff = np.abs(got - stock)
        print(f"npas 4-bit (delegate) vs stock {name} kernels on the builtin model: max |diff| "
              f"{diff.max()} LSB, {int((diff > 0).sum())} of {diff.size} outputs differ")
        assert diff.max() <= 1
    # the same class as the 8-bit npas export on most samples (4-bit changes the model a little)
    got8 = _run(Interpreter(model_content=digits_models["npas8"]), x)
    assert np.mean(got.argmax(1) == got8.argmax(1)) >= 0.9


def test_npas_int8_custom_ops_equal_builtin_int8(digits_models):
    from npas_keras.runtime import Interpreter
    x = digits_models["x"]
    got = _run(Interpreter(model_content=digits_models["npas8"]), x)
    forced = _run(Interpreter(model_content=digits_models["std8"],
                              delegate_options={"kernel": "row_block", "min_sparsity": 0}), x)
    np.testing.assert_array_equal(got, forced)
    assert np.abs(got - _run(_stock(digits_models["std8"]), x)).max() <= 1


def test_corrupt_4bit_op_in_a_model_errors_cleanly(digits_models):
    import npas_keras
    from npas_keras.export import flatbuffer as fb
    from npas_keras.runtime import Interpreter, delegate_stats
    model, raw = fb.load_model(digits_models["npas4"])
    entry = next(e for e in fb.weight_ops(model, raw) if e["custom"])
    t = model.subgraphs[0].tensors[entry["inputs"][1]]
    data = np.asarray(model.buffers[t.buffer].data, np.uint8).copy()
    data[0] ^= 0x01                                       # one weight changes: CRC mismatch
    model.buffers[t.buffer].data = data
    bad = fb.save_model(model)
    with pytest.raises(ValueError, match="checksum"):
        npas_keras.inspect(bad)
    it = Interpreter(model_content=bad)
    with pytest.raises(RuntimeError):                     # declined -> unresolved custom op
        it.allocate_tensors()
    stats = delegate_stats(it)
    assert "custom_op_decode_failed" in stats["declined_by_reason"], stats
    # truncated custom options
    model, raw = fb.load_model(digits_models["npas4"])
    op = model.subgraphs[0].operators[entry["op_index"]]
    op.customOptions = np.asarray(op.customOptions, np.uint8)[:-6]
    with pytest.raises(ValueError, match="NPAS custom options"):
        npas_keras.inspect(fb.save_model(model))


def test_off_grid_layer_and_bad_arguments_are_refused(digits_models):
    import npas_keras
    from npas_keras.quantization import apply_bits
    m4 = digits_models["model4"]
    x = digits_models["x"]
    exp = dict(quantize="int8", representative_data=x)
    with pytest.raises(ValueError, match=r"layer 'fc2' cannot be exported with 4-bit weights.*"
                                         r"not on a 4-bit grid.*apply_bits"):
        npas_keras.export(m4, None, format="npas", weight_bits={"fc2": 4, "conv": 4}, **exp)
    with pytest.raises(ValueError, match="needs quantize='int8'"):
        npas_keras.export(m4, None, weight_bits=4)
    with pytest.raises(ValueError, match="4 or 8"):
        npas_keras.export(m4, None, weight_bits={"conv": 3}, **exp)
    with pytest.raises(ValueError, match="does not have"):
        npas_keras.export(m4, None, weight_bits={"nope": 4}, **exp)
    # every layer on the grid: weight_bits=4 for the whole model works
    all4 = apply_bits(m4, 4)
    rows = npas_keras.inspect(npas_keras.export(all4, None, format="npas", weight_bits=4, **exp))
    assert [r["bits"] for r in rows] == [4, 4, 4]


def test_4bit_depthwise_and_conv_bit_exact_to_stock_reference():
    """Depthwise (multiplier 2) and 1x1 conv at 4 bits: TFLite's reference conv kernels round
    like ours, so here the npas 4-bit model through the delegate equals stock LiteRT on the
    builtin 4-bit export exactly."""
    pytest.importorskip("tensorflow")
    import tf_keras as keras
    import npas_keras
    from npas_keras.quantization import apply_bits
    from npas_keras.runtime import Interpreter, delegate_stats
    rng = np.random.default_rng(3)
    inp = keras.Input((7, 6, 5))
    h = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu",
                                     name="dw")(inp)
    out = keras.layers.Conv2D(7, 1, strides=2, name="pw")(h)
    model = keras.Model(inp, out)
    for layer in model.layers[1:]:
        w, b = layer.get_weights()
        layer.set_weights([w * (rng.random(w.shape) < 0.4), rng.normal(0, 0.1, b.shape)])
    m4 = apply_bits(model, 4)
    x = rng.random((30, 7, 6, 5)).astype(np.float32)
    exp = dict(quantize="int8", representative_data=x, weight_bits=4)
    std4 = npas_keras.export(m4, None, **exp)
    npas4 = npas_keras.export(m4, None, format="npas", **exp)
    assert [r["bits"] for r in npas_keras.inspect(npas4)] == [4, 4]
    it = Interpreter(model_content=npas4)
    got = _run(it, x[:10])
    assert delegate_stats(it)["claimed"] == 2
    np.testing.assert_array_equal(got, _run(_stock(std4), x[:10]))


def test_8bit_power_of_two_grid_kept_at_export(digits_models):
    """An 8-bit layer on a power-of-two grid (apply_bits / bits_qat, power_of_two=True) is
    stored as its own k and 2^e scales, so the file's weights are the Keras weights exactly
    (the converter alone re-rounds them to max|w| / 127); 8-bit layers on the converter's grid
    and a 4-bit layer beside them export as before."""
    import npas_keras
    from npas_keras.export import flatbuffer as fb
    from npas_keras.quantization import apply_bits
    from npas_keras.runtime import Interpreter
    bits = {"conv": 8, "fc1": 4, "fc2": 8}
    m = apply_bits(digits_models["model4"], bits, power_of_two=True)
    exp = dict(quantize="int8", representative_data=digits_models["x"])

    def weights(content):   # {layer: (dequantized GEMM view, scales)}
        model, raw = fb.load_model(content)
        by_op = {(r["subgraph"], r["op_index"]): r["layer"]
                 for r in npas_keras.inspect(content)}
        out = {}
        for e in fb.weight_ops(model, raw):
            w = fmt.gemm_view(e["kind"], fb.constant_array(model, raw, e["tensor"]))
            s = fb.weight_scales(e, w.shape[0])
            out[by_op[(e["subgraph"], e["op_index"])]] = (w * s[:, None], s)
        return out

    kept, plain = weights(npas_keras.export(m, None, weight_bits=bits, **exp)), \
        weights(npas_keras.export(m, None, **exp))
    for layer in ("conv", "fc1", "fc2"):
        keras_w = npas_keras.export.converter._keras_gemm(m.get_layer(layer))
        w, s = kept[layer]
        np.testing.assert_allclose(w, keras_w, rtol=1e-6, atol=0)          # exactly the model
        if bits[layer] == 8:
            amax = np.abs(keras_w).max(axis=1)
            live = amax > 0
            # each row's step is a power of two, or max|w| / 127 where that grid fits too (a row
            # of one weight, or of weights of equal size, lies on both)
            pow2 = np.log2(s[live]) == np.round(np.log2(s[live]))
            assert np.all(pow2 | np.isclose(s[live], amax[live] / 127, rtol=1e-6, atol=0))
            assert pow2.mean() > 0.5
            # the converter's own rounding moves these weights
            assert not np.allclose(plain[layer][0], keras_w, rtol=1e-6, atol=0)
    # on the converter's grid (no power of two) nothing changes
    m2 = apply_bits(digits_models["model4"], {"conv": 8, "fc1": 8, "fc2": 8})
    a = weights(npas_keras.export(m2, None, weight_bits={"fc2": 8}, **exp))
    b = weights(npas_keras.export(m2, None, **exp))
    for layer in a:
        np.testing.assert_array_equal(a[layer][1], b[layer][1])
    # the rescaled int32 biases keep the model: the delegate agrees with Keras on the digits
    x = digits_models["x"]
    it = Interpreter(model_content=npas_keras.export(m, None, weight_bits=bits, **exp))
    got = _run(it, x).argmax(1)
    assert np.mean(got == m.predict(x, verbose=0).argmax(1)) >= 0.9
