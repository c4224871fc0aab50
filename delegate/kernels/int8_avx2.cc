// AVX2 int8 row-block kernel (no VNNI): the input as int16 (Int8Input::kS16) and the weights as
// the int16 copy w16 (int8_internal.h), so vpmaddwd multiplies exact int16 pairs (vpmaddubsw would
// saturate u8 x s8 pair sums at int16). A row group of 16 = 2 ymm of int32 accumulators per pixel;
// per quad one broadcast load per column pair, 4 vpmaddwd + 4 vpaddd per pixel; P = 4 pixels per
// micro-tile; TFLite requantization vectorised in the store. Compiled with target attributes and
// only called after CPU detection (see npas_internal.h on what this file may instantiate).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "kernels/int8_internal.h"

namespace npas {
namespace internal {

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace {

// TFLite's SaturatingRoundingDoublingHighMul as floor((x * m + 2^30) / 2^31) (int8_internal.h;
// m >= 0 by packing, so the saturating case never occurs). The low 32 bits of a logical 64-bit
// shift equal those of the arithmetic one, and the result fits in 32 bits.
static inline __m256i HighMul(__m256i x, __m256i m) {
  const __m256i half = _mm256_set1_epi64x(1ll << 30);
  const __m256i even = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, m), half), 31);
  const __m256i odd = _mm256_srli_epi64(
      _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32)), half),
      31);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// RoundingDivideByPOT(HighMul(x, mult), rsh): TFLite's MultiplyByQuantizedMultiplier without the
// left shift (any sign of mult: HighMul's floor form holds for negative products too).
// RoundingDivideByPOT: (h >> e) + (rem > (mask >> 1) + (h < 0)); compares give -1 for true.
static inline __m256i RoundingDivide(__m256i h, __m256i rsh) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, rsh), one);
  const __m256i rem = _mm256_and_si256(h, mask);
  const __m256i thr = _mm256_sub_epi32(_mm256_srai_epi32(mask, 1), _mm256_srai_epi32(h, 31));
  return _mm256_sub_epi32(_mm256_srav_epi32(h, rsh), _mm256_cmpgt_epi32(rem, thr));
}

static inline __m256i MulRound(__m256i x, __m256i mult, __m256i rsh) {
  return RoundingDivide(HighMul(x, mult), rsh);
}

// RoundingDivide by one exponent (0-31) in every lane, its mask and threshold made once: the
// elementwise ops' per-tensor requantisation.
struct RoundingShift {
  __m256i rsh, mask, half;
  explicit RoundingShift(int exponent)
      : rsh(_mm256_set1_epi32(exponent)),
        mask(_mm256_set1_epi32((int32_t)((1ll << exponent) - 1))),
        half(_mm256_set1_epi32((int32_t)(((1ll << exponent) - 1) >> 1))) {}
  __m256i operator()(__m256i h) const {
    const __m256i rem = _mm256_and_si256(h, mask);
    const __m256i thr = _mm256_sub_epi32(half, _mm256_srai_epi32(h, 31));
    return _mm256_sub_epi32(_mm256_srav_epi32(h, rsh), _mm256_cmpgt_epi32(rem, thr));
  }
};

// MultiplyByQuantizedMultiplier(x, m, shift) + zp, clamped: one multiplier for every lane.
struct UniformRequant {
  __m256i mult, lsh, zp, lo, hi;
  bool left;
  RoundingShift right;
  UniformRequant(int32_t m, int shift, int32_t zero_point, int32_t act_min, int32_t act_max)
      : mult(_mm256_set1_epi32(m)), lsh(_mm256_set1_epi32(shift > 0 ? shift : 0)),
        zp(_mm256_set1_epi32(zero_point)), lo(_mm256_set1_epi32(act_min)),
        hi(_mm256_set1_epi32(act_max)), left(shift > 0), right(shift > 0 ? 0 : -shift) {}
  __m256i operator()(__m256i acc) const {
    if (left) acc = _mm256_sllv_epi32(acc, lsh);
    const __m256i r = _mm256_add_epi32(right(HighMul(acc, mult)), zp);
    return _mm256_min_epi32(_mm256_max_epi32(r, lo), hi);
  }
};

// ADD's input scaling, MulRound(v * 2^20, m, rsh) for |v| <= 255, in 32-bit lanes: with
// m = mh * 2^11 + ml (0 <= ml < 2^11), floor((v * 2^20 * m + 2^30) / 2^31) =
// v * mh + floor((v * ml + 2^10) / 2^11), and neither product leaves 32 bits.
struct AddInputScale {
  __m256i mh, ml;
  RoundingShift right;
  AddInputScale(int32_t m, int shift)
      : mh(_mm256_set1_epi32(m >> 11)), ml(_mm256_set1_epi32(m & 2047)), right(-shift) {}
  __m256i operator()(__m256i v) const {
    const __m256i lo = _mm256_add_epi32(_mm256_mullo_epi32(v, ml), _mm256_set1_epi32(1 << 10));
    const __m256i h = _mm256_add_epi32(_mm256_mullo_epi32(v, mh), _mm256_srai_epi32(lo, 11));
    return right(h);
  }
};

static inline __m256i Requant(__m256i acc, __m256i mult, __m256i lsh, __m256i rsh, __m256i zp,
                              __m256i lo, __m256i hi) {
  const __m256i r = _mm256_add_epi32(MulRound(_mm256_sllv_epi32(acc, lsh), mult, rsh), zp);
  return _mm256_min_epi32(_mm256_max_epi32(r, lo), hi);
}

// 8 int8 values at p as int32 (or p[0] in every lane when `one`), plus `offset`.
static inline __m256i Load8(const int8_t* p, bool one, __m256i offset) {
  const __m256i x = one ? _mm256_set1_epi32(p[0])
                        : _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p));
  return _mm256_add_epi32(x, offset);
}

// 8 int32 values (already in [-128, 127]) stored as int8.
static inline void Store8(int8_t* dst, __m256i v) {
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64((__m128i*)dst, _mm_packs_epi16(w, w));
}

static inline int32_t Pair(const int16_t* x, int32_t o0, int32_t o1) {
  return (int32_t)((uint32_t)(uint16_t)x[o0] | ((uint32_t)(uint16_t)x[o1] << 16));
}

// One quad q for one pixel: columns (0, 1) in x01, (2, 3) in x23, as int16 pairs; its weights
// from w16, or (kInt8Weights) from w8 widened in registers: half the bytes for 4 more
// instructions.
template <bool kInt8Weights>
static inline void Accumulate(const RowBlockInt8View& v, int q, int32_t x01, int32_t x23,
                              __m256i* acc0, __m256i* acc1) {
  const __m256i a = _mm256_set1_epi32(x01), c = _mm256_set1_epi32(x23);
  __m256i w[4];
  for (int k = 0; k < 4; ++k)
    w[k] = kInt8Weights
               ? _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i*)(v.w8 + 64 * q + 16 * k)))
               : _mm256_load_si256((const __m256i*)(v.w16 + 64 * q) + k);
  *acc0 = _mm256_add_epi32(*acc0, _mm256_add_epi32(_mm256_madd_epi16(w[0], a),
                                                   _mm256_madd_epi16(w[1], c)));
  *acc1 = _mm256_add_epi32(*acc1, _mm256_add_epi32(_mm256_madd_epi16(w[2], a),
                                                   _mm256_madd_epi16(w[3], c)));
}

template <int P>
static inline void Tile(const RowBlockInt8View& v, const int16_t* in, const int32_t* pb, int p,
                        int g, int8_t* out, int nl) {
  __m256i acc0[P], acc1[P];  // lanes 0-7, 8-15
  const __m256i b0 = _mm256_load_si256((const __m256i*)(v.bias + g * 16));
  const __m256i b1 = _mm256_load_si256((const __m256i*)(v.bias + g * 16 + 8));
  for (int i = 0; i < P; ++i) {
    acc0[i] = b0;
    acc1[i] = b1;
  }
  const int16_t* base[P];
  for (int i = 0; i < P; ++i) base[i] = in + pb[p + i];
  const int q0 = v.qstart[g], qm = v.qmid[g], q1 = v.qstart[g + 1];
  for (int q = q0; q < qm; ++q) {  // contiguous quads: two int16 pairs straight from memory
    const int32_t off = v.qoffs[4 * q];
    for (int i = 0; i < P; ++i) {
      int32_t x01, x23;
      __builtin_memcpy(&x01, base[i] + off, 4);
      __builtin_memcpy(&x23, base[i] + off + 2, 4);
      Accumulate<false>(v, q, x01, x23, &acc0[i], &acc1[i]);
    }
  }
  for (int q = qm; q < q1; ++q) {  // gathered quads
    const int32_t* o = v.qoffs + 4 * q;
    for (int i = 0; i < P; ++i)
      Accumulate<false>(v, q, Pair(base[i], o[0], o[1]), Pair(base[i], o[2], o[3]), &acc0[i],
                        &acc1[i]);
  }
  const __m256i zp = _mm256_set1_epi32(v.out_zp);
  const __m256i lo = _mm256_set1_epi32(v.act_min), hi = _mm256_set1_epi32(v.act_max);
  const __m256i m0 = _mm256_load_si256((const __m256i*)(v.mult + g * 16));
  const __m256i m1 = _mm256_load_si256((const __m256i*)(v.mult + g * 16 + 8));
  const __m256i l0 = _mm256_load_si256((const __m256i*)(v.lshift + g * 16));
  const __m256i l1 = _mm256_load_si256((const __m256i*)(v.lshift + g * 16 + 8));
  const __m256i r0 = _mm256_load_si256((const __m256i*)(v.rshift + g * 16));
  const __m256i r1 = _mm256_load_si256((const __m256i*)(v.rshift + g * 16 + 8));
  for (int i = 0; i < P; ++i) {
    const __m256i a = Requant(acc0[i], m0, l0, r0, zp, lo, hi);
    const __m256i b = Requant(acc1[i], m1, l1, r1, zp, lo, hi);
    // Values are already in [-128, 127]: the saturating packs only reorder.
    const __m256i s = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    const __m128i bytes =
        _mm_packs_epi16(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    int8_t* dst = out + (size_t)(p + i) * v.rows + g * 16;
    if (nl == 16) {
      _mm_storeu_si128((__m128i*)dst, bytes);
    } else {
      alignas(16) int8_t tmp[16];
      _mm_store_si128((__m128i*)tmp, bytes);
      for (int l = 0; l < nl; ++l) dst[l] = tmp[l];
    }
  }
}

// One pixel (a batch-1 FC, the GRU's per-step FCs, the 1-3 pixels after the tiles of 4): the
// accumulators of up to 8 row groups first, then their requantisation as independent vectors.
// Done per group (a Tile<1>), each group's short quad loop ended in a ~15-deep dependency chain
// on 2 vectors.
template <bool kInt8Weights>
static void OnePixel(const RowBlockInt8View& v, const int16_t* in, int g0, int g1, int8_t* out) {
  constexpr int kChunk = 8;
  for (int c0 = g0; c0 < g1; c0 += kChunk) {
    const int c1 = c0 + kChunk < g1 ? c0 + kChunk : g1;
    __m256i acc[2 * kChunk];
    for (int g = c0; g < c1; ++g) {
      __m256i a0 = _mm256_load_si256((const __m256i*)(v.bias + g * 16));
      __m256i a1 = _mm256_load_si256((const __m256i*)(v.bias + g * 16 + 8));
      const int q0 = v.qstart[g], qm = v.qmid[g], q1 = v.qstart[g + 1];
      for (int q = q0; q < qm; ++q) {
        int32_t x01, x23;
        __builtin_memcpy(&x01, in + v.qoffs[4 * q], 4);
        __builtin_memcpy(&x23, in + v.qoffs[4 * q] + 2, 4);
        Accumulate<kInt8Weights>(v, q, x01, x23, &a0, &a1);
      }
      for (int q = qm; q < q1; ++q) {
        const int32_t* o = v.qoffs + 4 * q;
        Accumulate<kInt8Weights>(v, q, Pair(in, o[0], o[1]), Pair(in, o[2], o[3]), &a0, &a1);
      }
      acc[2 * (g - c0)] = a0;
      acc[2 * (g - c0) + 1] = a1;
    }
    const __m256i zp = _mm256_set1_epi32(v.out_zp);
    const __m256i lo = _mm256_set1_epi32(v.act_min), hi = _mm256_set1_epi32(v.act_max);
    for (int g = c0; g < c1; ++g) {
      __m256i r[2];
      for (int h = 0; h < 2; ++h) {
        const int o = g * 16 + 8 * h;
        r[h] = Requant(acc[2 * (g - c0) + h], _mm256_load_si256((const __m256i*)(v.mult + o)),
                       _mm256_load_si256((const __m256i*)(v.lshift + o)),
                       _mm256_load_si256((const __m256i*)(v.rshift + o)), zp, lo, hi);
      }
      const __m256i s = _mm256_permute4x64_epi64(_mm256_packs_epi32(r[0], r[1]), 0xD8);
      const __m128i bytes =
          _mm_packs_epi16(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      const int nl = v.rows - g * 16 < 16 ? v.rows - g * 16 : 16;
      if (nl == 16) {
        _mm_storeu_si128((__m128i*)(out + g * 16), bytes);
      } else {
        alignas(16) int8_t tmp[16];
        _mm_store_si128((__m128i*)tmp, bytes);
        for (int l = 0; l < nl; ++l) out[g * 16 + l] = tmp[l];
      }
    }
  }
}

}  // namespace

void RowBlockInt8Avx2(const RowBlockInt8View& v, const void* input, const int32_t* pb, int p0,
                      int p1, int g0, int g1, int8_t* out) {
  const int16_t* in = (const int16_t*)input;  // Int8Input::kS16
  const int p4 = p0 + (p1 - p0) / 4 * 4;  // tiles of 4 pixels, then the 0-3 left one by one
  for (int g = g0; g < g1 && p4 > p0; ++g) {
    const int nl = v.rows - g * 16 < 16 ? v.rows - g * 16 : 16;
    for (int p = p0; p < p4; p += 4) Tile<4>(v, in, pb, p, g, out, nl);
  }
  for (int p = p4; p < p1; ++p) {
    if (v.w8)
      OnePixel<true>(v, in + pb[p], g0, g1, out + (size_t)p * v.rows);
    else
      OnePixel<false>(v, in + pb[p], g0, g1, out + (size_t)p * v.rows);
  }
}

// ---- pixel lanes (int8_internal.h, LanesInt8View) ----------------------------------------------

// 16x16 bytes: out[j] byte i = in[i] byte j (unpack rounds of 8, 16, 32 and 64 bits).
static inline void Transpose16x16(const __m128i* in, __m128i* out) {
  __m128i a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm_unpacklo_epi8(in[2 * i], in[2 * i + 1]);      // rows 2i, 2i+1 x columns 0-7
    a[i + 8] = _mm_unpackhi_epi8(in[2 * i], in[2 * i + 1]);  // x columns 8-15
  }
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 4; ++i) {
      b[8 * h + i] = _mm_unpacklo_epi16(a[8 * h + 2 * i], a[8 * h + 2 * i + 1]);  // rows 4i..4i+3
      b[8 * h + i + 4] = _mm_unpackhi_epi16(a[8 * h + 2 * i], a[8 * h + 2 * i + 1]);
    }
  // b[8h + 4q + i]: rows 4i..4i+3 x columns 8h + 4q .. 8h + 4q + 3 (4 bytes per column)
  for (int c4 = 0; c4 < 4; ++c4) {  // column quad: 8h + 4q = 4 * c4
    const __m128i* q = b + 4 * c4;
    const __m128i lo01 = _mm_unpacklo_epi32(q[0], q[1]), hi01 = _mm_unpackhi_epi32(q[0], q[1]);
    const __m128i lo23 = _mm_unpacklo_epi32(q[2], q[3]), hi23 = _mm_unpackhi_epi32(q[2], q[3]);
    // lo01: rows 0-7 x columns 4c4, 4c4+1 (8 bytes each); hi01: columns 4c4+2, 4c4+3
    out[4 * c4 + 0] = _mm_unpacklo_epi64(lo01, lo23);
    out[4 * c4 + 1] = _mm_unpackhi_epi64(lo01, lo23);
    out[4 * c4 + 2] = _mm_unpacklo_epi64(hi01, hi23);
    out[4 * c4 + 3] = _mm_unpackhi_epi64(hi01, hi23);
  }
}

// The pairs j0 .. j1-1 (j1 > j0) of a chunk of R = 6 or 4 rows into acc[2r] (positions 0-3,
// 8-11) and acc[2r + 1] (4-7, 12-15). In asm because GCC 12 copies or spills these accumulators
// on every pair when the loop is written with intrinsics (a register move or a stack round trip
// per vpaddd; 1.5-2x slower): here ymm0-11 hold the accumulators, ymm12/14 the interleaved
// input columns, ymm13 the broadcast weight pair and ymm15 the product.
#define NPAS_LANE_ROW(disp, lo, hi)                  \
  "vpbroadcastd " disp "(%[w]), %%ymm13\n\t"         \
  "vpmaddwd %%ymm13, %%ymm12, %%ymm15\n\t"           \
  "vpaddd %%ymm15, %%ymm" lo ", %%ymm" lo "\n\t"     \
  "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"           \
  "vpaddd %%ymm15, %%ymm" hi ", %%ymm" hi "\n\t"
#define NPAS_LANE_ROWS4 \
  NPAS_LANE_ROW("0", "0", "1") NPAS_LANE_ROW("4", "2", "3") \
  NPAS_LANE_ROW("8", "4", "5") NPAS_LANE_ROW("12", "6", "7")
#define NPAS_LANE_ROWS6 \
  NPAS_LANE_ROWS4 NPAS_LANE_ROW("16", "8", "9") NPAS_LANE_ROW("20", "10", "11")
#define NPAS_LANE_LOOP(ROWS)                     \
  "1:\n\t"                                      \
  "movslq (%[po]), %%rax\n\t"                   \
  "movslq 4(%[po]), %%rdx\n\t"                  \
  "vmovdqu (%[x],%%rax,2), %%ymm12\n\t"         \
  "vmovdqu (%[x],%%rdx,2), %%ymm13\n\t"         \
  "vpunpckhwd %%ymm13, %%ymm12, %%ymm14\n\t"    \
  "vpunpcklwd %%ymm13, %%ymm12, %%ymm12\n\t"    \
  ROWS                                          \
  "add $8, %[po]\n\t"                           \
  "add $24, %[w]\n\t" /* kLaneRows * 4 bytes */ \
  "cmp %[pe], %[po]\n\t"                        \
  "jb 1b\n\t"
// Accumulator i <-> acc[i] (32 bytes each).
#define NPAS_LANE_LOAD(i, off) "vmovdqa " off "(%[acc]), %%ymm" i "\n\t"
#define NPAS_LANE_STORE(i, off) "vmovdqa %%ymm" i ", " off "(%[acc])\n\t"
#define NPAS_LANE_ACC8(M) \
  M("0", "0") M("1", "32") M("2", "64") M("3", "96") M("4", "128") M("5", "160") M("6", "192") \
  M("7", "224")
#define NPAS_LANE_ACC12(M) NPAS_LANE_ACC8(M) M("8", "256") M("9", "288") M("10", "320") M("11", "352")
#define NPAS_LANE_OPERANDS                          \
  : [po] "+r"(po), [w] "+r"(w)                      \
  : [x] "r"(x), [pe] "r"(pe), [acc] "r"(acc)        \
  : "rax", "rdx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
    "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory"
template <int R>
static inline void LanePairs(const LanesInt8View& v, const int16_t* x, int j0, int j1,
                             __m256i* acc) {
  static_assert(R == 6 || R == 4, "asm forms for 6 and 4 rows");
  static_assert(kLaneRows == 6, "the asm steps the weights by 6 pairs");
  const int32_t* po = v.poff + 2 * j0;
  const int32_t* pe = v.poff + 2 * j1;
  const int32_t* w = v.pw + kLaneRows * j0;
  if (R == 6)
    asm volatile(NPAS_LANE_ACC12(NPAS_LANE_LOAD) NPAS_LANE_LOOP(NPAS_LANE_ROWS6)
                     NPAS_LANE_ACC12(NPAS_LANE_STORE) NPAS_LANE_OPERANDS);
  else
    asm volatile(NPAS_LANE_ACC8(NPAS_LANE_LOAD) NPAS_LANE_LOOP(NPAS_LANE_ROWS4)
                     NPAS_LANE_ACC8(NPAS_LANE_STORE) NPAS_LANE_OPERANDS);
}
#undef NPAS_LANE_ROW
#undef NPAS_LANE_ROWS4
#undef NPAS_LANE_ROWS6
#undef NPAS_LANE_LOOP
#undef NPAS_LANE_LOAD
#undef NPAS_LANE_STORE
#undef NPAS_LANE_ACC8
#undef NPAS_LANE_ACC12
#undef NPAS_LANE_OPERANDS

// One chunk of R rows (from absolute row `row`) for the 16 positions at `x`: row r into
// tmp[(row + r) % 16] (16 bytes in position order).
template <int R>
static inline void LaneChunk(const LanesInt8View& v, const int16_t* x, int k, int row,
                             __m128i* tmp) {
  // acc[2r], acc[2r + 1]: positions 0-3, 8-11 and 4-7, 12-15 (vpunpck{l,h}wd lane order)
  alignas(32) __m256i acc[2 * R];
  for (int i = 0; i < 2 * R; ++i) acc[i] = _mm256_setzero_si256();
  const int j0 = v.pstart[k], j1 = v.pstart[k + 1];
  if (R == 6 || R == 4) {
    if (j1 > j0) LanePairs<R == 6 ? 6 : 4>(v, x, j0, j1, acc);
  } else {
    for (int j = j0; j < j1; ++j) {
      const __m256i a = _mm256_loadu_si256((const __m256i*)(x + v.poff[2 * j]));
      const __m256i b = _mm256_loadu_si256((const __m256i*)(x + v.poff[2 * j + 1]));
      const __m256i xl = _mm256_unpacklo_epi16(a, b), xh = _mm256_unpackhi_epi16(a, b);
      for (int r = 0; r < R; ++r) {
        const __m256i wr = _mm256_set1_epi32(v.pw[kLaneRows * j + r]);
        acc[2 * r] = _mm256_add_epi32(acc[2 * r], _mm256_madd_epi16(xl, wr));
        acc[2 * r + 1] = _mm256_add_epi32(acc[2 * r + 1], _mm256_madd_epi16(xh, wr));
      }
    }
  }
  const __m256i zp = _mm256_set1_epi32(v.out_zp);
  const __m256i mn = _mm256_set1_epi32(v.act_min), mx = _mm256_set1_epi32(v.act_max);
  for (int r = 0; r < R; ++r) {
    const __m256i m = _mm256_set1_epi32(v.mult[row + r]);
    const __m256i ls = _mm256_set1_epi32(v.lshift[row + r]);
    const __m256i rs = _mm256_set1_epi32(v.rshift[row + r]);
    const __m256i bias = _mm256_set1_epi32(v.bias[row + r]);
    const __m256i a = Requant(_mm256_add_epi32(acc[2 * r], bias), m, ls, rs, zp, mn, mx);
    const __m256i b = Requant(_mm256_add_epi32(acc[2 * r + 1], bias), m, ls, rs, zp, mn, mx);
    const __m256i s = _mm256_packs_epi32(a, b);  // positions 0-7 | 8-15 as int16
    tmp[(row + r) % 16] =
        _mm_packs_epi16(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  }
}

void LanesInt8Avx2(const LanesInt8View& v, const int16_t* planes, int t0, int t1, int g0, int g1,
                   int8_t* out) {
  for (int g = g0; g < g1; ++g) {
    const int nl = v.rows - g * 16 < 16 ? v.rows - g * 16 : 16;
    for (int t = t0; t < t1; ++t) {
      const int16_t* x = planes + v.tile_start[t];
      __m128i tmp[16], tr[16];
      for (int i = nl; i < 16; ++i) tmp[i] = _mm_setzero_si128();
      for (int k = v.cstart[g]; k < v.cstart[g + 1]; ++k) {
        const int row = g * 16 + v.crow[k];
        switch (v.cnum[k]) {
          case 1: LaneChunk<1>(v, x, k, row, tmp); break;
          case 2: LaneChunk<2>(v, x, k, row, tmp); break;
          case 3: LaneChunk<3>(v, x, k, row, tmp); break;
          case 4: LaneChunk<4>(v, x, k, row, tmp); break;
          case 5: LaneChunk<5>(v, x, k, row, tmp); break;
          default: LaneChunk<kLaneRows>(v, x, k, row, tmp); break;
        }
      }
      Transpose16x16(tmp, tr);
      const int32_t* pix = v.tile_pix + kLaneTile * t;
      for (int i = 0; i < kLaneTile; ++i) {
        if (pix[i] < 0) continue;
        int8_t* dst = out + (size_t)pix[i] * v.rows + g * 16;
        if (nl == 16) {
          _mm_storeu_si128((__m128i*)dst, tr[i]);
        } else {
          alignas(16) int8_t b[16];
          _mm_store_si128((__m128i*)b, tr[i]);
          for (int l = 0; l < nl; ++l) dst[l] = b[l];
        }
      }
    }
  }
}

int64_t AddInt8Avx2(const AddInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2,
                    int64_t n2, int8_t* out, int64_t n) {
  const __m256i off1 = _mm256_set1_epi32(p.input1_offset), off2 = _mm256_set1_epi32(p.input2_offset);
  const AddInputScale scale1(p.input1_multiplier, p.input1_shift);
  const AddInputScale scale2(p.input2_multiplier, p.input2_shift);
  const UniformRequant requant(p.output_multiplier, p.output_shift, p.output_offset, p.act_min,
                               p.act_max);  // output_shift <= 0 (MakeAddInt8Params)
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i a = Load8(in1 + (n1 == 1 ? 0 : i), n1 == 1, off1);
    const __m256i b = Load8(in2 + (n2 == 1 ? 0 : i), n2 == 1, off2);
    Store8(out + i, requant(_mm256_add_epi32(scale1(a), scale2(b))));
  }
  return i;
}

int64_t AddInt8LinearAvx2(const AddInt8Params& p, const int8_t* in1, int64_t n1,
                          const int8_t* in2, int64_t n2, int8_t* out, int64_t n) {
  const __m256i m1 = _mm256_set1_epi32(p.linear1), m2 = _mm256_set1_epi32(p.linear2);
  const __m256i bias = _mm256_set1_epi32(p.linear_bias), zero = _mm256_setzero_si256();
  const __m256i zp = _mm256_set1_epi32(p.output_offset);
  const __m256i lo = _mm256_set1_epi32(p.act_min), hi = _mm256_set1_epi32(p.act_max);
  const __m128i shift = _mm_cvtsi32_si128(p.linear_shift);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i r[4];
    for (int k = 0; k < 4; ++k) {
      const __m256i a = Load8(in1 + (n1 == 1 ? 0 : i + 8 * k), n1 == 1, zero);
      const __m256i b = Load8(in2 + (n2 == 1 ? 0 : i + 8 * k), n2 == 1, zero);
      const __m256i sum = _mm256_add_epi32(
          bias, _mm256_add_epi32(_mm256_mullo_epi32(a, m1), _mm256_mullo_epi32(b, m2)));
      r[k] = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(_mm256_sra_epi32(sum, shift), zp),
                                               lo), hi);
    }
    // Values are in [-128, 127]: the saturating packs only interleave (undone by the permute).
    const __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]),
                                         _mm256_packs_epi32(r[2], r[3]));
    _mm256_storeu_si256((__m256i*)(out + i),
                        _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  return i;
}

int64_t MulInt8Avx2(const MulInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2,
                    int64_t n2, int8_t* out, int64_t n) {
  const __m256i off1 = _mm256_set1_epi32(p.input1_offset), off2 = _mm256_set1_epi32(p.input2_offset);
  const UniformRequant requant(p.output_multiplier, p.output_shift, p.output_offset, p.act_min,
                               p.act_max);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i a = Load8(in1 + (n1 == 1 ? 0 : i), n1 == 1, off1);
    const __m256i b = Load8(in2 + (n2 == 1 ? 0 : i), n2 == 1, off2);
    Store8(out + i, requant(_mm256_mullo_epi32(a, b)));
  }
  return i;
}

// table[(uint8_t)x] for 32 bytes at a time: vpshufb looks up 16-entry sixteenths of the table;
// d = x - 16 h wraps, and adds_epu8(d, 0x70) keeps bit 7 clear (vpshufb reads the low nibble)
// only for the bytes in sixteenth h: the other sixteenths give zeros, so the results OR together.
int64_t LookupInt8Avx2(const int8_t* table, const int8_t* in, int8_t* out, int64_t n) {
  __m256i part[16];
  for (int h = 0; h < 16; ++h)
    part[h] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(table + 16 * h)));
  const __m256i sixteen = _mm256_set1_epi8(16), bias = _mm256_set1_epi8(0x70);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i d = _mm256_loadu_si256((const __m256i*)(in + i));
    __m256i r = _mm256_setzero_si256();
    for (int h = 0; h < 16; ++h) {
      r = _mm256_or_si256(r, _mm256_shuffle_epi8(part[h], _mm256_adds_epu8(d, bias)));
      d = _mm256_sub_epi8(d, sixteen);
    }
    _mm256_storeu_si256((__m256i*)(out + i), r);
  }
  return i;
}

void ToPlanarS16Avx2(const int8_t* in, int64_t g0, int64_t g1, int cin, int16_t* planes,
                     int64_t plane) {
  int64_t p = g0;
  const int c16 = cin / 16 * 16;
  for (; p + 16 <= g1; p += 16) {
    for (int c = 0; c < c16; c += 16) {  // 16 positions x 16 channels: transpose, widen
      __m128i rows[16], cols[16];
      for (int i = 0; i < 16; ++i)
        rows[i] = _mm_loadu_si128((const __m128i*)(in + (p + i) * cin + c));
      Transpose16x16(rows, cols);
      for (int j = 0; j < 16; ++j)
        _mm256_storeu_si256((__m256i*)(planes + (c + j) * plane + p), _mm256_cvtepi8_epi16(cols[j]));
    }
    for (int c = c16; c < cin; ++c)
      for (int i = 0; i < 16; ++i) planes[c * plane + p + i] = in[(p + i) * cin + c];
  }
  for (; p < g1; ++p)
    for (int c = 0; c < cin; ++c) planes[c * plane + p] = in[p * cin + c];
}

// Depthwise: per pixel and full group of 16 channels two ymm of int32 accumulators, per tap two
// vpmovsxbd of 8 input bytes and vpmulld with the tap's int32 weights; P = 4 pixels share each
// weight load; a partial last group runs the scalar group kernel (a 16-byte load could pass the
// input's end).
template <int P>
static inline void DwTile(const DepthwiseInt8View& v, const int8_t* in, const int32_t* pb, int p,
                          int8_t* out) {
  const __m256i zp = _mm256_set1_epi32(v.out_zp);
  const __m256i lo = _mm256_set1_epi32(v.act_min), hi = _mm256_set1_epi32(v.act_max);
  const int full = v.cout / 16;
  const int8_t* x[P];
  for (int i = 0; i < P; ++i) x[i] = in + pb[p + i];
  for (int g = 0; g < full; ++g) {
    __m256i acc0[P], acc1[P];
    const __m256i b0 = _mm256_loadu_si256((const __m256i*)(v.bias + g * 16));
    const __m256i b1 = _mm256_loadu_si256((const __m256i*)(v.bias + g * 16 + 8));
    for (int i = 0; i < P; ++i) {
      acc0[i] = b0;
      acc1[i] = b1;
    }
    for (int j = v.tstart[g]; j < v.tstart[g + 1]; ++j) {
      const __m256i w0 = _mm256_loadu_si256((const __m256i*)(v.w + 16 * j));
      const __m256i w1 = _mm256_loadu_si256((const __m256i*)(v.w + 16 * j + 8));
      const int32_t o = v.toffs[j] + g * 16;
      for (int i = 0; i < P; ++i) {
        const __m256i x0 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(x[i] + o)));
        const __m256i x1 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(x[i] + o + 8)));
        acc0[i] = _mm256_add_epi32(acc0[i], _mm256_mullo_epi32(x0, w0));
        acc1[i] = _mm256_add_epi32(acc1[i], _mm256_mullo_epi32(x1, w1));
      }
    }
    const int32_t* mq = v.mult + g * 16;
    const int32_t* lq = v.lshift + g * 16;
    const int32_t* rq = v.rshift + g * 16;
    const __m256i m0 = _mm256_loadu_si256((const __m256i*)mq);
    const __m256i m1 = _mm256_loadu_si256((const __m256i*)(mq + 8));
    const __m256i l0 = _mm256_loadu_si256((const __m256i*)lq);
    const __m256i l1 = _mm256_loadu_si256((const __m256i*)(lq + 8));
    const __m256i r0 = _mm256_loadu_si256((const __m256i*)rq);
    const __m256i r1 = _mm256_loadu_si256((const __m256i*)(rq + 8));
    for (int i = 0; i < P; ++i) {
      const __m256i a = Requant(acc0[i], m0, l0, r0, zp, lo, hi);
      const __m256i b = Requant(acc1[i], m1, l1, r1, zp, lo, hi);
      const __m256i s = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
      _mm_storeu_si128((__m128i*)(out + (size_t)(p + i) * v.cout + g * 16),
                       _mm_packs_epi16(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1)));
    }
  }
  if (full < v.ngroups)
    for (int i = 0; i < P; ++i)
      DepthwiseInt8GroupScalar(v, x[i], full, out + (size_t)(p + i) * v.cout);
}

void DepthwiseInt8Avx2(const DepthwiseInt8View& v, const int8_t* in, const int32_t* pb, int p0,
                       int p1, int8_t* out) {
  int p = p0;
  for (; p + 4 <= p1; p += 4) DwTile<4>(v, in, pb, p, out);
  for (; p < p1; ++p) DwTile<1>(v, in, pb, p, out);
}

#pragma GCC pop_options

}  // namespace internal
}  // namespace npas
#endif
