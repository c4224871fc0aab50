"""Joint pruning + mixed-precision search (issue 6: bit widths as NPAS search dimensions).

NPASTuner on the Fashion-MNIST search CNN (`npas_keras.tuner.search_cnn`: width, block2
operator, per-layer scheme and rate) with three weight-bit spaces, the same int8 latency budget
(measured through the delegate on each trial's int8 export), the same BOPs budget, trials,
epochs and seeds:

  joint  weight_bits=(8, 4): each layer's width is an hp searched with its scheme and rate
  joint_pot  the same on power-of-two quantization steps (NPASTuner(power_of_two=True))
  int8   weight_bits=(8,):   pruning only, every layer 8-bit
  int4   weight_bits=(4,):   pruning only, every layer 4-bit
  sequential  prune first, then pick bits: the int8 search without the BOPs budget, then on its
         best trial `quantization.select_bits` (greedy BOPs per weight error) lowers layers to
         4 bits until the BOPs budget is met, and `bits_qat` fine-tunes `--qat-epochs` on those
         grids (infeasible when even all-4-bit is over the budget; a best trial already within
         the BOPs budget is taken as it is)

Every trial: one-shot prune from the pre-trained dense model, `--epochs` of fine-tuning with the
masks, `--qat-epochs` of `bits_qat` on its grids, then its int8 export is timed. The budgets:
latency `--budget-fraction` x the dense model's int8 latency (delegate), BOPs the dense fp32
model's / `--bops-reduction`. Each run's best feasible trial is exported full-integer (its
weight_bits), its test accuracy taken through the delegate on the first `--test` test images and
on stock LiteRT, and the file timed against stock LiteRT + XNNPACK on it, interleaved.

    taskset -c 0 python benchmarks/mixed_search.py --seeds 0,1 \
        --out benchmarks/results/mixed_search_fashion_mnist.json
    python benchmarks/mixed_search.py --dataset digits --limit 800 --trials 2 --epochs 1  # smoke

Writes JSON {"benchmark": "mixed_search", "machine", "command", "budget_ms", "bops_budget",
"dense": {...}, "runs": [{"method", "seed", "best": {val accuracy, latency, bops, bits,
mapping, test accuracy npas / litert, compare()}, "points": [...]}], "summary": {method:
{mean / per-seed best val and test accuracy, BOPs reduction}}}.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPACES = {"joint": (8, 4), "joint_pot": (8, 4), "int8": (8,), "int4": (4,), "sequential": (8,)}


def test_accuracy(model_bytes, xt, yt, delegate):
    """Top-1 accuracy of an int8 file, image by image (batch 1), with or without the delegate."""
    import numpy as np

    from npas_keras.runtime import Interpreter

    interp = Interpreter(model_content=model_bytes, num_threads=1, delegate=delegate)
    interp.allocate_tensors()
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zero = d_in["quantization"]
    hits = 0
    for i in range(len(xt)):
        q = np.clip(np.round(xt[i:i + 1] / scale + zero), -128, 127).astype(np.int8)
        interp.set_tensor(d_in["index"], q)
        interp.invoke()
        hits += int(interp.get_tensor(d_out["index"]).argmax() == yt[i])
    return hits / len(xt)


def run(method, build, dense, data_, args, table, budget_ms, bops_budget, seed, work):
    import npas_keras
    from npas_keras.runtime.benchmark import compare
    from npas_keras.tuner import NPASTuner

    x, y, xv, yv, xt, yt = data_
    sequential = method == "sequential"
    tuner = NPASTuner(build, objective="val_accuracy", latency_budget_ms=budget_ms,
                      max_trials=args.trials, pretrained=dense, fine_tune_epochs=args.epochs,
                      qat_epochs=args.qat_epochs, weight_bits=SPACES[method],
                      bops_budget=None if sequential else bops_budget, batch_size=64,
                      power_of_two=method == "joint_pot",
                      latency_table=table, seed=seed + 1, directory=work, project_name="p",
                      oracle_kwargs={"pool_size": 16, "gp_restarts": 1,
                                     "num_initial_points": min(3, args.trials)})
    tuner.search(x, y, validation_data=(xv, yv), verbose=0)
    points = [{"accuracy": float(r["score"]), "latency_ms": float(r["latency_ms"]),
               "bops": float(r["bops"]), "feasible": bool(r["feasible"]), "values": r["values"]}
              for r in tuner.results() if r["score"] is not None]
    for p in points:
        print(f"  {method}: acc {p['accuracy']:.4f} {p['latency_ms']:.4f} ms "
              f"{p['bops']:.3g} BOPs", file=sys.stderr, flush=True)
    best = None
    trials = tuner.get_best_trials(1)
    if trials:
        trial = trials[0]
        model, bits = tuner.load_model(trial), tuner.load_bits(trial)
        val_accuracy = float(trial.score)
        latency_ms = float(trial.metrics.get_last_value("latency_ms"))
        trial_bops = float(trial.metrics.get_last_value("bops"))
        if sequential:
            model, bits, val_accuracy, trial_bops = bits_after_search(
                tuner, trial, model, bops_budget, x, y, xv, yv, args.qat_epochs)
        content = npas_keras.export(model, None, quantize="int8",
                                    representative_data=x[:200], weight_bits=bits)
        timing = compare(content, threads=1, runs=args.runs, warmup=10)
        if sequential:
            latency_ms = tuner.latency_fn(content)
        best = {"trial_id": trial.trial_id, "val_accuracy": val_accuracy,
                "latency_ms": latency_ms, "bops": trial_bops, "bits": bits,
                "feasible": bool(trial_bops <= bops_budget and latency_ms <= budget_ms),
                "values": dict(trial.hyperparameters.values),
                "mapping": {k: None if v is None else v.to_json()
                            for k, v in tuner.load_mapping(trial).items()},
                "test_accuracy_npas": test_accuracy(content, xt, yt, True),
                "test_accuracy_litert": test_accuracy(content, xt, yt, False),
                "file_bytes": len(content), "compare": timing}
    return points, best, int(tuner.oracle.rejected_count)


def bits_after_search(tuner, trial, model, bops_budget, x, y, xv, yv, qat_epochs):
    """The sequential method's second step on the best int8 trial: `select_bits` down to the BOPs
    budget, then `bits_qat` on those grids from the trial's weights (on their 8-bit grid).
    Returns (model, bits, val accuracy, BOPs)."""
    from npas_keras.quantization import bops, bits_qat, select_bits
    from npas_keras.tuner.tuner import _compile_args

    total = bops(model, 8)["total"]
    choice = select_bits(model, budget=min(1.0, bops_budget / total), candidates=(8, 4))
    bits = dict(choice["bits"])
    if not choice["steps"]:  # within the budget at 8 bits: the trial itself, no extra epoch
        trial_bits = tuner.load_bits(trial)
        return model, trial_bits, float(trial.score), float(bops(model, trial_bits)["total"])
    model.compile(**_compile_args(tuner.hypermodel.build_dense(trial.hyperparameters)))
    if qat_epochs:
        model.fit(x, y, epochs=qat_epochs, batch_size=64, verbose=0,
                  callbacks=[bits_qat(model, bits)])
    else:
        from npas_keras.quantization import apply_bits

        model = apply_bits(model, bits)
        model.compile(**_compile_args(tuner.hypermodel.build_dense(trial.hyperparameters)))
    acc = float(model.evaluate(xv, yv, verbose=0, return_dict=True)["accuracy"])
    return model, bits, acc, float(bops(model, bits)["total"])


def summarize(out):
    import numpy as np

    summary = {}
    for method in SPACES:
        runs = [r for r in out["runs"] if r["method"] == method]
        if not runs:
            continue
        bests = [r["best"] for r in runs if r["best"]]

        def mean(key, rows=bests):
            vals = [b[key] for b in rows if b.get(key) is not None]
            return float(np.mean(vals)) if vals else None

        summary[method] = {
            "seeds": [r["seed"] for r in runs],
            "best_val_accuracies": [b["val_accuracy"] for b in bests],
            "mean_best_val_accuracy": mean("val_accuracy"),
            "test_accuracies_npas": [b["test_accuracy_npas"] for b in bests],
            "mean_test_accuracy_npas": mean("test_accuracy_npas"),
            "mean_test_accuracy_litert": mean("test_accuracy_litert"),
            "bops_reduction_vs_dense_fp32": [out["dense"]["bops_fp32"] / b["bops"]
                                             for b in bests],
            "speedup_vs_stock_int8": [b["compare"]["speedup"] for b in bests],
            "feasible_trials": [r["feasible_trials"] for r in runs],
        }
    out["summary"] = summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2, help="pruning fine-tune epochs per trial")
    ap.add_argument("--qat-epochs", type=int, default=1, help="bits_qat epochs per trial")
    ap.add_argument("--pretrain-epochs", type=int, default=3)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--limit", type=int, default=12000, help="training examples (0 = all)")
    ap.add_argument("--test", type=int, default=2000, help="test images for the final accuracy")
    ap.add_argument("--filters", default="32,128")
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--budget-fraction", type=float, default=0.5,
                    help="latency budget / the dense model's int8 latency (delegate)")
    ap.add_argument("--bops-reduction", type=float, default=64.0,
                    help="BOPs budget = dense fp32 BOPs / this")
    ap.add_argument("--methods", default=",".join(SPACES))
    ap.add_argument("--runs", type=int, default=200, help="timed invokes of the best file")
    ap.add_argument("--cache", default=None, help="latency cache (default: the user cache)")
    ap.add_argument("--out", default="mixed_search.json")
    ap.add_argument("--append", action="store_true",
                    help="add this invocation's runs to --out, with that file's budgets")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if set(methods) - set(SPACES) or args.trials < 1 or args.epochs < 1:
        ap.error(f"methods must be among {sorted(SPACES)}; --trials, --epochs >= 1")

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import tf_keras as keras
    from keras_tuner import HyperParameters

    from npas_keras.latency import LatencyTable, delegate_available
    from npas_keras.quantization import bops
    from npas_keras.tuner import search_cnn

    from search import load

    if not delegate_available():
        print("warning: npas delegate not built; timing stock LiteRT", file=sys.stderr)
    t_start = time.time()
    x, y, xv, yv = load(args.dataset, args.limit)
    from npas_keras import data

    _, (xt, yt) = data.load(args.dataset)
    xt, yt = xt[:args.test], yt[:args.test]
    filters = tuple(int(f) for f in args.filters.split(","))
    build = search_cnn(x.shape[1:], int(max(y.max(), yv.max())) + 1, filters, args.units)
    table = LatencyTable(path=args.cache, threads=1, runs=30, warmup=3, dtype="int8")

    keras.utils.set_random_seed(0)
    dense = build(HyperParameters())
    dense.fit(x, y, epochs=args.pretrain_epochs, batch_size=64, verbose=0)
    dense_acc = float(dense.evaluate(xv, yv, verbose=0, return_dict=True)["accuracy"])
    dense_ms = float(table.measure_model(dense))
    bops_fp32 = float(bops(dense, 32)["total"])
    budget_ms = args.budget_fraction * dense_ms
    bops_budget = bops_fp32 / args.bops_reduction
    previous = None
    if args.append:
        with open(args.out) as f:
            previous = json.load(f)
        budget_ms, bops_budget = previous["budget_ms"], previous["bops_budget"]
    print(f"dense: val acc {dense_acc:.4f}, int8 {dense_ms:.4f} ms, {bops_fp32:.3g} BOPs fp32; "
          f"budgets {budget_ms:.4f} ms, {bops_budget:.3g} BOPs", file=sys.stderr, flush=True)
    out = {"benchmark": "mixed_search", "machine": table.machine, "dataset": args.dataset,
           "command": "python benchmarks/mixed_search.py " + " ".join(
               argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d", time.gmtime()), "train_examples": len(x),
           "validation_examples": len(xv), "test_examples": len(xt), "trials": args.trials,
           "epochs": args.epochs, "qat_epochs": args.qat_epochs, "budget_ms": budget_ms,
           "bops_budget": bops_budget, "bops_reduction": args.bops_reduction,
           "dense": {"filters": list(filters), "units": args.units, "val_accuracy": dense_acc,
                     "int8_latency_ms": dense_ms, "bops_fp32": bops_fp32,
                     "pretrain_epochs": args.pretrain_epochs},
           "runs": []}
    if previous is not None:
        out = dict(previous, command=previous["command"] + " ; " + out["command"])
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in methods:
            t0 = time.time()
            keras.utils.set_random_seed(seed)
            work = tempfile.mkdtemp(prefix=f"npas-mixed-{method}-")
            try:
                points, best, rejected = run(method, build, dense, (x, y, xv, yv, xt, yt), args,
                                             table, budget_ms, bops_budget, seed, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            result = {"method": method, "seed": seed, "best": best, "trials": len(points),
                      "feasible_trials": sum(p["feasible"] for p in points),
                      "rejected": rejected, "seconds": time.time() - t0, "points": points}
            out["runs"].append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "points"}),
                  file=sys.stderr, flush=True)
            summarize(out)
            out["seconds"] = time.time() - t_start
            with open(args.out, "w") as f:  # after every run: a cut-off run keeps its data
                json.dump(out, f, indent=1)
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
