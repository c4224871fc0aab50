"""KerasTuner integration: NPASOracle (RL proposals + GP ranking + latency budget) and NPASTuner
(fast evaluation of architecture + per-layer pruning candidates).

    tuner = NPASTuner(build_fn, objective="val_accuracy", latency_budget_ms=2.0, max_trials=40)
    tuner.search(x, y, validation_data=(xv, yv))
    best = tuner.get_best_models()[0]     # plain tf_keras model with the zeros, ready for export

With weight_bits=(8, 4) (and bops_budget) the trials are int8 and each layer's weight width is
searched with its pruning (docs/search.md, "Mixed precision in the search").
"""
from npas_keras.tuner.oracle import NPASOracle, acquisition_scores, fit_gp
from npas_keras.tuner.policy import CategoricalPolicy
from npas_keras.tuner.space import (SpaceEncoder, apply_operator, discrete_values, operator,
                                    search_cnn, width)
from npas_keras.tuner.tuner import (NPASHyperModel, NPASTuner, bits_hp_name, inherit_weights,
                                    predicted_bops, pruned_for_fine_tune, rate_hp_name,
                                    scheme_hp_name)

__all__ = ["CategoricalPolicy", "NPASHyperModel", "NPASOracle", "NPASTuner", "SpaceEncoder",
           "acquisition_scores", "apply_operator", "bits_hp_name", "discrete_values", "fit_gp",
           "inherit_weights", "operator", "predicted_bops", "pruned_for_fine_tune",
           "rate_hp_name", "scheme_hp_name", "search_cnn", "width"]
