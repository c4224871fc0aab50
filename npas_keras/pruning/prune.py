"""npas_keras.prune: wrap the prunable layers of a tf_keras model with PruneWrapper."""
from __future__ import annotations

import logging
from typing import Callable, Dict, Optional

import numpy as np
import tf_keras as keras

from npas_keras.compat import check_model
from npas_keras.layers import PruneWrapper, layer_kind, prunable_weights, unsupported_reason

__all__ = ["prune", "iter_wrappers", "PRUNED_PREFIX"]

log = logging.getLogger("npas_keras")
PRUNED_PREFIX = "npas_"


def _schemes():
    import npas_keras.schemes as schemes
    return schemes


def iter_wrappers(model):
    """All PruneWrappers in a model (nested models included)."""
    for layer in model.layers:
        if isinstance(layer, PruneWrapper):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from iter_wrappers(layer)


def _resolver(scheme):
    """-> (fn layer -> Scheme|None, explicit: bool). Errors in the spec itself raise here."""
    schemes = _schemes()
    if isinstance(scheme, dict) and not ("name" in scheme and isinstance(scheme.get("name"), str)
                                         and scheme["name"] in schemes.SCHEME_NAMES):
        resolved = {}
        for lname, spec in scheme.items():
            if spec is None:
                resolved[lname] = None
                continue
            try:
                resolved[lname] = schemes.get_scheme(spec)
            except ValueError as e:
                raise ValueError(f"layer {lname!r}: {e}") from e
        return (lambda layer: resolved.get(layer.name)), True, set(resolved)
    if callable(scheme) and not isinstance(scheme, (str, dict, schemes.Scheme)):
        def fn(layer):
            spec = scheme(layer)
            if spec is None:
                return None
            try:
                return schemes.get_scheme(spec)
            except ValueError as e:
                raise ValueError(f"layer {layer.name!r}: {e}") from e
        return fn, True, None
    s = schemes.get_scheme(scheme)
    return (lambda layer: s), False, None


def _check_rate(scheme, layer_name):
    r = scheme.rate
    if r is not None and not (0.0 < float(r) < 1.0):
        raise ValueError(f"layer {layer_name!r}: pruning rate must be in (0, 1), got {r}")


def prune(model, scheme, *, schedule=None, strict: bool = False, verbose: bool = True,
          initial_masks: bool = True):
    """Returns a copy of `model` whose prunable layers are wrapped in PruneWrapper.

    Args:
      model: a built tf_keras Model (Sequential, functional, or with custom layers inside).
      scheme: a scheme name ("bcr"), a Scheme, a dict {layer_name: scheme or None} (layers not in
        it are left alone), or a callable layer -> Scheme|name|None.
      schedule: optional tfmot PruningSchedule (PolynomialDecay / ConstantSparsity); the masks then
        start all-ones and `npas_keras.callbacks()` moves them along the schedule. Without one, the
        masks are computed now (magnitude, at the scheme's rate) and stay fixed.
      strict: raise instead of skipping when a global scheme cannot apply to a layer.
      verbose: log the skipped layers (as a warning).
      initial_masks: compute one-shot masks now (ignored when a schedule is given). ADMM uses False.

    The returned model has ``npas_skipped`` = {layer name: reason} for every layer with weights
    that was left unwrapped, and ``npas_schemes`` = {layer name: Scheme}.
    """
    check_model(model)
    schemes = _schemes()
    fn, explicit, named = _resolver(scheme)
    if not model.built:
        raise ValueError("build the model (call it or give it an input shape) before pruning it")
    layer_names = {l.name for l in model.layers}
    if named is not None:
        unknown = sorted(n for n in named if n not in layer_names)
        if unknown:
            raise ValueError(f"scheme dict names layers not in the model: {unknown}")

    plan: Dict[str, object] = {}
    first_masks: Dict[str, Dict[str, np.ndarray]] = {}
    skipped: Dict[str, str] = {}
    scheme_errors = []
    for layer in model.layers:
        if isinstance(layer, PruneWrapper):
            raise ValueError(f"layer {layer.name!r} is already pruned; strip the model first")
        has_weights = bool(layer.weights)
        kind = layer_kind(layer)
        if kind is None:
            if has_weights:
                if isinstance(layer, keras.Model):
                    skipped[layer.name] = "nested model: prune it separately"
                else:
                    skipped[layer.name] = unsupported_reason(layer)
            continue
        sch = fn(layer)
        if sch is None:
            skipped[layer.name] = "not selected"
            continue
        _check_rate(sch, layer.name)
        if sch.rate is None and schedule is None:
            raise ValueError(f"layer {layer.name!r}: scheme {sch.name!r} has no rate; give a rate "
                             "(e.g. Scheme(name, rate=0.5)) or a schedule")
        views = prunable_weights(layer)
        if not views:
            skipped[layer.name] = "layer has no prunable weights (not built?)"
            continue
        try:
            masks = {}
            for v in views:
                w = v.to_matrix(v.variable.numpy())
                mat = schemes.compute_mask(w, sch, kernel_hw=v.kernel_hw,
                                           rate=None if sch.rate is not None else 0.5)
                masks[v.name] = v.from_matrix(np.asarray(mat, bool))
        except ValueError as e:
            msg = f"layer {layer.name!r}, weight {v.name!r} (GEMM view {w.shape}, kernel_hw {v.kernel_hw}): " \
                  f"scheme {sch.name!r} cannot apply: {e}"
            if explicit or strict:
                raise ValueError(msg) from e
            skipped[layer.name] = msg
            scheme_errors.append(msg)
            continue
        plan[layer.name] = sch
        first_masks[layer.name] = masks
    if not plan and scheme_errors:
        raise ValueError("the scheme cannot apply to any layer of the model: " + "; ".join(scheme_errors))

    def clone_fn(layer):
        new = layer.__class__.from_config(layer.get_config())
        if layer.name in plan:
            return PruneWrapper(new, plan[layer.name], schedule=schedule,
                                name=PRUNED_PREFIX + layer.name)
        return new

    new_model = keras.models.clone_model(model, clone_function=clone_fn)
    if not new_model.built:
        new_model.build(model.input_shape)
    for old in model.layers:
        if old.name in plan:
            w = new_model.get_layer(PRUNED_PREFIX + old.name)
            w.layer.set_weights(old.get_weights())
            if not w.views:
                w._maybe_create_masks()
            if schedule is None and initial_masks and plan[old.name].rate is not None:
                w.set_masks(first_masks[old.name])
        elif old.weights:
            new_model.get_layer(old.name).set_weights(old.get_weights())
    new_model.npas_skipped = dict(skipped)
    new_model.npas_schemes = dict(plan)
    if skipped and verbose:
        log.warning("npas_keras.prune left %d layer(s) unpruned:\n%s", len(skipped),
                    "\n".join(f"  {k}: {v}" for k, v in skipped.items()))
    return new_model
