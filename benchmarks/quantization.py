"""int8 through the npas delegate vs stock int8 (LiteRT + XNNPACK) vs our fp32 sparse path.

Single layers (FC 1024x1024 batch 1, conv 3x3 256->256 at 28x28, conv 1x1 512->512 at 14x14)
with random weights at density 1/8 (16-row groups keep the same columns: the row-block
structure) and 1, exported twice with npas_keras.export (float32, and full-integer int8 with
representative data). Three cases per layer and density, each timed interleaved against its
stock baseline in one process (npas_keras.runtime.benchmark.compare):

  int8_npas:  int8 model, npas delegate forced to claim (row_block at 1/8, dense at 1)
              vs stock int8 (XNNPACK)
  fp32_npas:  float32 model, npas delegate (auto) vs stock fp32 (XNNPACK)

and `int8_vs_fp32_npas` = fp32_npas.npas_ms / int8_npas.npas_ms (not interleaved: two runs).
Writes DESIGN.md's JSON (extra keys: dtype, kernel, claimed). The machine is shared and noisy:
quote ratios, not absolute times.

    python benchmarks/quantization.py --out quant.json [--runs 30] [--threads 1] [--quick]
"""
import argparse
import json
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def build(kind, density, rng):
    import tf_keras as keras
    if kind == "fc1024":
        inp = keras.Input((1024,))
        out = keras.layers.Dense(1024)(inp)
        shape = (1024,)
    elif kind == "conv3x3_256_28":
        inp = keras.Input((28, 28, 256))
        out = keras.layers.Conv2D(256, 3, padding="same")(inp)
        shape = (28, 28, 256)
    else:
        inp = keras.Input((14, 14, 512))
        out = keras.layers.Conv2D(512, 1)(inp)
        shape = (14, 14, 512)
    model = keras.Model(inp, out)
    layer = model.layers[-1]
    k, b = layer.get_weights()
    k = rng.normal(scale=0.05, size=k.shape).astype(np.float32)
    if density < 1:
        m = k.reshape(-1, k.shape[-1])
        for g in range(0, m.shape[1], 16):
            m[rng.random(m.shape[0]) >= density, g:g + 16] = 0
        k = m.reshape(k.shape)
    layer.set_weights([k, rng.normal(scale=0.1, size=b.shape).astype(np.float32)])
    return model, shape


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="quantization.json")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="FC only, 10 runs")
    args = ap.parse_args(argv)
    import npas_keras
    from npas_keras.runtime.benchmark import compare
    kinds = ["fc1024"] if args.quick else ["fc1024", "conv3x3_256_28", "conv1x1_512_14"]
    runs = 10 if args.quick else args.runs
    rng = np.random.default_rng(0)
    cases = []
    for kind in kinds:
        for density in (0.125, 1.0):
            model, shape = build(kind, density, rng)
            rep = rng.normal(size=(16,) + shape).astype(np.float32)
            f32 = npas_keras.export(model, None)
            i8 = npas_keras.export(model, None, quantize="int8", representative_data=rep)
            x8 = rng.integers(-128, 128, size=(1,) + shape, dtype=np.int8)
            force = {"kernel": "row_block" if density < 1 else "dense", "min_sparsity": 0}
            r8 = compare(i8, inputs=[x8], threads=args.threads, runs=runs, delegate_options=force)
            rf = compare(f32, inputs=[rng.normal(size=(1,) + shape).astype(np.float32)],
                         threads=args.threads, runs=runs)
            for dtype, r, kernel in (("int8", r8, force["kernel"]), ("float32", rf, "auto")):
                cases.append({"name": f"{kind}_d{density:g}_{dtype}", "model": kind,
                              "scheme": "block_punched 16-row groups" if density < 1 else "dense",
                              "density": density, "threads": args.threads, "baseline": "xnnpack",
                              "baseline_ms": r["baseline_ms"], "npas_ms": r["npas_ms"],
                              "speedup": r["speedup"], "max_abs_err": r["max_abs_err"],
                              "dtype": dtype, "kernel": kernel, "claimed": r["claimed"]})
            cases[-2]["int8_vs_fp32_npas"] = rf["npas_ms"] / r8["npas_ms"]
            print(f"{kind:16s} d={density:<6g} int8: xnnpack {r8['baseline_ms']:.3f} ms, npas "
                  f"{r8['npas_ms']:.3f} ms (x{r8['speedup']:.2f}, err {r8['max_abs_err']:.0f} LSB)"
                  f" | fp32: xnnpack {rf['baseline_ms']:.3f}, npas {rf['npas_ms']:.3f} ms "
                  f"(x{rf['speedup']:.2f}, claimed {rf['claimed']}) | npas fp32/int8 "
                  f"{rf['npas_ms'] / r8['npas_ms']:.2f}", flush=True)
    out = {"benchmark": "quantization", "machine": platform.processor() or platform.machine(),
           "cases": cases}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
