"""Checking masks: `satisfies` (does a mask have a scheme's structure and density?) and
`describe_mask` (which structure does a mask of zeros have?).

`satisfies` does not call `compute_mask`; it checks the definitions directly, with the counting
rules of `_common` and these tolerances on the kept count (the scheme's rounding granularity):

* unstructured / filter / channel / pattern: within 1 unit (weight, row, channel, kernel) of
  ``density * units``.
* n_m: every full run of m keeps exactly n; the trailing partial run exactly its rounded share.
* block_punched / bcr: every block keeps floor or ceil of its ideal share of columns (bcr: exactly
  the rule's number of rows), and the whole matrix within ``block_rows/2 + 1`` weights of
  ``density * size``.
"""
from __future__ import annotations

import numpy as np

from . import _common as C
from .scheme import bcr_row_density, get_scheme


def _as_mask(mask) -> np.ndarray:
    arr = C.as_matrix(mask, "mask")
    return arr if arr.dtype == bool else arr != 0


def satisfies(mask, scheme, *, kernel_hw=(1, 1), rate=None) -> bool:
    """True if `mask` (bool or 0/1, the GEMM view) has `scheme`'s structure and, within rounding,
    its density (``1 - rate`` if `rate` is given; ``rate=0`` means the mask must be all True).

    Bad arguments (unknown scheme, kernel_hw not dividing the columns, a block larger than the
    matrix, pattern on a non-3x3 kernel) raise ValueError as in `compute_mask`.
    """
    scheme = get_scheme(scheme)
    m = _as_mask(mask)
    density, (kh, kw) = C.validate_call(scheme, m.shape, kernel_hw, rate)
    if density >= 1.0 or m.size == 0:
        return bool(m.all())
    return bool(_CHECKERS[scheme.name](m, scheme, density, (kh, kw)))


def _within(kept, ideal, tol) -> bool:
    return abs(float(kept) - float(ideal)) <= tol + C.EPS


def _check_unstructured(m, scheme, d, khw):
    return _within(np.count_nonzero(m), d * m.size, 1.0)


def _check_filter(m, scheme, d, khw):
    any_, all_ = m.any(axis=1), m.all(axis=1)
    return bool((any_ == all_).all()) and _within(all_.sum(), d * m.shape[0], 1.0)


def _check_channel(m, scheme, d, khw):
    rows, cols = m.shape
    taps = khw[0] * khw[1]
    col_any, col_all = m.any(axis=0), m.all(axis=0)
    if not (col_any == col_all).all():
        return False
    per_tap = col_all.reshape(taps, cols // taps)
    if not (per_tap == per_tap[:1]).all():
        return False
    return _within(per_tap[0].sum(), d * (cols // taps), 1.0)


def _check_n_m(m, scheme, d, khw):
    rows, cols = m.shape
    mm = scheme.m
    n = C.n_m_effective_n(scheme, d)
    if n >= mm:
        return bool(m.all())
    full = cols // mm
    if full and not (m[:, :full * mm].reshape(rows, full, mm).sum(axis=2) == n).all():
        return False
    tail = cols - full * mm
    if tail and not (m[:, full * mm:].sum(axis=1) == C.n_m_tail_count(n, mm, tail)).all():
        return False
    return True


def _floor_ceil_ok(k, ideal) -> bool:
    return bool(((k >= np.floor(ideal + C.EPS)) & (k <= np.ceil(ideal - C.EPS))).all())


def _check_block_punched(m, scheme, d, khw):
    rows, cols = m.shape
    br, bc, nbr, nbc, rsz, csz = C.block_grid(rows, cols, scheme.block_shape)
    b = C.to_blocks(m, br, bc, fill=False)
    rowvalid = (np.arange(nbr * br) < rows).reshape(nbr, br)[:, :, None, None]
    first = b[:, :1]
    if not (np.where(rowvalid, b, first) == first).all():
        return False
    k = first[:, 0].sum(axis=-1)  # [nbr, nbc] kept columns per block
    if not _floor_ceil_ok(k, d * csz[None, :].astype(np.float64)):
        return False
    return _within(np.count_nonzero(m), d * m.size, br / 2 + 1)


def _check_bcr(m, scheme, d, khw):
    rows, cols = m.shape
    br, bc, nbr, nbc, rsz, csz = C.block_grid(rows, cols, scheme.block_shape)
    b = C.to_blocks(m, br, bc, fill=False)
    rows_any = b.any(axis=3)  # [nbr, br, nbc]
    cols_any = b.any(axis=1)  # [nbr, nbc, bc]
    if not ((rows_any[..., None] & cols_any[:, None]) == b).all():
        return False
    r = rows_any.sum(axis=1)  # [nbr, nbc]
    c = cols_any.sum(axis=2)
    want_r = np.broadcast_to(C.bcr_block_rows(d, bcr_row_density(scheme, d), rsz)[:, None],
                             (nbr, nbc))
    ideal_c = np.minimum(d * rsz[:, None].astype(np.float64) * csz[None, :] / want_r,
                         csz[None, :])
    empty = r == 0
    if (np.floor(ideal_c[empty] + C.EPS) > 0).any():
        return False
    full = ~empty
    if not (r[full] == want_r[full]).all():
        return False
    if not _floor_ceil_ok(c[full], ideal_c[full]):
        return False
    return _within(np.count_nonzero(m), d * m.size, br / 2 + 1)


def _check_pattern(m, scheme, d, khw):
    rows, cols = m.shape
    kern = m.reshape(rows, 9, cols // 9).transpose(0, 2, 1).reshape(-1, 9)
    k = C.pattern_kernel_size(scheme, d)
    counts = kern.sum(axis=1)
    live = counts > 0
    if not (counts[live] == k).all():
        return False
    if k < 9:
        codes = kern[live].astype(np.int64) @ (1 << np.arange(9))
        if np.unique(codes).size > scheme.pattern_count:
            return False
    return _within(live.sum(), d * 9 / k * kern.shape[0], 1.0)


_CHECKERS = {
    "unstructured": _check_unstructured,
    "filter": _check_filter,
    "channel": _check_channel,
    "n_m": _check_n_m,
    "block_punched": _check_block_punched,
    "bcr": _check_bcr,
    "pattern": _check_pattern,
}


# ---------------------------------------------------------------------------- describe_mask

_N_M_TRY = (2, 4, 8, 16, 32)
_MAX_DESCRIBED_PATTERNS = 32


def _pow2_upto(limit: int):
    out, v = [], 2
    while v <= limit:
        out.append(v)
        v *= 2
    return out


def describe_mask(mask, kernel_hw=(1, 1)) -> dict:
    """Infers the structure of a mask (or of a stripped weight matrix: nonzero = kept).

    Returns ``{"scheme": name or "dense", "density": kept fraction}`` plus what was inferred:
    ``rows_kept`` (filter), ``channels_kept`` (channel), ``n``/``m`` (n_m, smallest m that fits),
    ``pattern_size``/``pattern_count`` (pattern), ``block_shape`` (block_punched, bcr).
    The most specific structure wins, in this order: dense, filter, channel, pattern (3x3 only,
    at most 32 distinct patterns), block_punched, n_m, bcr, unstructured.  A mask can fit several
    (a 16x16 block_punched mask keeping 8 of 16 columns is also 8:16); the first is reported.
    block_punched: block rows = the largest row count whose aligned row groups are identical;
    block columns = the smallest power of two at which every block keeps its floor/ceil share.
    bcr: the largest power-of-two block shape in which every block is a product set rows x cols.
    """
    m = _as_mask(mask)
    rows, cols = m.shape
    kh, kw = C.check_kernel_hw(kernel_hw, cols)
    density = float(m.mean()) if m.size else 1.0
    out = {"scheme": "dense", "density": density}
    if m.size == 0 or m.all():
        return out
    row_any, row_all = m.any(axis=1), m.all(axis=1)
    if (row_any == row_all).all():
        return {**out, "scheme": "filter", "rows_kept": int(row_all.sum())}
    taps = kh * kw
    cin = cols // taps
    col_any, col_all = m.any(axis=0), m.all(axis=0)
    cols_whole = bool((col_any == col_all).all())
    if cols_whole:
        per_tap = col_all.reshape(taps, cin)
        if (per_tap == per_tap[:1]).all():
            return {**out, "scheme": "channel", "channels_kept": int(per_tap[0].sum())}

    if (kh, kw) == (3, 3):
        found = _describe_pattern(m)
        if found:
            return {**out, **found}

    br = _identical_row_groups(m)
    if br >= 2:
        return {**out, "scheme": "block_punched",
                "block_shape": (br, _balanced_block_cols(m, br, density))}

    for mm in _N_M_TRY:
        full = cols // mm
        if full == 0:
            break
        counts = m[:, :full * mm].reshape(rows, full, mm).sum(axis=2)
        n = int(counts[0, 0])
        if 1 <= n < mm and (counts == n).all():
            return {**out, "scheme": "n_m", "n": n, "m": mm}

    shape = _product_blocks(m)
    if shape is not None:
        return {**out, "scheme": "bcr", "block_shape": shape}
    return {**out, "scheme": "unstructured"}


def _describe_pattern(m):
    rows, cols = m.shape
    kern = m.reshape(rows, 9, cols // 9).transpose(0, 2, 1).reshape(-1, 9)
    counts = kern.sum(axis=1)
    live = counts > 0
    if live.sum() < 2:
        return None
    k = int(counts[live][0])
    if not (counts[live] == k).all():
        return None
    codes = np.unique(kern[live].astype(np.int64) @ (1 << np.arange(9)))
    if codes.size > _MAX_DESCRIBED_PATTERNS:
        return None
    return {"scheme": "pattern", "pattern_size": k, "pattern_count": int(codes.size)}


def _identical_row_groups(m) -> int:
    """Largest br >= 2 such that every aligned group of br rows has identical rows (1 if none)."""
    rows = m.shape[0]
    if rows < 2:
        return 1
    same = (m[1:] == m[:-1]).all(axis=1)  # same[i-1]: row i equals row i-1
    if not same.any():
        return 1
    idx = np.arange(1, rows)
    for br in range(rows, 1, -1):
        inside = idx % br != 0
        if same[inside].all():
            return br
    return 1


def _balanced_block_cols(m, br, density) -> int:
    rows, cols = m.shape
    heads = m[::br]  # one row per block row
    for bc in _pow2_upto(cols) + ([cols] if cols & (cols - 1) else []):
        nbc = -(-cols // bc)
        pad = np.zeros((heads.shape[0], nbc * bc), bool)
        pad[:, :cols] = heads
        k = pad.reshape(heads.shape[0], nbc, bc).sum(axis=2)
        csz = np.full(nbc, bc)
        csz[-1] = cols - (nbc - 1) * bc
        if (np.abs(k - density * csz[None, :]) < 1 + 1e-6).all():
            return bc
    return cols


def _product_blocks(m):
    """Largest-area power-of-two (br, bc), both >= 2, for which every block is a product set and
    some block keeps >= 2 rows and >= 2 columns; None if there is none."""
    rows, cols = m.shape
    best, best_area = None, 0
    for br in _pow2_upto(rows):
        widest = 0
        for bc in _pow2_upto(cols):
            b = C.to_blocks(m, br, bc, fill=False)
            rows_any, cols_any = b.any(axis=3), b.any(axis=1)
            if not ((rows_any[..., None] & cols_any[:, None]) == b).all():
                break  # a wider block cannot be a product set either (aligned sub-blocks)
            widest = bc
            nontrivial = ((rows_any.sum(axis=1) >= 2) & (cols_any.sum(axis=2) >= 2)).any()
            if nontrivial and br * bc > best_area:
                best, best_area = (br, bc), br * bc
        if widest == 0:
            break  # (br, 2) fails, so does every taller block
    return best
