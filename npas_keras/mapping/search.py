"""Search-based per-layer scheme mapping through the NPAS oracle.

The space is one 'scheme:<layer>' choice per prunable layer (plus the block shape); each
candidate mapping is scored by `score_fn(mapping) -> float` (higher is better; default: the
fraction of weight energy sum(W^2) the masks keep, a cheap accuracy proxy) and filtered by the
latency table against `latency_budget_ms`. No training happens here, so it is quick; pass a
score_fn that fine-tunes and evaluates for the real thing.
"""
import tempfile

import numpy as np

from npas_keras.latency.predictor import model_layer_specs, predict
from npas_keras.latency.specs import scheme_masks, unwrap
from npas_keras.mapping.rules import DEFAULT_BLOCK_SHAPES


def energy_kept(model, mapping):
    """Fraction of the prunable weights' squared magnitude that `mapping`'s masks keep."""
    from npas_keras.layers.views import prunable_weights

    by_name = {layer.name: layer for layer in model.layers}
    total = kept = 0.0
    for name, scheme in mapping.items():
        layer = by_name[name]
        masks = scheme_masks(layer, scheme)
        for view in prunable_weights(unwrap(layer)):
            e = np.square(view.variable.numpy())
            total += float(e.sum())
            kept += float((e * masks[view.name]).sum())
    return kept / max(total, 1e-30)


def search_schemes(model, rate, table=None, latency_budget_ms=None, score_fn=None,
                   max_trials=20, schemes=("dense", "block_punched", "bcr", "pattern"),
                   block_shapes=DEFAULT_BLOCK_SHAPES, seed=0, directory=None, **oracle_kwargs):
    """Searches {layer name: Scheme | None} for `model` at pruning `rate`.

    Returns (best mapping, list of {mapping, score, predicted_ms}) for all evaluated candidates;
    the best is the highest-scoring one within the budget.
    """
    from keras_tuner.src.engine import hyperparameters as hp_module
    from keras_tuner.src.engine import trial as trial_module

    from npas_keras.schemes import Scheme
    from npas_keras.tuner.oracle import NPASOracle

    specs = dict(model_layer_specs(model))
    hps = hp_module.HyperParameters()
    blocks = [f"{r}x{c}" for r, c in block_shapes]
    if len(blocks) > 1:
        hps.Choice("block", blocks, default=blocks[0])
    for name, spec in specs.items():
        allowed = [s for s in schemes
                   if s != "pattern" or (spec.kind == "conv2d" and spec.kernel_size == (3, 3))]
        if spec.kind == "depthwise_conv2d":
            allowed = ["dense"]
        if len(allowed) > 1:
            hps.Choice(f"scheme:{name}", allowed, default=allowed[-1])

    def mapping_of(values):
        r, c = (int(v) for v in values.get("block", blocks[0]).split("x"))
        out = {}
        for name, spec in specs.items():
            choice = values.get(f"scheme:{name}", "dense")
            if choice == "dense":
                out[name] = None
            elif choice in ("block_punched", "bcr"):
                rows, red = spec.matrix_shape()
                out[name] = Scheme(choice, rate=rate, block_shape=(min(r, rows), min(c, red)))
            else:
                out[name] = Scheme(choice, rate=rate)
        return out

    score_fn = score_fn or (lambda mapping: energy_kept(model, mapping))
    predictor = None
    if table is not None:
        def predictor(values):
            return predict(model, table, mapping_of(values))

    oracle = NPASOracle(objective=_objective("score", "max"), max_trials=max_trials,
                        hyperparameters=hps, latency_predictor=predictor,
                        latency_budget_ms=latency_budget_ms, seed=seed, **oracle_kwargs)
    oracle.verbose = 0
    tmp = None
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="npas-mapping-")
        directory = tmp.name
    oracle._set_project_dir(directory, "mapping_search")
    history = []
    try:
        for i in range(max_trials):
            trial = oracle.create_trial(f"mapper{i}")
            if trial.status == trial_module.TrialStatus.STOPPED:
                break
            mapping = mapping_of(trial.hyperparameters.values)
            score = float(score_fn(mapping))
            oracle.update_trial(trial.trial_id, {"score": score})
            trial.status = trial_module.TrialStatus.COMPLETED
            oracle.end_trial(trial)
            history.append({"mapping": mapping, "score": score,
                            "predicted_ms": oracle.predicted_latency(trial.trial_id)})
    finally:
        if tmp is not None:
            tmp.cleanup()
    if not history:
        raise RuntimeError("mapping search found no configuration within the latency budget")
    best = max(history, key=lambda h: h["score"])
    return best["mapping"], history


def _objective(name, direction):
    import keras_tuner

    return keras_tuner.Objective(name, direction)
