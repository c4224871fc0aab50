"""Layer specifications for latency measurement, and the scheme masks used to prune them.

A `LayerSpec` is what the latency of one layer depends on: its kind, input shape, output width,
kernel size, strides and padding (not its weights' values, only their zero structure, which the
scheme decides). Specs serialize to a short canonical string used as the cache key.
"""
import dataclasses
import json

import numpy as np

KINDS = ("dense", "conv2d", "depthwise_conv2d")
POOL_KINDS = ("max_pool2d", "avg_pool2d")  # not prunable, but not free either (see predictor)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One prunable layer, as the latency table sees it.

    kind: 'dense', 'conv2d' or 'depthwise_conv2d' (prunable), or 'max_pool2d' / 'avg_pool2d'.
    input_shape: the layer's input shape without the batch dimension (batch is always 1).
    units: Dense units, Conv2D filters, or the depthwise depth multiplier (1 for pooling).
    kernel_size, strides: (h, w) for convolutions and pool sizes; (1, 1) for dense.
    padding: 'same' or 'valid'.
    """

    kind: str
    input_shape: tuple
    units: int
    kernel_size: tuple = (1, 1)
    strides: tuple = (1, 1)
    padding: str = "same"

    def __post_init__(self):
        if self.kind not in KINDS + POOL_KINDS:
            raise ValueError(f"LayerSpec.kind must be one of {KINDS + POOL_KINDS}, "
                             f"got {self.kind!r}")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size))
        object.__setattr__(self, "strides", _pair(self.strides))
        if any(d <= 0 for d in self.input_shape) or not self.input_shape:
            raise ValueError(f"LayerSpec.input_shape must be positive and fully known, "
                             f"got {self.input_shape}")
        if int(self.units) <= 0:
            raise ValueError(f"LayerSpec.units must be positive, got {self.units}")
        object.__setattr__(self, "units", int(self.units))
        if self.kind != "dense" and len(self.input_shape) != 3:
            raise ValueError(f"{self.kind} needs an (h, w, c) input shape, got {self.input_shape}")
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {self.padding!r}")

    # -- identity ---------------------------------------------------------------------------
    def key(self) -> str:
        return json.dumps({"kind": self.kind, "in": list(self.input_shape), "units": self.units,
                           "k": list(self.kernel_size), "s": list(self.strides),
                           "pad": self.padding}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_key(cls, key: str) -> "LayerSpec":
        d = json.loads(key)
        return cls(d["kind"], tuple(d["in"]), d["units"], tuple(d["k"]), tuple(d["s"]), d["pad"])

    @property
    def kernel_hw(self):
        return self.kernel_size if self.kind != "dense" else (1, 1)

    @property
    def in_channels(self):
        return self.input_shape[-1]

    def matrix_shape(self):
        """(out, red) of the GEMM view W[out, red] the scheme masks (per DESIGN.md)."""
        kh, kw = self.kernel_hw
        if self.kind == "dense":
            return (self.units, self.in_channels)
        if self.kind == "conv2d":
            return (self.units, kh * kw * self.in_channels)
        return (self.in_channels * self.units, kh * kw)

    def num_params(self):
        out, red = self.matrix_shape()
        return out * red

    # -- from a real layer -------------------------------------------------------------------
    @classmethod
    def pool_from_layer(cls, layer):
        """The spec of a built channels-last MaxPooling2D / AveragePooling2D layer, or None."""
        import tf_keras as keras

        kind = ("max_pool2d" if isinstance(layer, keras.layers.MaxPooling2D) else
                "avg_pool2d" if isinstance(layer, keras.layers.AveragePooling2D) else None)
        shape = _input_shape(layer) if kind else None
        if shape is None or len(shape) != 3 or layer.data_format != "channels_last":
            return None
        return cls(kind, tuple(shape), 1, tuple(layer.pool_size), tuple(layer.strides),
                   layer.padding)

    @classmethod
    def from_layer(cls, layer):
        """The spec of a built tf_keras Dense / Conv2D / DepthwiseConv2D layer, or None."""
        import tf_keras as keras

        inner = unwrap(layer)
        kind = layer_kind(inner)
        if kind is None:
            return None
        shape = _input_shape(layer)
        if shape is None:
            return None
        if kind == "dense":
            return cls("dense", tuple(shape), inner.units)
        if getattr(inner, "data_format", "channels_last") != "channels_last":
            return None
        if tuple(getattr(inner, "dilation_rate", (1, 1))) != (1, 1):
            return None
        if kind == "conv2d":
            if getattr(inner, "groups", 1) != 1:
                return None
            return cls("conv2d", tuple(shape), inner.filters, tuple(inner.kernel_size),
                       tuple(inner.strides), inner.padding)
        assert isinstance(inner, keras.layers.DepthwiseConv2D)
        return cls("depthwise_conv2d", tuple(shape), inner.depth_multiplier,
                   tuple(inner.kernel_size), tuple(inner.strides), inner.padding)

    # -- a one-layer model -------------------------------------------------------------------
    def build_model(self, seed: int = 0):
        """A one-layer tf_keras model (linear activation, with bias) with random weights."""
        import tf_keras as keras

        inputs = keras.Input(shape=self.input_shape, batch_size=1)
        if self.kind in POOL_KINDS:
            pool = (keras.layers.MaxPooling2D if self.kind == "max_pool2d"
                    else keras.layers.AveragePooling2D)
            return keras.Model(inputs, pool(self.kernel_size, self.strides, self.padding)(inputs))
        if self.kind == "dense":
            layer = keras.layers.Dense(self.units)
        elif self.kind == "conv2d":
            layer = keras.layers.Conv2D(self.units, self.kernel_size, strides=self.strides,
                                        padding=self.padding)
        else:
            layer = keras.layers.DepthwiseConv2D(self.kernel_size, strides=self.strides,
                                                 padding=self.padding,
                                                 depth_multiplier=self.units)
        model = keras.Model(inputs, layer(inputs))
        rng = np.random.default_rng(seed)
        model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.1
                           for w in model.get_weights()])
        return model


def _pair(v):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v}")
    return v


def _input_shape(layer):
    try:
        shape = layer.input_shape
    except (AttributeError, RuntimeError):
        return None
    if isinstance(shape, list):
        if len(shape) != 1:
            return None
        shape = shape[0]
    shape = tuple(shape)[1:]
    if not shape or any(d is None for d in shape):
        return None
    return shape


def unwrap(layer):
    """The Keras layer inside pruning wrappers (tfmot's PruneLowMagnitude, npas wrappers)."""
    seen = 0
    while hasattr(layer, "layer") and seen < 4 and not _is_core_kind(layer):
        layer = layer.layer
        seen += 1
    return layer


def _is_core_kind(layer):
    import tf_keras as keras

    return isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))


def layer_kind(layer):
    """'dense', 'conv2d', 'depthwise_conv2d', or None for layers the table does not model
    (npas_keras.layers.layer_kind, restricted to the kinds in KINDS)."""
    from npas_keras.layers.views import layer_kind as view_kind

    kind = view_kind(unwrap(layer))
    return kind if kind in KINDS else None


# -- masks on the weight views (npas_keras.layers.views, DESIGN.md "Weight views") -------------
def scheme_masks(layer, scheme):
    """{weight name: 0/1 float32 mask in the weight's shape} that `scheme` gives `layer`'s
    prunable weights by magnitude (all ones for scheme None), computed by
    npas_keras.schemes.compute_mask on each WeightView's GEMM matrix, as npas_keras.prune does."""
    from npas_keras.layers.views import prunable_weights

    out = {}
    for view in prunable_weights(unwrap(layer)):
        kernel = view.variable.numpy()
        if scheme is None:
            out[view.name] = np.ones(kernel.shape, np.float32)
            continue
        from npas_keras import schemes

        mask = schemes.compute_mask(view.to_matrix(kernel), schemes.get_scheme(scheme),
                                    kernel_hw=view.kernel_hw)
        out[view.name] = view.from_matrix(np.asarray(mask, dtype=np.float32))
    return out


def prune_layer_weights(layer, scheme):
    """Zeroes `layer`'s prunable weights in place by `scheme`; returns scheme_masks()."""
    from npas_keras.layers.views import prunable_weights

    masks = scheme_masks(layer, scheme)
    for view in prunable_weights(unwrap(layer)):
        view.variable.assign(view.variable.numpy() * masks[view.name])
    return masks
