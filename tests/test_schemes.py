"""Scheme library (npas_keras.schemes): masks against their definitions, checked by independent
reference checkers written here (loops over blocks, no library helpers), plus satisfies(),
describe_mask(), JSON round trips and validation."""
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npas_keras.schemes import (SCHEME_NAMES, Scheme, compute_mask, describe_mask, get_scheme,
                                project, satisfies)

# NPAS_HYPOTHESIS_EXAMPLES=500 for a longer stress run
EXAMPLES = int(os.environ.get("NPAS_HYPOTHESIS_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EPS = 1e-9


# ------------------------------------------------------------------ reference rules (from docs)

def rhu(x):
    """round half up"""
    return int(math.floor(x + 0.5 + EPS))


def unit_count(d, total):
    return min(total, max(1, rhu(d * total)))


def floor_ceil(k, ideal):
    return math.floor(ideal + EPS) <= k <= math.ceil(ideal - EPS)


def kept_ge_removed(kept_vals, removed_vals):
    kept_vals, removed_vals = np.asarray(kept_vals), np.asarray(removed_vals)
    if kept_vals.size == 0 or removed_vals.size == 0:
        return True
    return kept_vals.min() >= removed_vals.max() - 1e-12


def blocks(rows, cols, br, bc):
    for r0 in range(0, rows, br):
        for c0 in range(0, cols, bc):
            yield slice(r0, min(rows, r0 + br)), slice(c0, min(cols, c0 + bc))


def kernels(x, cin):
    """[rows, 9*cin] -> [rows*cin, 9], kernel (o, c) position t = column t*cin + c."""
    rows = x.shape[0]
    return np.stack([x[:, t * cin:(t + 1) * cin] for t in range(9)], axis=-1).reshape(rows * cin, 9)


def reference_check(mask, w, scheme, kernel_hw, d):
    """Asserts that `mask` is `scheme`'s mask of `w` at density `d` by the written definitions."""
    rows, cols = w.shape
    e = w.astype(np.float64) ** 2
    a = np.abs(w)
    assert mask.dtype == bool and mask.shape == w.shape
    name = scheme.name
    if name == "unstructured":
        assert mask.sum() == unit_count(d, w.size)
        assert kept_ge_removed(a[mask], a[~mask])
    elif name == "filter":
        assert all(mask[i].all() or not mask[i].any() for i in range(rows))
        kept = mask.all(axis=1)
        assert kept.sum() == unit_count(d, rows)
        norms = e.sum(axis=1)
        assert kept_ge_removed(norms[kept], norms[~kept])
    elif name == "channel":
        taps = kernel_hw[0] * kernel_hw[1]
        cin = cols // taps
        kept = []
        for c in range(cin):
            group = mask[:, [t * cin + c for t in range(taps)]]
            assert group.all() or not group.any()
            kept.append(group.all())
        kept = np.array(kept)
        assert kept.sum() == unit_count(d, cin)
        norms = np.array([e[:, [t * cin + c for t in range(taps)]].sum() for c in range(cin)])
        assert kept_ge_removed(norms[kept], norms[~kept])
    elif name == "n_m":
        n, m = scheme.n, scheme.m
        if abs(d - scheme.density) > EPS:
            n = min(m, max(1, rhu(d * m)))
        for c0 in range(0, cols, m):
            run_m, run_a = mask[:, c0:c0 + m], a[:, c0:c0 + m]
            length = run_m.shape[1]
            want = n if length == m else min(length, max(1, rhu(n * length / m)))
            assert (run_m.sum(axis=1) == want).all()
            for i in range(rows):
                assert kept_ge_removed(run_a[i][run_m[i]], run_a[i][~run_m[i]])
    elif name == "block_punched":
        br, bc = scheme.block_shape
        for rs, cs in blocks(rows, cols, br, bc):
            sub = mask[rs, cs]
            assert (sub == sub[0]).all(), "block rows differ"
            assert floor_ceil(sub[0].sum(), d * sub.shape[1])
            seg = e[rs, cs].sum(axis=0)
            assert kept_ge_removed(seg[sub[0]], seg[~sub[0]])
        assert abs(mask.sum() - d * w.size) <= br / 2 + 1 + EPS
    elif name == "bcr":
        br, bc = scheme.block_shape
        rd0 = math.sqrt(scheme.density) if scheme.row_density is None else scheme.row_density
        rd = 1.0 if rd0 >= 1 else d ** (math.log(rd0) / math.log(scheme.density))
        for rs, cs in blocks(rows, cols, br, bc):
            sub = mask[rs, cs]
            R, Cn = sub.shape
            rk, ck = sub.any(axis=1), sub.any(axis=0)
            assert (sub == np.outer(rk, ck)).all(), "block not rows x cols"
            want_r = min(R, max(1, math.ceil(d * R - EPS), rhu(rd * R)))
            ideal_c = min(d * R * Cn / want_r, Cn)
            if not sub.any():
                assert math.floor(ideal_c + EPS) == 0
                continue
            assert rk.sum() == want_r
            assert floor_ceil(ck.sum(), ideal_c)
            rseg = e[rs, cs].sum(axis=1)
            assert kept_ge_removed(rseg[rk], rseg[~rk])
            cseg = e[rs, cs][rk].sum(axis=0)
            assert kept_ge_removed(cseg[ck], cseg[~ck])
        assert abs(mask.sum() - d * w.size) <= br / 2 + 1 + EPS
    elif name == "pattern":
        cin = cols // 9
        km, ke = kernels(mask, cin), kernels(e, cin)
        k = scheme.pattern_size
        if d > k / 9 + EPS:
            k = math.ceil(9 * d - EPS)
        counts = km.sum(axis=1)
        live = counts > 0
        assert set(counts[live].tolist()) <= {k}
        assert live.sum() == min(len(km), max(1, rhu(d * 9 / k * len(km))))
        used = np.unique(km[live], axis=0)
        if k < 9:
            assert len(used) <= scheme.pattern_count
        # every pattern in the set is some kernel's top-k position set
        for p in used:
            assert any(set(np.flatnonzero(p)) == set(np.argsort(-row, kind="stable")[:k])
                       for row in ke if row.sum() > 0) or (ke.sum(axis=1) == 0).all() or k == 9
        best = (ke @ used.T.astype(float)).max(axis=1) if len(used) else np.zeros(len(ke))
        retained = (ke * km).sum(axis=1)
        assert np.all(retained[live] >= best[live] - 1e-9), "kernel not given its best pattern"
        assert kept_ge_removed(retained[live], best[~live])
    else:  # pragma: no cover
        raise AssertionError(name)


# ------------------------------------------------------------------ strategies

KHW = [(1, 1), (3, 3), (1, 3), (2, 2)]


@st.composite
def cases(draw, names=SCHEME_NAMES):
    """(scheme, w, kernel_hw) with random shapes, rates and options."""
    name = draw(st.sampled_from(names))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    khw = (3, 3) if name == "pattern" else draw(st.sampled_from(KHW))
    taps = khw[0] * khw[1]
    rows = draw(st.integers(1, 40))
    cols = taps * draw(st.integers(1, 8)) if taps > 1 else draw(st.integers(1, 64))
    rate = draw(st.floats(0.05, 0.95))
    if name == "n_m":
        m = draw(st.integers(2, 9))
        scheme = Scheme("n_m", n=draw(st.integers(1, m - 1)), m=m)
    elif name in ("block_punched", "bcr"):
        bs = (draw(st.integers(1, min(rows, 9))), draw(st.integers(1, min(cols, 9))))
        rd = None
        if name == "bcr" and draw(st.booleans()):
            rd = draw(st.floats(1 - rate, 1.0))
        scheme = Scheme(name, rate=rate, block_shape=bs,
                        **({"row_density": rd} if name == "bcr" else {}))
    elif name == "pattern":
        ps = draw(st.integers(1, 8))
        scheme = Scheme("pattern", rate=rate, pattern_size=ps,
                        pattern_count=draw(st.integers(1, min(10, math.comb(9, ps)))))
    else:
        scheme = Scheme(name, rate=rate)
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    ties = draw(st.sampled_from(["none", "nonzero", "zeros"]))
    if ties == "nonzero":  # plenty of ties, no exact zeros
        w = np.sign(w) * (np.floor(np.abs(w) * 2) + 1) / 2
    elif ties == "zeros":  # ties and exact zeros
        w = np.round(w * 2) / 2
    return scheme, w, khw


# ------------------------------------------------------------------ masks vs definitions

@SETTINGS
@given(cases())
def test_mask_matches_definition(case):
    scheme, w, khw = case
    mask = compute_mask(w, scheme, kernel_hw=khw)
    reference_check(mask, w, scheme, khw, scheme.density)
    assert satisfies(mask, scheme, kernel_hw=khw)


@SETTINGS
@given(cases(), st.sampled_from([0.0, 0.1, 0.33, 0.5, 0.8]))
def test_rate_override(case, rate):
    scheme, w, khw = case
    mask = compute_mask(w, scheme, kernel_hw=khw, rate=rate)
    if rate == 0.0:
        assert mask.all()
    else:
        reference_check(mask, w, scheme, khw, 1 - rate)
    assert satisfies(mask, scheme, kernel_hw=khw, rate=rate)


@SETTINGS
@given(cases())
def test_importance_replaces_magnitude(case):
    scheme, w, khw = case
    imp = np.abs(np.random.default_rng(1).standard_normal(w.shape))
    mask = compute_mask(w, scheme, kernel_hw=khw, importance=imp)
    reference_check(mask, imp, scheme, khw, scheme.density)
    # importance = |W| gives the magnitude mask
    np.testing.assert_array_equal(compute_mask(w, scheme, kernel_hw=khw, importance=np.abs(w)),
                                  compute_mask(w, scheme, kernel_hw=khw))


@SETTINGS
@given(cases())
def test_project_idempotent_and_deterministic(case):
    scheme, w, khw = case
    p1 = project(w, scheme, kernel_hw=khw)
    assert p1.dtype == w.dtype
    np.testing.assert_array_equal(p1, w * compute_mask(w, scheme, kernel_hw=khw))
    if not (scheme.name == "pattern" and (w == 0).any()):
        # pattern: a kept kernel with an exact zero inside its pattern votes ambiguously the
        # second time (its top-k set is a tie), so the pattern set may change; see docs
        np.testing.assert_array_equal(project(p1, scheme, kernel_hw=khw), p1)
    np.testing.assert_array_equal(compute_mask(w.copy(), scheme, kernel_hw=khw),
                                  compute_mask(w, scheme, kernel_hw=khw))


# ------------------------------------------------------------------ satisfies rejects

@SETTINGS
@given(cases(names=("block_punched",)), st.data())
def test_satisfies_rejects_flipped_block_punched(case, data):
    scheme, w, khw = case
    mask = compute_mask(w, scheme, kernel_hw=khw)
    rows = w.shape[0]
    br = scheme.block_shape[0]
    # a row that shares its block with another row
    candidates = [i for i in range(rows) if min(rows, (i // br + 1) * br) - (i // br) * br >= 2]
    if not candidates:
        return
    i = data.draw(st.sampled_from(candidates))
    j = data.draw(st.integers(0, w.shape[1] - 1))
    bad = mask.copy()
    bad[i, j] = ~bad[i, j]
    assert not satisfies(bad, scheme, kernel_hw=khw)


@SETTINGS
@given(cases(names=("bcr",)), st.data())
def test_satisfies_rejects_flipped_bcr(case, data):
    scheme, w, khw = case
    mask = compute_mask(w, scheme, kernel_hw=khw)
    # turn on an entry in a removed row under a kept column of the same block
    br, bc = scheme.block_shape
    spots = []
    rows, cols = w.shape
    for rs, cs in blocks(rows, cols, br, bc):
        sub = mask[rs, cs]
        for i in np.flatnonzero(~sub.any(axis=1)):
            for j in np.flatnonzero(sub.any(axis=0)):
                spots.append((rs.start + i, cs.start + j))
    if not spots:
        return
    i, j = data.draw(st.sampled_from(spots))
    bad = mask.copy()
    bad[i, j] = True
    assert not satisfies(bad, scheme, kernel_hw=khw)


@SETTINGS
@given(cases(names=("filter", "channel", "n_m", "pattern")), st.data())
def test_satisfies_rejects_flipped_entry(case, data):
    scheme, w, khw = case
    mask = compute_mask(w, scheme, kernel_hw=khw)
    if scheme.name == "filter" and w.shape[1] == 1 or scheme.name == "channel" and w.shape[0] == 1 \
            and khw == (1, 1):
        return  # a single entry is a whole row / channel there
    if scheme.name == "pattern" and mask.sum() == 0:
        return
    if scheme.name == "pattern":  # add a position to a kept kernel (removing one could look
        cin = w.shape[1] // 9     # like connectivity pruning when pattern_size is 1)
        km = kernels(mask, cin)
        live = np.argwhere(km.any(axis=1) & ~km.all(axis=1)).ravel()
        if live.size == 0:
            return
        kidx = int(data.draw(st.sampled_from(list(live))))
        o, c = divmod(kidx, cin)
        t = data.draw(st.sampled_from(list(np.flatnonzero(~km[kidx]))))
        i, j = o, int(t) * cin + c
    else:
        i = data.draw(st.integers(0, w.shape[0] - 1))
        j = data.draw(st.integers(0, w.shape[1] - 1))
    bad = mask.copy()
    bad[i, j] = ~bad[i, j]
    assert not satisfies(bad, scheme, kernel_hw=khw)


def test_satisfies_rejects_wrong_density_and_structure():
    w = np.random.default_rng(0).standard_normal((32, 64))
    s = Scheme("unstructured", rate=0.5)
    assert not satisfies(np.ones_like(w, bool), s)
    assert satisfies(compute_mask(w, s), s)
    assert not satisfies(compute_mask(w, s), s, rate=0.8)
    assert satisfies(np.ones_like(w, bool), s, rate=0.0)
    # an unstructured mask is not a filter / block mask
    um = compute_mask(w, s)
    for name in ("filter", "channel", "block_punched", "bcr"):
        assert not satisfies(um, Scheme(name, rate=0.5, **(
            {"block_shape": (8, 8)} if name in ("block_punched", "bcr") else {})))
    assert not satisfies(um, Scheme("n_m", n=2, m=4))
    # a block_punched mask of the wrong block shape
    bp = compute_mask(w, Scheme("block_punched", rate=0.5, block_shape=(4, 8)))
    assert not satisfies(bp, Scheme("block_punched", rate=0.5, block_shape=(8, 8)))
    # pattern with too many distinct patterns
    wc = np.random.default_rng(1).standard_normal((16, 9 * 8))
    ps = Scheme("pattern", rate=1 - 4 / 9, pattern_count=8)
    pm = compute_mask(wc, ps, kernel_hw=(3, 3))
    assert satisfies(pm, ps, kernel_hw=(3, 3))
    assert not satisfies(pm, Scheme("pattern", rate=1 - 4 / 9, pattern_count=2), kernel_hw=(3, 3))


# ------------------------------------------------------------------ describe_mask

def _describe_case(name, seed):
    rng = np.random.default_rng(seed)
    if name == "pattern":
        w = rng.standard_normal((32, 9 * 16))
        return w, Scheme("pattern", rate=0.7), (3, 3)
    if name in ("channel", "filter"):
        khw = (3, 3) if seed % 2 else (1, 1)
        w = rng.standard_normal((24, 9 * 8 if seed % 2 else 40))
        return w, Scheme(name, rate=0.5), khw
    w = rng.standard_normal((48, 96))
    if name == "n_m":
        return w, Scheme("n_m", n=2, m=4), (1, 1)
    if name == "block_punched":
        return w, Scheme("block_punched", rate=0.6, block_shape=(8, 8)), (1, 1)
    if name == "bcr":
        return w, Scheme("bcr", rate=0.6, block_shape=(8, 8)), (1, 1)
    return w, Scheme("unstructured", rate=0.6), (1, 1)


@settings(max_examples=min(EXAMPLES, 30) if EXAMPLES <= 40 else EXAMPLES, deadline=None)
@given(st.sampled_from(SCHEME_NAMES), st.integers(0, 10_000))
def test_describe_recognises_generated_masks(name, seed):
    w, scheme, khw = _describe_case(name, seed)
    mask = compute_mask(w, scheme, kernel_hw=khw)
    info = describe_mask(mask, khw)
    assert info["scheme"] == name, info
    assert info["density"] == pytest.approx(mask.mean())
    if name == "n_m":
        assert (info["n"], info["m"]) == (2, 4)
    if name == "block_punched":
        assert info["block_shape"][0] % 8 == 0
    if name == "bcr":
        assert info["block_shape"] == (8, 8)
    if name == "pattern":
        assert info["pattern_size"] == 4 and info["pattern_count"] <= 8
    # a stripped weight matrix (zeros) describes the same way
    assert describe_mask(w * mask, khw)["scheme"] == name


def test_describe_dense_and_empty():
    assert describe_mask(np.ones((4, 6)))["scheme"] == "dense"
    assert describe_mask(np.ones((4, 6)))["density"] == 1.0
    info = describe_mask(np.zeros((4, 6)))
    assert info["density"] == 0.0 and info["scheme"] == "filter"


# ------------------------------------------------------------------ Scheme object

@st.composite
def schemes(draw):
    name = draw(st.sampled_from(SCHEME_NAMES))
    rate = draw(st.floats(0.01, 0.99))
    if name == "n_m":
        m = draw(st.integers(2, 32))
        return Scheme("n_m", n=draw(st.integers(1, m - 1)), m=m)
    if name == "block_punched":
        return Scheme(name, rate=rate, block_shape=(draw(st.integers(1, 64)),
                                                    draw(st.integers(1, 64))))
    if name == "bcr":
        rd = draw(st.one_of(st.none(), st.floats(1 - rate, 1.0)))
        return Scheme(name, density=1 - rate, block_shape=(4, 8), row_density=rd)
    if name == "pattern":
        return Scheme(name, rate=rate, pattern_size=draw(st.integers(1, 8)),
                      pattern_count=1)
    return Scheme(name, rate=rate)


@SETTINGS
@given(schemes())
def test_json_round_trip_and_hash(s):
    d = json.loads(json.dumps(s.to_json()))
    s2 = Scheme.from_json(d)
    assert s2 == s and hash(s2) == hash(s)
    assert get_scheme(d) == s and get_scheme(s) is s
    assert s.rate + s.density == pytest.approx(1.0)
    assert s.compression == pytest.approx(1 / s.density)
    assert 0 < s.rate < 1
    with pytest.raises(Exception):
        s.rate = 0.3  # frozen


def test_rate_density_normalisation():
    assert Scheme("bcr", rate=0.7) == Scheme("bcr", density=0.3)
    assert Scheme("bcr", rate=0.7, density=0.3).density == pytest.approx(0.3)
    assert Scheme("filter").rate == 0.5
    assert Scheme("BCR").name == "bcr"
    assert Scheme("bcr").block_shape == (16, 16)
    assert Scheme("block_punched", block_shape=[4, 8]).block_shape == (4, 8)
    assert len({Scheme("bcr", rate=0.7), Scheme("bcr", density=0.3)}) == 1


def test_n_m_derivation():
    s = Scheme("n_m")
    assert (s.n, s.m, s.density) == (2, 4, 0.5)
    assert (Scheme("n_m", rate=0.75).n, Scheme("n_m", rate=0.75).m) == (1, 4)
    assert (Scheme("n_m", rate=0.625).n, Scheme("n_m", rate=0.625).m) == (3, 8)
    assert (Scheme("n_m", density=1 / 16).n, Scheme("n_m", density=1 / 16).m) == (1, 16)
    assert Scheme("n_m", n=1, m=3).density == pytest.approx(1 / 3)
    assert (Scheme("n_m", m=8, rate=0.25).n) == 6
    assert (Scheme("n_m", n=1, rate=0.75).m) == 4
    assert get_scheme("2:4") == Scheme("n_m", n=2, m=4)
    assert Scheme("n_m", n=2, m=4).with_rate(0.75) == Scheme("n_m", n=1, m=4)
    assert Scheme("n_m", n=2, m=4).with_rate(0.875) == Scheme("n_m", n=1, m=8)


def test_with_rate():
    s = Scheme("block_punched", rate=0.5, block_shape=(4, 4))
    t = s.with_rate(0.8)
    assert t.rate == pytest.approx(0.8) and t.block_shape == (4, 4) and t.name == s.name
    b = Scheme("bcr", rate=0.75, row_density=0.5)  # alpha = 0.5
    assert b.with_rate(0.96).row_density == pytest.approx(0.2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="nope"), "unknown pruning scheme.*unstructured.*pattern"),
    (dict(name="bcr", rate=0.0), "strictly between 0 and 1"),
    (dict(name="bcr", rate=1.0), "strictly between 0 and 1"),
    (dict(name="bcr", density=1.0), "strictly between 0 and 1"),
    (dict(name="bcr", rate=-0.1), "strictly between 0 and 1"),
    (dict(name="bcr", rate=float("nan")), "strictly between 0 and 1"),
    (dict(name="bcr", rate=True), "number"),
    (dict(name="bcr", rate=0.5, density=0.6), "disagree"),
    (dict(name="bcr", block_shape=(0, 4)), "positive"),
    (dict(name="bcr", block_shape=(4, -1)), "positive"),
    (dict(name="bcr", block_shape=(4, 4, 4)), "pair"),
    (dict(name="bcr", rate=0.75, row_density=0.1), "row_density"),
    (dict(name="bcr", row_density=1.5), "row_density"),
    (dict(name="n_m", n=4, m=4), "1 <= n < m"),
    (dict(name="n_m", n=5, m=4), "1 <= n < m"),
    (dict(name="n_m", n=0, m=4), "n >= 1"),
    (dict(name="n_m", n=2, m=4, rate=0.6), "disagrees"),
    (dict(name="n_m", rate=0.3), "cannot express"),
    (dict(name="n_m", m=4, rate=0.3), "not a whole number"),
    (dict(name="pattern", pattern_size=0), "pattern_size"),
    (dict(name="pattern", pattern_size=9), "pattern_size"),
    (dict(name="pattern", pattern_size=8, pattern_count=10), "pattern_count"),
    (dict(name="filter", block_shape=(4, 4)), "block_shape applies only"),
    (dict(name="filter", n=2, m=4), "n and m apply only"),
    (dict(name="unstructured", row_density=0.5), "row_density applies only"),
    (dict(name="bcr", pattern_size=3), "apply only"),
])
def test_scheme_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Scheme(**kwargs)


def test_get_scheme_and_from_json_errors():
    with pytest.raises(ValueError, match="unstructured, filter, channel"):
        get_scheme("blocky")
    with pytest.raises(ValueError, match="unknown scheme field"):
        Scheme.from_json({"name": "bcr", "colour": 1})
    with pytest.raises(ValueError, match="needs a 'name'"):
        Scheme.from_json({"rate": 0.5})
    with pytest.raises(ValueError):
        get_scheme(3)
    assert get_scheme("n_m") == Scheme("n_m", n=2, m=4)


def test_mask_argument_errors():
    w = np.random.default_rng(0).standard_normal((8, 12))
    with pytest.raises(ValueError, match=r"block shape \(16, 16\) larger than the weight matrix "
                                         r"\(8, 12\)"):
        compute_mask(w, "bcr")
    with pytest.raises(ValueError, match="larger than the weight matrix"):
        satisfies(np.ones((8, 12), bool), Scheme("block_punched", block_shape=(9, 2)))
    with pytest.raises(ValueError, match="3x3"):
        compute_mask(w, "pattern")
    with pytest.raises(ValueError, match="multiple of"):
        compute_mask(w, "channel", kernel_hw=(3, 3))
    with pytest.raises(ValueError, match="2-D"):
        compute_mask(w.ravel(), "unstructured")
    with pytest.raises(ValueError, match="rate"):
        compute_mask(w, "unstructured", rate=1.0)
    with pytest.raises(ValueError, match="shape"):
        compute_mask(w, "unstructured", importance=np.ones((2, 2)))
    with pytest.raises(ValueError, match=">= 0"):
        compute_mask(w, "unstructured", importance=-np.ones_like(w))
    with pytest.raises(ValueError, match="NaN"):
        compute_mask(np.full((4, 4), np.nan), "unstructured")


def test_edge_blocks_and_exact_density():
    w = np.random.default_rng(3).standard_normal((37, 53))
    for s in (Scheme("block_punched", rate=0.75, block_shape=(16, 16)),
              Scheme("bcr", rate=0.75, block_shape=(16, 16))):
        mask = compute_mask(w, s)
        reference_check(mask, w, s, (1, 1), 0.25)
        assert abs(mask.sum() - 0.25 * w.size) <= 8 + 1


def test_pattern_raises_kernel_size_for_high_density():
    w = np.random.default_rng(4).standard_normal((8, 9 * 4))
    s = Scheme("pattern", rate=0.3)  # density 0.7 > 4/9: kernels keep ceil(6.3) = 7
    mask = compute_mask(w, s, kernel_hw=(3, 3))
    counts = kernels(mask, 4).sum(axis=1)
    assert set(counts.tolist()) <= {0, 7}
    reference_check(mask, w, s, (3, 3), 0.7)
