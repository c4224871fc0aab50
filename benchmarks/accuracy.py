#!/usr/bin/env python3
"""Accuracy of pruned models on Fashion-MNIST (issue 2, accuracy part).

Trains (a) a small VGG-style CNN and (b) a GRU that reads each image row by row, dense first, then
prunes copies of the *same* trained dense weights with each scheme at each compression, with the
gradual (tfmot schedule) path and/or with ADMM, and writes JSON:

  {"benchmark": "accuracy", "machine", "command", "dataset", "settings",
   "results": [{"model", "scheme", "algorithm", "compression", "density", "test_accuracy",
                "dense_accuracy", "epochs", "dense_epochs", "seconds", ...}]}

Definitions (also in docs/accuracy.md):
  compression  1 / (kept weights / all weights) over the *pruned* layers only: every conv but the
               first, the hidden Dense (CNN); the GRU's kernel and recurrent kernel (GRU). The first
               conv, the classifier and all biases stay dense.
  density      measured after training on the pruned layers: mask ones / mask size, summed over them
               (the weights at masked positions are checked to be exactly zero).
  epochs       training epochs of this row *after* the shared dense pretraining (schedule: gradual
               pruning + fine-tuning; ADMM: ADMM epochs + masked retraining epochs). The dense
               pretraining is in dense_epochs and is done once per model, not per row.
  seconds      wall time of this row's pruning + training + evaluation (dense pretraining excluded).

Progress goes to stderr: one line per epoch (Keras verbose=2) and one line per finished row.

Examples:
  python benchmarks/accuracy.py --quick                      # digits, tiny, ~1 min
  nice -n 5 python benchmarks/accuracy.py --models cnn --compressions 8 --algorithms schedule
  python benchmarks/accuracy.py --table benchmarks/results/accuracy_cnn.json   # markdown table
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

ALL_SCHEMES = ("unstructured", "filter", "n_m", "block_punched", "bcr", "pattern")
CNN_ONLY = ("pattern",)
ALGORITHMS = ("schedule", "admm")
NM_FOR = {2: (2, 4), 4: (1, 4), 8: (1, 8)}
BLOCK = 16  # block_punched / bcr block edge (shrunk to the matrix for small layers)


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def machine():
    from npas_keras.latency.machine import describe
    return describe()


# ----------------------------------------------------------------------------------- models
def build_cnn(keras, input_shape, n_classes, widths):
    c1, c2, c3, c4, fc = widths
    L = keras.layers
    return keras.Sequential([
        keras.Input(input_shape),
        L.Conv2D(c1, 3, padding="same", activation="relu", name="conv1"),
        L.Conv2D(c2, 3, padding="same", activation="relu", name="conv2"),
        L.MaxPooling2D(name="pool1"),
        L.Conv2D(c3, 3, padding="same", activation="relu", name="conv3"),
        L.Conv2D(c4, 3, padding="same", activation="relu", name="conv4"),
        L.MaxPooling2D(name="pool2"),
        L.Flatten(name="flatten"),
        L.Dense(fc, activation="relu", name="fc1"),
        L.Dense(n_classes, activation="softmax", name="classifier"),
    ], name="cnn")


def build_gru(keras, input_shape, n_classes, units):
    h, w = input_shape[0], input_shape[1] * input_shape[2]
    L = keras.layers
    return keras.Sequential([
        keras.Input(input_shape),
        L.Reshape((h, w), name="rows"),  # each image row is one time step
        L.GRU(units, name="gru"),
        L.Dense(n_classes, activation="softmax", name="classifier"),
    ], name="gru")


PRUNED_LAYERS = {"cnn": ("conv2", "conv3", "conv4", "fc1"), "gru": ("gru",)}


# ---------------------------------------------------------------------------------- schemes
def scheme_for(name, compression, layer, block=(BLOCK, BLOCK)):
    """The Scheme of one layer for a row (scheme name, compression)."""
    from npas_keras.layers import prunable_weights
    from npas_keras.schemes import Scheme

    rate = 1.0 - 1.0 / compression
    views = prunable_weights(layer)
    rows = min(v.matrix_shape[0] for v in views)
    cols = min(v.matrix_shape[1] for v in views)
    conv3x3 = all(v.kernel_hw == (3, 3) for v in views)
    bs = (min(block[0], rows), min(block[1], cols))
    if name == "unstructured" or name == "filter":
        return Scheme(name, rate=rate)
    if name == "n_m":
        n, m = NM_FOR[compression]
        return Scheme("n_m", n=n, m=m)
    if name == "block_punched":
        return Scheme("block_punched", rate=rate, block_shape=bs)
    if name == "bcr":
        return Scheme("bcr", rate=rate, block_shape=bs)
    if name == "pattern":
        # PatDNN/NPAS: pattern + connectivity pruning on 3x3 convs; the FC layer gets
        # block_punched (NPAS's FC scheme) so the whole pruned set is at the same compression.
        if conv3x3:
            return Scheme("pattern", rate=rate)
        return Scheme("block_punched", rate=rate, block_shape=bs)
    raise ValueError(f"unknown scheme {name!r}")


def scheme_map(model, kind, name, compression, block=(BLOCK, BLOCK)):
    return {ln: scheme_for(name, compression, model.get_layer(ln), block)
            for ln in PRUNED_LAYERS[kind]}


def measured_density(pruned):
    """(mask density, weight-zero check) over every PruneWrapper of the model."""
    from npas_keras.pruning.prune import iter_wrappers
    kept = total = 0
    leaked = 0
    for w in iter_wrappers(pruned):
        masks = w.get_masks()
        for v in w.views:
            m = np.asarray(masks[v.name], bool)
            kept += int(m.sum())
            total += m.size
            leaked += int(np.count_nonzero(v.variable.numpy()[~m]))
    return kept / max(total, 1), leaked


# ---------------------------------------------------------------------------------- running
class Runner:
    def __init__(self, args):
        import tensorflow as tf
        import tf_keras as keras
        self.tf, self.keras, self.args = tf, keras, args
        from npas_keras import data as npdata
        if args.quick:
            (xt, yt), (xs, ys) = npdata.load_digits()
            self.dataset = "digits"
        else:
            (xt, yt), (xs, ys) = npdata.load_fashion_mnist()
            self.dataset = "fashion_mnist"
        if args.train_subset:
            rng = np.random.default_rng(args.seed)
            idx = rng.permutation(len(xt))[:args.train_subset]
            xt, yt = xt[idx], yt[idx]
        if args.test_subset:
            xs, ys = xs[:args.test_subset], ys[:args.test_subset]
        self.x, self.y, self.xt, self.yt = xt, yt, xs, ys
        self.steps_per_epoch = math.ceil(len(xt) / args.batch_size)
        self.dense = {}

    # -- models
    def build(self, kind):
        shape = self.x.shape[1:]
        if kind == "cnn":
            return build_cnn(self.keras, shape, 10, self.args.cnn_widths)
        return build_gru(self.keras, shape, 10, self.args.gru_units)

    def compile(self, model, lr):
        model.compile(optimizer=self.keras.optimizers.Adam(lr),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def evaluate(self, model):
        return float(model.evaluate(self.xt, self.yt, batch_size=512, verbose=0)[1])

    def fit(self, model, epochs, callbacks=()):
        model.fit(self.x, self.y, batch_size=self.args.batch_size, epochs=epochs,
                  callbacks=list(callbacks), verbose=self.args.keras_verbose, shuffle=True)

    def cache_path(self, kind):
        a = self.args
        key = json.dumps([kind, self.dataset, len(self.x), a.train_subset, a.seed, a.epochs,
                          a.lr, a.batch_size, a.cnn_widths, a.gru_units], sort_keys=True)
        h = hashlib.sha1(key.encode()).hexdigest()[:12]
        return os.path.join(a.cache_dir, f"dense_{kind}_{h}.weights.h5")

    def dense_weights(self, kind):
        """Trains the dense model once (or loads it from the cache); returns (weights, acc, s)."""
        if kind in self.dense:
            return self.dense[kind]
        self.keras.utils.set_random_seed(self.args.seed)
        model = self.build(kind)
        path = self.cache_path(kind)
        t0 = time.time()
        if self.args.cache_dir and os.path.exists(path):
            model.load_weights(path)
            self.compile(model, self.args.lr)
            log(f"[{kind}] dense weights loaded from {path}")
        else:
            log(f"[{kind}] dense training: {self.args.epochs} epochs on {len(self.x)} images, "
                f"{model.count_params()} parameters")
            self.compile(model, self.args.lr)
            self.fit(model, self.args.epochs)
            if self.args.cache_dir:
                os.makedirs(self.args.cache_dir, exist_ok=True)
                model.save_weights(path)
        acc = self.evaluate(model)
        secs = time.time() - t0
        log(f"[{kind}] dense test accuracy {acc:.4f} ({secs:.0f} s)")
        self.dense[kind] = (model.get_weights(), acc, secs)
        return self.dense[kind]

    def fresh_dense(self, kind):
        weights, _, _ = self.dense_weights(kind)
        self.keras.utils.set_random_seed(self.args.seed + 1)
        model = self.build(kind)
        model.set_weights(weights)
        return model

    # -- one row
    def run_schedule(self, kind, smap, rate):
        import npas_keras
        import tensorflow_model_optimization as tfmot
        a = self.args
        epochs = a.finetune_epochs
        total = epochs * self.steps_per_epoch
        end = max(1, int(round(a.ramp * total)))
        freq = max(1, min(end, self.steps_per_epoch // a.mask_updates_per_epoch))
        # tfmot prunes at begin + k*freq <= end: make end one of those steps, so the last mask
        # update is at the final sparsity exactly
        end = max(freq, (end // freq) * freq)
        sched = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=rate, begin_step=0, end_step=end,
            power=3, frequency=freq)
        model = self.fresh_dense(kind)
        pruned = npas_keras.prune(model, smap, schedule=sched, verbose=False)
        self.compile(pruned, a.finetune_lr)
        lr_cb = self.keras.callbacks.LearningRateScheduler(
            lambda e, lr: a.finetune_lr * (0.3 if e >= max(1, epochs - 1) and epochs > 1 else 1.0))
        self.fit(pruned, epochs, npas_keras.callbacks() + [lr_cb])
        return pruned, epochs

    def run_admm(self, kind, smap, rate):
        import npas_keras
        a = self.args
        model = self.fresh_dense(kind)
        self.compile(model, a.admm_lr)
        update_every = max(1, self.steps_per_epoch // a.admm_updates_per_epoch)
        pruned = npas_keras.admm(
            model, smap, self.x, self.y, admm_epochs=a.admm_epochs,
            retrain_epochs=a.retrain_epochs, rho=a.rho, rho_growth=a.rho_growth,
            update_every=update_every, batch_size=a.batch_size, verbose=a.keras_verbose)
        return pruned, a.admm_epochs + a.retrain_epochs

    def run_dense_continued(self, kind):
        """Reference row: the dense model trained for as many more epochs as a pruned row."""
        a = self.args
        model = self.fresh_dense(kind)
        self.compile(model, a.finetune_lr)
        epochs = a.finetune_epochs
        lr_cb = self.keras.callbacks.LearningRateScheduler(
            lambda e, lr: a.finetune_lr * (0.3 if e >= max(1, epochs - 1) and epochs > 1 else 1.0))
        self.fit(model, epochs, [lr_cb])
        return model, epochs

    def row(self, kind, scheme, algorithm, compression):
        _, dense_acc, _ = self.dense_weights(kind)
        t0 = time.time()
        self.keras.utils.set_random_seed(self.args.seed + 2)
        log(f"[{kind}] {scheme} {algorithm} {compression}x ...")
        if scheme == "dense":
            model, epochs = self.run_dense_continued(kind)
            density, leaked = 1.0, 0
            schemes_used = {}
        else:
            base = self.build(kind)
            smap = scheme_map(base, kind, scheme, compression, tuple(self.args.block_shape))
            rate = 1.0 - 1.0 / compression
            if algorithm == "schedule":
                model, epochs = self.run_schedule(kind, smap, rate)
            else:
                model, epochs = self.run_admm(kind, smap, rate)
            density, leaked = measured_density(model)
            schemes_used = {ln: s.to_json() for ln, s in smap.items()}
        acc = self.evaluate(model)
        secs = time.time() - t0
        rec = {"model": kind, "scheme": scheme, "algorithm": algorithm,
               "compression": compression, "density": round(density, 6),
               "test_accuracy": round(acc, 6), "dense_accuracy": round(dense_acc, 6),
               "delta_vs_dense": round(acc - dense_acc, 6),
               "epochs": epochs, "dense_epochs": self.args.epochs,
               "seconds": round(secs, 1), "layer_schemes": schemes_used,
               "nonzeros_at_masked_positions": leaked}
        log(f"[{kind}] {scheme:<13} {algorithm:<8} {compression}x  density {density:.4f}  "
            f"acc {acc:.4f} (dense {dense_acc:.4f}, {acc - dense_acc:+.4f})  {secs:.0f} s")
        self.keras.backend.clear_session()
        return rec


def plan(args):
    rows = []
    for kind in args.models:
        if args.dense_reference:
            rows.append((kind, "dense", "continued", 1))
        for comp in args.compressions:
            for alg in args.algorithms:
                for s in args.schemes:
                    if kind != "cnn" and s in CNN_ONLY:
                        continue
                    rows.append((kind, s, alg, comp))
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", default=["cnn", "gru"], choices=["cnn", "gru"])
    p.add_argument("--schemes", nargs="+", default=list(ALL_SCHEMES), choices=list(ALL_SCHEMES))
    p.add_argument("--compressions", nargs="+", type=int, default=[8], choices=[2, 4, 8])
    p.add_argument("--algorithms", nargs="+", default=["schedule"], choices=list(ALGORITHMS))
    p.add_argument("--epochs", type=int, default=None,
                   help="dense pretraining epochs (default 6; --quick: 15)")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="schedule path: epochs of gradual pruning + fine-tuning (default 3; --quick: 4)")
    p.add_argument("--admm-epochs", type=int, default=None, help="ADMM epochs (default 2; --quick: 3)")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="masked retraining epochs after ADMM's hard prune (default 1; --quick: 2)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam lr for dense training")
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="Adam lr for pruning/fine-tuning")
    p.add_argument("--admm-lr", type=float, default=1e-3, help="Adam lr for ADMM and retraining")
    p.add_argument("--rho", type=float, default=5e-3, help="ADMM initial rho")
    p.add_argument("--rho-growth", type=float, default=1.5, help="ADMM rho growth per Z/U update")
    p.add_argument("--admm-updates-per-epoch", type=int, default=3)
    p.add_argument("--ramp", type=float, default=0.6,
                   help="schedule: fraction of the fine-tune steps over which sparsity ramps to target")
    p.add_argument("--mask-updates-per-epoch", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--block-shape", type=int, nargs=2, default=[BLOCK, BLOCK], metavar=("R", "C"),
                   help="block_punched / bcr block (rows, cols), clipped to each layer")
    p.add_argument("--train-subset", type=int, default=None, help="train on N random images")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--cnn-widths", type=int, nargs=5, default=None, metavar=("C1", "C2", "C3", "C4", "FC"),
                   help="default 32 32 64 64 128 (--quick: 16 16 32 32 64)")
    p.add_argument("--gru-units", type=int, default=None, help="default 128 (--quick: 32)")
    p.add_argument("--no-dense-reference", dest="dense_reference", action="store_false",
                   help="skip the 'dense, continued' row (dense weights trained --finetune-epochs more)")
    p.add_argument("--quick", action="store_true",
                   help="scikit-learn digits (8x8), small models, few epochs: a smoke run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                       "npas_accuracy_cache"),
                   help="dense weights are cached here ('' = no cache)")
    p.add_argument("--append", action="store_true",
                   help="keep the results already in --out and skip the rows they hold")
    p.add_argument("--keras-verbose", type=int, default=2)
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "accuracy.json"))
    a = p.parse_args(argv)
    q = a.quick
    defaults = dict(epochs=15 if q else 6, finetune_epochs=4 if q else 3,
                    admm_epochs=3 if q else 2, retrain_epochs=2 if q else 1,
                    cnn_widths=[16, 16, 32, 32, 64] if q else [32, 32, 64, 64, 128],
                    gru_units=32 if q else 128)
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def table(paths):
    """Markdown table of one or more result files (rows in file order)."""
    lines = ["| model | scheme | algorithm | compression | density | test acc % | dense acc % | "
             "vs dense | vs dense, same epochs | vs unstructured | epochs | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        with open(path) as f:
            rows = json.load(f)["results"]
        unstr = {(r["model"], r["algorithm"], r["compression"]): r["test_accuracy"]
                 for r in rows if r["scheme"] == "unstructured"}
        cont = {(r["model"], r["epochs"]): r["test_accuracy"] for r in rows if r["scheme"] == "dense"}
        for r in rows:
            c = cont.get((r["model"], r["epochs"]))
            dvc = "" if c is None or r["scheme"] == "dense" else f"{100 * (r['test_accuracy'] - c):+.2f}"
            u = unstr.get((r["model"], r["algorithm"], r["compression"]))
            dvu = "" if u is None or r["scheme"] in ("unstructured", "dense") else \
                f"{100 * (r['test_accuracy'] - u):+.2f}"
            lines.append(
                f"| {r['model']} | {r['scheme']} | {r['algorithm']} | {r['compression']}x | "
                f"{r['density']:.4f} | {100 * r['test_accuracy']:.2f} | "
                f"{100 * r['dense_accuracy']:.2f} | "
                f"{100 * (r['test_accuracy'] - r['dense_accuracy']):+.2f} | {dvc} | {dvu} | "
                f"{r['epochs']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--table":
        print(table(argv[1:]))
        return 0
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(x) for x in
                                   [os.path.relpath(os.path.abspath(sys.argv[0]), REPO)]
                                   + argv)
    t_start = time.time()
    runner = Runner(args)
    results = []
    if args.append and os.path.exists(args.out):
        with open(args.out) as f:
            prev = json.load(f)
        results = prev.get("results", [])
        commands = prev.get("command", [])
        commands = commands if isinstance(commands, list) else [commands]
    else:
        commands = []
    commands.append(command)
    done = {(r["model"], r["scheme"], r["algorithm"], r["compression"]) for r in results}
    todo = [r for r in plan(args) if r not in done]
    log(f"{len(todo)} rows to run on {runner.dataset} ({len(runner.x)} train / "
        f"{len(runner.xt)} test images)")

    def write():
        doc = {"benchmark": "accuracy", "machine": machine(),
               "command": commands if len(commands) > 1 else commands[0],
               "dataset": runner.dataset,
               "train_images": len(runner.x), "test_images": len(runner.xt),
               "settings": {k: getattr(args, k) for k in (
                   "epochs", "finetune_epochs", "admm_epochs", "retrain_epochs", "lr",
                   "finetune_lr", "admm_lr", "rho", "rho_growth", "admm_updates_per_epoch",
                   "ramp", "mask_updates_per_epoch", "batch_size", "train_subset", "cnn_widths",
                   "gru_units", "block_shape", "seed")},
               "pruned_layers": {k: list(v) for k, v in PRUNED_LAYERS.items() if k in args.models},
               "dense": {k: {"test_accuracy": round(v[1], 6), "seconds": round(v[2], 1)}
                         for k, v in runner.dense.items()},
               "results": results}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, args.out)

    for kind, scheme, alg, comp in todo:
        results.append(runner.row(kind, scheme, alg, comp))
        write()
    if not todo:
        write()
    log(f"done: {len(todo)} rows in {time.time() - t_start:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
