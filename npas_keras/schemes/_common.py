"""Shared helpers: input validation, rounding and counting rules, top-k with fixed tie-breaking.

The counting rules live here so that `compute_mask` and `satisfies` use the same arithmetic:

* `round_half_up(x)` = floor(x + 0.5): 2.5 -> 3 (not Python's banker's rounding).
* `unit_count(density, total)`: how many of `total` units (weights, rows, channels, kernels) a
  whole-layer scheme keeps: round_half_up(density * total), at least 1 when density > 0 (a layer
  never loses every unit), at most total.
"""
from __future__ import annotations

import math

import numpy as np

from .scheme import Scheme

EPS = 1e-9


def round_half_up(x):
    """floor(x + 0.5) with a little slack for float noise; int for scalars, int64 array else."""
    out = np.floor(np.asarray(x, dtype=np.float64) + 0.5 + EPS).astype(np.int64)
    return int(out) if out.ndim == 0 else out


def unit_count(density: float, total: int) -> int:
    """Units kept out of `total` at `density` (see module docstring)."""
    if total <= 0:
        return 0
    if density >= 1.0:
        return total
    k = round_half_up(density * total)
    return int(min(total, max(1 if density > 0 else 0, k)))


def as_matrix(matrix, what: str = "matrix") -> np.ndarray:
    arr = np.asarray(matrix)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D GEMM view W[out, red], got shape {arr.shape}")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{what} must be numeric, got dtype {arr.dtype}")
    return arr


def check_kernel_hw(kernel_hw, cols: int) -> tuple[int, int]:
    """Validates `kernel_hw` against the column count; returns (kh, kw)."""
    try:
        kh, kw = (int(v) for v in kernel_hw)
    except (TypeError, ValueError):
        raise ValueError(f"kernel_hw must be a pair (kh, kw) of positive ints, got {kernel_hw!r}") \
            from None
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel_hw must be positive, got {kernel_hw!r}")
    if cols % (kh * kw):
        raise ValueError(f"the matrix has {cols} columns, which is not a multiple of "
                         f"kh*kw = {kh * kw} (kernel_hw={kernel_hw!r}); columns are "
                         "(ky*kw + kx)*cin + c")
    return kh, kw


def effective_density(scheme: Scheme, rate) -> float:
    """Density for one call: 1 - `rate` if given (0 <= rate < 1), else the scheme's own."""
    if rate is None:
        return scheme.density
    if isinstance(rate, bool):
        raise ValueError(f"rate must be a number in [0, 1), got {rate!r}")
    rate = float(rate)
    if not (0.0 <= rate < 1.0):
        raise ValueError(f"rate must be in [0, 1) (0 = keep everything), got {rate!r}")
    return 1.0 - rate


def validate_call(scheme: Scheme, shape, kernel_hw, rate) -> tuple[float, tuple[int, int]]:
    """The argument checks shared by `compute_mask` and `satisfies` -> (density, (kh, kw)).

    ValueError for kernel_hw not dividing the columns, 'pattern' on a non-3x3 kernel, or a
    block shape larger than the matrix.
    """
    rows, cols = shape
    kh, kw = check_kernel_hw(kernel_hw, cols)
    density = effective_density(scheme, rate)
    if scheme.name == "pattern" and (kh, kw) != (3, 3):
        raise ValueError(f"the 'pattern' scheme applies only to 3x3 convolution kernels, got "
                         f"kernel_hw={tuple(kernel_hw)}")
    if scheme.name in ("block_punched", "bcr"):
        block_grid(rows, cols, scheme.block_shape)  # validates the block shape
    return density, (kh, kw)


def importance_scores(matrix: np.ndarray, importance) -> np.ndarray:
    """Squared importance (float64): |W|^2 by default, importance^2 if given."""
    if importance is None:
        scores = np.abs(matrix.astype(np.float64, copy=False))
    else:
        scores = np.asarray(importance, dtype=np.float64)
        if scores.shape != matrix.shape:
            raise ValueError(f"importance has shape {scores.shape}, the matrix {matrix.shape}")
        if (scores < 0).any():
            raise ValueError("importance scores must be >= 0")
    if np.isnan(scores).any():
        raise ValueError("the weights (or importance scores) contain NaN; cannot rank them")
    return np.square(scores)


def topk_last_axis(scores: np.ndarray, k) -> np.ndarray:
    """Boolean mask of the k largest entries along the last axis (k: int or array of the leading
    shape). Ties go to the lower index. Deterministic."""
    order = np.argsort(-scores, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(scores.shape[-1]), order.shape),
                      axis=-1)
    return ranks < np.asarray(k)[..., None]


def topk_flat(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask (same shape) of the k largest entries of the whole array, in O(size).
    Ties at the threshold go to the lower flat index."""
    flat = scores.ravel()
    size = flat.size
    if k <= 0:
        return np.zeros(scores.shape, bool)
    if k >= size:
        return np.ones(scores.shape, bool)
    thr = np.partition(flat, size - k)[size - k]
    keep = flat > thr
    need = k - int(np.count_nonzero(keep))
    ties = flat == thr
    keep |= ties & (np.cumsum(ties) <= need)
    return keep.reshape(scores.shape)


def greedy_fill(increments: np.ndarray, gap: int) -> np.ndarray:
    """Which of the candidates (in priority order) to round up, each adding `increments[i]` kept
    weights, so that the total added comes as close to `gap` as the greedy rule allows.

    Rule: walk the candidates in order; take one when that brings the running total strictly
    closer to `gap` (2*total + inc < 2*gap).  The result ends within max(inc)/2 of `gap` when the
    candidates can reach it.  Since the running total only grows, once an increment of size x is
    refused every later candidate with increment >= x is refused too, so the walk is done in at
    most (number of distinct increments + 1) vectorised steps.  Idempotent under re-projection:
    the accepted candidates come first again and get the same decisions.
    """
    inc = np.asarray(increments, dtype=np.int64)
    accept = np.zeros(inc.shape, bool)
    total = 0
    pos = 0
    limit = None
    while pos < inc.size:
        idx = np.arange(pos, inc.size)
        if limit is not None:
            idx = idx[inc[idx] < limit]
        if idx.size == 0:
            break
        x = inc[idx]
        before = total + np.concatenate(([0], np.cumsum(x)[:-1]))
        ok = 2 * before + x < 2 * gap
        if ok.all():
            accept[idx] = True
            break
        bad = int(np.argmin(ok))
        accept[idx[:bad]] = True
        total = int(before[bad])
        limit = int(x[bad]) if limit is None else min(limit, int(x[bad]))
        pos = int(idx[bad]) + 1
    return accept


def block_grid(rows: int, cols: int, block_shape):
    """(br, bc, nbr, nbc, row sizes of block rows [nbr], col sizes of block cols [nbc]).
    Edge blocks are smaller; a block larger than the matrix is a ValueError."""
    br, bc = block_shape
    if br > rows or bc > cols:
        raise ValueError(f"block shape ({br}, {bc}) larger than the weight matrix ({rows}, {cols})")
    nbr, nbc = math.ceil(rows / br), math.ceil(cols / bc)
    rsz = np.full(nbr, br, np.int64)
    rsz[-1] = rows - (nbr - 1) * br
    csz = np.full(nbc, bc, np.int64)
    csz[-1] = cols - (nbc - 1) * bc
    return br, bc, nbr, nbc, rsz, csz


def to_blocks(x: np.ndarray, br: int, bc: int, fill=0) -> np.ndarray:
    """Pads `x` [rows, cols] to whole blocks with `fill`; returns [nbr, br, nbc, bc]."""
    rows, cols = x.shape
    nbr, nbc = -(-rows // br), -(-cols // bc)
    if (nbr * br, nbc * bc) != (rows, cols):
        padded = np.full((nbr * br, nbc * bc), fill, dtype=x.dtype)
        padded[:rows, :cols] = x
        x = padded
    return x.reshape(nbr, br, nbc, bc)


def from_blocks(b: np.ndarray, rows: int, cols: int) -> np.ndarray:
    nbr, br, nbc, bc = b.shape
    return b.reshape(nbr * br, nbc * bc)[:rows, :cols]


def bcr_block_rows(density: float, row_density: float, rsz: np.ndarray) -> np.ndarray:
    """Kept rows of a bcr block with `rsz` rows: round_half_up(row_density*rows), at least
    ceil(density*rows) (else even all columns could not reach the density) and at least 1."""
    r = round_half_up(row_density * rsz)
    lo = np.maximum(1, np.ceil(density * rsz - EPS).astype(np.int64))
    return np.clip(r, lo, rsz)


def pattern_kernel_size(scheme: Scheme, density: float) -> int:
    """Positions kept per 3x3 kernel at `density`: pattern_size, raised to ceil(9*density) when the
    density asks for more than pattern_size/9 (connectivity pruning alone could not reach it)."""
    k = scheme.pattern_size
    if density > k / 9 + EPS:
        k = min(9, math.ceil(9 * density - EPS))
    return k


def n_m_effective_n(scheme: Scheme, density: float) -> int:
    """n used at `density`: the scheme's n at its own density, else round_half_up(density*m),
    clamped to 1..m (m stays fixed)."""
    if abs(density - scheme.density) < EPS:
        return scheme.n
    return int(min(scheme.m, max(1, round_half_up(density * scheme.m))))


def n_m_tail_count(n: int, m: int, length: int) -> int:
    """Kept weights in a trailing partial run of `length` < m columns:
    round_half_up(n*length/m), at least 1, at most length."""
    if length <= 0:
        return 0
    return int(min(length, max(1, round_half_up(n * length / m))))

