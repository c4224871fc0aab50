"""Scheme -> mask on the GEMM view W[out, red] (rows = output units, columns = reduction).

For convolutions the columns are ordered ``k = (ky*kw + kx)*cin + c`` (``kernel_hw=(kh, kw)``,
``cin = cols // (kh*kw)``); Dense and RNN kernels use ``kernel_hw=(1, 1)``.

Importance is |W| (or the given `importance`); a group's importance is the L2 norm of its members'
importance.  Everything is vectorised NumPy and deterministic: ties go to the lower index (lower
row / column / block / kernel number).  See docs/schemes.md for the definitions and rounding.
"""
from __future__ import annotations

import numpy as np

from . import _common as C
from .scheme import bcr_row_density, get_scheme


def compute_mask(matrix, scheme, *, kernel_hw=(1, 1), rate=None, importance=None) -> np.ndarray:
    """Boolean mask (True = kept) of `scheme` for `matrix` (a 2-D GEMM view).

    `rate` overrides ``scheme.rate`` for this call (gradual schedules); ``rate=0`` gives an
    all-True mask.  `importance` (same shape, >= 0) replaces |W| as the importance score.
    """
    scheme = get_scheme(scheme)
    w = C.as_matrix(matrix)
    density, (kh, kw) = C.validate_call(scheme, w.shape, kernel_hw, rate)
    if density >= 1.0 or w.size == 0:
        return np.ones(w.shape, bool)
    energy = C.importance_scores(w, importance)
    fn = _MASKERS[scheme.name]
    return fn(energy, scheme, density, (kh, kw))


def project(matrix, scheme, *, kernel_hw=(1, 1), rate=None) -> np.ndarray:
    """Euclidean projection of `matrix` onto the scheme's constraint set (ADMM's Z-step):
    ``matrix * compute_mask(matrix, ...)`` in the matrix's dtype."""
    w = C.as_matrix(matrix)
    mask = compute_mask(w, scheme, kernel_hw=kernel_hw, rate=rate)
    return np.where(mask, w, np.zeros((), w.dtype)).astype(w.dtype, copy=False)


# ---------------------------------------------------------------------------- per-scheme maskers
# Each takes the squared importance `e` (float64, [rows, cols]), the scheme, the density for this
# call (0 < density < 1) and (kh, kw); returns the bool mask.

def _unstructured(e, scheme, density, khw):
    return C.topk_flat(e, C.unit_count(density, e.size))


def _filter(e, scheme, density, khw):
    rows = e.shape[0]
    keep = C.topk_flat(e.sum(axis=1), C.unit_count(density, rows))
    return np.broadcast_to(keep[:, None], e.shape).copy()


def _channel(e, scheme, density, khw):
    rows, cols = e.shape
    taps = khw[0] * khw[1]
    cin = cols // taps
    group = e.reshape(rows, taps, cin).sum(axis=(0, 1))
    keep = C.topk_flat(group, C.unit_count(density, cin))
    return np.broadcast_to(np.tile(keep, taps)[None, :], e.shape).copy()


def _n_m(e, scheme, density, khw):
    rows, cols = e.shape
    m = scheme.m
    n = C.n_m_effective_n(scheme, density)
    if n >= m:
        return np.ones(e.shape, bool)
    full = cols // m
    mask = np.empty(e.shape, bool)
    if full:
        runs = e[:, :full * m].reshape(rows, full, m)
        mask[:, :full * m] = C.topk_last_axis(runs, n).reshape(rows, full * m)
    tail = cols - full * m
    if tail:
        mask[:, full * m:] = C.topk_last_axis(e[:, full * m:], C.n_m_tail_count(n, m, tail))
    return mask


def _block_columns(seg, csz, incr, density_per_block, target):
    """Shared by block_punched and bcr: choose per-block kept column counts and columns.

    seg: [nbr, nbc, bc] column-segment energies (padding columns = -inf).
    csz: [nbc] real columns per block column.  incr: [nbr, nbc] kept weights added per kept column.
    density_per_block: [nbr, nbc] ideal kept columns (may be fractional).
    Each block keeps floor or ceil of its ideal count; which blocks round up is decided by
    `greedy_fill` in the order of the energy of the column they would add (largest first, ties by
    block number), so the total comes as close as it can to `target` kept weights.
    """
    nbr, nbc, bc = seg.shape
    ideal = density_per_block
    floor_k = np.floor(ideal + C.EPS).astype(np.int64)
    floor_k = np.minimum(floor_k, csz[None, :])
    frac = ideal - floor_k
    cand = (frac > C.EPS) & (floor_k < csz[None, :])
    order = np.argsort(-seg, axis=-1, kind="stable")
    sorted_seg = np.take_along_axis(seg, order, axis=-1)
    nxt = np.take_along_axis(sorted_seg, np.minimum(floor_k, bc - 1)[..., None], axis=-1)[..., 0]
    gap = int(target - (incr * floor_k).sum())
    flat_cand = np.flatnonzero(cand.ravel())
    if flat_cand.size and gap > 0:
        prio = np.argsort(-nxt.ravel()[flat_cand], kind="stable")
        chosen = flat_cand[prio]
        up = C.greedy_fill(incr.ravel()[chosen], gap)
        bump = np.zeros(nbr * nbc, np.int64)
        bump[chosen[up]] = 1
        floor_k = floor_k + bump.reshape(nbr, nbc)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(bc), order.shape), axis=-1)
    return ranks < floor_k[..., None]  # [nbr, nbc, bc]


def _block_punched(e, scheme, density, khw):
    rows, cols = e.shape
    br, bc, nbr, nbc, rsz, csz = C.block_grid(rows, cols, scheme.block_shape)
    seg = C.to_blocks(e, br, bc).sum(axis=1)  # [nbr, nbc, bc]
    colvalid = (np.arange(nbc * bc) < cols).reshape(nbc, bc)
    seg = np.where(colvalid[None], seg, -np.inf)
    incr = np.broadcast_to(rsz[:, None], (nbr, nbc))
    ideal = np.broadcast_to(density * csz[None, :].astype(np.float64), (nbr, nbc))
    target = C.round_half_up(density * rows * cols)
    keep_col = _block_columns(seg, csz, incr, ideal, target)
    blocks = np.broadcast_to(keep_col[:, None, :, :], (nbr, br, nbc, bc))
    return C.from_blocks(blocks, rows, cols).copy()


def _bcr(e, scheme, density, khw):
    rows, cols = e.shape
    br, bc, nbr, nbc, rsz, csz = C.block_grid(rows, cols, scheme.block_shape)
    row_density = bcr_row_density(scheme, density)
    b = C.to_blocks(e, br, bc)  # [nbr, br, nbc, bc]
    # rows: rank by row-segment norm inside each block
    rowseg = b.sum(axis=3)  # [nbr, br, nbc]
    rowvalid = (np.arange(nbr * br) < rows).reshape(nbr, br)
    rowseg = np.where(rowvalid[:, :, None], rowseg, -np.inf)
    kept_rows = C.bcr_block_rows(density, row_density, rsz)  # [nbr]
    rows_k = np.broadcast_to(kept_rows[:, None], (nbr, nbc))
    keep_row = C.topk_last_axis(np.moveaxis(rowseg, 1, 2), rows_k)  # [nbr, nbc, br]
    # columns: rank by column-segment norm over the kept rows
    seg = (b * np.moveaxis(keep_row, 2, 1)[..., None]).sum(axis=1)  # [nbr, nbc, bc]
    colvalid = (np.arange(nbc * bc) < cols).reshape(nbc, bc)
    seg = np.where(colvalid[None], seg, -np.inf)
    area = rsz[:, None].astype(np.float64) * csz[None, :]
    ideal = np.minimum(density * area / rows_k, csz[None, :])
    target = C.round_half_up(density * rows * cols)
    keep_col = _block_columns(seg, csz, rows_k, ideal, target)
    blocks = np.moveaxis(keep_row, 2, 1)[..., None] & keep_col[:, None, :, :]
    return C.from_blocks(blocks, rows, cols).copy()


def _pattern(e, scheme, density, khw):
    rows, cols = e.shape
    cin = cols // 9
    kern = e.reshape(rows, 9, cin).transpose(0, 2, 1).reshape(-1, 9)  # [kernels, 9 positions]
    nk = kern.shape[0]
    k = C.pattern_kernel_size(scheme, density)
    if k >= 9:
        kmask = np.ones_like(kern, dtype=bool)
        retained = kern.sum(axis=1)
    else:
        patterns = pattern_set(kern, k, scheme.pattern_count)  # [P, 9] bool
        energy = kern @ patterns.T.astype(np.float64)  # [kernels, P]
        choice = np.argmax(energy, axis=1)
        kmask = patterns[choice]
        retained = energy[np.arange(nk), choice]
    kept = C.topk_flat(retained, C.unit_count(density * 9 / k, nk))
    kmask = kmask & kept[:, None]
    return kmask.reshape(rows, cin, 9).transpose(0, 2, 1).reshape(rows, cols)


def pattern_set(kernel_energy: np.ndarray, k: int, count: int) -> np.ndarray:
    """PatDNN pattern set: the `count` most frequent top-`k` position sets over the kernels
    (by magnitude; kernels with zero energy do not vote), ties by the smaller bit code
    (bit t = position t = ky*3 + kx).  Returns a [P, 9] bool array, P <= count."""
    top = C.topk_last_axis(kernel_energy, k)
    codes = top.astype(np.int64) @ (1 << np.arange(9))
    voters = kernel_energy.sum(axis=1) > 0
    if voters.any():
        codes = codes[voters]
    counts = np.bincount(codes, minlength=512)
    order = np.argsort(-counts, kind="stable")
    chosen = order[:count]
    chosen = chosen[counts[chosen] > 0]
    return ((chosen[:, None] >> np.arange(9)) & 1).astype(bool)


_MASKERS = {
    "unstructured": _unstructured,
    "filter": _filter,
    "channel": _channel,
    "n_m": _n_m,
    "block_punched": _block_punched,
    "bcr": _bcr,
    "pattern": _pattern,
}
