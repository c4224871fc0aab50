"""PruneWrapper: one Keras wrapper for every prunable layer kind.

It holds a non-trainable mask variable per prunable weight (same shape as the weight; 1 = kept),
the Scheme, and an optional tfmot pruning schedule. Like tfmot's PruneLowMagnitude it assigns
``weight <- weight * mask`` at the start of every call, so the forward pass always sees pruned
weights; the pruning callback re-applies the masks after every optimizer step, so masked weights
are exactly zero between batches and after fit even with momentum optimizers.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from npas_keras.compat import check_layer
from npas_keras.layers.views import WeightView, prunable_weights, layer_kind

__all__ = ["PruneWrapper", "custom_objects", "serialize_schedule", "deserialize_schedule"]


def _schemes():
    import npas_keras.schemes as schemes
    return schemes


def serialize_schedule(schedule):
    if schedule is None:
        return None
    cfg = schedule.get_config()
    return {"class_name": cfg.get("class_name", type(schedule).__name__), "config": cfg.get("config", cfg)}


def deserialize_schedule(config):
    if config is None:
        return None
    import tensorflow_model_optimization as tfmot
    cls = getattr(tfmot.sparsity.keras, config["class_name"], None)
    if cls is None:
        cls = keras.utils.get_registered_object(config["class_name"])
    if cls is None:
        raise ValueError(f"unknown pruning schedule class {config['class_name']!r}")
    return cls.from_config(config["config"])


def _has_arg(fn, name):
    import inspect
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


@keras.utils.register_keras_serializable(package="npas_keras")
class PruneWrapper(keras.layers.Wrapper):
    """Wraps a prunable layer; masks its prunable weights with the given Scheme.

    Args:
      layer: the tf_keras layer to prune (see ``npas_keras.layers.views.layer_kind``).
      scheme: a Scheme, a scheme name, or a dict from Scheme.to_json() (also as a JSON string).
      schedule: optional tfmot PruningSchedule (``PolynomialDecay`` / ``ConstantSparsity``) that the
        pruning callback follows; None means the masks are fixed (one-shot).
    """

    def __init__(self, layer, scheme, schedule=None, **kwargs):
        check_layer(layer)
        if isinstance(layer, PruneWrapper):
            raise ValueError(f"layer {layer.name!r} is already wrapped by PruneWrapper")
        if layer_kind(layer) is None:
            raise ValueError(f"cannot wrap layer {layer.name!r}: {type(layer).__name__} is not prunable")
        schemes = _schemes()
        if isinstance(scheme, str) and scheme.lstrip().startswith("{"):
            scheme = json.loads(scheme)
        self.scheme = schemes.get_scheme(scheme)
        if isinstance(schedule, dict):
            schedule = deserialize_schedule(schedule)
        self.schedule = schedule
        kwargs.setdefault("name", f"npas_{layer.name}")
        super().__init__(layer, **kwargs)
        self.supports_masking = getattr(layer, "supports_masking", False)
        self.__dict__["_npas_views"] = []      # list of WeightView (not tracked)
        self.__dict__["_npas_masks"] = []      # list of mask variables (tracked via add_weight)
        self.__dict__["_npas_bias_masks"] = []  # per view: bias-mask variable or None
        self.__dict__["_npas_admm"] = None

    # ----------------------------------------------------------------------------- building
    def build(self, input_shape=None):
        if not self.layer.built:
            with tf.name_scope(self.layer.name):
                self.layer.build(input_shape)
            self.layer.built = True
        self._maybe_create_masks()
        super(keras.layers.Wrapper, self).build(input_shape)

    def _maybe_create_masks(self):
        if self._npas_views:
            return True
        views = prunable_weights(self.layer)
        if not views:
            return False
        masks, bias_masks = [], []
        use_bias_mask = self.scheme.name == "filter"
        for v in views:
            masks.append(self.add_weight(
                name=f"{v.name}_mask", shape=v.shape, dtype=v.variable.dtype,
                initializer="ones", trainable=False))
            if use_bias_mask and v.bias is not None:
                bias_masks.append(self.add_weight(
                    name=f"{v.name}_bias_mask", shape=tuple(v.bias.shape), dtype=v.bias.dtype,
                    initializer="ones", trainable=False))
            else:
                bias_masks.append(None)
        if not hasattr(self, "pruning_step"):
            self.pruning_step = self.add_weight(
                name="pruning_step", shape=(), dtype=tf.int64,
                initializer=keras.initializers.Constant(0), trainable=False)
        self.__dict__["_npas_views"] = views
        self.__dict__["_npas_masks"] = masks
        self.__dict__["_npas_bias_masks"] = bias_masks
        return True

    # ----------------------------------------------------------------------------- masking
    @property
    def views(self) -> List[WeightView]:
        return list(self._npas_views)

    @property
    def mask_variables(self):
        return list(self._npas_masks)

    def _mask_ops(self):
        ops = []
        for v, m, bm in zip(self._npas_views, self._npas_masks, self._npas_bias_masks):
            ops.append(v.variable.assign(v.variable * m))
            if bm is not None:
                ops.append(v.bias.assign(v.bias * bm))
        return ops

    def apply_masks(self):
        """weight <- weight * mask for every prunable weight (and masked biases)."""
        self._mask_ops()

    def get_masks(self) -> Dict[str, np.ndarray]:
        """{weight name: bool mask in the weight's own shape}."""
        return {v.name: m.numpy().astype(bool) for v, m in zip(self._npas_views, self._npas_masks)}

    def matrix_masks(self) -> Dict[str, np.ndarray]:
        """{weight name: bool mask in the GEMM view W[out, red]}."""
        return {v.name: v.to_matrix(m.numpy().astype(bool))
                for v, m in zip(self._npas_views, self._npas_masks)}

    def set_masks(self, masks: Dict[str, np.ndarray], apply: bool = True):
        """Sets masks given in the weight's own shape (bool or 0/1), then applies them."""
        for v, m, bm in zip(self._npas_views, self._npas_masks, self._npas_bias_masks):
            if v.name not in masks:
                continue
            arr = np.asarray(masks[v.name]).reshape(v.shape).astype(m.dtype.as_numpy_dtype)
            m.assign(arr)
            if bm is not None:
                rows = v.to_matrix(arr).any(axis=1)
                bm.assign(rows.reshape(tuple(bm.shape)).astype(bm.dtype.as_numpy_dtype))
        if apply:
            self.apply_masks()

    def compute_masks(self, rate=None, importance=None) -> Dict[str, np.ndarray]:
        """Masks from the scheme on the current weights (magnitude importance by default).

        rate overrides the scheme's rate (0 keeps everything); importance, if given, is a dict
        {weight name: array in the weight's shape}.
        """
        schemes = _schemes()
        out = {}
        for v in self._npas_views:
            w = v.to_matrix(v.variable.numpy())
            imp = None if importance is None or v.name not in importance else v.to_matrix(importance[v.name])
            try:
                mat = schemes.compute_mask(w, self.scheme, kernel_hw=v.kernel_hw, rate=rate, importance=imp)
            except ValueError as e:
                raise ValueError(f"layer {self.layer.name!r}, weight {v.name!r} {w.shape}: {e}") from e
            out[v.name] = v.from_matrix(np.asarray(mat, bool))
        return out

    def update_masks(self, rate=None, importance=None):
        """Recomputes the masks from the scheme (at `rate`, default the scheme's) and applies them."""
        self.set_masks(self.compute_masks(rate=rate, importance=importance))

    # ----------------------------------------------------------------------------- ADMM hooks
    def enable_admm(self, targets: Dict[str, np.ndarray], rho: float):
        """Adds rho/2 * ||W - T||^2 (T = Z - U, given per weight in the weight's shape) to the loss."""
        state = self._npas_admm
        if state is None:
            with tf.init_scope():
                state = {"rho": tf.Variable(float(rho), trainable=False, dtype=tf.float32),
                         "targets": {v.name: tf.Variable(np.zeros(v.shape, v.variable.dtype.as_numpy_dtype),
                                                         trainable=False) for v in self._npas_views}}
            self.__dict__["_npas_admm"] = state
        state["rho"].assign(float(rho))
        for name, t in targets.items():
            state["targets"][name].assign(np.asarray(t))

    def disable_admm(self):
        self.__dict__["_npas_admm"] = None

    def admm_penalty(self):
        state = self._npas_admm
        if state is None:
            return None
        total = 0.0
        for v in self._npas_views:
            t = state["targets"][v.name]
            total += tf.reduce_sum(tf.square(tf.cast(v.variable, tf.float32) - tf.cast(t, tf.float32)))
        return 0.5 * state["rho"] * total

    # ----------------------------------------------------------------------------- Keras API
    def call(self, inputs, *args, **kwargs):
        if not self._npas_views:
            kind = layer_kind(self.layer)
            if kind == "mha" and not getattr(self.layer, "_built_from_signature", False):
                value = args[0] if args else kwargs.get("value")
                self.layer._build_from_signature(query=inputs, value=value, key=kwargs.get("key"))
            if kind == "mha" and not prunable_weights(self.layer):
                # MHA builds its projection layers in its first call: trace it once, then mask
                kw = {k: v for k, v in kwargs.items()
                      if k != "training" or _has_arg(self.layer.call, "training")}
                self.layer.call(inputs, *args, **kw)
            self._maybe_create_masks()
        training = kwargs.get("training", None)
        if "training" in kwargs and not _has_arg(self.layer.call, "training"):
            kwargs.pop("training")
        ops = self._mask_ops()
        if self._npas_admm is not None and training is not False:
            self.add_loss(self.admm_penalty())
        with tf.control_dependencies(ops):
            return self.layer.call(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        config = super().get_config()
        config["scheme"] = self.scheme.to_json()
        config["schedule"] = serialize_schedule(self.schedule)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        import copy
        from tf_keras.src.layers import deserialize as deserialize_layer
        config = copy.deepcopy(config)
        use_legacy_format = "module" not in config["layer"]
        layer = deserialize_layer(config.pop("layer"), custom_objects=custom_objects,
                                  use_legacy_format=use_legacy_format)
        return cls(layer, **config)


def custom_objects() -> dict:
    """custom_objects for keras.models.load_model (the wrapper is also registered as
    'npas_keras>PruneWrapper', so loading works without it once npas_keras.layers is imported)."""
    return {"PruneWrapper": PruneWrapper, "npas_keras>PruneWrapper": PruneWrapper}
