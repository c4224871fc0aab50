"""The `Scheme` object: which mask family a layer uses, how much it removes, and its options.

A scheme is small, immutable, hashable and round-trips through JSON (`to_json` / `from_json`), so
it can be recorded in an exported model and read back by the runtime.  All validation happens in
`__post_init__`; a `Scheme` that exists is a valid one.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass

SCHEME_NAMES = ("unstructured", "filter", "channel", "n_m", "block_punched", "bcr", "pattern")

#: Schemes that partition the GEMM view into blocks (they take `block_shape`).
BLOCK_SCHEMES = ("block_punched", "bcr")
DEFAULT_RATE = 0.5
DEFAULT_BLOCK_SHAPE = (16, 16)
#: Candidate group sizes when an n_m scheme is given only a rate.
N_M_CANDIDATE_M = (4, 8, 16)

_ALIASES = {
    "nm": "n_m", "n:m": "n_m", "blockpunched": "block_punched", "block": "block_punched",
    "grim": "bcr", "random": "unstructured", "kernel": "pattern",
}
_N_M_SPEC = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_EPS = 1e-9


def _canonical_name(name) -> str:
    if not isinstance(name, str):
        raise ValueError(f"scheme name must be a string, got {name!r}; "
                         f"known schemes: {', '.join(SCHEME_NAMES)}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in SCHEME_NAMES:
        raise ValueError(f"unknown pruning scheme {name!r}; "
                         f"known schemes: {', '.join(SCHEME_NAMES)}")
    return key


def _as_fraction(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number strictly between 0 and 1, got {value!r}")
    value = float(value)
    if not (0.0 < value < 1.0):  # also rejects NaN
        raise ValueError(f"{what} must be strictly between 0 and 1 (exclusive), got {value!r}")
    return value


def _as_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _is_integer(x: float) -> bool:
    return abs(x - round(x)) < 1e-9


@dataclass(frozen=True)
class Scheme:
    """A pruning scheme: mask family (`name`), fraction removed (`rate`) and family options.

    Give `rate` (fraction of weights removed) or `density` (fraction kept, ``1 - rate``), or
    neither (default rate 0.5; n_m derives it from ``n/m``).  After construction both `rate` and
    `density` are filled, rounded to 12 decimals so that equal schemes compare and hash equal.

    Options (each only for its family; giving one to another family is a ValueError):

    * `block_shape` (block_punched, bcr): ``(rows, cols)`` of a block, default ``(16, 16)``.
    * `n`, `m` (n_m): keep `n` of every `m` consecutive reduction weights of each row.
      With only a rate, `m` is the smallest of (4, 8, 16) for which ``density*m`` is an integer.
    * `pattern_size`, `pattern_count` (pattern): kept positions per 3x3 kernel and the size of the
      layer's pattern set.
    * `row_density` (bcr): fraction of the rows of a block that are kept; default
      ``sqrt(density)`` (the columns get the rest). Must be ``>= density``; 1.0 means
      column-only (block_punched-like) BCR.
    """

    name: str
    rate: float | None = None
    density: float | None = None
    block_shape: tuple[int, int] | None = None
    n: int | None = None
    m: int | None = None
    pattern_size: int = 4
    pattern_count: int = 8
    row_density: float | None = None

    # ------------------------------------------------------------------ validation
    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        name = _canonical_name(self.name)
        set_("name", name)

        rate = None if self.rate is None else _as_fraction(self.rate, "rate")
        density = None if self.density is None else _as_fraction(self.density, "density")
        if rate is not None and density is not None and abs(rate + density - 1.0) > _EPS:
            raise ValueError(f"rate={rate} and density={density} disagree (density must be "
                             "1 - rate); give only one of them")
        if density is None and rate is not None:
            density = 1.0 - rate

        # --- options that belong to one family only
        if name not in BLOCK_SCHEMES and self.block_shape is not None:
            raise ValueError(f"block_shape applies only to {BLOCK_SCHEMES}, not to {name!r}")
        if name != "n_m" and (self.n is not None or self.m is not None):
            raise ValueError(f"n and m apply only to the 'n_m' scheme, not to {name!r}")
        if name != "bcr" and self.row_density is not None:
            raise ValueError(f"row_density applies only to the 'bcr' scheme, not to {name!r}")
        if name != "pattern" and (self.pattern_size != 4 or self.pattern_count != 8):
            raise ValueError(f"pattern_size / pattern_count apply only to the 'pattern' scheme, "
                             f"not to {name!r}")

        # --- n_m: n, m and the density must agree
        if name == "n_m":
            n = None if self.n is None else _as_int(self.n, "n")
            m = None if self.m is None else _as_int(self.m, "m")
            if m is not None and m < 2:
                raise ValueError(f"n_m needs m >= 2, got m={m}")
            if n is not None and n < 1:
                raise ValueError(f"n_m needs n >= 1 (n of every m kept), got n={n}")
            if n is not None and m is not None:
                if n >= m:
                    raise ValueError(f"n_m needs 1 <= n < m, got n={n}, m={m}")
                if density is not None and abs(density - n / m) > _EPS:
                    raise ValueError(f"n_m {n}:{m} keeps density {n / m:g}, which disagrees with "
                                     f"the given density {density:g} (rate {1 - density:g}); "
                                     "give n and m, or a rate, or consistent values")
            elif m is not None:
                d = DEFAULT_RATE if density is None else density
                if not _is_integer(d * m) or round(d * m) < 1:
                    raise ValueError(f"n_m with m={m} cannot keep density {d:g}: density*m = "
                                     f"{d * m:g} is not a whole number >= 1")
                n = int(round(d * m))
            elif n is not None:
                d = DEFAULT_RATE if density is None else density
                if not _is_integer(n / d):
                    raise ValueError(f"n_m with n={n} cannot keep density {d:g}: n/density = "
                                     f"{n / d:g} is not a whole number")
                m = int(round(n / d))
            else:
                d = DEFAULT_RATE if density is None else density
                for cand in N_M_CANDIDATE_M:
                    if _is_integer(d * cand) and round(d * cand) >= 1:
                        n, m = int(round(d * cand)), cand
                        break
                else:
                    raise ValueError(f"n_m cannot express density {d:g} with m in "
                                     f"{N_M_CANDIDATE_M} (density*m must be a whole number); "
                                     "give n and m explicitly")
            set_("n", n)
            set_("m", m)
            density = n / m

        if density is None:
            density = 1.0 - DEFAULT_RATE
        rate = round(1.0 - density, 12)
        density = round(1.0 - rate, 12)
        if not (0.0 < rate < 1.0):
            raise ValueError(f"rate must be strictly between 0 and 1, got {rate!r}")
        set_("rate", rate)
        set_("density", density)

        # --- block schemes
        if name in BLOCK_SCHEMES:
            bs = DEFAULT_BLOCK_SHAPE if self.block_shape is None else self.block_shape
            if isinstance(bs, numbers.Integral) and not isinstance(bs, bool):
                bs = (bs, bs)
            try:
                bs = tuple(bs)
            except TypeError:
                raise ValueError(f"block_shape must be a pair (rows, cols), got {bs!r}") from None
            if len(bs) != 2:
                raise ValueError(f"block_shape must be a pair (rows, cols), got {bs!r}")
            bs = (_as_int(bs[0], "block_shape rows"), _as_int(bs[1], "block_shape cols"))
            if bs[0] < 1 or bs[1] < 1:
                raise ValueError(f"block_shape must be positive, got {bs}")
            set_("block_shape", bs)

        # --- bcr
        if name == "bcr" and self.row_density is not None:
            rd = self.row_density
            if isinstance(rd, bool) or not isinstance(rd, numbers.Real) or not (0 < float(rd) <= 1):
                raise ValueError(f"row_density must be in (0, 1], got {rd!r}")
            rd = float(rd)
            if rd < density - _EPS:
                raise ValueError(f"row_density={rd:g} is below density={density:g}: even keeping "
                                 "every column of the kept rows could not reach the density")
            set_("row_density", rd)

        # --- pattern
        ps = _as_int(self.pattern_size, "pattern_size")
        pc = _as_int(self.pattern_count, "pattern_count")
        if not 1 <= ps <= 8:
            raise ValueError(f"pattern_size must be in 1..8 (kept positions of a 3x3 kernel), "
                             f"got {ps}")
        if not 1 <= pc <= math.comb(9, ps):
            raise ValueError(f"pattern_count must be in 1..{math.comb(9, ps)} (number of distinct "
                             f"{ps}-of-9 patterns), got {pc}")
        set_("pattern_size", ps)
        set_("pattern_count", pc)

    # ------------------------------------------------------------------ derived values
    @property
    def compression(self) -> float:
        """Compression ratio 1/density (e.g. 4.0 for rate 0.75)."""
        return 1.0 / self.density

    @property
    def effective_row_density(self) -> float | None:
        """bcr: the row fraction actually used (sqrt(density) unless `row_density` is given)."""
        if self.name != "bcr":
            return None
        return math.sqrt(self.density) if self.row_density is None else self.row_density

    def with_rate(self, rate) -> "Scheme":
        """The same scheme at another rate.

        n_m keeps `m` when ``(1-rate)*m`` is whole, else picks `m` anew from (4, 8, 16).
        bcr with an explicit `row_density` scales it so that the split between rows and columns
        keeps the same proportion: ``row_density' = density' ** (log row_density / log density)``.
        """
        rate = _as_fraction(rate, "rate")
        density = 1.0 - rate
        changes = dict(rate=rate, density=None)
        if self.name == "n_m":
            if _is_integer(density * self.m) and round(density * self.m) >= 1:
                changes.update(n=int(round(density * self.m)), m=self.m)
            else:
                changes.update(n=None, m=None)
        if self.name == "bcr" and self.row_density is not None:
            changes["row_density"] = min(1.0, bcr_row_density(self, density))
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        """A JSON-serialisable dict; `Scheme.from_json(s.to_json()) == s`."""
        out = {"name": self.name, "rate": self.rate, "density": self.density}
        if self.name in BLOCK_SCHEMES:
            out["block_shape"] = [int(self.block_shape[0]), int(self.block_shape[1])]
        if self.name == "bcr" and self.row_density is not None:
            out["row_density"] = self.row_density
        if self.name == "n_m":
            out["n"], out["m"] = self.n, self.m
        if self.name == "pattern":
            out["pattern_size"], out["pattern_count"] = self.pattern_size, self.pattern_count
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Scheme":
        if not isinstance(d, dict):
            raise ValueError(f"a scheme in JSON form must be a dict, got {type(d).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown scheme field(s) {unknown}; known: {sorted(fields)}")
        if "name" not in d:
            raise ValueError("a scheme in JSON form needs a 'name'")
        kwargs = dict(d)
        if kwargs.get("block_shape") is not None and not isinstance(kwargs["block_shape"], int):
            kwargs["block_shape"] = tuple(kwargs["block_shape"])
        return cls(**kwargs)


def bcr_row_density(scheme: Scheme, density: float) -> float:
    """Row fraction bcr uses at `density` (which may differ from the scheme's own, for schedules).

    The scheme fixes the exponent ``alpha = log(row_density) / log(scheme.density)`` (0.5 for the
    default sqrt split) and a call at another density uses ``density ** alpha``.
    """
    rd = scheme.effective_row_density
    if density >= 1.0:
        return 1.0
    if rd >= 1.0:
        return 1.0
    alpha = math.log(rd) / math.log(scheme.density)
    return float(density ** alpha)


def get_scheme(spec) -> Scheme:
    """A `Scheme` from a name (``"bcr"``, also ``"2:4"`` for n_m), a `Scheme`, or its JSON dict."""
    if isinstance(spec, Scheme):
        return spec
    if isinstance(spec, str):
        match = _N_M_SPEC.match(spec)
        if match:
            return Scheme("n_m", n=int(match.group(1)), m=int(match.group(2)))
        return Scheme(_canonical_name(spec))
    if isinstance(spec, dict):
        return Scheme.from_json(spec)
    raise ValueError(f"cannot make a pruning scheme from {spec!r}: give a name "
                     f"({', '.join(SCHEME_NAMES)}), a Scheme, or a dict from Scheme.to_json()")
