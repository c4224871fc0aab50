"""Per-layer-kind weight views: which variables of a layer are prunable, and how each one is seen
as the GEMM matrix ``W[out, red]`` that the scheme code works on (DESIGN.md, "Weight views").

Every view is "reshape the kernel to 2-D (red, out), then transpose", so the inverse is the same
reshape back; ``kernel_hw`` tells the scheme code how the reduction columns are ordered
(``k = (ky*kw + kx)*cin + c``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import tf_keras as keras

__all__ = ["WeightView", "prunable_weights", "layer_kind", "unsupported_reason"]


@dataclass
class WeightView:
    """One prunable variable of a layer and its GEMM view.

    name: short weight name (``kernel``, ``recurrent_kernel``, ``query_kernel``, ...).
    variable: the tf.Variable.
    red_first: reshape to ``(red, out)`` = ``(shape[0], -1)`` when True (EinsumDense q/k/v kernels
      ``[in, heads, dim]``), else ``(-1, shape[-1])`` (Dense, Conv, RNN, output projections).
    depthwise: depthwise kernels ``[kh, kw, c, m]`` are seen as ``[c*m, kh*kw]``.
    kernel_hw: passed to the scheme code with this view.
    bias: the bias variable whose flattened entries line up with the rows of W (or None);
      masked row-wise under ``filter`` pruning so that a removed filter is removed bias included.
    """

    name: str
    variable: object
    red_first: bool = False
    depthwise: bool = False
    kernel_hw: Tuple[int, int] = (1, 1)
    bias: Optional[object] = None

    @property
    def shape(self):
        return tuple(int(d) for d in self.variable.shape)

    @property
    def matrix_shape(self):
        s = self.shape
        if self.depthwise:
            return (s[-2] * s[-1], int(np.prod(s[:-2])))
        if self.red_first:
            return (int(np.prod(s[1:])), s[0])
        return (s[-1], int(np.prod(s[:-1])))

    def to_matrix(self, array) -> np.ndarray:
        """Kernel-shaped array -> W[out, red]."""
        out, red = self.matrix_shape
        return np.asarray(array).reshape(red, out).T

    def from_matrix(self, matrix) -> np.ndarray:
        """W[out, red] -> kernel-shaped array."""
        return np.asarray(matrix).T.reshape(self.shape)


def _L():
    return keras.layers


def layer_kind(layer) -> Optional[str]:
    """The prunable kind of a layer, or None."""
    L = _L()
    if hasattr(layer, "get_prunable_weights") and callable(layer.get_prunable_weights):
        return "protocol"
    if isinstance(layer, L.SeparableConv2D):
        return "separable_conv2d"
    if isinstance(layer, L.DepthwiseConv2D):
        return "depthwise_conv2d"
    if isinstance(layer, (L.Conv2DTranspose, L.Conv1DTranspose, L.Conv3DTranspose, L.Conv3D)):
        return None
    if isinstance(layer, L.Conv2D):
        return "conv2d"
    if isinstance(layer, L.Conv1D):
        return "conv1d"
    if isinstance(layer, L.Dense):
        return "dense"
    if isinstance(layer, (L.GRU, L.LSTM, L.SimpleRNN)):
        return "rnn"
    if isinstance(layer, L.MultiHeadAttention):
        return "mha"
    return None


def unsupported_reason(layer) -> str:
    return (f"layer kind {type(layer).__name__} is not prunable (supported: Dense, Conv1D, Conv2D, "
            "DepthwiseConv2D, SeparableConv2D, GRU, LSTM, SimpleRNN, MultiHeadAttention, and layers "
            "with get_prunable_weights())")


def _bias_for(var, rows):
    if var is None:
        return None
    return var if int(np.prod(var.shape)) == rows else None


def prunable_weights(layer) -> List[WeightView]:
    """The prunable variables of a *built* layer as WeightViews ([] when none / not built)."""
    kind = layer_kind(layer)
    if kind is None:
        return []
    views: List[WeightView] = []
    if kind == "protocol":
        for i, var in enumerate(layer.get_prunable_weights() or []):
            if len(var.shape) < 2:
                continue
            name = var.name.split("/")[-1].split(":")[0] or f"weight_{i}"
            hw = (int(var.shape[0]), int(var.shape[1])) if len(var.shape) == 4 else (1, 1)
            views.append(WeightView(name, var, kernel_hw=hw))
        return views
    if not layer.built:
        return []
    if kind == "dense":
        views.append(WeightView("kernel", layer.kernel, bias=_bias_for(layer.bias, layer.kernel.shape[-1])))
    elif kind in ("conv2d", "conv1d"):
        s = layer.kernel.shape
        hw = (int(s[0]), int(s[1])) if kind == "conv2d" else (1, int(s[0]))
        views.append(WeightView("kernel", layer.kernel, kernel_hw=hw,
                                bias=_bias_for(layer.bias, s[-1])))
    elif kind == "depthwise_conv2d":
        k = layer.depthwise_kernel
        views.append(WeightView("depthwise_kernel", k, depthwise=True,
                                bias=_bias_for(layer.bias, k.shape[-2] * k.shape[-1])))
    elif kind == "separable_conv2d":
        views.append(WeightView("depthwise_kernel", layer.depthwise_kernel, depthwise=True))
        pk = layer.pointwise_kernel
        views.append(WeightView("pointwise_kernel", pk, bias=_bias_for(layer.bias, pk.shape[-1])))
    elif kind == "rnn":
        cell = layer.cell
        if not getattr(cell, "built", False):
            return []
        views.append(WeightView("kernel", cell.kernel))
        views.append(WeightView("recurrent_kernel", cell.recurrent_kernel))
    elif kind == "mha":
        if not getattr(layer, "_built_from_signature", False):
            return []
        if not all(getattr(layer, f"_{p}_dense").built for p in ("query", "key", "value", "output")):
            return []
        for part in ("query", "key", "value"):
            d = getattr(layer, f"_{part}_dense")
            views.append(WeightView(f"{part}_kernel", d.kernel, red_first=True,
                                    bias=_bias_for(getattr(d, "bias", None),
                                                   int(np.prod(d.kernel.shape[1:])))))
        d = layer._output_dense
        views.append(WeightView("output_kernel", d.kernel,
                                bias=_bias_for(getattr(d, "bias", None), d.kernel.shape[-1])))
    return views
