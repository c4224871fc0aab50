"""ADMM pruning (Zhang et al. 2018; as used by NPAS / PatDNN / GRIM).

minimize loss(W) s.t. W in S (the scheme's set) is split into
  W-step: a few SGD epochs on loss(W) + rho/2 * ||W - Z + U||^2      (added by each PruneWrapper)
  Z-step: Z <- project(W + U, scheme)                                (schemes.project)
  U-step: U <- U + W - Z
with rho optionally increased at every Z/U update. Then a hard prune (mask = compute_mask on W)
and masked retraining.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tf_keras as keras

from npas_keras.compat import check_model
from npas_keras.pruning.callbacks import callbacks as pruning_callbacks
from npas_keras.pruning.prune import iter_wrappers, prune

__all__ = ["ADMMCallback", "admm", "hard_prune"]


def _schemes():
    import npas_keras.schemes as schemes
    return schemes


class ADMMCallback(keras.callbacks.Callback):
    """Maintains Z and U for every prunable weight of every PruneWrapper and the penalty term.

    Args:
      rho: initial penalty.
      rho_growth: rho is multiplied by this at each Z/U update (1.0 = fixed), capped at rho_max.
      update_every: Z/U update every this many train steps; None = at each epoch end.

    ``history``: list of {"step", "rho", "primal_residual" (sqrt(sum ||W - Z||^2)),
    "dual_residual" (rho * ||Z - Z_prev||)} per update (the first entry is the initial state).
    """

    def __init__(self, rho: float = 1e-3, rho_growth: float = 1.0, rho_max: float = 1e3,
                 update_every: Optional[int] = None):
        super().__init__()
        if rho <= 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        self.rho = float(rho)
        self.rho_growth = float(rho_growth)
        self.rho_max = float(rho_max)
        self.update_every = update_every
        self.history = []
        self._state = {}
        self._step = 0

    def _wrappers(self):
        return list(iter_wrappers(self.model))

    def _targets(self, w):
        st = self._state[id(w)]
        return {v.name: v.from_matrix(st[v.name]["Z"] - st[v.name]["U"]) for v in w.views}

    def _project(self, w, v, matrix):
        return np.asarray(_schemes().project(matrix, w.scheme, kernel_hw=v.kernel_hw))

    def on_train_begin(self, logs=None):
        ws = self._wrappers()
        if not ws:
            raise ValueError("ADMMCallback: the model has no PruneWrapper layers")
        res = 0.0
        for w in ws:
            if w.scheme.rate is None:
                raise ValueError(f"layer {w.layer.name!r}: ADMM needs a scheme with a rate")
            st = {}
            for v in w.views:
                W = v.to_matrix(v.variable.numpy())
                Z = self._project(w, v, W)
                st[v.name] = {"Z": Z, "U": np.zeros_like(W)}
                res += float(np.sum((W - Z) ** 2))
            self._state[id(w)] = st
            w.enable_admm(self._targets(w), self.rho)
        self.history.append({"step": 0, "rho": self.rho, "primal_residual": res ** 0.5,
                             "dual_residual": 0.0})
        # the penalty is added inside the wrappers' call(): retrace the train step
        self.model.train_function = self.model.make_train_function(force=True)

    def update(self):
        """One Z/U update (and rho increase)."""
        res = dual = 0.0
        for w in self._wrappers():
            st = self._state[id(w)]
            for v in w.views:
                W = v.to_matrix(v.variable.numpy())
                s = st[v.name]
                Z = self._project(w, v, W + s["U"])
                s["U"] = s["U"] + W - Z
                dual += float(np.sum((Z - s["Z"]) ** 2))
                s["Z"] = Z
                res += float(np.sum((W - Z) ** 2))
        self.history.append({"step": self._step, "rho": self.rho, "primal_residual": res ** 0.5,
                             "dual_residual": self.rho * dual ** 0.5})
        new_rho = min(self.rho * self.rho_growth, self.rho_max)
        if new_rho != self.rho:
            # U is the scaled dual (y / rho): rescale it when rho changes
            for st in self._state.values():
                for s in st.values():
                    s["U"] = s["U"] * (self.rho / new_rho)
        self.rho = new_rho
        for w in self._wrappers():
            w.enable_admm(self._targets(w), self.rho)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.update_every and self._step % int(self.update_every) == 0:
            self.update()

    def on_epoch_end(self, epoch, logs=None):
        if not self.update_every:
            self.update()

    def on_train_end(self, logs=None):
        for w in self._wrappers():
            w.disable_admm()
        self.model.train_function = None
        self.model.test_function = None

    def primal_residuals(self):
        return [h["primal_residual"] for h in self.history]


def hard_prune(model, rate=None):
    """Masks <- compute_mask(W) (magnitude, at the scheme's rate or `rate`) on every wrapper."""
    for w in iter_wrappers(model):
        w.update_masks(rate=rate)
    return model


def _fresh_compile_args(model, compile_kwargs):
    if compile_kwargs is not None:
        return dict(compile_kwargs)
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled_loss", None):
        raise ValueError("admm(): compile the model first or pass compile_kwargs="
                         "{'optimizer': ..., 'loss': ...}")
    args = model._get_compile_args()
    opt = args["optimizer"]
    args["optimizer"] = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    return {k: v for k, v in args.items() if v is not None}


def _copy_optimizer(args):
    args = dict(args)
    opt = args.get("optimizer")
    if isinstance(opt, keras.optimizers.Optimizer):
        args["optimizer"] = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    return args


def admm(model, scheme, x, y=None, *, admm_epochs: int = 4, retrain_epochs: int = 2,
         rho: float = 1e-3, rho_growth: float = 1.5, update_every: Optional[int] = None,
         compile_kwargs: Optional[dict] = None, callbacks=None, **fit_kwargs):
    """ADMM-prune `model` with `scheme` (any form prune() accepts), then hard-prune and retrain.

    The model must be compiled (its compile arguments are reused with fresh optimizers), or
    compile_kwargs given. fit_kwargs (batch_size, validation_data, verbose, ...) go to both fits.
    Returns the pruned (wrapped) model; ``model.npas_admm_history`` holds the ADMM residuals.
    """
    check_model(model)
    compile_args = _fresh_compile_args(model, compile_kwargs)
    if any(True for _ in iter_wrappers(model)):
        pruned = model
        for w in iter_wrappers(pruned):
            w.set_masks({v.name: np.ones(v.shape, bool) for v in w.views})
    else:
        pruned = prune(model, scheme, initial_masks=False)
    pruned.compile(**_copy_optimizer(compile_args))
    user_cbs = list(callbacks or [])
    fit_kwargs.setdefault("verbose", 0)
    cb = ADMMCallback(rho=rho, rho_growth=rho_growth, update_every=update_every)
    if admm_epochs > 0:
        pruned.fit(x, y, epochs=admm_epochs, callbacks=[cb] + user_cbs, **fit_kwargs)
    hard_prune(pruned)
    if retrain_epochs > 0:
        pruned.compile(**_copy_optimizer(compile_args))
        pruned.fit(x, y, epochs=retrain_epochs, callbacks=pruning_callbacks() + user_cbs, **fit_kwargs)
    pruned.npas_admm_history = list(cb.history)
    return pruned
