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
Writes DESIGN.md's JSON (extra keys: dtype, kernel, claimed, speedups: one per --repeat). The
machine is shared and noisy: quote ratios, not absolute times.

    python benchmarks/quantization.py --out quant.json [--runs 30] [--threads 1] [--repeat 1]
        [--quick]

`--suite models` (issue 6) is the whole-model benchmark on Fashion-MNIST (CNN and GRU of
benchmarks/accuracy.py: dense fp32, pruned fp32 8x, pruned int8, pruned mixed 8/4 bits; the GRU
also at the other `--gru-compressions`, default 8 4 2, variants suffixed _4x / _2x; test
accuracy, BOPs, file sizes, stock LiteRT vs npas latency): see models_suite and
docs/quantization.md, "Benchmark". `--quick` runs it on scikit-learn digits as a smoke test.

    python benchmarks/quantization.py --suite models \
        --out benchmarks/results/quantization_models.json
    python benchmarks/quantization.py --table benchmarks/results/quantization_models.json
"""
import argparse
import json
import os
import platform
import shlex
import sys
import time

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


def layers_suite(args):
    """Single layers at density 1/8 and 1 (module docstring)."""
    import npas_keras
    from npas_keras.runtime.benchmark import compare
    kinds = ["fc1024"] if args.quick else ["fc1024", "conv3x3_256_28", "conv1x1_512_14"]
    runs = 10 if args.quick else args.runs
    rng = np.random.default_rng(0)
    cases = []
    load_before = os.getloadavg()
    for kind in kinds:
        for density in (0.125, 1.0):
            model, shape = build(kind, density, rng)
            rep = rng.normal(size=(16,) + shape).astype(np.float32)
            f32 = npas_keras.export(model, None)
            i8 = npas_keras.export(model, None, quantize="int8", representative_data=rep)
            x8 = rng.integers(-128, 128, size=(1,) + shape, dtype=np.int8)
            force = {"kernel": "row_block" if density < 1 else "dense", "min_sparsity": 0}
            xf = rng.normal(size=(1,) + shape).astype(np.float32)
            r8 = repeated(lambda: compare(i8, inputs=[x8], threads=args.threads, runs=runs,
                                          delegate_options=force), args.repeat)
            rf = repeated(lambda: compare(f32, inputs=[xf], threads=args.threads, runs=runs),
                          args.repeat)
            for dtype, r, kernel in (("int8", r8, force["kernel"]), ("float32", rf, "auto")):
                cases.append({"name": f"{kind}_d{density:g}_{dtype}", "model": kind,
                              "scheme": "block_punched 16-row groups" if density < 1 else "dense",
                              "density": density, "threads": args.threads, "baseline": "xnnpack",
                              "baseline_ms": r["baseline_ms"], "npas_ms": r["npas_ms"],
                              "speedup": r["speedup"], "speedups": r["speedups"],
                              "max_abs_err": r["max_abs_err"],
                              "dtype": dtype, "kernel": kernel, "claimed": r["claimed"]})
            cases[-2]["int8_vs_fp32_npas"] = rf["npas_ms"] / r8["npas_ms"]
            print(f"{kind:16s} d={density:<6g} int8: xnnpack {r8['baseline_ms']:.3f} ms, npas "
                  f"{r8['npas_ms']:.3f} ms (x{r8['speedup']:.2f}, err {r8['max_abs_err']:.0f} LSB)"
                  f" | fp32: xnnpack {rf['baseline_ms']:.3f}, npas {rf['npas_ms']:.3f} ms "
                  f"(x{rf['speedup']:.2f}, claimed {rf['claimed']}) | npas fp32/int8 "
                  f"{rf['npas_ms'] / r8['npas_ms']:.2f}", flush=True)
    out = {"benchmark": "quantization", "machine": platform.processor() or platform.machine(),
           "cpu": _cpu_model(),
           "command": "python " + " ".join(shlex.quote(x) for x in
                                           ["benchmarks/quantization.py"] + args.argv),
           "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else None,
           "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg()),
           "cases": cases}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", args.out)
    return out


def repeated(run_compare, n):
    """`compare` run n times (fresh interpreters each time): the median of each figure, and
    every speedup in "speedups". On a shared machine a whole run can land in a slow spell
    that hits the two runtimes unequally; the median over runs is the figure quoted."""
    import statistics
    rs = [run_compare() for _ in range(n)]
    out = dict(rs[0])
    for k in ("baseline_ms", "npas_ms", "speedup"):
        out[k] = statistics.median(r[k] for r in rs)
    out["max_abs_err"] = max(r["max_abs_err"] for r in rs)
    out["speedups"] = [r["speedup"] for r in rs]
    return out


def _cpu_model():
    """The CPU's model name (the machine differs between runs; stock XNNPACK int8 uses AMX
    where the CPU has it, which changes the baseline)."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
            flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
        extra = [x for x in ("avx512_vnni", "avx512vbmi", "amx_int8") if f" {x}" in flags]
        return ", ".join(names[:1] + extra) or None
    except OSError:
        return None


# ------------------------------------------------------------------- models suite (issue 6)
#: Training settings per model: those of the issue 2 accuracy tables (docs/accuracy.md), so the
#: dense fp32 weights are the same training (and come from accuracy.py's cache when present).
MODEL_TRAINING = {"cnn": ["--train-subset", "20000"],
                  "gru": ["--epochs", "10", "--finetune-epochs", "4"]}
SCHEME, COMPRESSION = "block_punched", 8
#: The delegate forced onto its sparse kernel (pruned layers only: min_sparsity still applies).
FORCED = {"kernel": "row_block"}


def _as_input(detail, x):
    """Float images as the model's input type (int8: quantized with the input's scale/zp)."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return np.asarray(x, np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def tflite_accuracy(model_bytes, x, y, delegate, threads=1):
    """(top-1 accuracy, delegate_stats or None) of a .tflite classifier run one image at a time
    (batch 1, as deployed) by stock LiteRT (delegate=False) or with the npas delegate."""
    from npas_keras.runtime import Interpreter, delegate_stats
    interp = Interpreter(model_content=model_bytes, num_threads=threads, delegate=delegate)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    xs = _as_input(inp, x)
    correct = 0
    for i in range(len(xs)):
        interp.set_tensor(inp["index"], xs[i:i + 1])
        interp.invoke()
        correct += int(np.argmax(interp.get_tensor(out["index"])[0]) == y[i])
    return correct / len(xs), (delegate_stats(interp) if delegate else None)


def _timing(model_bytes, x1, args, options=None, baseline_model_content=None):
    from npas_keras.runtime.benchmark import compare
    r = repeated(lambda: compare(model_bytes, inputs=[x1], threads=args.threads, runs=args.runs,
                                 delegate_options=options,
                                 baseline_model_content=baseline_model_content), args.repeat)
    keys = ("baseline_ms", "npas_ms", "speedup", "max_abs_err", "claimed")
    return {k: r[k] for k in keys + (("speedups",) if args.repeat > 1 else ())}


def npas_vs_npas(a_bytes, b_bytes, x, args):
    """The delegate (default options) on two models, invocations alternating A B B A ... in one
    loop: medians and the ratio b / a. Separate compare() runs of the two models minutes apart
    catch this machine in different states (docs/quantization.md, "Speed"); this does not."""
    import statistics
    from npas_keras.runtime import Interpreter
    interps = []
    for content in (a_bytes, b_bytes):
        it = Interpreter(model_content=content, num_threads=args.threads, delegate=True)
        it.allocate_tensors()
        detail = it.get_input_details()[0]
        it.set_tensor(detail["index"], _as_input(detail, x))
        for _ in range(5):
            it.invoke()
        interps.append(it)
    times = ([], [])
    for i in range(args.runs):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            interps[k].invoke()
            times[k].append((time.perf_counter() - t0) * 1e3)
    a_ms, b_ms = statistics.median(times[0]), statistics.median(times[1])
    return {"a_ms": a_ms, "b_ms": b_ms, "speedup": b_ms / a_ms, "runs": args.runs}


def measure_row(kind, variant, path, *, density, weight_bits, bops_total, bops_dense,
                keras_accuracy, test, args, npas_path=None, fp32_path=None, **extra):
    """One case: the exported .tflite's accuracy (stock and delegate), size, BOPs and the
    interleaved stock-vs-delegate latency (delegate default options; pruned rows also forced).
    npas_path: the same model in the npas format (compact NPAS custom ops, 4-bit packed where
    4-bit): its size, its accuracy through the delegate (the only runtime that runs it) and its
    delegate latency against stock LiteRT on the standard file, interleaved. fp32_path: the
    pruned fp32 model, timed through the delegate interleaved with this one (vs_fp32_pruned)."""
    import statistics

    from npas_keras.runtime import Interpreter
    with open(path, "rb") as f:
        model_bytes = f.read()
    x_test, y_test = test
    acc, _ = tflite_accuracy(model_bytes, x_test, y_test, delegate=False, threads=args.threads)
    acc_npas, stats = tflite_accuracy(model_bytes, x_test, y_test, delegate=True,
                                      threads=args.threads)
    stock = Interpreter(model_content=model_bytes, num_threads=args.threads, delegate=False)
    x1 = _as_input(stock.get_input_details()[0], x_test[:1])
    auto = _timing(model_bytes, x1, args)
    forced = _timing(model_bytes, x1, args, FORCED) if density < 1 else None
    row = {"name": f"{kind}_{variant}", "model": kind, "variant": variant,
           "scheme": SCHEME if density < 1 else "dense", "density": round(density, 6),
           "weight_bits": weight_bits, "threads": args.threads, "baseline": "xnnpack", **auto,
           "claimed_by_kernel": stats["claimed_by_kernel"],
           "declined_by_reason": stats["declined_by_reason"], "forced_row_block": forced,
           "keras_accuracy": round(keras_accuracy, 6), "tflite_accuracy": round(acc, 6),
           "tflite_accuracy_npas": round(acc_npas, 6), "bops": int(bops_total),
           "bops_reduction_vs_dense_fp32": round(bops_dense / bops_total, 3),
           "file": path, "file_bytes": os.path.getsize(path), **extra}
    if fp32_path:
        with open(fp32_path, "rb") as f:
            fp32_bytes = f.read()
        vs = [npas_vs_npas(model_bytes, fp32_bytes, x_test[:1], args)
              for _ in range(args.repeat)]
        v = {k: statistics.median(r[k] for r in vs) for k in ("a_ms", "b_ms", "speedup")}
        row["vs_fp32_pruned"] = {"npas_ms": v["a_ms"], "fp32_npas_ms": v["b_ms"],
                                 "speedup": v["speedup"], "runs": args.runs,
                                 **({"speedups": [r["speedup"] for r in vs]}
                                    if args.repeat > 1 else {})}
        print(f"{row['name']:<20} vs pruned fp32, both through the delegate, interleaved: "
              f"{v['a_ms']:.3f} vs {v['b_ms']:.3f} ms (x{v['speedup']:.2f})", flush=True)
    if npas_path:
        with open(npas_path, "rb") as f:
            npas_bytes = f.read()
        try:
            acc_c, stats_c = tflite_accuracy(npas_bytes, x_test, y_test, delegate=True,
                                             threads=args.threads)
            r = _timing(npas_bytes, x1, args, baseline_model_content=model_bytes)
        except Exception as e:  # noqa: BLE001 - recorded in the row, the suite goes on
            row["npas_format"] = {"file": npas_path, "file_bytes": len(npas_bytes),
                                  "error": f"{type(e).__name__}: {e}"[:2000]}
            print(f"{row['name'] + ' npas':<20} {len(npas_bytes)} B, does not run: "
                  f"{row['npas_format']['error'][:300]}", flush=True)
            npas_path = None
    if npas_path:
        row["npas_format"] = {
            "file": npas_path, "file_bytes": len(npas_bytes),
            "tflite_accuracy_npas": round(acc_c, 6),
            "claimed_by_kernel": stats_c["claimed_by_kernel"],
            **r}
        print(f"{row['name'] + ' npas':<20} acc (npas) {acc_c:.4f}  {len(npas_bytes)} B  "
              f"xnnpack (standard file) {r['baseline_ms']:.3f} ms  npas {r['npas_ms']:.3f} ms "
              f"(x{r['speedup']:.2f}, claimed {r['claimed']})", flush=True)
    print(f"{row['name']:<20} acc {acc:.4f} (npas {acc_npas:.4f}, keras {keras_accuracy:.4f})"
          f"  BOPs {bops_total:.3e} (/{row['bops_reduction_vs_dense_fp32']:.1f})"
          f"  {row['file_bytes']} B  xnnpack {auto['baseline_ms']:.3f} ms  npas "
          f"{auto['npas_ms']:.3f} ms (x{auto['speedup']:.2f}, claimed {auto['claimed']})"
          + ("" if forced is None else f"  forced npas {forced['npas_ms']:.3f} ms "
             f"(x{forced['speedup']:.2f})"), flush=True)
    return row


def batch_one(model, unroll=True):
    """The model with a batch-1 input, as deployed (TFLite lowers a Keras GRU's tensor-list loop
    only with a static batch size), and with unroll=True its RNN layers unrolled: the same
    weights and math as one FULLY_CONNECTED pair per time step instead of a WHILE loop, whose
    int8 calibration crashes TFLite's converter (SIGSEGV)."""
    import tf_keras as keras
    rnn = [l for l in model.layers if isinstance(l, keras.layers.RNN)]
    if unroll and rnn:
        def clone(layer):
            cfg = layer.get_config()
            if isinstance(layer, keras.layers.RNN):
                cfg["unroll"] = True
            return layer.__class__.from_config(cfg)
        unrolled = keras.models.clone_model(model, clone_function=clone)
        unrolled.set_weights(model.get_weights())
        if hasattr(model, "npas_schemes"):
            unrolled.npas_schemes = model.npas_schemes
        model = unrolled
    inp = keras.Input(model.input_shape[1:], batch_size=1)
    fixed = keras.Model(inp, model(inp), name=model.name + "_b1")
    if hasattr(model, "npas_schemes"):
        fixed.npas_schemes = model.npas_schemes
    return fixed


#: The child of export_int8_isolated: loads the saved model and exports it to full-integer int8.
_EXPORT_CHILD = """
import json, sys, numpy as np
import tf_keras as keras, tensorflow_model_optimization as tfmot, npas_keras
from npas_keras.layers import custom_objects
base, path = sys.argv[1:]
with tfmot.quantization.keras.quantize_scope(custom_objects()):
    model = keras.models.load_model(base + ".h5", compile=False)
with open(base + ".json") as f:
    spec = json.load(f)
if spec["schemes"]:
    model.npas_schemes = spec["schemes"]
npas_keras.export(model, path, quantize="int8", representative_data=np.load(base + ".npy"),
                  **spec["export"])
"""


def export_int8_isolated(model, representative_data, path, timeout_s=1200, **export_kwargs):
    """npas_keras.export(model, path, quantize="int8", **export_kwargs (format, weight_bits),
    ...) in a fresh child process (the model
    saved as .h5), because TFLite's calibrator can crash the whole process (SIGSEGV on the Keras
    GRU's while loop). Spawned, not forked: a fork of a process running TensorFlow's threads
    deadlocks in the child. Returns None on success, else the error: exit signal/status or
    timeout and the child's stderr tail."""
    import signal
    import subprocess
    base = path + ".in"
    for p in (path, base + ".h5"):
        if os.path.exists(p):
            os.remove(p)
    model.save(base + ".h5", include_optimizer=False)
    np.save(base + ".npy", np.asarray(representative_data, np.float32))
    with open(base + ".json", "w") as f:
        json.dump({"schemes": getattr(model, "npas_schemes", None) or {},
                   "export": export_kwargs}, f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    try:
        r = subprocess.run([sys.executable, "-c", _EXPORT_CHILD, base, path], env=env,
                           capture_output=True, text=True, errors="replace", timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        what, err = f"timed out after {timeout_s} s", e.stderr or ""
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
    else:
        if r.returncode == 0 and os.path.exists(path):
            return None
        err = r.stderr
        what = (f"the converter process died with {signal.Signals(-r.returncode).name}"
                if r.returncode < 0 else
                f"the converter process exited with status {r.returncode}")
    with open(path + ".stderr", "w") as f:
        f.write(err)
    lines = [ln for ln in err.splitlines()
             if ln.strip() and not ln.startswith(("WARNING", "W0000", "I0000", "E0000", "loc("))]
    return what + ":\n" + "\n".join(lines[-25:])[-3000:]


def compressions(args, kind):
    """Compressions of the pruned rows of `kind`: --gru-compressions for the GRU (the first one
    gets the plain variant names), COMPRESSION (8x) otherwise."""
    return list(args.gru_compressions) if kind == "gru" else [COMPRESSION]


def pruned_rows(kind, comp, first, runner, a, accuracy, x_rep, path, bops_dense, cases, keep,
                args, common):
    """Pruned fp32, int8 and mixed rows of one model at one compression, appended to `cases`.
    Variant names carry a suffix (`pruned_int8_2x`) unless `comp` is COMPRESSION."""
    import npas_keras
    from npas_keras import quantization as q
    sfx = "" if comp == COMPRESSION else f"_{comp}x"
    t0 = time.time()
    smap = accuracy.scheme_map(runner.build(kind), kind, SCHEME, comp)
    pruned, _ = runner.run_schedule(kind, smap, 1.0 - 1.0 / comp)
    density, leaked = accuracy.measured_density(pruned)
    stripped = npas_keras.strip(pruned, verbose=False)
    runner.compile(stripped, a.finetune_lr)
    prune_seconds = round(time.time() - t0, 1)
    extra = dict(compression=comp, prune_epochs=a.finetune_epochs,
                 prune_seconds=prune_seconds)
    if keep is not None:
        keep[(kind, "pruned_fp32" + sfx)] = stripped
    cases.append(measure_row(
        kind, "pruned_fp32" + sfx, npas_keras.export(batch_one(stripped),
                                                     path("pruned_fp32" + sfx)),
        density=density, weight_bits=32, bops_dense=bops_dense,
        bops_total=q.bops(stripped, bits=(32, 32))["total"],
        keras_accuracy=runner.evaluate(stripped), nonzeros_at_masked_positions=leaked,
        **extra, **common))

    # pruning-preserving QAT -> full-integer int8. Where tfmot cannot annotate a layer (it
    # has no quantize config for GRU), the stripped model is quantized post-training
    # instead (same symmetric per-channel int8 weights, zeros exact, no QAT fine-tuning).
    t0, qat, method = time.time(), None, f"PQAT (tfmot prune-preserving), {args.qat_epochs} epoch(s)"
    try:
        try:
            qat = q.prune_preserving_qat(stripped)
        except RuntimeError as e:
            if "is not supported" not in str(e):
                raise
            method = ("post-training full-integer int8, no QAT: tfmot PQAT refused the model "
                      f"({str(e).splitlines()[0][:200]})")
        if qat is not None:
            runner.compile(qat, args.qat_lr)
            runner.fit(qat, args.qat_epochs)
        int8_src = qat if qat is not None else stripped
        if first and any(isinstance(l, runner.keras.layers.RNN) for l in int8_src.layers):
            # the RNN as a WHILE loop (not unrolled): recorded, failed or not
            loop_error = export_int8_isolated(batch_one(int8_src, unroll=False), x_rep,
                                              path("pruned_int8_loop"))
            cases.append(failed(kind, "pruned_int8_loop", "export int8 (TFLite converter)",
                                loop_error, int8_method=method) if loop_error else
                         {"name": f"{kind}_pruned_int8_loop", "model": kind,
                          "variant": "pruned_int8_loop", "converted": True,
                          "file_bytes": os.path.getsize(path("pruned_int8_loop"))})
        stage, error = "export int8 (TFLite converter)", export_int8_isolated(
            batch_one(int8_src), x_rep, path("pruned_int8" + sfx))
        if not error:
            stage, error = "export int8, npas format", export_int8_isolated(
                batch_one(int8_src), x_rep, path("pruned_int8_npas" + sfx), format="npas")
    except Exception as e:  # noqa: BLE001 - recorded in the JSON, the suite goes on
        stage, error = "prune_preserving_qat", f"{type(e).__name__}: {e}"[:3000]
    if error:
        cases.append(failed(kind, "pruned_int8" + sfx, stage, error, int8_method=method,
                            compression=comp))
    else:
        if keep is not None:
            keep[(kind, "pruned_int8" + sfx)] = int8_src
        cases.append(measure_row(
            kind, "pruned_int8" + sfx, path("pruned_int8" + sfx), density=density,
            weight_bits=8, bops_total=q.bops(stripped, bits=8)["total"], bops_dense=bops_dense,
            keras_accuracy=runner.evaluate(int8_src), int8_method=method,
            npas_path=path("pruned_int8_npas" + sfx), fp32_path=path("pruned_fp32" + sfx),
            qat_seconds=round(time.time() - t0, 1),
            int8_weight_zeros=[{k: r[k] for k in ("op", "size", "zeros")}
                               for r in q.int8_weight_zeros(
                                   open(path("pruned_int8" + sfx), "rb").read())],
            **extra, **common))

    # mixed precision: per-layer 8/4-bit weights (post-training, apply_bits puts the 4-bit
    # layers on their grid, recurrent cells included), exported with weight_bits: standard int8
    # file (4-bit layers stored exactly as int8 k with scale s) and npas format (4-bit packed)
    choice = q.select_bits(stripped, budget=args.mixed_budget)
    stage, error, mixed, t0 = "apply_bits", None, None, time.time()
    try:
        mixed = q.apply_bits(stripped, choice["bits"])
    except ValueError as e:
        error = str(e)
    if not error and args.mixed_qat_epochs > 0:
        # QAT on the chosen grids (bits_qat, straight-through estimator) from the float model;
        # the post-training copy's accuracy is kept for comparison
        runner.compile(mixed, a.finetune_lr)
        extra["keras_accuracy_post_training"] = round(runner.evaluate(mixed), 6)
        stage = "bits_qat"
        try:
            mixed = runner.keras.models.clone_model(stripped)
            mixed.set_weights(stripped.get_weights())
            runner.compile(mixed, args.qat_lr)
            runner.fit(mixed, args.mixed_qat_epochs,
                       callbacks=[q.bits_qat(mixed, choice["bits"])])
        except Exception as e:  # noqa: BLE001 - recorded in the JSON, the suite goes on
            error, mixed = f"{type(e).__name__}: {e}"[:3000], None
        extra["mixed_method"] = (f"bits_qat (straight-through estimator on the 8/4-bit grids, "
                                 f"zeros frozen), {args.mixed_qat_epochs} epoch(s) at lr "
                                 f"{args.qat_lr}")
        extra["mixed_qat_seconds"] = round(time.time() - t0, 1)
    elif not error:
        extra["mixed_method"] = "apply_bits (post-training fake quantization)"
    if not error:
        stage, error = "export int8 (TFLite converter)", export_int8_isolated(
            batch_one(mixed), x_rep, path("pruned_mixed" + sfx), weight_bits=choice["bits"])
    if not error:
        stage, error = "export int8 + 4-bit, npas format", export_int8_isolated(
            batch_one(mixed), x_rep, path("pruned_mixed_npas" + sfx), format="npas",
            weight_bits=choice["bits"])
        npas_path = None if error else path("pruned_mixed_npas" + sfx)
        if error:   # the standard file is measured; the npas one's failure goes in the row
            extra["npas_format"] = {"error": error[:2000]}
            error = None
    if mixed is not None:
        runner.compile(mixed, a.finetune_lr)
    if error:
        cases.append(failed(kind, "pruned_mixed" + sfx, stage, error,
                            weight_bits=choice["bits"], compression=comp,
                            keras_accuracy=None if mixed is None else round(
                                runner.evaluate(mixed), 6)))
    else:
        if keep is not None:
            keep[(kind, "pruned_mixed" + sfx)] = mixed
        cases.append(measure_row(
            kind, "pruned_mixed" + sfx, path("pruned_mixed" + sfx), density=density,
            weight_bits=choice["bits"], bops_total=choice["bops"], bops_dense=bops_dense,
            keras_accuracy=runner.evaluate(mixed), mixed_bops_ratio=round(choice["ratio"], 4),
            npas_path=npas_path, fp32_path=path("pruned_fp32" + sfx), **extra, **common))


def failed(kind, variant, stage, error, **extra):
    """The row of a variant that could not be built or converted (the suite goes on)."""
    print(f"{kind}_{variant} failed at {stage}: {error[:400]}", flush=True)
    return {"name": f"{kind}_{variant}", "model": kind, "variant": variant, "stage": stage,
            "error": error, **extra}


def readings(cases):
    """The issue 6 targets per model and compression (key "gru" for the 8x rows, "gru 2x" for
    the rows with suffix _2x; None where a row is missing), and per model whether any
    compression meets the BOPs target. Speed targets are judged on our sparse kernels (the
    delegate forced to claim, "forced"); the delegate's own choice ("auto", it may leave layers
    to the runtime) is listed beside."""
    out = {}
    for kind in sorted({c["model"] for c in cases}):
        mine = [c for c in cases if c["model"] == kind]
        dense = next((c for c in mine if c["variant"] == "dense_fp32" and "error" not in c),
                     None)
        sfxs = sorted({c["variant"][len("pruned_fp32"):] for c in mine
                       if c["variant"].startswith("pruned_fp32")}, key=lambda x: (x != "", x))
        any_bops = []
        for sfx in sfxs:
            rows = {c["variant"][:len(c["variant"]) - len(sfx)] if sfx else c["variant"]: c
                    for c in mine if "error" not in c and c["variant"].endswith(sfx)
                    and (sfx or not c["variant"][-1] == "x")}
            p32, p8, mixed = (rows.get(v) for v in ("pruned_fp32", "pruned_int8",
                                                    "pruned_mixed"))
            r = {"compression": (p32 or {}).get("compression", COMPRESSION)}
            if p32 and p8 and "tflite_accuracy" in p8:
                f32, f8 = p32["forced_row_block"], p8["forced_row_block"]
                r["int8_npas_vs_fp32_npas_forced"] = round(f32["npas_ms"] / f8["npas_ms"], 3)
                r["int8_npas_vs_fp32_npas_auto"] = round(p32["npas_ms"] / p8["npas_ms"], 3)
                r["int8_npas_vs_stock_int8_forced"] = round(f8["speedup"], 3)
                r["int8_npas_vs_stock_int8_auto"] = round(p8["speedup"], 3)
                if "vs_fp32_pruned" in p8:
                    r["int8_npas_vs_fp32_npas_interleaved"] = round(
                        p8["vs_fp32_pruned"]["speedup"], 3)
                if "speedup" in p8.get("npas_format", {}):
                    r["int8_npas_format_vs_stock_int8"] = round(p8["npas_format"]["speedup"], 3)
                r["int8_accuracy_minus_fp32_pruned"] = round(
                    p8["tflite_accuracy"] - p32["tflite_accuracy"], 6)
            for name, row in (("fp32_pruned", p32), ("int8", p8), ("mixed", mixed)):
                if dense and row and "tflite_accuracy" in row:
                    r[f"{name}_bops_reduction"] = row["bops_reduction_vs_dense_fp32"]
                    r[f"{name}_accuracy_minus_dense_fp32"] = round(
                        row["tflite_accuracy"] - dense["tflite_accuracy"], 6)

            def met(key, ok):
                return None if key not in r else bool(ok(r[key]))
            bops_ok = [r[f"{n}_bops_reduction"] >= 30
                       and r[f"{n}_accuracy_minus_dense_fp32"] >= -0.01
                       for n in ("int8", "mixed") if f"{n}_bops_reduction" in r]
            any_bops += bops_ok
            # Speed targets on the delegate's own choice (auto), which is what a user runs
            # (forced = kernel=row_block, which also leaves the cin=1 conv to XNNPACK); against
            # fp32 from the interleaved timing where the row has one.
            vs_fp32 = ("int8_npas_vs_fp32_npas_interleaved"
                       if "int8_npas_vs_fp32_npas_interleaved" in r
                       else "int8_npas_vs_fp32_npas_auto")
            r["targets"] = {
                "int8 sparse >= 1.5x our fp32 sparse":
                    met(vs_fp32, lambda v: v >= 1.5),
                "int8 sparse >= 4x stock int8 XNNPACK":
                    met("int8_npas_vs_stock_int8_auto", lambda v: v >= 4),
                "int8 accuracy within 0.5 points of fp32 pruned":
                    met("int8_accuracy_minus_fp32_pruned", lambda v: v >= -0.005),
                "BOPs reduction >= 30x at <= 1 point loss vs dense fp32":
                    any(bops_ok) if bops_ok else None}
            out[kind + (f" {sfx[1:]}" if sfx else "")] = r
        if len(sfxs) > 1:
            out[kind + " (any compression)"] = {
                "BOPs reduction >= 30x at <= 1 point loss vs dense fp32":
                    any(any_bops) if any_bops else None}
    return out


def models_suite(args, keep=None):
    """Dense fp32 -> block_punched 8x (GRU: each of --gru-compressions; accuracy.py's schedule
    from the same dense weights) -> pruning-preserving QAT int8
    (post-training int8 where tfmot refuses the model: GRU), and 8/4-bit mixed precision
    (select_bits + apply_bits, exported with weight_bits: standard int8 file and 4-bit packed
    npas file), per model; one row each (docs/quantization.md, "Benchmark"). A variant that
    cannot be built or converted is a row with its stage and error. `keep` (a dict) receives
    the Keras models per (kind, variant), for tests."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import accuracy
    import npas_keras
    from npas_keras import quantization as q

    os.makedirs(args.model_dir, exist_ok=True)
    doc = {"benchmark": "quantization_models", "machine": accuracy.machine(),
           "command": "python " + " ".join(shlex.quote(x) for x in
                                           ["benchmarks/quantization.py"] + args.argv),
           "settings": {}, "cases": [], "notes": {}}
    if args.append and os.path.exists(args.out):   # keep the other models' rows of --out
        with open(args.out) as f:
            prev = json.load(f)
        doc["cases"] = [c for c in prev["cases"] if c["model"] not in args.models]
        doc["settings"] = {k: v for k, v in prev["settings"].items() if k not in args.models}
        doc["earlier_commands"] = prev.get("earlier_commands", []) + [prev["command"]]
    cases = doc["cases"]

    def write():
        doc["readings"] = readings(cases)
        if args.out:
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=1)
            os.replace(tmp, args.out)

    for kind in args.models:
        argv = (["--models", kind, "--keras-verbose", str(args.keras_verbose)]
                + (["--quick"] if args.quick else MODEL_TRAINING[kind])
                + shlex.split(args.train_args))
        a = accuracy.parse_args(argv)
        runner = accuracy.Runner(a)
        test, x_rep = (runner.xt, runner.yt), runner.x[:args.calibration]
        comps = compressions(args, kind)
        doc["dataset"] = runner.dataset
        doc["settings"][kind] = {
            "accuracy_py_args": argv, "train_images": len(runner.x),
            "test_images": len(runner.xt), "dense_epochs": a.epochs,
            "prune_epochs": a.finetune_epochs, "qat_epochs": args.qat_epochs,
            "qat_lr": args.qat_lr, "batch_size": a.batch_size, "scheme": SCHEME,
            "compression": comps[0], "compressions": comps, "mixed_budget": args.mixed_budget,
            "calibration_images": len(x_rep), "tf_intra_op_threads": 1,
            "load_before": os.getloadavg()[0], "machine": accuracy.machine()}
        path = lambda v: os.path.join(args.model_dir, f"{kind}_{v}.tflite")  # noqa: E731
        common = dict(test=test, args=args)

        dense = runner.fresh_dense(kind)
        runner.compile(dense, a.lr)
        dense_rows = q.summary(dense, print_fn=None)    # every weight layer, dense MACs
        bops_dense = q.bops([{"layer": r["layer"], "macs": r["macs_dense"]}
                             for r in dense_rows], bits=(32, 32))["total"]
        if keep is not None:
            keep[(kind, "dense_fp32")] = dense
        cases.append(measure_row(
            kind, "dense_fp32", npas_keras.export(batch_one(dense), path("dense_fp32")),
            density=1.0, compression=1,
            weight_bits=32, bops_total=bops_dense, bops_dense=bops_dense,
            keras_accuracy=runner.evaluate(dense), **common))
        write()
        for comp in comps:
            pruned_rows(kind, comp, comp == comps[0], runner, a, accuracy, x_rep, path,
                        bops_dense, cases, keep, args, common)
            write()
        doc["settings"][kind]["load_after"] = os.getloadavg()[0]
        runner.keras.backend.clear_session()
    doc["notes"] = {
        "accuracy": "tflite_accuracy: the exported file run image by image by stock LiteRT; "
                    "tflite_accuracy_npas: the same with the npas delegate; keras_accuracy: the "
                    "Keras model before export",
        "bops": "bops.py: MACs of kept weights x weight bits x activation bits (fp32 = 32x32); "
                "dense fp32 MACs from npas_keras.summary's macs_dense of the same layers",
        "latency": "compare(): stock LiteRT (XNNPACK) vs npas delegate on the same file, "
                   "interleaved, median, batch 1; forced_row_block = delegate option "
                   "kernel=row_block. int8_npas_vs_fp32_npas divides medians of two separate "
                   "runs (not interleaved with each other)",
        "mixed": "select_bits (8/4-bit weights per layer, BOPs budget), then mixed_method: "
                 "bits_qat fine-tuning of the stripped fp32 model on those grids "
                 "(keras_accuracy_post_training: apply_bits alone, no QAT), "
                 "exported with export(weight_bits=bits): the standard file stores 4-bit "
                 "layers exactly as int8 values k with scale s; npas_format is the npas export "
                 "(compact NPAS custom ops, 4-bit values packed two per byte), run only by the "
                 "delegate, timed against stock LiteRT on the standard file; BOPs count the "
                 "chosen bits (8-bit activations)",
        "int8": "int8_method says how: tfmot PQAT where tfmot can annotate the model, else "
                "post-training full-integer int8 of the stripped model (GRU: tfmot has no "
                "quantize config for it). npas_format: the same int8 model in the npas "
                "export format (compact NPAS custom ops)",
        "gru_export": "GRU models are exported with the GRU unrolled (batch_one): the WHILE "
                      "loop form crashes TFLite's int8 calibrator (row pruned_int8_loop)"}
    write()
    return doc


def retime_suite(args):
    """--retime: every row of --out (of --models) measured again from its saved .tflite files --
    accuracy through stock LiteRT and the delegate, latency, vs_fp32_pruned, the npas-format
    file -- without training or exporting again: how a delegate change moves the same models.
    Rows whose files are gone stay as they were; the others get "retimed": true."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import accuracy
    with open(args.out) as f:
        doc = json.load(f)
    for kind in args.models:
        rows = [(i, c) for i, c in enumerate(doc["cases"])
                if c["model"] == kind and os.path.exists(c.get("file", ""))]
        dense = [c for _, c in rows if c["variant"] == "dense_fp32"]
        if not rows or not dense:
            print(f"--retime: no {kind} rows with their files in {args.out}", flush=True)
            continue
        runner = accuracy.Runner(accuracy.parse_args(doc["settings"][kind]["accuracy_py_args"]))
        for i, row in rows:
            # the pruned fp32 file of the same compression (pruned_int8_4x -> pruned_fp32_4x)
            fp32 = (row["file"].replace("_int8", "_fp32").replace("_mixed", "_fp32")
                    if "vs_fp32_pruned" in row else None)
            npas = row.get("npas_format", {}).get("file")
            new = measure_row(
                kind, row["variant"], row["file"], density=row["density"],
                weight_bits=row["weight_bits"], bops_total=row["bops"],
                bops_dense=dense[0]["bops"], keras_accuracy=row["keras_accuracy"],
                test=(runner.xt, runner.yt), args=args,
                npas_path=npas if npas and os.path.exists(npas) else None, fp32_path=fp32)
            doc["cases"][i] = {**row, **new, "retimed": True}
    doc.setdefault("retimed", []).append({
        "command": "python " + " ".join(shlex.quote(x) for x in
                                        ["benchmarks/quantization.py"] + args.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": accuracy.machine(), "load_before": os.getloadavg()[0]})
    doc["readings"] = readings(doc["cases"])
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, args.out)
    return doc


def table(path):
    """Markdown table of a --suite models JSON (docs/quantization.md, Benchmark)."""
    with open(path) as f:
        doc = json.load(f)
    lines = ["| model | variant | w bits | density | acc % (LiteRT) | acc % (npas) | BOPs | BOPs "
             "reduction | file KB | XNNPACK ms | npas ms (auto) | x | npas ms (forced) | x | "
             "npas-format file KB, acc %, ms, x |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["cases"]:
        if "error" in r:
            first = r["error"].splitlines()[0]
            lines.append(f"| {r['model']} | {r['variant']} | | | failed at {r['stage']}: "
                         f"{first} | | | | | | | | | | |")
            continue
        if "tflite_accuracy" not in r:     # converted only (no measurement)
            continue
        bits = r["weight_bits"]
        bits = "/".join(str(b) for b in sorted(set(bits.values()), reverse=True)) \
            if isinstance(bits, dict) else str(bits)
        f = r.get("forced_row_block")
        lines.append(
            f"| {r['model']} | {r['variant']} | {bits} | {r['density']:.3f} | "
            f"{100 * r['tflite_accuracy']:.2f} | {100 * r['tflite_accuracy_npas']:.2f} | "
            f"{r['bops']:.3g} | {r['bops_reduction_vs_dense_fp32']:.1f}x | "
            f"{r['file_bytes'] / 1024:.0f} | {r['baseline_ms']:.3f} | {r['npas_ms']:.3f} "
            f"({r['claimed']} claimed) | {r['speedup']:.2f} | "
            + ("- | - |" if f is None else f"{f['npas_ms']:.3f} | {f['speedup']:.2f} |")
            + ("" if "npas_format" not in r else
               " {}, not run: {} |".format(
                   "{:.0f}".format(r["npas_format"]["file_bytes"] / 1024)
                   if "file_bytes" in r["npas_format"] else "not written",
                   r["npas_format"]["error"].replace("\n", " ")[:120])
               if "error" in r["npas_format"] else
               " {file_bytes_kb:.0f}, {acc:.2f}, {npas_ms:.3f}, {speedup:.2f} |".format(
                   file_bytes_kb=r["npas_format"]["file_bytes"] / 1024,
                   acc=100 * r["npas_format"]["tflite_accuracy_npas"], **r["npas_format"])))
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--table":
        print(table(argv[1]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("layers", "models"), default="layers")
    ap.add_argument("--out", default=None,
                    help="JSON path (default quantization.json; --suite models: "
                         "benchmarks/results/quantization_models.json)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs (layers 30, models 100)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1,
                    help="compare() runs per case (models: per timing); medians are reported")
    ap.add_argument("--quick", action="store_true",
                    help="layers: FC only, 10 runs; models: scikit-learn digits, small models")
    g = ap.add_argument_group("--suite models")
    g.add_argument("--models", nargs="+", choices=("cnn", "gru"), default=["cnn", "gru"])
    g.add_argument("--qat-epochs", type=int, default=1)
    g.add_argument("--qat-lr", type=float, default=1e-4)
    g.add_argument("--mixed-qat-epochs", type=int, default=1,
                   help="mixed rows: epochs of bits_qat fine-tuning at --qat-lr (0: post-training "
                        "apply_bits only)")
    g.add_argument("--mixed-budget", type=float, default=0.6,
                   help="select_bits budget: BOPs <= budget x BOPs(all 8-bit)")
    g.add_argument("--calibration", type=int, default=500,
                   help="training images used as int8 representative data")
    g.add_argument("--train-args", default="",
                   help="extra benchmarks/accuracy.py options, e.g. '--epochs 1 --test-subset 200'")
    g.add_argument("--model-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                        "npas_quantization_models"))
    g.add_argument("--keras-verbose", type=int, default=2)
    g.add_argument("--gru-compressions", type=int, nargs="+", default=[8, 4, 2],
                   help="GRU pruned rows at these compressions (block_punched; the first one's "
                        "variants have plain names, the others a _<c>x suffix)")
    g.add_argument("--append", action="store_true",
                   help="keep the rows of models not in --models from the existing --out")
    g.add_argument("--retime", action="store_true",
                   help="measure the rows of --out again from their saved files (no training, "
                        "no export): after a delegate change")
    args = ap.parse_args(argv)
    args.argv = argv
    if args.suite == "layers":
        args.out = args.out or "quantization.json"
        args.runs = args.runs or 30
        layers_suite(args)
    else:
        args.out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "results", "quantization_models.json")
        args.runs = args.runs or 100
        (retime_suite if args.retime else models_suite)(args)
        print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
