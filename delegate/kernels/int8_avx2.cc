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

static inline __m256i Requant(__m256i acc, __m256i mult, __m256i lsh, __m256i rsh, __m256i zp,
                              __m256i lo, __m256i hi) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i h = HighMul(_mm256_sllv_epi32(acc, lsh), mult);
  // RoundingDivideByPOT: (h >> e) + (rem > (mask >> 1) + (h < 0)); compares give -1 for true.
  const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, rsh), one);
  const __m256i rem = _mm256_and_si256(h, mask);
  const __m256i thr = _mm256_sub_epi32(_mm256_srai_epi32(mask, 1), _mm256_srai_epi32(h, 31));
  __m256i r = _mm256_sub_epi32(_mm256_srav_epi32(h, rsh), _mm256_cmpgt_epi32(rem, thr));
  r = _mm256_add_epi32(r, zp);
  return _mm256_min_epi32(_mm256_max_epi32(r, lo), hi);
}

static inline int32_t Pair(const int16_t* x, int32_t o0, int32_t o1) {
  return (int32_t)((uint32_t)(uint16_t)x[o0] | ((uint32_t)(uint16_t)x[o1] << 16));
}

// One quad for one pixel: columns (0, 1) in x01, (2, 3) in x23, as int16 pairs.
static inline void Accumulate(const __m256i* w, int32_t x01, int32_t x23, __m256i* acc0,
                              __m256i* acc1) {
  const __m256i a = _mm256_set1_epi32(x01), c = _mm256_set1_epi32(x23);
  *acc0 = _mm256_add_epi32(*acc0, _mm256_add_epi32(_mm256_madd_epi16(_mm256_load_si256(w), a),
                                                   _mm256_madd_epi16(_mm256_load_si256(w + 1), c)));
  *acc1 = _mm256_add_epi32(*acc1, _mm256_add_epi32(_mm256_madd_epi16(_mm256_load_si256(w + 2), a),
                                                   _mm256_madd_epi16(_mm256_load_si256(w + 3), c)));
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
    const __m256i* w = (const __m256i*)(v.w16 + 64 * q);
    const int32_t off = v.qoffs[4 * q];
    for (int i = 0; i < P; ++i) {
      int32_t x01, x23;
      __builtin_memcpy(&x01, base[i] + off, 4);
      __builtin_memcpy(&x23, base[i] + off + 2, 4);
      Accumulate(w, x01, x23, &acc0[i], &acc1[i]);
    }
  }
  for (int q = qm; q < q1; ++q) {  // gathered quads
    const __m256i* w = (const __m256i*)(v.w16 + 64 * q);
    const int32_t* o = v.qoffs + 4 * q;
    for (int i = 0; i < P; ++i)
      Accumulate(w, Pair(base[i], o[0], o[1]), Pair(base[i], o[2], o[3]), &acc0[i], &acc1[i]);
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

}  // namespace

void RowBlockInt8Avx2(const RowBlockInt8View& v, const void* input, const int32_t* pb, int p0,
                      int p1, int g0, int g1, int8_t* out) {
  const int16_t* in = (const int16_t*)input;  // Int8Input::kS16
  for (int g = g0; g < g1; ++g) {
    const int nl = v.rows - g * 16 < 16 ? v.rows - g * 16 : 16;
    int p = p0;
    for (; p + 4 <= p1; p += 4) Tile<4>(v, in, pb, p, g, out, nl);
    for (; p < p1; ++p) Tile<1>(v, in, pb, p, g, out, nl);
  }
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
