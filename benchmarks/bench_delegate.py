"""Stock LiteRT (+ default XNNPACK) vs the npas delegate on the same pruned model.

Layers and whole models with random weights, pruned with the package's own schemes, converted
with the TFLite converter; both interpreters run interleaved in one process at the same thread
count (npas_keras.runtime.benchmark.compare) and the result is written as DESIGN.md's JSON.

    python benchmarks/bench_delegate.py                      # layers, 1 and 2 threads
    python benchmarks/bench_delegate.py --suite models       # whole models at 8x compression
    python benchmarks/bench_delegate.py --quick              # a smoke run
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def keras_mod():
    import tf_keras as keras
    return keras


# ---- what is measured -----------------------------------------------------------------------

def layer_models():
    keras = keras_mod()
    L = keras.layers

    def seq(shape, layer):
        return keras.Sequential([keras.Input(shape), layer])

    return {
        "fc_1024x1024": lambda: seq((1024,), L.Dense(1024)),
        "fc_4096x4096": lambda: seq((4096,), L.Dense(4096)),
        "conv3x3_256_28x28": lambda: seq((28, 28, 256), L.Conv2D(256, 3, padding="same")),
        "conv1x1_512_14x14": lambda: seq((14, 14, 512), L.Conv2D(512, 1)),
        "dwconv3x3_144_56x56": lambda: seq((56, 56, 144), L.DepthwiseConv2D(3, padding="same")),
    }


def vgg16_cifar():
    keras = keras_mod()
    L = keras.layers
    x = inp = keras.Input((32, 32, 3))
    for filters, convs in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]:
        for _ in range(convs):
            x = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(512, activation="relu")(x)
    return keras.Model(inp, L.Dense(10)(x))


def gru_1024():
    keras = keras_mod()
    L = keras.layers
    return keras.Sequential([keras.Input((28, 28), batch_size=1),  # static shapes convert
                             L.GRU(1024, return_sequences=True),
                             L.GRU(1024), L.Dense(10)])


def bert_tiny(layers=4, hidden=256, heads=4, seq=128):
    keras = keras_mod()
    L = keras.layers
    x = inp = keras.Input((seq, hidden), batch_size=1)
    for _ in range(layers):
        a = L.MultiHeadAttention(heads, hidden // heads)(x, x)
        x = L.LayerNormalization()(x + a)
        f = L.Dense(4 * hidden, activation="relu")(x)
        x = L.LayerNormalization()(x + L.Dense(hidden)(f))
    return keras.Model(inp, x)


def whole_models():
    keras = keras_mod()
    return {
        "vgg16_cifar": vgg16_cifar,
        "resnet50": lambda: keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3)),
        "mobilenetv2": lambda: keras.applications.MobileNetV2(weights=None,
                                                              input_shape=(224, 224, 3)),
        "gru_1024x2": gru_1024,
        "bert_tiny": bert_tiny,
    }


# ---- pruning and conversion -----------------------------------------------------------------

def pruned_tflite(build, scheme_name, density):
    """Random-weight model -> pruned (package's own scheme) -> stripped -> .tflite bytes."""
    import tensorflow as tf
    import npas_keras
    from npas_keras.schemes import BLOCK_SCHEMES, Scheme

    model = build()
    if density < 1.0:
        def per_layer(layer):
            from npas_keras.layers import prunable_weights
            views = prunable_weights(layer)
            if not views:
                return None
            rows = min(v.matrix_shape[0] for v in views)
            cols = min(v.matrix_shape[1] for v in views)
            if scheme_name in BLOCK_SCHEMES:
                block = (min(16, rows), min(16, cols))
                return Scheme(scheme_name, density=density, block_shape=block)
            return Scheme(scheme_name, density=density)

        model = npas_keras.strip(npas_keras.prune(model, per_layer, verbose=False),
                                 shrink=False, verbose=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return converter.convert()


def machine():
    from npas_keras.latency.machine import describe
    return describe()


def progress(i, n, label):
    width = 30
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {label[:50]:<50}")
    sys.stderr.flush()
    if i == n:
        sys.stderr.write("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=["layers", "models", "all"], default="layers")
    ap.add_argument("--only", nargs="*", help="case names to run (default: all of the suite)")
    ap.add_argument("--schemes", nargs="*", default=["bcr", "block_punched", "unstructured"])
    ap.add_argument("--densities", nargs="*", type=float, default=[1.0, 0.5, 0.25, 0.125])
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--runs", type=int, default=30, help="timed runs per interpreter")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="few runs, one thread, smoke test")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.warmup, args.threads = 5, 1, [1]

    from npas_keras.runtime.benchmark import compare

    cases = []
    if args.suite in ("layers", "all"):
        cases += [(n, b, args.densities) for n, b in layer_models().items()]
    if args.suite in ("models", "all"):
        model_densities = [d for d in args.densities if d in (1.0, 0.125)] or [1.0]
        cases += [(n, b, model_densities) for n, b in whole_models().items()]
    if args.only:
        cases = [c for c in cases if c[0] in args.only]
        if not cases:
            ap.error(f"--only matched no case")

    plan = []
    for name, build, densities in cases:
        for d in densities:
            for s in (["dense"] if d >= 1.0 else args.schemes):
                plan.append((name, build, s, d))

    results = []
    total = len(plan) * len(args.threads)
    step = 0
    for name, build, scheme, density in plan:
        try:
            content = pruned_tflite(build, scheme, density)
        except Exception as exc:  # a model the converter cannot take: say so, measure the rest
            print(f"{name:22s} {scheme:14s} d={density:<6g} skipped: {type(exc).__name__}: "
                  f"{str(exc).splitlines()[0][:120]}", flush=True)
            step += len(args.threads)
            continue
        for threads in args.threads:
            progress(step, total, f"{name} {scheme} {density:g} t{threads}")
            r = compare(content, None, threads=threads, runs=args.runs, warmup=args.warmup)
            step += 1
            results.append({
                "name": f"{name}/{scheme}/d{density:g}/t{threads}", "model": name,
                "scheme": scheme, "density": density, "threads": threads,
                "baseline": "xnnpack", "baseline_ms": r["baseline_ms"], "npas_ms": r["npas_ms"],
                "speedup": r["speedup"], "max_abs_err": r["max_abs_err"],
                "claimed": r.get("claimed"), "model_bytes": len(content),
            })
            progress(step, total, f"{name} {scheme} {density:g} t{threads}")
            print(f"{name:22s} {scheme:14s} d={density:<6g} t={threads}  xnnpack "
                  f"{r['baseline_ms']:8.3f} ms  npas {r['npas_ms']:8.3f} ms  "
                  f"x{r['speedup']:5.2f}  err {r['max_abs_err']:.2e}", flush=True)

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"bench_delegate_{args.suite}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    doc = {"benchmark": "bench_delegate", "suite": args.suite, "machine": machine(),
           "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python"] + sys.argv),
           "runs": args.runs, "cases": results}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
