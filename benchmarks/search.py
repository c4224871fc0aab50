"""Search benchmark: NPAS oracle vs RandomSearch vs BayesianOptimization vs uniform pruning vs
rule-based mapping, on Fashion-MNIST (digits with --dataset digits), under a latency budget of
~1/3 of the dense model's delegate latency. Same trials, epochs and seeds for every method.

    python benchmarks/search.py --trials 20 --epochs 2 --seeds 0,1,2 --out search.json
    python benchmarks/search.py --trials 2 --epochs 1 --seeds 0 --dataset digits --quick  # smoke

Writes JSON: {"benchmark": "search", "machine", "budget_ms", "dense": {...}, "runs": [{"method",
"seed", "best_score", "best_latency_ms", "feasible_trials", "trials", "rejected", "seconds"}],
"summary": {method: {"mean_best_score", "mean_feasible_fraction"}}}.
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


def load(dataset, limit):
    import numpy as np

    from npas_keras import data

    (x, y), (xt, yt) = data.load(dataset)
    rng = np.random.default_rng(0)
    if limit:
        i = rng.permutation(len(x))[:limit]
        j = rng.permutation(len(xt))[: max(limit // 5, 200)]
        x, y, xt, yt = x[i], y[i], xt[j], yt[j]
    return x, y, xt, yt


def make_build(input_shape):
    import tf_keras as keras

    from npas_keras.tuner import apply_operator, operator, width

    def build(hp):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.MaxPooling2D()(x)
        x = apply_operator(x, operator(hp, "b1", ("conv3x3", "dwsep3x3")), width(hp, 32))
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(width(hp, 128, name="width_fc"), activation="relu")(x)
        out = keras.layers.Dense(10, activation="softmax")(x)
        m = keras.Model(inputs, out)
        m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
        return m

    return build


def fixed_mapping_trial(build, pretrained, mapping_fn, x, y, xt, yt, epochs, table):
    """One model: default architecture, mapping_fn(model) -> {layer: Scheme}, fine-tune."""
    from keras_tuner import HyperParameters

    import npas_keras
    from npas_keras.tuner.tuner import inherit_weights, pruned_for_fine_tune

    model = build(HyperParameters())
    inherit_weights(pretrained, model)
    mapping = mapping_fn(model)
    pruned = pruned_for_fine_tune(model, mapping)
    wrapped = pruned is not model
    pruned.fit(x, y, epochs=epochs, batch_size=64, verbose=0,
               callbacks=npas_keras.callbacks() if wrapped else None)
    acc = pruned.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]
    plain = npas_keras.strip(pruned, shrink=False) if wrapped else pruned
    return float(acc), table.measure_model(plain)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--limit", type=int, default=6000, help="training examples used (0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-fraction", type=float, default=1 / 3)
    ap.add_argument("--methods", default="npas,random,bayesian,uniform,rules")
    ap.add_argument("--cache", default=None, help="latency cache (default: the user cache)")
    ap.add_argument("--out", default="search.json")
    args = ap.parse_args(argv)

    import keras_tuner
    import numpy as np

    from npas_keras.latency import LatencyTable
    from npas_keras.mapping import map_schemes
    from npas_keras.schemes import Scheme
    from npas_keras.tuner import NPASTuner

    x, y, xt, yt = load(args.dataset, args.limit)
    build = make_build(x.shape[1:])
    table = LatencyTable(path=args.cache, threads=args.threads, runs=30, warmup=3)
    from keras_tuner import HyperParameters

    dense = build(HyperParameters())
    dense.fit(x, y, epochs=max(1, args.epochs), batch_size=64, verbose=0)
    dense_acc = float(dense.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"])
    dense_ms = table.measure_model(dense)
    budget = args.budget_fraction * dense_ms
    out = {"benchmark": "search", "machine": table.machine, "dataset": args.dataset,
           "trials": args.trials, "epochs": args.epochs, "budget_ms": budget,
           "dense": {"accuracy": dense_acc, "latency_ms": dense_ms}, "runs": []}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    objective = keras_tuner.Objective("val_accuracy", "max")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in methods:
            t0 = time.time()
            work = tempfile.mkdtemp(prefix=f"npas-bench-{method}-")
            try:
                if method in ("uniform", "rules"):
                    rate = 0.9
                    if method == "uniform":
                        fn = lambda m: {n: Scheme("block_punched", rate=rate)  # noqa: E731
                                        if s is not None else None
                                        for n, s in map_schemes(m, rate).items()}
                    else:
                        fn = lambda m: map_schemes(m, rate, table)  # noqa: E731
                    acc, ms = fixed_mapping_trial(build, dense, fn, x, y, xt, yt, args.epochs,
                                                  table)
                    run = {"best_score": acc, "best_latency_ms": ms, "trials": 1,
                           "feasible_trials": int(ms <= budget), "rejected": 0}
                else:
                    oracle = None
                    if method == "random":
                        oracle = keras_tuner.oracles.RandomSearchOracle(
                            objective=objective, max_trials=args.trials, seed=seed + 1)
                    elif method == "bayesian":
                        oracle = keras_tuner.oracles.BayesianOptimizationOracle(
                            objective=objective, max_trials=args.trials, seed=seed + 1,
                            num_initial_points=min(2, args.trials))
                    tuner = NPASTuner(build, objective="val_accuracy", latency_budget_ms=budget,
                                      max_trials=args.trials, pretrained=dense,
                                      fine_tune_epochs=args.epochs, batch_size=64,
                                      latency_table=table, oracle=oracle, seed=seed + 1,
                                      directory=work, project_name="p",
                                      oracle_kwargs={"pool_size": 16, "gp_restarts": 1})
                    tuner.search(x, y, validation_data=(xt, yt), verbose=0)
                    res = tuner.results()
                    feas = [r for r in res if r["feasible"] and r["score"] is not None]
                    best = max(feas, key=lambda r: r["score"]) if feas else None
                    run = {"best_score": best and best["score"],
                           "best_latency_ms": best and best["latency_ms"], "trials": len(res),
                           "feasible_trials": len(feas),
                           "rejected": getattr(tuner.oracle, "rejected_count", 0)}
            finally:
                shutil.rmtree(work, ignore_errors=True)
            run.update({"method": method, "seed": seed, "seconds": time.time() - t0})
            out["runs"].append(run)
            print(json.dumps(run), file=sys.stderr)
    out["summary"] = {}
    for method in methods:
        runs = [r for r in out["runs"] if r["method"] == method]
        scores = [r["best_score"] if r["best_score"] is not None else 0.0 for r in runs]
        out["summary"][method] = {
            "mean_best_score": float(np.mean(scores)),
            "mean_feasible_fraction": float(np.mean([r["feasible_trials"] / max(r["trials"], 1)
                                                     for r in runs]))}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
