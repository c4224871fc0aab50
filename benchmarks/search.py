"""Search benchmark: NPAS oracle vs RandomSearch vs BayesianOptimization vs uniform pruning vs
rule-based mapping, on Fashion-MNIST (digits with --dataset digits), under a latency budget of
~1/3 of the dense model's measured delegate latency.

Every method gets the same number of trials (fine-tuned models), the same fine-tune epochs per
trial and the same seeds, all starting from one dense model pre-trained once (counted
separately). The tuner methods search the space of `npas_keras.tuner.search_cnn` (width, block2
operator, rate, block, per-layer scheme); uniform (`block_punched` on every prunable layer) and
rules (`mapping.map_schemes` with the latency table) keep the dense architecture and sweep the
pruning rate over `trials` values. Each method reports its best trial within the budget.

    python benchmarks/search.py --trials 10 --epochs 1 --seeds 0,1,2 \
        --out benchmarks/results/search_fashion_mnist.json
    python benchmarks/search.py --trials 2 --epochs 1 --seeds 0 --dataset digits --limit 800  # smoke

With --final-epochs F each run's best feasible model is retrained from the dense model for
epochs + F ("final" in its run; the dense "reference" then gets as many epochs). With
--final-from RESULTS.json (and --final-epochs F) no search runs: the best feasible trial of each
run in that file (of --methods and --seeds) is retrained that way, its budget kept, and the
output is that file with "final" added to those runs and the dense "reference" retrained.
`--merge A.json B.json ... --out M.json` joins results files of the same settings (per-seed
processes, more seeds, --final-from outputs) into one file and plot: one run per method and seed
(a --final-from output's "final" joins its run), each with its process's budget ("budget_ms");
the top-level budget and dense latency are their means. --budget-ms fixes the budget in ms
instead of --budget-fraction of the dense latency measured by each process (which moves with the
load). The summary has mean, std and standard error per method, and "paired" the per-seed
differences npas - each other method.

Writes JSON {"benchmark": "search", "machine", "command", "budget_ms", "dense": {accuracy and
latency after pre-training; "reference": the dense model trained for the same epochs as the
final pruned model (pre-training + epochs [+ final epochs]); "equal_compute": trained for
pre-training + trials x epochs}, "runs": [{"method", "seed", "best_score", "best_latency_ms",
"trials", "feasible_trials", "training_epochs", "rejected", "seconds", "points": [{accuracy,
latency_ms, feasible[, mapping]}], "final"}], "summary": {method: {"seeds",
"mean_best_score", "std_best_score", "sem_best_score", "best_scores", "best_latencies_ms",
"mean_feasible_fraction", "training_epochs", "final_accuracies"}}, "paired": {"npas-<method>":
{"best_score" / "final_accuracy": {"seeds", "differences", "mean", "sem", "wins", "losses"}}}},
and a PNG (accuracy vs latency, best per method) beside it.
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

METHODS = ("npas", "random", "bayesian", "uniform", "rules")


def load(dataset, limit):
    """A random `limit`-example training subset and a validation subset of 1/5 of it (>= 200)."""
    import numpy as np

    from npas_keras import data

    (x, y), (xt, yt) = data.load(dataset)
    rng = np.random.default_rng(0)
    if limit:
        i = rng.permutation(len(x))[:limit]
        j = rng.permutation(len(xt))[: max(limit // 5, 200)]
        x, y, xt, yt = x[i], y[i], xt[j], yt[j]
    return x, y, xt, yt


def fixed_mapping_trial(model, pretrained, mapping, x, y, xt, yt, epochs, table):
    """`model` (built, dense) pruned with `mapping` ({layer: Scheme | None}), fine-tuned from
    `pretrained`: (validation accuracy, measured latency ms)."""
    import npas_keras
    from npas_keras.tuner import inherit_weights, pruned_for_fine_tune

    inherit_weights(pretrained, model)
    pruned = pruned_for_fine_tune(model, mapping)
    wrapped = pruned is not model
    pruned.fit(x, y, epochs=epochs, batch_size=64, verbose=0,
               callbacks=npas_keras.callbacks() if wrapped else None)
    acc = pruned.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]
    plain = npas_keras.strip(pruned, shrink=False) if wrapped else pruned
    return float(acc), float(table.measure_model(plain))


def sweep_rates(trials, low=0.5, high=0.95):
    """`trials` pruning rates evenly spaced in [low, high] (the uniform / rules sweep)."""
    import numpy as np

    return [round(float(r), 4) for r in np.linspace(low, high, trials)] if trials > 1 else [high]


def mapping_fn(method, table):
    """rate -> (dense model -> {layer: Scheme | None}) for the fixed-architecture methods."""
    from npas_keras.latency.predictor import model_layer_specs
    from npas_keras.mapping import map_schemes
    from npas_keras.schemes import Scheme

    if method == "uniform":
        def uniform(model, rate):
            """block_punched 16x16 (clipped to the layer) wherever the rules prune at all."""
            rules = map_schemes(model, rate)
            out = {}
            for name, spec in model_layer_specs(model):
                rows, red = spec.matrix_shape()
                out[name] = None if rules.get(name) is None else Scheme(
                    "block_punched", rate=rate, block_shape=(min(16, rows), min(16, red)))
            return out
        return uniform
    return lambda model, rate: map_schemes(model, rate, table)


def mapping_to_json(mapping):
    """{layer: Scheme | None} -> JSON ({layer: Scheme.to_json() | None})."""
    return {k: None if v is None else v.to_json() for k, v in mapping.items()}


def mapping_from_json(d):
    """Inverse of `mapping_to_json`."""
    from npas_keras.schemes import Scheme

    return {k: None if v is None else Scheme.from_json(v) for k, v in d.items()}


def run_sweep(method, build, dense, data_, args, table, budget):
    from keras_tuner import HyperParameters

    x, y, xt, yt = data_
    fn = mapping_fn(method, table)
    shape_model = build(HyperParameters())
    points = []
    for rate in sweep_rates(args.trials):
        mapping = fn(shape_model, rate)
        acc, ms = fixed_mapping_trial(build(HyperParameters()), dense, mapping,
                                      x, y, xt, yt, args.epochs, table)
        points.append({"rate": rate, "accuracy": acc, "latency_ms": ms,
                       "feasible": bool(ms <= budget), "mapping": mapping_to_json(mapping)})
        print(f"  {method} rate {rate}: acc {acc:.4f} {ms:.4f} ms", file=sys.stderr, flush=True)
    return points, 0


def run_tuner(method, build, dense, data_, args, table, budget, seed, work):
    import keras_tuner

    from npas_keras.tuner import NPASTuner

    x, y, xt, yt = data_
    objective = keras_tuner.Objective("val_accuracy", "max")
    oracle = None
    if method == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(
            objective=objective, max_trials=args.trials, seed=seed + 1)
    elif method == "bayesian":
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(
            objective=objective, max_trials=args.trials, seed=seed + 1,
            num_initial_points=min(3, args.trials))
    tuner = NPASTuner(build, objective="val_accuracy", latency_budget_ms=budget,
                      max_trials=args.trials, pretrained=dense, fine_tune_epochs=args.epochs,
                      batch_size=64, latency_table=table, oracle=oracle, seed=seed + 1,
                      directory=work, project_name="p",
                      oracle_kwargs={"pool_size": 16, "gp_restarts": 1,
                                     "num_initial_points": min(3, args.trials)})
    tuner.search(x, y, validation_data=(xt, yt), verbose=0)
    points = [{"accuracy": float(r["score"]), "latency_ms": float(r["latency_ms"]),
               "feasible": bool(r["feasible"]), "values": r["values"]}
              for r in tuner.results() if r["score"] is not None]
    for p in points:
        print(f"  {method}: acc {p['accuracy']:.4f} {p['latency_ms']:.4f} ms", file=sys.stderr,
              flush=True)
    return points, int(getattr(tuner.oracle, "rejected_count", 0))


def retrain_best(method, best, build, dense, data_, epochs, table):
    """The final model: the best feasible trial's architecture and mapping, fine-tuned again from
    the dense model for `epochs` (the search's epochs per trial + --final-epochs).
    Returns (accuracy, latency ms, the mapping used as JSON). A sweep point's recorded mapping
    is reused; points of older files have none, and the mapping is recomputed from the rate
    with `table` (the rules' choice then follows this table, which may differ from the
    search's)."""
    from keras_tuner import HyperParameters

    from npas_keras.tuner import NPASHyperModel

    hp = HyperParameters()
    hp.values = dict(best.get("values", {}))
    if method in ("uniform", "rules"):
        model = build(hp)
        mapping = (mapping_from_json(best["mapping"]) if "mapping" in best
                   else mapping_fn(method, table)(model, best["rate"]))
    else:
        hypermodel = NPASHyperModel(build)
        model = hypermodel.build(hp)
        mapping = hypermodel.mapping(model, hp.values)
    acc, ms = fixed_mapping_trial(model, dense, mapping, *data_, epochs, table)
    return acc, ms, mapping_to_json(mapping)


def train_dense_reference(build, dense, x, y, xt, yt, extra_epochs, seed):
    """Accuracy of a copy of `dense` trained `extra_epochs` more, at each epoch count in
    `extra_epochs` (sorted list); the dense baseline at equal training."""
    import tf_keras as keras
    from keras_tuner import HyperParameters

    keras.utils.set_random_seed(seed)
    model = build(HyperParameters())
    model.set_weights(dense.get_weights())
    out, done = {}, 0
    for e in extra_epochs:
        model.fit(x, y, epochs=e - done, batch_size=64, verbose=0)
        done = e
        out[e] = float(model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"])
    return out


def summarize(runs, methods):
    import numpy as np

    summary = {}
    for method in methods:
        rs = [r for r in runs if r["method"] == method]
        scores = [r["best_score"] for r in rs]
        complete = bool(scores) and all(s is not None for s in scores)
        summary[method] = {
            "seeds": [r["seed"] for r in rs],
            "mean_best_score": float(np.mean(scores)) if complete else None,
            "std_best_score": float(np.std(scores)) if complete else None,
            "sem_best_score": (float(np.std(scores, ddof=1) / np.sqrt(len(scores)))
                               if complete and len(scores) > 1 else None),
            "best_scores": scores,
            "best_latencies_ms": [r["best_latency_ms"] for r in rs],
            "mean_feasible_fraction": (float(np.mean([r["feasible_trials"] / max(r["trials"], 1)
                                                      for r in rs])) if rs else None),
            "training_epochs": int(sum(r["training_epochs"] for r in rs)),
            "training_epochs_per_seed": [r["training_epochs"] for r in rs],
            "final_accuracies": [r["final"]["accuracy"] if "final" in r else None for r in rs],
            "final_latencies_ms": [r["final"]["latency_ms"] if "final" in r else None
                                   for r in rs]}
    return summary


def paired(runs, a, b):
    """Per-seed differences a - b of the best feasible accuracy (and of the final model's, where
    both runs have one) over the seeds both methods ran: the paired comparison, which takes out
    what a seed does to both (the same data order and fine-tuning noise)."""
    import numpy as np

    by = {(r["method"], int(r["seed"])): r for r in runs}
    seeds = sorted(s for m, s in by if m == a and (b, s) in by)
    out = {}
    for key, get in (("best_score", lambda r: r["best_score"]),
                     ("final_accuracy", lambda r: r.get("final", {}).get("accuracy"))):
        pairs = [(s, get(by[a, s]), get(by[b, s])) for s in seeds]
        pairs = [(s, x, y) for s, x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        d = np.array([x - y for _, x, y in pairs])
        out[key] = {"seeds": [s for s, _, _ in pairs], "differences": d.tolist(),
                    "mean": float(d.mean()),
                    "sem": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None,
                    "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}
    return out


def resummarize(out, methods):
    """Sets out["summary"] and, when npas ran, out["paired"] (npas - each other method)."""
    out["summary"] = summarize(out["runs"], methods)
    if "npas" in methods:
        out["paired"] = {f"npas-{m}": paired(out["runs"], "npas", m)
                         for m in methods if m != "npas"}


def plot(out, path):
    """Accuracy vs measured latency: every trial faint, each method's best feasible per seed
    bold, the budget and the dense model marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, method in enumerate(out["summary"]):
        rs = [r for r in out["runs"] if r["method"] == method]
        pts = [p for r in rs for p in r["points"]]
        ax.scatter([p["latency_ms"] for p in pts], [p["accuracy"] for p in pts], s=10,
                   alpha=0.25, color=f"C{i}")
        best = [r for r in rs if r["best_score"] is not None]
        ax.scatter([r["best_latency_ms"] for r in best], [r["best_score"] for r in best], s=60,
                   marker="*", color=f"C{i}", edgecolor="k", label=f"{method} (best per seed)")
    ax.axvline(out["budget_ms"], color="k", ls="--", lw=1, label="budget")
    ax.scatter([out["dense"]["latency_ms"]], [out["dense"]["reference"]["accuracy"]], marker="s",
               color="k", label="dense (reference)")
    ax.set_xlabel("measured latency (ms, npas delegate, 1 thread)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"search on {out['dataset']}: {out['trials']} trials x {out['epochs']} epoch(s)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def final_from(args, build, dense, dense_ms, data_, table, methods):
    """--final-from: retrain the best feasible trial of each selected run of a results file.

    Each final keeps its run's budget in ms ("feasible"); since this process may time on
    another machine or under another load than the search did, it also records its latency as
    a fraction of the dense latency measured here ("latency_fraction", "dense_latency_ms") and
    whether that is within the file's budget fraction ("feasible_fraction")."""
    if args.final_epochs < 1:
        raise SystemExit("--final-from needs --final-epochs >= 1")
    with open(args.final_from) as f:
        out = json.load(f)
    seeds = {int(s) for s in args.seeds.split(",")}
    epochs = out["epochs"] + args.final_epochs
    ref = train_dense_reference(build, dense, *data_, [epochs], seed=0)
    out["dense"]["reference"] = {"epochs": args.pretrain_epochs + epochs, "accuracy": ref[epochs]}
    out["final_command"] = "python benchmarks/search.py " + " ".join(sys.argv[1:])
    for run in out["runs"]:
        if run["method"] not in methods or int(run["seed"]) not in seeds:
            continue
        budget = run.get("budget_ms", out["budget_ms"])
        feasible = [p for p in run["points"] if p["feasible"]]
        if not feasible:
            continue
        best = max(feasible, key=lambda p: p["accuracy"])
        acc, ms, used = retrain_best(run["method"], best, build, dense, data_, epochs, table)
        fraction = out["budget_ms"] / out["dense"]["latency_ms"]
        run["final"] = {"epochs": epochs, "accuracy": acc, "latency_ms": ms,
                        "feasible": bool(ms <= budget), "dense_latency_ms": dense_ms,
                        "latency_fraction": ms / dense_ms,
                        "feasible_fraction": bool(ms / dense_ms <= fraction),
                        "machine": table.machine, "mapping": used}
        print(json.dumps({"method": run["method"], "seed": run["seed"], **run["final"]}),
              file=sys.stderr, flush=True)
        resummarize(out, list(out["summary"]))
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    png = plot(out, args.plot or os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out} and {png}", file=sys.stderr)
    return 0


def merge_runs(parts):
    """The runs of several results files, one per (method, seed). A run found in several files
    (--final-from outputs carry every run of the file they retrained from) must be the same
    search there (same best score and trials); its "final" is taken from the file that has one
    (two different finals for one run are an error). Each run keeps its file's budget."""
    merged, origin = {}, {}
    for i, p in enumerate(parts):
        for r in p["runs"]:
            r = {**r, "budget_ms": r.get("budget_ms", p["budget_ms"])}
            key = (r["method"], int(r["seed"]))
            if key not in merged:
                merged[key], origin[key] = r, i
                continue
            old = merged[key]
            if (old["best_score"], old["trials"]) != (r["best_score"], r["trials"]):
                raise SystemExit(f"--merge: {key[0]} seed {key[1]} differs between files "
                                 f"{origin[key]} and {i} (best {old['best_score']} vs "
                                 f"{r['best_score']}): not the same search")
            if "final" in r:
                if "final" in old and old["final"] != r["final"]:
                    raise SystemExit(f"--merge: {key[0]} seed {key[1]} has a final model in "
                                     f"two files; merge one of them")
                merged[key] = {**old, "final": r["final"]}
    return sorted(merged.values(), key=lambda r: (int(r["seed"]), r["method"]))


def merge(files, out_path, plot_path=None):
    """--merge: one results file (and plot) from several results files of the same benchmark
    settings: per-seed processes, other seeds, or --final-from outputs (see `merge_runs`)."""
    import numpy as np

    parts, files = [], list(files)
    for i, name in enumerate(files):
        keep = None  # FILE:method,method takes only those methods' runs from FILE
        head, _, tail = name.rpartition(":")
        if head and tail and set(tail.split(",")) <= set(METHODS):
            name, keep = head, set(tail.split(","))
            files[i] = name
        with open(name) as f:
            parts.append(json.load(f))
        if keep is not None:
            parts[-1]["runs"] = [r for r in parts[-1]["runs"] if r["method"] in keep]
    keys = ("dataset", "trials", "epochs", "train_examples")
    for name, p in zip(files[1:], parts[1:]):
        diff = [k for k in keys if p.get(k) != parts[0].get(k)]
        if diff:
            raise SystemExit(f"--merge: {name} differs from {files[0]} in {diff}")
    out = dict(parts[0])
    out["runs"] = merge_runs(parts)
    seeds = sorted({int(r["seed"]) for r in out["runs"]})
    out["seeds"] = ",".join(str(s) for s in seeds)
    out["per_seed_process"] = [{"file": os.path.basename(name), "seeds": p["seeds"],
                                "command": p["command"], "final_command": p.get("final_command"),
                                "machine": p.get("machine"), "budget_ms": p["budget_ms"],
                                "dense_latency_ms": p["dense"]["latency_ms"],
                                "dense_reference": p["dense"]["reference"],
                                "seconds": p.get("seconds")} for name, p in zip(files, parts)]
    machines = sorted({p.get("machine") for p in parts if p.get("machine")})
    if len(machines) > 1:
        out["machine"] = machines
        print(f"warning: the files were timed on {len(machines)} machines; latencies and "
              "budgets in ms do not compare across them", file=sys.stderr)
    out["budget_ms"] = float(np.mean([r["budget_ms"] for r in out["runs"]]))
    out["dense"] = dict(out["dense"], latency_ms=float(np.mean([p["dense"]["latency_ms"]
                                                                for p in parts])))
    finals = [p for p in parts if any("final" in r for r in p["runs"])]
    if finals:  # the dense model trained as long as the final models (all files must agree)
        refs = {p["dense"]["reference"]["epochs"] for p in finals}
        if len(refs) > 1:
            raise SystemExit(f"--merge: final models trained for different epochs {sorted(refs)}")
        out["dense"]["reference"] = finals[0]["dense"]["reference"]
        out["final_command"] = [p["final_command"] for p in finals if p.get("final_command")]
    methods = list(dict.fromkeys(r["method"] for r in out["runs"]))
    resummarize(out, methods)
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
    png = plot(out, plot_path or os.path.splitext(out_path)[0] + ".png")
    print(json.dumps({"summary": out["summary"], "paired": out.get("paired")}, indent=1))
    print(f"wrote {out_path} and {png}", file=sys.stderr)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--trials", type=int, default=4, help="fine-tuned models per method and seed")
    ap.add_argument("--epochs", type=int, default=1, help="fine-tune epochs per trial")
    ap.add_argument("--final-epochs", type=int, default=0,
                    help="retrain each run's best model for epochs + this many (0 = skip)")
    ap.add_argument("--pretrain-epochs", type=int, default=3, help="dense pre-training (once)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--limit", type=int, default=12000, help="training examples used (0 = all)")
    ap.add_argument("--filters", default="32,128", help="dense conv1,block2 filters")
    ap.add_argument("--units", type=int, default=256, help="dense fc1 units")
    ap.add_argument("--threads", type=int, default=1, help="inference threads")
    ap.add_argument("--budget-fraction", type=float, default=1 / 3)
    ap.add_argument("--budget-ms", type=float, default=None,
                    help="fixed latency budget in ms (default: --budget-fraction of the dense "
                         "latency measured in this process, which moves with the load)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--final-from", default=None, metavar="JSON",
                    help="retrain the best runs of this results file (needs --final-epochs)")
    ap.add_argument("--cache", default=None, help="latency cache (default: the user cache)")
    ap.add_argument("--out", default="search.json")
    ap.add_argument("--plot", default=None, help="PNG path (default: --out with .png)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="join per-seed results files into --out (no training); "
                         "FILE:method,method takes only those methods' runs from FILE")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out, args.plot)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or args.trials < 1 or args.epochs < 1:
        ap.error(f"unknown methods {unknown}" if unknown else "--trials and --epochs must be >= 1")
    if args.budget_ms is not None and args.budget_ms <= 0:
        ap.error("--budget-ms must be > 0")

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import tf_keras as keras
    from keras_tuner import HyperParameters

    from npas_keras.latency import LatencyTable, delegate_available
    from npas_keras.tuner import search_cnn

    if not delegate_available():
        print("warning: npas delegate not built; timing stock LiteRT", file=sys.stderr)
    t_start = time.time()
    x, y, xt, yt = load(args.dataset, args.limit)
    filters = tuple(int(f) for f in args.filters.split(","))
    build = search_cnn(x.shape[1:], int(max(y.max(), yt.max())) + 1, filters, args.units)
    table = LatencyTable(path=args.cache, threads=args.threads, runs=30, warmup=3)

    keras.utils.set_random_seed(0)
    dense = build(HyperParameters())
    dense.fit(x, y, epochs=args.pretrain_epochs, batch_size=64, verbose=0)
    dense_acc = float(dense.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"])
    dense_ms = float(table.measure_model(dense))
    budget = args.budget_ms if args.budget_ms else args.budget_fraction * dense_ms
    print(f"dense: acc {dense_acc:.4f}, {dense_ms:.4f} ms; budget {budget:.4f} ms",
          file=sys.stderr, flush=True)
    if args.final_from:
        return final_from(args, build, dense, dense_ms, (x, y, xt, yt), table, methods)
    ref = train_dense_reference(build, dense, x, y, xt, yt,
                                sorted({args.epochs + args.final_epochs,
                                        args.trials * args.epochs}), seed=0)
    out = {"benchmark": "search", "machine": table.machine, "dataset": args.dataset,
           "command": "python benchmarks/search.py " + " ".join(argv if argv is not None
                                                                 else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d", time.gmtime()),
           "train_examples": len(x), "validation_examples": len(xt),
           "trials": args.trials, "epochs": args.epochs, "seeds": args.seeds,
           "inference_threads": args.threads,
           "budget_fraction": budget / dense_ms if args.budget_ms else args.budget_fraction,
           "budget_ms": budget, "budget_fixed": bool(args.budget_ms),
           "dense": {"filters": list(filters), "units": args.units,
                     "params": int(dense.count_params()), "accuracy": dense_acc,
                     "latency_ms": dense_ms, "pretrain_epochs": args.pretrain_epochs,
                     "reference": {"epochs": args.pretrain_epochs + args.epochs
                                   + args.final_epochs,
                                   "accuracy": ref[args.epochs + args.final_epochs]},
                     "equal_compute": {"epochs": args.pretrain_epochs + args.trials * args.epochs,
                                       "accuracy": ref[args.trials * args.epochs]}},
           "runs": []}
    print(json.dumps(out["dense"]), file=sys.stderr, flush=True)
    data_ = (x, y, xt, yt)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in methods:
            t0 = time.time()
            keras.utils.set_random_seed(seed)
            work = tempfile.mkdtemp(prefix=f"npas-bench-{method}-")
            try:
                if method in ("uniform", "rules"):
                    points, rejected = run_sweep(method, build, dense, data_, args, table, budget)
                else:
                    points, rejected = run_tuner(method, build, dense, data_, args, table,
                                                 budget, seed, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            feasible = [p for p in points if p["feasible"]]
            best = max(feasible, key=lambda p: p["accuracy"]) if feasible else None
            run = {"method": method, "seed": seed,
                   "best_score": best and best["accuracy"],
                   "best_latency_ms": best and best["latency_ms"],
                   "trials": len(points), "feasible_trials": len(feasible),
                   "training_epochs": len(points) * args.epochs, "rejected": rejected,
                   "seconds": time.time() - t0, "points": points}
            if best and args.final_epochs:
                acc, ms, used = retrain_best(method, best, build, dense, data_,
                                             args.epochs + args.final_epochs, table)
                run["final"] = {"epochs": args.epochs + args.final_epochs, "accuracy": acc,
                                "latency_ms": ms, "feasible": bool(ms <= budget),
                                "mapping": used}
            out["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "points"}), file=sys.stderr,
                  flush=True)
            resummarize(out, methods)
            out["seconds"] = time.time() - t_start
            with open(args.out, "w") as f:  # after every run, so a cut-off run keeps its data
                json.dump(out, f, indent=1)
    png = plot(out, args.plot or os.path.splitext(args.out)[0] + ".png")
    print(json.dumps(out["summary"], indent=1))
    print(f"wrote {args.out} and {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
