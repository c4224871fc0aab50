"""The NPAS custom-op byte formats: custom options, compact weight encodings (NumPy only).

Specified in tflite_custom_ops/FORMAT.md; the C++ decoder is tflite_custom_ops/npas_custom_ops.cc.
Everything here works on the *GEMM view* of a weight, in the builtin op's element order:

- FULLY_CONNECTED weights ``[out, in]``                 -> ``W[out, in]``
- CONV_2D weights OHWI ``[out, kh, kw, in]``             -> ``W[out, kh*kw*in]``
- DEPTHWISE_CONV_2D weights ``[1, kh, kw, out]``         -> ``W[out, kh*kw]``

Encoders are vectorised NumPy; :func:`decode_matrix` is the Python reference decoder (used by
``inspect`` and the tests) and validates exactly what the C++ decoder validates.
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"NPAS"
VERSION = 1            # float32 values
VERSION_QUANTIZED = 2  # int8 or 4-bit values, per-channel scales (FORMAT.md, "Quantized form")

# op kinds (options field `op_kind`) and their custom-op names
KIND_FC, KIND_CONV, KIND_DW = 0, 1, 2
CUSTOM_NAMES = {
    KIND_FC: "NpasSparseFullyConnected",
    KIND_CONV: "NpasSparseConv2D",
    KIND_DW: "NpasSparseDepthwiseConv2D",
}
KIND_BY_NAME = {v: k for k, v in CUSTOM_NAMES.items()}
BUILTIN_NAMES = {KIND_FC: "FULLY_CONNECTED", KIND_CONV: "CONV_2D", KIND_DW: "DEPTHWISE_CONV_2D"}

# index encodings (options field `encoding`)
ENC_BITMAP, ENC_GAP4, ENC_BLOCK, ENC_PATTERN, ENC_NM = 1, 2, 3, 4, 5
ENCODING_NAMES = {ENC_BITMAP: "bitmap", ENC_GAP4: "gap4", ENC_BLOCK: "block",
                  ENC_PATTERN: "pattern", ENC_NM: "n_m"}

# value types (options field `value_type`, version 2 only; version 1 means float32)
VALUES_FLOAT32, VALUES_INT8, VALUES_INT4 = 0, 1, 2
VALUE_TYPE_NAMES = {VALUES_FLOAT32: "float32", VALUES_INT8: "int8", VALUES_INT4: "int4"}
VALUE_BITS = {VALUES_FLOAT32: 32, VALUES_INT8: 8, VALUES_INT4: 4}

# Fixed header: magic, version, header_size, then 22 int32/uint32 fields, then the scheme string.
_HEADER = struct.Struct("<4sHH20i2I")          # up to and including crc_index
_HEADER_SIZE = _HEADER.size + 4                  # + scheme_json_len (u32)
assert _HEADER_SIZE == 100, _HEADER_SIZE
_QHEADER = struct.Struct("<iI")                  # version 2: value_type, crc_scales
_HEADER_SIZE_V2 = _HEADER_SIZE + _QHEADER.size   # 108
MAX_ELEMENTS = 1 << 28                           # largest weight matrix accepted (1 GiB of float32)
MAX_SCHEME_JSON = 1 << 16


def is_npas_custom_name(name) -> bool:
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).decode("utf-8", "replace")
    return name in KIND_BY_NAME


@dataclass
class CustomOptions:
    """The decoded custom options of one NPAS custom op (see FORMAT.md for the byte layout)."""
    op_kind: int
    padding: int = 0                 # 1 SAME, 2 VALID (TFLite Padding + 1 ... see FORMAT.md); 0 for FC
    activation: int = 0              # TFLite ActivationFunctionType (0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6)
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    depth_multiplier: int = 1
    out_channels: int = 0
    kh: int = 1
    kw: int = 1
    in_channels: int = 0
    rows: int = 0
    cols: int = 0
    encoding: int = ENC_BITMAP
    params: tuple = (0, 0, 0)
    n_values: int = 0
    index_bytes: int = 0
    crc_values: int = 0
    crc_index: int = 0
    scheme_json: str = ""
    value_type: int = VALUES_FLOAT32  # int8 / int4 values: version 2 (with a scales input)
    crc_scales: int = 0               # version 2: CRC-32 of the scales tensor (float32 [rows])
    extra: dict = field(default_factory=dict)

    @property
    def version(self) -> int:
        return VERSION if self.value_type == VALUES_FLOAT32 else VERSION_QUANTIZED

    @property
    def quantized(self) -> bool:
        return self.value_type != VALUES_FLOAT32

    @property
    def values_bytes(self) -> int:
        """Bytes of the values tensor: 4, 1 or 1/2 (rounded up) per stored value."""
        return -(-self.n_values * VALUE_BITS.get(self.value_type, 32) // 8)

    @property
    def custom_name(self) -> str:
        return CUSTOM_NAMES[self.op_kind]

    @property
    def encoding_name(self) -> str:
        return ENCODING_NAMES.get(self.encoding, f"unknown({self.encoding})")

    def pack(self) -> bytes:
        scheme = self.scheme_json.encode("utf-8")
        if len(scheme) > MAX_SCHEME_JSON:
            raise ValueError(f"scheme json too long ({len(scheme)} bytes)")
        p0, p1, p2 = (list(self.params) + [0, 0, 0])[:3]
        hsize = _HEADER_SIZE if self.version == VERSION else _HEADER_SIZE_V2
        head = _HEADER.pack(MAGIC, self.version, hsize, self.op_kind, self.padding,
                            self.activation, self.stride_h, self.stride_w, self.dilation_h,
                            self.dilation_w, self.depth_multiplier, self.out_channels, self.kh,
                            self.kw, self.in_channels, self.rows, self.cols, self.encoding, p0, p1,
                            p2, self.n_values, self.index_bytes, self.crc_values, self.crc_index)
        if self.version == VERSION_QUANTIZED:
            head += _QHEADER.pack(self.value_type, self.crc_scales)
        body = head + struct.pack("<I", len(scheme)) + scheme
        return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def unpack_options(data, custom_name=None) -> CustomOptions:
    """Parses and validates custom options; raises ValueError naming the problem."""
    data = bytes(data)
    if len(data) < _HEADER_SIZE + 4:
        raise ValueError(f"NPAS custom options truncated: {len(data)} bytes, need at least "
                         f"{_HEADER_SIZE + 4}")
    fields = _HEADER.unpack_from(data, 0)
    magic, version, header_size = fields[:3]
    if magic != MAGIC:
        raise ValueError(f"NPAS custom options: bad magic {magic!r} (expected {MAGIC!r})")
    if version not in (VERSION, VERSION_QUANTIZED):
        raise ValueError(f"NPAS custom options: unsupported version {version} (this reader "
                         f"supports {VERSION} and {VERSION_QUANTIZED})")
    hsize = _HEADER_SIZE if version == VERSION else _HEADER_SIZE_V2
    if header_size != hsize:
        raise ValueError(f"NPAS custom options: header size {header_size} != {hsize}")
    if len(data) < hsize + 4:
        raise ValueError(f"NPAS custom options truncated: {len(data)} bytes, need at least "
                         f"{hsize + 4}")
    (slen,) = struct.unpack_from("<I", data, hsize - 4)
    if slen > MAX_SCHEME_JSON or hsize + slen + 4 != len(data):
        raise ValueError(f"NPAS custom options: scheme string length {slen} does not match the "
                         f"options size {len(data)}")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
        raise ValueError("NPAS custom options: checksum mismatch (options corrupted)")
    try:
        scheme = data[hsize:hsize + slen].decode("utf-8", "replace")
    except UnicodeDecodeError as exc:
        raise ValueError(f"NPAS custom options: scheme string is not UTF-8 ({exc})") from None
    f = fields[3:]
    opts = CustomOptions(op_kind=f[0], padding=f[1], activation=f[2], stride_h=f[3], stride_w=f[4],
                         dilation_h=f[5], dilation_w=f[6], depth_multiplier=f[7],
                         out_channels=f[8], kh=f[9], kw=f[10], in_channels=f[11], rows=f[12],
                         cols=f[13], encoding=f[14], params=(f[15], f[16], f[17]),
                         n_values=f[18], index_bytes=f[19], crc_values=f[20], crc_index=f[21],
                         scheme_json=scheme)
    if version == VERSION_QUANTIZED:
        opts.value_type, opts.crc_scales = _QHEADER.unpack_from(data, _HEADER_SIZE - 4)
        if opts.value_type not in (VALUES_INT8, VALUES_INT4):
            raise ValueError(f"NPAS custom options: unknown value type {opts.value_type}")
    validate_options(opts, custom_name)
    return opts


def validate_options(o: CustomOptions, custom_name=None):
    """Checks the op attributes and the geometry; mirrors the C++ decoder."""
    if o.op_kind not in CUSTOM_NAMES:
        raise ValueError(f"NPAS custom options: unknown op kind {o.op_kind}")
    if custom_name is not None:
        if isinstance(custom_name, (bytes, bytearray)):
            custom_name = bytes(custom_name).decode("utf-8", "replace")
        if custom_name != CUSTOM_NAMES[o.op_kind]:
            raise ValueError(f"NPAS custom options describe a {CUSTOM_NAMES[o.op_kind]} but the "
                             f"op is {custom_name}")
    if o.activation not in (0, 1, 2, 3):
        raise ValueError(f"NPAS custom options: unsupported activation {o.activation}")
    positive = dict(stride_h=o.stride_h, stride_w=o.stride_w, dilation_h=o.dilation_h,
                    dilation_w=o.dilation_w, depth_multiplier=o.depth_multiplier,
                    out_channels=o.out_channels, kh=o.kh, kw=o.kw, in_channels=o.in_channels,
                    rows=o.rows, cols=o.cols, n_values=o.n_values, index_bytes=o.index_bytes)
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"NPAS custom options: {name} must be positive, got {value}")
    if o.rows != o.out_channels:
        raise ValueError(f"NPAS custom options: rows {o.rows} != out_channels {o.out_channels}")
    if o.op_kind == KIND_FC:
        if o.padding != 0 or o.kh != 1 or o.kw != 1 or o.cols != o.in_channels:
            raise ValueError("NPAS custom options: fully-connected needs padding 0, kh = kw = 1 "
                             "and cols == in_channels")
    else:
        if o.padding not in (1, 2):
            raise ValueError(f"NPAS custom options: padding must be 1 (SAME) or 2 (VALID), got "
                             f"{o.padding}")
        if o.op_kind == KIND_CONV and o.cols != o.kh * o.kw * o.in_channels:
            raise ValueError(f"NPAS custom options: conv cols {o.cols} != kh*kw*in_channels")
        if o.op_kind == KIND_DW:
            if o.cols != o.kh * o.kw:
                raise ValueError(f"NPAS custom options: depthwise cols {o.cols} != kh*kw")
            if o.out_channels != o.in_channels * o.depth_multiplier:
                raise ValueError("NPAS custom options: depthwise out_channels != in_channels * "
                                 "depth_multiplier")
    if o.rows * o.cols > MAX_ELEMENTS:
        raise ValueError(f"NPAS custom options: weight matrix {o.rows}x{o.cols} too large")
    if o.n_values > o.rows * o.cols:
        raise ValueError(f"NPAS custom options: {o.n_values} values for a {o.rows}x{o.cols} "
                         "matrix")
    if o.encoding not in ENCODING_NAMES:
        raise ValueError(f"NPAS custom options: unknown index encoding {o.encoding}")


# --------------------------------------------------------------------------------------------
# Encoders. Each returns (index: np.uint8 1-D, values: np.float32 1-D, params tuple).

def _packbits(bits) -> np.ndarray:
    return np.packbits(np.asarray(bits, dtype=bool).ravel(), bitorder="little")


def encode_bitmap(w):
    m = w != 0
    return _packbits(m), w[m].astype(np.float32), (0, 0, 0)


def _gap4_nibbles(pos):
    gaps = np.diff(np.concatenate([[-1], pos])) - 1
    counts = gaps // 15 + 1
    nib = np.full(int(counts.sum()), 15, dtype=np.uint8)
    nib[np.cumsum(counts) - 1] = (gaps % 15).astype(np.uint8)
    return nib


def _pack_nibbles(nib):
    if len(nib) % 2:
        nib = np.concatenate([nib, np.zeros(1, np.uint8)])
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def encode_gap4(w):
    flat = w.ravel()
    pos = np.flatnonzero(flat)
    return _pack_nibbles(_gap4_nibbles(pos)), flat[pos].astype(np.float32), (0, 0, 0)


def _block_geometry(rows, cols, br, bc):
    nbr, nbc = -(-rows // br), -(-cols // bc)
    valid_r = (np.arange(nbr)[:, None] * br + np.arange(br)[None, :]) < rows   # [nbr, br]
    valid_c = (np.arange(nbc)[:, None] * bc + np.arange(bc)[None, :]) < cols   # [nbc, bc]
    valid = np.concatenate([np.broadcast_to(valid_r[:, None, :], (nbr, nbc, br)),
                            np.broadcast_to(valid_c[None, :, :], (nbr, nbc, bc))], axis=2)
    return nbr, nbc, valid


BLOCK_ROWS_COLS, BLOCK_COLS_ONLY, BLOCK_ROWS_ONLY = 0, 1, 2   # ENC_BLOCK p2 (mask mode)


def _block_modes(valid, br, mode):
    """Which of the per-block [row bits | column bits] a mask mode stores."""
    keep = valid.copy()
    if mode == BLOCK_COLS_ONLY:
        keep[:, :, :br] = False
    elif mode == BLOCK_ROWS_ONLY:
        keep[:, :, br:] = False
    return keep


def encode_block(w, br, bc, mode=None):
    """Block masks: per block, the kept rows x kept columns. mode (p2): 0 row and column bits,
    1 column bits only (every row of a block kept: block_punched), 2 row bits only (every column
    kept). mode=None picks the smallest."""
    rows, cols = w.shape
    br, bc = max(1, min(int(br), rows)), max(1, min(int(bc), cols))
    nbr, nbc, valid = _block_geometry(rows, cols, br, bc)
    wp = np.zeros((nbr * br, nbc * bc), np.float32)
    wp[:rows, :cols] = w
    bt = wp.reshape(nbr, br, nbc, bc).transpose(0, 2, 1, 3)          # [nbr, nbc, br, bc]
    nz = bt != 0
    rm, cm = nz.any(axis=3), nz.any(axis=2)                           # [nbr, nbc, br], [.., bc]
    vr, vc = valid[:, :, :br], valid[:, :, br:]
    best = None
    for m in ([BLOCK_ROWS_COLS, BLOCK_COLS_ONLY, BLOCK_ROWS_ONLY] if mode is None else [mode]):
        r = vr & cm.any(axis=2, keepdims=True) if m == BLOCK_COLS_ONLY else rm
        c = vc & rm.any(axis=2, keepdims=True) if m == BLOCK_ROWS_ONLY else cm
        nvals = int((r.sum(axis=2) * c.sum(axis=2)).sum())
        nbits = int(_block_modes(valid, br, m).sum())
        size = 4 * nvals + -(-nbits // 8)
        if best is None or size < best[0]:
            best = (size, m, r, c)
    _, m, r, c = best
    bits = np.concatenate([r, c], axis=2)[_block_modes(valid, br, m)]
    sel = r[:, :, :, None] & c[:, :, None, :]
    return _packbits(bits), bt[sel].astype(np.float32), (br, bc, m)


def encode_pattern(w, positions, groups):
    """Kernel patterns: W[R, P*G] with column p*G + g; one pattern id per kernel (r, g)."""
    rows, cols = w.shape
    if positions < 1 or positions > 16 or positions * groups != cols:
        return None
    k = w.reshape(rows, positions, groups).transpose(0, 2, 1)         # [R, G, P]
    km = k != 0
    codes = (km.astype(np.int64) << np.arange(positions)).sum(axis=2).ravel()
    table = np.unique(codes[codes != 0])
    if len(table) > 255 or len(table) == 0:
        return None
    ids = np.where(codes != 0, np.searchsorted(table, codes) + 1, 0).astype(np.uint8)
    id_bits = 4 if len(table) <= 15 else 8
    packed_ids = _pack_nibbles(ids) if id_bits == 4 else ids
    head = np.concatenate([np.array([len(table)], np.uint8),
                           table.astype("<u2").view(np.uint8)])
    return (np.concatenate([head, packed_ids]).astype(np.uint8), k[km].astype(np.float32),
            (positions, groups, id_bits))


def encode_nm(w, n, m):
    """N:M along the columns: every group of M columns stores exactly min(N, width) positions."""
    rows, cols = w.shape
    n, m = int(n), int(m)
    if not (1 <= n < m <= 65536):
        return None
    bits = max(1, math.ceil(math.log2(m)))
    ng = -(-cols // m)
    wp = np.zeros((rows, ng * m), np.float32)
    wp[:, :cols] = w
    g = wp.reshape(rows, ng, m)
    nz = g != 0
    if (nz.sum(axis=2) > n).any():
        return None
    pos = np.arange(m)
    width = np.minimum(m, cols - np.arange(ng) * m)                   # [ng]
    invalid = pos[None, :] >= width[:, None]                          # [ng, m]
    key = (~nz).astype(np.int64) * (2 * m) + invalid[None].astype(np.int64) * (4 * m) + pos
    chosen = np.sort(np.argsort(key, axis=2, kind="stable")[:, :, :n], axis=2)  # [R, ng, n]
    keep = np.broadcast_to(np.arange(n)[None, None, :] < np.minimum(n, width)[None, :, None],
                           chosen.shape)
    vals = np.take_along_axis(g, chosen, axis=2)[keep]
    p = chosen[keep]
    bitarr = ((p[:, None] >> np.arange(bits)) & 1).astype(bool)
    return _packbits(bitarr), vals.astype(np.float32), (n, m, bits)


def candidate_encodings(w, op_kind, kh=1, kw=1, block_shapes=(), nm=(), limit=None,
                        value_bits=32):
    """Yields (encoding, index, values, params) for every encoding that applies to `w`.
    `limit` (a one-element list, read lazily) skips N:M candidates whose size (values of
    `value_bits` bits + index), known before encoding, is not below limit[0]."""
    rows, cols = w.shape
    yield (ENC_BITMAP, *encode_bitmap(w))
    yield (ENC_GAP4, *encode_gap4(w))
    shapes = {(rows, cols), (min(rows, 4), min(cols, 4)), (min(rows, 8), min(cols, 8)),
              (min(rows, 16), min(cols, 16)), (min(rows, 32), min(cols, 8)), (1, cols)}
    for bs in block_shapes:
        if bs is not None and len(bs) == 2 and int(bs[0]) > 0 and int(bs[1]) > 0:
            shapes.add((min(int(bs[0]), rows), min(int(bs[1]), cols)))
    for br, bc in sorted(shapes):
        yield (ENC_BLOCK, *encode_block(w, br, bc))
    if op_kind in (KIND_CONV, KIND_DW) and kh * kw > 1:
        groups = cols // (kh * kw)
        enc = encode_pattern(w, kh * kw, groups)
        if enc is not None:
            yield (ENC_PATTERN, *enc)
    tried = set()
    for nmpair in list(nm) + [(None, 4), (None, 8), (None, 16)]:
        n, m = nmpair
        m = int(m)
        if m < 2 or m > cols:
            continue
        if n is None:
            ng = -(-cols // m)
            wp = np.zeros((rows, ng * m), bool)
            wp[:, :cols] = w != 0
            n = int(wp.reshape(rows, ng, m).sum(axis=2).max())
        n = max(1, int(n))
        if (n, m) in tried or n >= m:
            continue
        tried.add((n, m))
        ng = -(-cols // m)
        nvals = rows * int(np.minimum(n, np.minimum(m, cols - np.arange(ng) * m)).sum())
        bits = max(1, math.ceil(math.log2(m)))
        if limit is not None and -(-nvals * value_bits // 8) + -(-nvals * bits // 8) >= limit[0]:
            continue
        enc = encode_nm(w, n, m)
        if enc is not None:
            yield (ENC_NM, *enc)


def encode_matrix(w, op_kind, kh=1, kw=1, block_shapes=(), nm=(), value_bits=32):
    """Picks the smallest encoding of `w` (values of `value_bits` bits each + index bytes).
    Returns (enc, index, values as float32, params); integer weights come back as exact floats."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    best, limit = None, [float("inf")]
    for cand in candidate_encodings(w, op_kind, kh, kw, block_shapes, nm, limit, value_bits):
        size = cand[1].nbytes + -(-len(cand[2]) * value_bits // 8)
        if best is None or size < best[0]:
            best = (size, cand)
            limit[0] = size
    return best[1]


def hints_from_scheme(scheme) -> dict:
    """Block shape / N:M hints from a scheme JSON (dict or str); tolerant of missing keys."""
    if isinstance(scheme, str):
        try:
            scheme = json.loads(scheme)
        except ValueError:
            return {}
    if not isinstance(scheme, dict):
        return {}
    out = {}
    bs = scheme.get("block_shape") or (scheme.get("options") or {}).get("block_shape")
    if isinstance(bs, (list, tuple)) and len(bs) == 2:
        out["block_shapes"] = [tuple(int(v) for v in bs)]
    opts = scheme.get("options") or {}
    n = scheme.get("n", opts.get("n"))
    m = scheme.get("m", opts.get("m"))
    if n and m:
        out["nm"] = [(int(n), int(m))]
    return out


# --------------------------------------------------------------------------------------------
# Quantized values (version 2): int8 bytes, or 4-bit two's complement nibbles, low nibble first.

def pack_int4(values) -> np.ndarray:
    """Signed 4-bit integers [-8, 7] -> bytes, two per byte, LSB (low nibble) first; an odd count
    leaves the last high nibble 0."""
    v = np.asarray(values).ravel()
    if v.size and (v.min() < -8 or v.max() > 7 or not np.issubdtype(v.dtype, np.integer)):
        raise ValueError("pack_int4 needs integers in [-8, 7]")
    return _pack_nibbles((v.astype(np.int64) & 15).astype(np.uint8))


def unpack_int4(data, count) -> np.ndarray:
    """Inverse of pack_int4: the first `count` signed nibbles as int8."""
    b = np.frombuffer(bytes(data), np.uint8) if not isinstance(data, np.ndarray) \
        else data.astype(np.uint8).ravel()
    nib = _unpack_nibbles(b)[:count]
    return ((nib ^ 8) - 8).astype(np.int8)


def weight_grid(matrix, bits=4, tol=1e-3):
    """Re-expresses each row of a float GEMM-view matrix on a `bits`-bit grid (4 or 8): returns
    (k, scales), k int8 with matrix[r] == k[r] * scales[r] to float32 rounding (scales[r] = 0
    for an all-zero row); 4 bits: k in [-8, 7], 8 bits: k in [-127, 127] (TFLite's symmetric
    int8 weights). Per row a grid max|w| / j (j = 1..8, resp. 1..127) on which every weight
    lies within `tol` steps: what `apply_bits` / `bits_qat` produce, j = 7 resp. 127 when that
    fits, else the coarsest power-of-two step that fits (power_of_two=True), else the coarsest
    step (a sparse row's weights may share a factor). Raises ValueError naming the first row
    that lies on no such grid: storing it at `bits` bits would change the model."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits!r}")
    lo, hi, jmax = (-8, 7, 8) if bits == 4 else (-127, 127, 127)
    qmax = hi                                     # apply_bits' own step: max|w| / qmax
    m = np.asarray(matrix, np.float32)
    k = np.zeros(m.shape, np.int8)
    scales = np.zeros(m.shape[0], np.float32)
    amax = np.max(np.abs(m), axis=1) if m.size else np.zeros(m.shape[0], np.float32)
    js = np.arange(1, jmax + 1, dtype=np.float32)
    for r in range(m.shape[0]):
        if amax[r] == 0:
            continue
        s = (amax[r] / js).astype(np.float32)                       # every candidate step
        row = m[r].astype(np.float64)
        # candidates that fit a few of the row's weights first: a float row off every grid is
        # then rejected without dividing all of it by 127 steps (a large 8-bit layer)
        probe = row[np.flatnonzero(row)[:8]]
        fits = np.all(np.abs(probe[None, :] / s[:, None] - np.round(probe[None, :] / s[:, None]))
                      <= tol, axis=1)
        ok, kr = np.zeros(jmax, bool), {}
        for j in np.flatnonzero(fits):
            q = row / np.float64(s[j])
            kr[j] = np.round(q)
            ok[j] = (np.all(np.abs(q - kr[j]) <= tol) and kr[j].min() >= lo
                     and kr[j].max() <= hi)
        if not ok.any():
            step = amax[r] / (hi if bits == 8 else 7)
            bad = m[r][np.argmax(np.abs(m[r] / step - np.round(m[r] / step)))]
            raise ValueError(f"output channel {r} is not on a {bits}-bit grid (max |w| = "
                             f"{float(amax[r]):.6g}, a weight {float(bad):.6g} is no multiple "
                             f"of max|w| / j for j = 1..{jmax} within [{lo}, {hi}])")
        pow2 = ok & (np.log2(s) == np.round(np.log2(s)))
        j = (qmax - 1 if ok[qmax - 1] else int(np.argmax(pow2)) if pow2.any()
             else int(np.argmax(ok)))
        k[r], scales[r] = kr[j].astype(np.int8), s[j]
    return k, scales


def stored_values(opts: CustomOptions, values):
    """The values tensor's bytes -> (numbers as an array: float32, or int8 for int8/int4 values,
    the raw bytes the checksum covers); ValueError when the size or padding is wrong."""
    if opts.value_type == VALUES_FLOAT32:
        v = np.frombuffer(bytes(values), dtype="<f4") if not isinstance(values, np.ndarray) \
            else values.astype(np.float32).ravel()
        if len(v) != opts.n_values:
            raise ValueError(f"NPAS values tensor has {len(v)} elements, options say "
                             f"{opts.n_values}")
        return v, v.astype("<f4").tobytes()
    raw = bytes(values) if not isinstance(values, np.ndarray) \
        else np.ascontiguousarray(values).tobytes()
    if len(raw) != opts.values_bytes:
        raise ValueError(f"NPAS {VALUE_TYPE_NAMES[opts.value_type]} values tensor has "
                         f"{len(raw)} bytes, options say {opts.values_bytes}")
    if opts.value_type == VALUES_INT8:
        return np.frombuffer(raw, np.int8).copy(), raw
    if opts.n_values % 2 and raw[-1] >> 4:
        raise ValueError("NPAS int4 values: padding nibble of the last byte is not zero")
    return unpack_int4(raw, opts.n_values), raw


def check_scales(opts: CustomOptions, scales) -> np.ndarray:
    """Validates the scales input of a quantized op (float32 [rows], positive, finite, CRC)."""
    s = np.frombuffer(bytes(scales), dtype="<f4") if not isinstance(scales, np.ndarray) \
        else scales.astype(np.float32).ravel()
    if len(s) != opts.rows:
        raise ValueError(f"NPAS scales tensor has {len(s)} elements, expected {opts.rows}")
    if zlib.crc32(s.astype("<f4").tobytes()) & 0xFFFFFFFF != opts.crc_scales:
        raise ValueError("NPAS scales: checksum mismatch (scales corrupted)")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError("NPAS scales: weight scales must be positive and finite")
    return s


# --------------------------------------------------------------------------------------------
# Reference decoder (mirrors tflite_custom_ops/npas_custom_ops.cc).

def _unpack_nibbles(idx):
    return np.stack([idx & 15, idx >> 4], axis=1).ravel().astype(np.int64)


def _check_padding_bits(idx, nbits, what):
    if len(idx) != -(-nbits // 8):
        raise ValueError(f"{what}: index data has {len(idx)} bytes, expected {-(-nbits // 8)}")
    if nbits % 8 and (int(idx[-1]) >> (nbits % 8)):
        raise ValueError(f"{what}: padding bits in the last index byte are not zero")


def decode_matrix(opts: CustomOptions, values, index) -> np.ndarray:
    """Rebuilds the dense GEMM-view matrix [rows, cols] (float32, or int8 for quantized values:
    the integers, scales apart); raises ValueError on any inconsistency."""
    values, raw_values = stored_values(opts, values)
    idx = np.frombuffer(bytes(index), dtype=np.uint8) if not isinstance(index, np.ndarray) \
        else index.astype(np.uint8).ravel()
    rows, cols, n = opts.rows, opts.cols, opts.n_values
    what = f"NPAS {opts.encoding_name} index"
    if len(idx) != opts.index_bytes:
        raise ValueError(f"NPAS index tensor has {len(idx)} bytes, options say "
                         f"{opts.index_bytes}")
    if zlib.crc32(raw_values) & 0xFFFFFFFF != opts.crc_values:
        raise ValueError("NPAS values: checksum mismatch (weights corrupted)")
    if zlib.crc32(idx.tobytes()) & 0xFFFFFFFF != opts.crc_index:
        raise ValueError("NPAS index data: checksum mismatch (index corrupted)")
    total = rows * cols
    out = np.zeros(total, values.dtype)
    enc = opts.encoding
    if enc == ENC_BITMAP:
        _check_padding_bits(idx, total, what)
        bits = np.unpackbits(idx, count=total, bitorder="little").astype(bool)
        if int(bits.sum()) != n:
            raise ValueError(f"{what}: {int(bits.sum())} bits set but {n} values")
        out[bits] = values
    elif enc == ENC_GAP4:
        nib = _unpack_nibbles(idx)
        term = np.flatnonzero(nib != 15)
        if len(term) < n:
            raise ValueError(f"{what}: index data ends before {n} positions")
        term = term[:n]
        cs = np.cumsum(nib)
        acc = np.diff(np.concatenate([[0], cs[term]]))
        pos = np.cumsum(acc + 1) - 1
        if pos[-1] >= total:
            raise ValueError(f"{what}: position {int(pos[-1])} outside the {rows}x{cols} matrix")
        used = int(term[-1]) + 1
        if len(idx) != -(-used // 2) or (used % 2 and nib[used] != 0):
            raise ValueError(f"{what}: {len(idx)} index bytes but {used} nibbles used")
        out[pos] = values
    elif enc == ENC_BLOCK:
        br, bc, mode = opts.params
        if not (1 <= br <= rows and 1 <= bc <= cols and mode in (0, 1, 2)):
            raise ValueError(f"{what}: block parameters {opts.params} invalid for "
                             f"{rows}x{cols}")
        nbr, nbc, valid = _block_geometry(rows, cols, br, bc)
        stored = _block_modes(valid, br, mode)
        nbits = int(stored.sum())
        _check_padding_bits(idx, nbits, what)
        full = valid & ~stored                  # the masks a mode does not store: all kept
        full[stored] = np.unpackbits(idx, count=nbits, bitorder="little").astype(bool)
        rm, cm = full[:, :, :br], full[:, :, br:]
        sel = rm[:, :, :, None] & cm[:, :, None, :]
        if int(sel.sum()) != n:
            raise ValueError(f"{what}: blocks select {int(sel.sum())} values but there are {n}")
        bt = np.zeros((nbr, nbc, br, bc), values.dtype)
        bt[sel] = values
        out = bt.transpose(0, 2, 1, 3).reshape(nbr * br, nbc * bc)[:rows, :cols].ravel()
    elif enc == ENC_PATTERN:
        p, g, id_bits = opts.params
        if not (1 <= p <= 16 and g >= 1 and p * g == cols and id_bits in (4, 8)):
            raise ValueError(f"{what}: bad pattern parameters {opts.params}")
        if len(idx) < 1:
            raise ValueError(f"{what}: empty index data")
        npat = int(idx[0])
        kernels = rows * g
        need = 1 + 2 * npat + (-(-kernels * id_bits // 8))
        if len(idx) != need:
            raise ValueError(f"{what}: {len(idx)} index bytes, expected {need}")
        table = idx[1:1 + 2 * npat].view("<u2").astype(np.int64)
        if npat and ((table == 0).any() or (table >> p).any()):
            raise ValueError(f"{what}: pattern mask outside the {p} kernel positions")
        raw = idx[1 + 2 * npat:]
        if id_bits == 4:
            nib = _unpack_nibbles(raw)
            if kernels % 2 and nib[kernels] != 0:
                raise ValueError(f"{what}: padding nibble is not zero")
            ids = nib[:kernels]
        else:
            ids = raw.astype(np.int64)
        if (ids > npat).any():
            raise ValueError(f"{what}: pattern id {int(ids.max())} > {npat} patterns")
        masks = np.concatenate([[0], table])[ids]
        km = ((masks[:, None] >> np.arange(p)) & 1).astype(bool)          # [R*G, P]
        if int(km.sum()) != n:
            raise ValueError(f"{what}: patterns select {int(km.sum())} values but there are {n}")
        k = np.zeros(km.shape, values.dtype)
        k[km] = values
        out = k.reshape(rows, g, p).transpose(0, 2, 1).ravel()
    elif enc == ENC_NM:
        nn, m, bits = opts.params
        if not (1 <= nn < m <= 65536 and bits == max(1, math.ceil(math.log2(m)))):
            raise ValueError(f"{what}: bad N:M parameters {opts.params}")
        ng = -(-cols // m)
        width = np.minimum(m, cols - np.arange(ng) * m)
        per_row = int(np.minimum(nn, width).sum())
        if per_row * rows != n:
            raise ValueError(f"{what}: {n} values, expected {per_row * rows}")
        _check_padding_bits(idx, n * bits, what)
        b = np.unpackbits(idx, count=n * bits, bitorder="little").reshape(n, bits)
        pos = (b.astype(np.int64) << np.arange(bits)).sum(axis=1)
        grp = np.repeat(np.arange(ng), np.minimum(nn, width))              # group of each slot
        grp = np.tile(grp, rows)
        slot_w = width[grp]
        if (pos >= slot_w).any():
            raise ValueError(f"{what}: position outside its group")
        start = np.concatenate([[True], (grp[1:] != grp[:-1]) | (np.arange(1, n) % per_row == 0)])
        if (~start & (np.diff(np.concatenate([[-1], pos])) <= 0)).any():
            raise ValueError(f"{what}: positions in a group are not strictly increasing")
        row = np.repeat(np.arange(rows), per_row)
        out[row * cols + grp * m + pos] = values
    return out.reshape(rows, cols)


# --------------------------------------------------------------------------------------------
# Layout helpers between the builtin weight tensors and the GEMM view.

def gemm_view(kind, weights):
    """Builtin weight tensor -> W[out, red] (a view/copy in the GEMM order)."""
    w = np.asarray(weights, dtype=np.float32)
    if kind == KIND_FC:
        return w.reshape(w.shape[0], -1)
    if kind == KIND_CONV:
        return w.reshape(w.shape[0], -1)
    if kind == KIND_DW:
        return np.ascontiguousarray(w.reshape(-1, w.shape[-1]).T)
    raise ValueError(f"unknown op kind {kind}")


def builtin_layout(kind, matrix, kh=1, kw=1, in_channels=None):
    """W[out, red] -> the builtin weight tensor (FC [out,in], OHWI, DW [1,kh,kw,out])."""
    m = np.asarray(matrix, dtype=np.float32)
    if kind == KIND_FC:
        return m
    if kind == KIND_CONV:
        return m.reshape(m.shape[0], kh, kw, -1)
    if kind == KIND_DW:
        return np.ascontiguousarray(m.T).reshape(1, kh, kw, m.shape[0])
    raise ValueError(f"unknown op kind {kind}")


def crc32(data) -> int:
    return zlib.crc32(bytes(data)) & 0xFFFFFFFF
