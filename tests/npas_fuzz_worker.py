"""Fuzz worker run in a SUBPROCESS by tests/test_custom_op_fuzz.py (a crash must not take pytest
down with it). Two modes:

  decoder LIB SEED ITERS   mutate NPAS ops (options / values / index, checksums resealed half the
                           time so the structural checks are reached) and decode each with the C++
                           decoder (ctypes shim LIB) and the Python reference; they must agree.
  model PATH SEED ITERS    flip bytes inside the custom options / values / index buffers of the
                           .tflite at PATH, load and run it through the npas delegate; every
                           mutation must end in a reported error (checksums) or the reference output.

Prints one line per case, then a JSON summary; exits 0 when every case behaved.
"""
import json
import os
import struct
import sys
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from npas_keras.export import format as fmt  # noqa: E402


def reseal(options: bytes, values: bytes, index: bytes) -> bytes:
    b = bytearray(options)
    if len(b) >= 100:
        struct.pack_into("<II", b, 88, zlib.crc32(values) & 0xFFFFFFFF,
                         zlib.crc32(index) & 0xFFFFFFFF)
    if len(b) >= 4:
        struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])) & 0xFFFFFFFF)
    return bytes(b)


def _ops(rng):
    """A few valid (name, options, values, index, dense builtin weights) for every encoding."""
    out = []
    specs = [(fmt.KIND_FC, (12, 20), 1, 1, 1), (fmt.KIND_CONV, (8, 9 * 3), 3, 3, 1),
             (fmt.KIND_DW, (6, 9), 3, 3, 2)]
    for kind, shape, kh, kw, mult in specs:
        w = rng.standard_normal(shape).astype(np.float32)
        if kind == fmt.KIND_FC:
            w[:, 1::4] = 0
            w[:, 3::4] = 0
        else:
            w *= rng.random(shape) < 0.4
        rows, cols = shape
        for enc, index, values, params in fmt.candidate_encodings(w, kind, kh, kw, [(4, 4)],
                                                                  [(2, 4)]):
            in_ch = cols if kind == fmt.KIND_FC else (cols // (kh * kw) if kind == fmt.KIND_CONV
                                                      else rows // mult)
            o = fmt.CustomOptions(op_kind=kind, padding=0 if kind == fmt.KIND_FC else 1,
                                  out_channels=rows, kh=kh, kw=kw, in_channels=in_ch,
                                  depth_multiplier=mult, rows=rows, cols=cols, encoding=enc,
                                  params=params, n_values=len(values), index_bytes=len(index),
                                  crc_values=fmt.crc32(values.tobytes()),
                                  crc_index=fmt.crc32(index.tobytes()), scheme_json='{"s": 1}')
            out.append((fmt.CUSTOM_NAMES[kind], o.pack(), values.astype("<f4").tobytes(),
                        index.tobytes(), fmt.builtin_layout(kind, w, kh, kw).ravel()))
    return out


def _mutate(rng, data: bytes) -> bytes:
    b = bytearray(data)
    r = rng.random()
    if not b or r < 0.1:
        return bytes(b[: rng.integers(0, len(b) + 1)])                 # truncate
    if r < 0.2:
        return bytes(b) + bytes(rng.integers(0, 256, rng.integers(1, 9), dtype=np.uint8))
    for _ in range(rng.integers(1, 4)):
        i = int(rng.integers(0, len(b)))
        if rng.random() < 0.5:
            b[i] ^= 1 << int(rng.integers(0, 8))
        else:
            b[i] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, int(rng.integers(0, 256))]))
    return bytes(b)


def decoder_mode(lib, seed, iters):
    import npas_decoder_shim as shim
    dec = shim.Decoder(lib)
    rng = np.random.default_rng(seed)
    ops = _ops(rng)
    stats = {"cases": 0, "accepted": 0, "rejected": 0, "disagree": 0}
    for it in range(iters):
        name, opts, vals, idx, dense = ops[it % len(ops)]
        target = rng.integers(0, 3)
        if target == 0:
            opts = _mutate(rng, opts)
            # int fields: poke a random header int with an extreme value half the time
            if len(opts) >= 100 and rng.random() < 0.5:
                b = bytearray(opts)
                struct.pack_into("<i", b, 8 + 4 * int(rng.integers(0, 20)),
                                 int(rng.choice([0, -1, 1, 2, 3, 255, 65536, 2**31 - 1,
                                                 int(rng.integers(-5, 300))])))
                opts = bytes(b)
        elif target == 1:
            vals = _mutate(rng, vals)
        else:
            idx = _mutate(rng, idx)
        if rng.random() < 0.5:
            opts = reseal(opts, vals, idx)
        print(f"case {it} target {target}", flush=True)
        ok, got, _, err = dec.decode(name, opts, vals, idx, 4096)
        try:
            o = fmt.unpack_options(opts, name)
            ref = fmt.decode_matrix(o, vals, idx)
            if len(vals) != 4 * o.n_values:
                raise ValueError("size")
            py_ok = True
        except ValueError:
            py_ok, ref = False, None
        stats["cases"] += 1
        stats["accepted" if ok else "rejected"] += 1
        if ok != py_ok:
            stats["disagree"] += 1
            print(f"  DISAGREE c++={ok} ({err}) python={py_ok}", flush=True)
        elif ok and ref.size <= 4096 and got.tobytes() != fmt.builtin_layout(
                o.op_kind, ref, o.kh, o.kw).ravel().tobytes():
            stats["disagree"] += 1
            print("  DISAGREE on decoded weights", flush=True)
        elif not ok and not err.startswith("NPAS custom op: "):
            stats["disagree"] += 1
            print(f"  unclear error {err!r}", flush=True)
    print(json.dumps(stats), flush=True)
    return 0 if stats["disagree"] == 0 else 1


def _regions(data: bytes):
    """(kind, start, length) of every custom-options / values / index byte range in the file."""
    from npas_keras.export import flatbuffer as fb
    model, raw = fb.load_model(data)
    regions = []
    for entry in fb.weight_ops(model, raw):
        if not entry["custom"]:
            continue
        sg = model.subgraphs[entry["subgraph"]]
        opts = fb.custom_options_bytes(entry["op"], raw)
        regions.append(("options", data.find(opts), len(opts)))
        for name, t in (("values", entry["inputs"][1]), ("index", entry["inputs"][2])):
            buf = fb.buffer_data(model, raw, sg.tensors[t].buffer).tobytes()
            regions.append((name, data.find(buf), len(buf)))
    assert all(start >= 0 for _, start, _ in regions), regions
    return regions


def _run(content, x):
    from npas_keras.runtime import Interpreter
    options = json.loads(os.environ.get("NPAS_FUZZ_DELEGATE_OPTIONS", "{}"))  # for debugging
    interp = Interpreter(model_content=content, num_threads=1, delegate=True,
                         delegate_options=options)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()


def model_mode(path, seed, iters):
    data = open(path, "rb").read()
    rng = np.random.default_rng(seed)
    regions = _regions(data)
    x = np.load(path + ".x.npy")
    ref = _run(data, x)
    stats = {"cases": 0, "errors": 0, "same_output": 0, "wrong_output": 0}
    for it in range(iters):
        kind, start, length = regions[int(rng.integers(0, len(regions)))]
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            i = start + int(rng.integers(0, length))
            b[i] ^= 1 << int(rng.integers(0, 8))
        print(f"case {it}: {kind}", flush=True)
        stats["cases"] += 1
        try:
            out = _run(bytes(b), x)
        except Exception as exc:  # the reported error (must be an exception, not a crash)
            stats["errors"] += 1
            print(f"  error {type(exc).__name__}: {str(exc)[:160]}", flush=True)
            continue
        if np.allclose(out, ref, rtol=1e-5, atol=1e-6):
            stats["same_output"] += 1
        else:
            stats["wrong_output"] += 1
            print("  WRONG OUTPUT without an error", flush=True)
    print(json.dumps(stats), flush=True)
    return 0 if stats["wrong_output"] == 0 else 1


if __name__ == "__main__":
    mode, target, seed, iters = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.exit(decoder_mode(target, seed, iters) if mode == "decoder"
             else model_mode(target, seed, iters))
