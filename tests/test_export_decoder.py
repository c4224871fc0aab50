"""The compact-weight encoders (Python) against both decoders: the Python reference
(npas_keras.export.format.decode_matrix) and the C++ one (tflite_custom_ops/npas_custom_ops.cc,
built here into a small ctypes shim, no delegate needed). No TensorFlow."""
import struct
import zlib

import numpy as np
import pytest

from npas_keras.export import format as fmt

try:
    from npas_keras.schemes import Scheme, compute_mask
except ImportError:  # pragma: no cover - schemes is part of the package
    Scheme = compute_mask = None

import npas_decoder_shim as shim  # tests/ is on sys.path (pytest rootdir-less import)


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    try:
        lib = shim.build(str(tmp_path_factory.mktemp("shim")))
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot build the decoder shim: {exc}")
    except Exception as exc:  # CalledProcessError: show the compiler output
        pytest.fail(f"the decoder does not compile: {getattr(exc, 'stderr', exc)}")
    return shim.Decoder(lib)


def reseal(options: bytes, values: bytes, index: bytes) -> bytes:
    """Recomputes the three checksums so that a mutation reaches the structural checks."""
    b = bytearray(options)
    if len(b) >= 100:
        struct.pack_into("<II", b, 88, zlib.crc32(values) & 0xFFFFFFFF,
                         zlib.crc32(index) & 0xFFFFFFFF)
    if len(b) >= 4:
        struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])) & 0xFFFFFFFF)
    return bytes(b)


def make_op(kind, matrix, enc, index, values, params, kh=1, kw=1, in_channels=None, mult=1,
            **attrs):
    rows, cols = matrix.shape
    if in_channels is None:
        in_channels = cols if kind == fmt.KIND_FC else (
            cols // (kh * kw) if kind == fmt.KIND_CONV else rows // mult)
    base = dict(padding=0 if kind == fmt.KIND_FC else 1)
    base.update(attrs)
    o = fmt.CustomOptions(op_kind=kind, out_channels=rows, kh=kh, kw=kw, in_channels=in_channels,
                          depth_multiplier=mult, rows=rows, cols=cols, encoding=enc,
                          params=params, n_values=len(values), index_bytes=len(index),
                          crc_values=fmt.crc32(values.tobytes()),
                          crc_index=fmt.crc32(index.tobytes()),
                          scheme_json='{"scheme": "test"}', **base)
    return o.pack(), values.astype("<f4").tobytes(), index.astype(np.uint8).tobytes()


def masked(shape, scheme, kernel_hw=(1, 1), seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    if compute_mask is None:
        return w * (rng.random(shape) < 0.25)
    return w * compute_mask(w, scheme, kernel_hw=kernel_hw)


def _schemes():
    return [Scheme("unstructured", density=0.25), Scheme("filter", density=0.25),
            Scheme("channel", density=0.25), Scheme("n_m", n=2, m=8),
            Scheme("block_punched", density=0.25, block_shape=(4, 8)),
            Scheme("bcr", density=0.25, block_shape=(8, 8)), Scheme("pattern", density=4 / 9)]


CASES = [  # (kind, matrix shape, kh, kw, depth multiplier)
    (fmt.KIND_FC, (24, 40), 1, 1, 1),
    (fmt.KIND_CONV, (16, 9 * 8), 3, 3, 1),
    (fmt.KIND_DW, (12, 9), 3, 3, 2),
]


def _check_all_encodings(decoder, kind, w, kh, kw, mult):
    seen = set()
    for enc, index, values, params in fmt.candidate_encodings(w, kind, kh, kw, [(4, 8)],
                                                              [(2, 8)]):
        seen.add(enc)
        opts, vb, ib = make_op(kind, w, enc, index, values, params, kh, kw, mult=mult,
                               stride_h=2, activation=3)
        parsed = fmt.unpack_options(opts, fmt.CUSTOM_NAMES[kind])
        np.testing.assert_array_equal(fmt.decode_matrix(parsed, vb, ib), w)
        ok, dense, meta, err = decoder.decode(fmt.CUSTOM_NAMES[kind], opts, vb, ib, w.size)
        assert ok, (fmt.ENCODING_NAMES[enc], params, err)
        expected = fmt.builtin_layout(kind, w, kh, kw)
        np.testing.assert_array_equal(dense, expected.ravel())
        assert meta[0] == kind and meta[2] == 3 and meta[3] == 2
        assert meta[8] == w.shape[0] and (meta[9], meta[10]) == (kh, kw)
        assert meta[7] == mult
    return seen


@pytest.mark.skipif(compute_mask is None, reason="npas_keras.schemes missing")
@pytest.mark.parametrize("kind,shape,kh,kw,mult", CASES)
def test_every_encoding_round_trips_through_both_decoders(decoder, kind, shape, kh, kw, mult):
    for scheme in _schemes():
        if scheme.name == "pattern" and kind == fmt.KIND_FC:
            continue
        if scheme.name == "channel" and kind == fmt.KIND_DW:
            continue
        try:
            w = masked(shape, scheme, (kh, kw))
        except ValueError:
            continue  # a scheme that does not apply to this layer kind
        seen = _check_all_encodings(decoder, kind, w, kh, kw, mult)
        assert {fmt.ENC_BITMAP, fmt.ENC_GAP4, fmt.ENC_BLOCK} <= seen


def test_best_encoding_fits_the_structure():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    # block_punched 4x16 blocks keeping 2 columns each: block encoding wins, index tiny
    keep = np.zeros((16, 16, 16), bool)
    for b in np.ndindex(16, 16):
        keep[b][rng.choice(16, 2, replace=False)] = True
    mask = np.repeat(keep.reshape(16, 256), 4, axis=0)
    enc, index, values, params = fmt.encode_matrix(w * mask, fmt.KIND_FC, block_shapes=[(4, 16)])
    assert enc == fmt.ENC_BLOCK and params[0] == 4 and params[2] == 1   # columns-only masks
    assert values.nbytes == 4 * mask.sum() and index.nbytes == 256 * 16 // 8
    # unstructured 1/8: relative (gap) indices beat the 1/32 bitmap
    u = w * (rng.random(w.shape) < 1 / 8)
    enc, index, values, _ = fmt.encode_matrix(u, fmt.KIND_FC)
    assert enc == fmt.ENC_GAP4 and index.nbytes < u.size / 8
    # 1:8 -> n_m with 3-bit positions
    nm = np.zeros_like(w)
    cols = rng.integers(0, 8, size=(64, 32)) + np.arange(32) * 8
    np.put_along_axis(nm, cols, np.take_along_axis(w, cols, axis=1), axis=1)
    enc, index, values, params = fmt.encode_matrix(nm, fmt.KIND_FC)
    assert enc == fmt.ENC_NM and params == (1, 8, 3)


def test_custom_names(decoder):
    for name in fmt.CUSTOM_NAMES.values():
        assert decoder.is_custom(name) and fmt.is_npas_custom_name(name)
    assert not decoder.is_custom("NpasSparse") and not fmt.is_npas_custom_name("FlexConv")


def _op(kind=fmt.KIND_FC, enc=fmt.ENC_GAP4, seed=3):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 16)) * (rng.random((8, 16)) < 0.3)).astype(np.float32)
    encs = {e: (i, v, p) for e, i, v, p in fmt.candidate_encodings(w, kind)}
    index, values, params = encs[enc]
    return w, make_op(kind, w, enc, index, values, params)


def _both_reject(decoder, name, opts, vb, ib, phrase, cap=128, **kw):
    ok, _, _, err = decoder.decode(name, opts, vb, ib, cap, **kw)
    assert not ok and phrase in err, err
    if not kw:
        with pytest.raises(ValueError, match=phrase):
            fmt.decode_matrix(fmt.unpack_options(opts, name), vb, ib)


def test_decoders_reject_bad_options(decoder):
    name = fmt.CUSTOM_NAMES[fmt.KIND_FC]
    _, (opts, vb, ib) = _op()
    _both_reject(decoder, name, opts[:50], vb, ib, "truncated")
    _both_reject(decoder, name, b"XXXX" + opts[4:], vb, ib, "magic")
    bad = bytearray(opts)
    bad[20] ^= 1
    _both_reject(decoder, name, bytes(bad), vb, ib, "checksum")
    _both_reject(decoder, fmt.CUSTOM_NAMES[fmt.KIND_CONV], opts, vb, ib, "describe")
    bad = bytearray(opts)
    struct.pack_into("<i", bad, 8 + 4 * 13, 17)          # cols != in_channels
    _both_reject(decoder, name, reseal(bytes(bad), vb, ib), vb, ib, "in_channels")
    bad = bytearray(opts)
    struct.pack_into("<i", bad, 8 + 4 * 12, 1 << 25)     # rows huge (2^29 weights)
    struct.pack_into("<i", bad, 8 + 4 * 8, 1 << 25)
    _both_reject(decoder, name, reseal(bytes(bad), vb, ib), vb, ib, "too large")


def test_decoders_reject_bad_tensors(decoder):
    name = fmt.CUSTOM_NAMES[fmt.KIND_FC]
    _, (opts, vb, ib) = _op()
    _both_reject(decoder, name, opts, vb[:-4], ib, "values")
    _both_reject(decoder, name, opts, vb, ib + b"\0", "index")
    bad = bytearray(vb)
    bad[0] ^= 0x40
    _both_reject(decoder, name, opts, bytes(bad), ib, "checksum")
    ok, _, _, err = decoder.decode(name, opts, vb, ib, 128, values_type=9)
    assert not ok and "float32" in err
    ok, _, _, err = decoder.decode(name, opts, vb, ib, 128, index_dim=len(ib) + 1)
    assert not ok and "shape" in err


@pytest.mark.parametrize("enc,mutate,phrase", [
    (fmt.ENC_GAP4, lambda ib: ib[:-1] + b"\xff", "index"),             # runs past the end
    (fmt.ENC_GAP4, lambda ib: b"\xee" * len(ib), "outside"),           # positions beyond matrix
    (fmt.ENC_BITMAP, lambda ib: b"\xff" + ib[1:], "values"),           # popcount != values
    (fmt.ENC_BLOCK, lambda ib: b"\xff" * len(ib), "values"),
    (fmt.ENC_NM, lambda ib: b"\xff" * len(ib), "n_m"),
])
def test_decoders_reject_indices_outside_the_matrix(decoder, enc, mutate, phrase):
    name = fmt.CUSTOM_NAMES[fmt.KIND_FC]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 16)).astype(np.float32)
    if enc == fmt.ENC_NM:
        w[:, 1::4] = 0
        w[:, 3::4] = 0
        cand = fmt.encode_nm(w, 2, 4)          # all-ones positions: (3, 3) is not increasing
    else:
        w *= rng.random(w.shape) < 0.3
        cand = {e: (i, v, p) for e, i, v, p in fmt.candidate_encodings(w, fmt.KIND_FC)}[enc]
    index, values, params = cand
    opts, vb, ib = make_op(fmt.KIND_FC, w, enc, index, values, params)
    ib2 = mutate(ib)
    opts2 = fmt.CustomOptions(**{**fmt.unpack_options(opts).__dict__,
                                 "index_bytes": len(ib2)}).pack()
    _both_reject(decoder, name, reseal(opts2, vb, ib2), vb, ib2, phrase)


def test_pattern_rejects_bad_ids(decoder):
    name = fmt.CUSTOM_NAMES[fmt.KIND_CONV]
    w = masked((8, 9 * 4), Scheme("pattern", density=4 / 9) if Scheme else None, (3, 3))
    index, values, params = fmt.encode_pattern(w, 9, 4)
    opts, vb, ib = make_op(fmt.KIND_CONV, w, fmt.ENC_PATTERN, index, values, params, 3, 3)
    npat = ib[0]
    bad = bytearray(ib)
    bad[1 + 2 * npat] = 0xFF if params[2] == 8 else 0xEE    # ids beyond the table
    _both_reject(decoder, name, reseal(opts, vb, bytes(bad)), vb, bytes(bad), "pattern")
    bad = bytearray(ib)
    bad[1:3] = b"\x00\xfe"                                  # mask with bits beyond 9 positions
    _both_reject(decoder, name, reseal(opts, vb, bytes(bad)), vb, bytes(bad), "pattern")
