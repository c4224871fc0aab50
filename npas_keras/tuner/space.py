"""Discrete views of KerasTuner HyperParameters (for the RL policy and the GP encoding), and the
NPAS search-space helpers a user's build function may call.

Every hyperparameter is seen as a finite list of values: Choice -> its values, Boolean -> [False,
True], Fixed -> [value], Int -> its range (at most `max_values`, evenly spaced), Float -> a grid of
`float_points` points (log-spaced for sampling="log"), or its steps when it has a step.
"""
import math

import numpy as np


def _kind(hp):
    return type(hp).__name__


def discrete_values(hp, max_values=16, float_points=9):
    """The finite list of values the NPAS oracle chooses from for one hyperparameter."""
    kind = _kind(hp)
    if kind == "Choice":
        return list(hp.values)
    if kind == "Boolean":
        return [False, True]
    if kind == "Fixed":
        return [hp.value]
    if kind == "Int":
        step = hp.step or 1
        values = list(range(int(hp.min_value), int(hp.max_value) + 1, int(step)))
        if getattr(hp, "sampling", "linear") == "log" and hp.step and hp.min_value > 0:
            values, v = [], int(hp.min_value)
            while v <= hp.max_value:
                values.append(v)
                v = int(v * step)
        if len(values) > max_values:
            idx = np.unique(np.round(np.linspace(0, len(values) - 1, max_values)).astype(int))
            values = [values[i] for i in idx]
        return values
    if kind == "Float":
        lo, hi = float(hp.min_value), float(hp.max_value)
        if hp.step:
            n = int(math.floor((hi - lo) / hp.step + 1e-9)) + 1
            values = [lo + i * hp.step for i in range(n)]
            if len(values) > max_values:
                idx = np.unique(np.round(np.linspace(0, n - 1, max_values)).astype(int))
                values = [values[i] for i in idx]
            return [float(v) for v in values]
        if getattr(hp, "sampling", "linear") == "log" and lo > 0:
            return [float(v) for v in np.geomspace(lo, hi, float_points)]
        return [float(v) for v in np.linspace(lo, hi, float_points)]
    raise ValueError(f"unsupported hyperparameter type {kind} ({hp.name})")


def _is_numeric_list(values):
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
               for v in values)


def value_index(values, value):
    """Index of `value` in `values` (nearest for numbers), or None."""
    for i, v in enumerate(values):
        if v == value:
            return i
    if _is_numeric_list(values) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(np.argmin([abs(float(v) - float(value)) for v in values]))
    return None


class SpaceEncoder:
    """Encodes value dicts as vectors for the GP: ordered (numeric/bool) hps as one scaled
    coordinate in [0, 1] (their index), unordered (string) choices as one-hot blocks. Inactive /
    missing hps encode as 0.5 (ordered) or all zeros (one-hot)."""

    def __init__(self, hps):
        self.columns = []  # (name, values, one_hot)
        for hp in hps.space:
            values = discrete_values(hp)
            if len(values) <= 1:
                continue
            one_hot = not _is_numeric_list(values) and not all(isinstance(v, bool)
                                                               for v in values)
            self.columns.append((hp.name, values, one_hot))
        self.dim = sum(len(v) if oh else 1 for _, v, oh in self.columns)

    def encode(self, values_dict):
        out = []
        for name, values, one_hot in self.columns:
            idx = value_index(values, values_dict[name]) if name in values_dict else None
            if one_hot:
                block = [0.0] * len(values)
                if idx is not None:
                    block[idx] = 1.0
                out.extend(block)
            else:
                out.append(0.5 if idx is None else idx / (len(values) - 1))
        return np.asarray(out, dtype=np.float64)

    def encode_many(self, dicts):
        if not dicts:
            return np.zeros((0, self.dim))
        return np.stack([self.encode(d) for d in dicts])


# -- helpers for users' build functions -----------------------------------------------------------
OPERATORS = ("conv3x3", "dwsep3x3", "conv1x1")


def width(hp, units, choices=(0.5, 0.75, 1.0), name="width"):
    """`units` scaled by the searched width multiplier hp `name` (one multiplier per model)."""
    mult = hp.Choice(name, list(choices), default=max(choices))
    return max(1, int(round(units * mult)))


def operator(hp, name, options=OPERATORS):
    """A searched operator choice for one layer slot (hp 'op:<name>')."""
    return hp.Choice(f"op:{name}", list(options), default=options[0])


def apply_operator(x, op, filters, activation="relu", name=None):
    """Applies operator `op` ('conv3x3', 'dwsep3x3', 'conv1x1', 'conv5x5') to tensor x."""
    import tf_keras as keras

    layers = keras.layers
    if op == "conv3x3":
        return layers.Conv2D(filters, 3, padding="same", activation=activation, name=name)(x)
    if op == "conv5x5":
        return layers.Conv2D(filters, 5, padding="same", activation=activation, name=name)(x)
    if op == "conv1x1":
        return layers.Conv2D(filters, 1, padding="same", activation=activation, name=name)(x)
    if op == "dwsep3x3":
        x = layers.DepthwiseConv2D(3, padding="same", activation=activation,
                                   name=None if name is None else name + "_dw")(x)
        return layers.Conv2D(filters, 1, padding="same", activation=activation,
                             name=None if name is None else name + "_pw")(x)
    raise ValueError(f"unknown operator {op!r}; known: conv3x3, conv5x5, conv1x1, dwsep3x3")


def search_cnn(input_shape, num_classes=10, filters=(16, 32), units=64):
    """hp -> compiled tf_keras CNN, the model `npas search` and benchmarks/search.py search over:
    conv1 (3x3) -> pool -> block2 (searched operator: conv3x3 or dwsep3x3) -> pool -> fc1 ->
    softmax, every width scaled by one searched multiplier (`width`). `filters` and `units` set
    the dense (multiplier 1.0) size."""
    import tf_keras as keras

    def build(hp):
        inputs = keras.Input(tuple(input_shape))
        x = keras.layers.Conv2D(width(hp, filters[0]), 3, padding="same", activation="relu",
                                name="conv1")(inputs)
        if input_shape[0] >= 16:
            x = keras.layers.MaxPooling2D(2, name="pool1")(x)
        x = apply_operator(x, operator(hp, "block2", ("conv3x3", "dwsep3x3")),
                           width(hp, filters[1]), name="block2")
        x = keras.layers.MaxPooling2D(2, name="pool2")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(width(hp, units), activation="relu", name="fc1")(x)
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
        model = keras.Model(inputs, outputs, name="search_cnn")
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    return build
