"""Pruning: prune(), callbacks(), ADMM, strip(), summary() (see DESIGN.md and docs/pruning.md)."""
from npas_keras.layers import PruneWrapper, custom_objects
from npas_keras.pruning.prune import prune, iter_wrappers
from npas_keras.pruning.callbacks import PruningCallback, callbacks, weight_sparsity
from npas_keras.pruning.admm import ADMMCallback, admm, hard_prune
from npas_keras.pruning.strip import strip
from npas_keras.pruning.summary import summary

__all__ = ["prune", "callbacks", "strip", "summary", "admm", "ADMMCallback", "PruningCallback",
           "PruneWrapper", "custom_objects", "hard_prune", "iter_wrappers", "weight_sparsity"]
