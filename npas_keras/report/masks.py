"""A picture of every pruning scheme's mask on one random matrix (docs/images/scheme_masks.png).

Regenerate the docs picture with ``npas report --masks docs/images``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .plots import _new_figure

MASK_SCHEMES = ("unstructured", "filter", "channel", "n_m", "block_punched", "bcr", "pattern")
MASKS_FILENAME = "scheme_masks.png"


def mask_schemes(schemes: Sequence = MASK_SCHEMES, density: float = 0.25,
                 block_shape=(8, 9)) -> dict:
    """{label: Scheme} at `density`; block schemes get `block_shape` (names, specs such as "2:4",
    Scheme objects or their JSON dicts are accepted; objects are used as they are)."""
    from npas_keras.schemes import BLOCK_SCHEMES, Scheme, get_scheme

    out = {}
    for spec in schemes:
        if isinstance(spec, str) and ":" not in spec:
            name = get_scheme(spec).name
            kw = {"block_shape": tuple(block_shape)} if name in BLOCK_SCHEMES else {}
            scheme = Scheme(name, density=density, **kw)
        else:
            scheme = get_scheme(spec)
        label = spec if isinstance(spec, str) else scheme.name
        out[label] = scheme
    return out


def _title(label, scheme) -> str:
    extra = ""
    if scheme.name in ("block_punched", "bcr") and scheme.block_shape:
        extra = f" {scheme.block_shape[0]}x{scheme.block_shape[1]}"
    elif scheme.name == "n_m":
        extra = f" {scheme.n}:{scheme.m}"
    return f"{label}{extra}" if label == scheme.name else f"{label} ({scheme.name})"


def plot_masks(path: str, schemes: Sequence = MASK_SCHEMES, shape=(32, 36), kernel_hw=(3, 3),
               density: float = 0.25, block_shape=(8, 9), seed: int = 0, cols: int = 4,
               dpi: int = 80) -> dict:
    """Draws one panel per scheme: the mask that `npas_keras.schemes.compute_mask` gives for a
    seeded random matrix of `shape` (the GEMM view ``W[out, kh*kw*cin]``; kept = dark).

    Returns {"path": path, "masks": {label: bool array}, "schemes": {label: Scheme},
    "kernel_hw": kernel_hw} so callers can check the masks (e.g. with `schemes.satisfies`).
    """
    from npas_keras.schemes import compute_mask

    rows, ncols = int(shape[0]), int(shape[1])
    kh, kw = (int(v) for v in kernel_hw)
    weights = np.random.default_rng(seed).standard_normal((rows, ncols)).astype(np.float32)
    chosen = mask_schemes(schemes, density=density, block_shape=block_shape)
    if not chosen:
        raise ValueError("plot_masks needs at least one scheme")
    masks: dict[str, np.ndarray] = {}
    for label, scheme in chosen.items():
        masks[label] = np.asarray(compute_mask(weights, scheme, kernel_hw=(kh, kw)), dtype=bool)

    n = len(masks)
    cols = max(1, min(cols, n))
    grid_rows = math.ceil(n / cols)
    fig = _new_figure(width=2.3 * cols, height=grid_rows * (2.1 * rows / ncols + 0.7) + 0.4)
    fig.set_dpi(dpi)
    for i, (label, mask) in enumerate(masks.items()):
        ax = fig.add_subplot(grid_rows, cols, i + 1)
        ax.imshow(mask, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        scheme = chosen[label]
        ax.set_title(f"{_title(label, scheme)}\nkept {mask.mean():.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"masks on a {rows}x{ncols} weight W[out, {kh}*{kw}*cin], density {density}; "
                 "kept = dark",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=dpi)
    return {"path": path, "masks": masks, "schemes": chosen, "kernel_hw": (kh, kw)}
