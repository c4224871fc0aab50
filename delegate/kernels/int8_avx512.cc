// AVX-512 int8 kernels. Row block (VNNI): 16 output rows per zmm (int32 lanes), vpdpbusd (u8
// activations x s8 weights, 4 columns per instruction), P = 8 pixels of accumulators, vectorised
// TFLite requantization in the store; with VBMI the gathered quads come from 64-byte windows by
// vpermb (int8_internal.h), without it from 4 byte loads. Depthwise (F/BW only). Each function is
// compiled with the narrowest target it needs and only called after CPU detection (see
// npas_internal.h on what this file may instantiate).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stdlib.h>

#include "kernels/int8_internal.h"

// GCC 12 flags the intrinsics' own "undefined" idiom (__m512i __Y = __Y) under target pragmas.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"



namespace npas {
namespace internal {

bool CpuHasAvx512Vbmi() {
  __builtin_cpu_init();
  const char* off = getenv("NPAS_INT8_NO_VBMI");
  if (off && *off && *off != '0') return false;
  return __builtin_cpu_supports("avx512vbmi");
}

bool CpuHasAvx512Vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512f");
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")

namespace {


// TFLite's SaturatingRoundingDoublingHighMul as floor((x * m + 2^30) / 2^31) (int8_internal.h;
// m >= 0 by packing, so the saturating case never occurs). Even lanes: the low dword of the
// shifted 64-bit sum; odd lanes: the high dword of the sum shifted left by 1 (the same 32 bits).
static inline __m512i HighMul(__m512i x, __m512i m) {
  const __m512i half = _mm512_set1_epi64(1ll << 30);
  const __m512i even = _mm512_srli_epi64(_mm512_add_epi64(_mm512_mul_epi32(x, m), half), 31);
  const __m512i odd = _mm512_slli_epi64(
      _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(m, 32)), half),
      1);
  return _mm512_mask_blend_epi32(0xAAAA, even, odd);
}

// RoundingDivideByPOT: (h >> e) + (rem > (mask >> 1) + (h < 0)), then zero point and clamp.
static inline __m512i Requant(__m512i acc, __m512i mult, __m512i lsh, __m512i rsh, __m512i zp,
                              __m512i lo, __m512i hi) {
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i h = HighMul(_mm512_sllv_epi32(acc, lsh), mult);
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, rsh), one);
  const __m512i rem = _mm512_and_si512(h, mask);
  const __m512i thr = _mm512_sub_epi32(_mm512_srai_epi32(mask, 1), _mm512_srai_epi32(h, 31));
  __m512i r = _mm512_srav_epi32(h, rsh);
  r = _mm512_mask_add_epi32(r, _mm512_cmpgt_epi32_mask(rem, thr), r, one);
  r = _mm512_add_epi32(r, zp);
  return _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
}

static inline int32_t Gather4(const uint8_t* x, const int32_t* o) {
  return (int32_t)((uint32_t)x[o[0]] | ((uint32_t)x[o[1]] << 8) | ((uint32_t)x[o[2]] << 16) |
                   ((uint32_t)x[o[3]] << 24));
}

}  // namespace

// x ^ 0x80 (int8 -> u8 = x + 128) over n bytes: the VNNI kernels' input encoding, 64 at a time.
void ToU8Avx512(const int8_t* in, uint8_t* out, int64_t n) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  int64_t i = 0;
  for (; i + 256 <= n; i += 256)
    for (int k = 0; k < 256; k += 64)
      _mm512_storeu_si512(out + i + k,
                          _mm512_xor_si512(_mm512_loadu_si512(in + i + k), flip));
  for (; i + 64 <= n; i += 64)
    _mm512_storeu_si512(out + i, _mm512_xor_si512(_mm512_loadu_si512(in + i), flip));
  if (i < n) {
    const __mmask64 m = (~0ull) >> (64 - (n - i));
    _mm512_mask_storeu_epi8(out + i, m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, in + i), flip));
  }
}

// Depthwise (AVX-512F/BW, no VNNI needed), 32 channels per group by tap pairs (DepthwiseInt8View):
// per pixel and pair two 32-byte loads, vpunpck{l,h}bw into (tap 0, tap 1) byte pairs, vpmovsxbw
// to int16 and vpmaddwd with the pair's int16 weights: 2 x 16 channel sums of two taps (exact) in
// 8 instructions; P = 4 pixels share each weight load; masked loads and stores for a partial
// group. Called only on AVX-512 CPUs (CpuIsa needs F/BW/DQ/VL).
template <int P>
static inline void DwTile(const DepthwiseInt8View& v, const int8_t* in, const int32_t* pb, int p,
                          int8_t* out) {
  const __m512i zp = _mm512_set1_epi32(v.out_zp);
  const __m512i lo = _mm512_set1_epi32(v.act_min), hi = _mm512_set1_epi32(v.act_max);
  const int8_t* x[P];
  for (int i = 0; i < P; ++i) x[i] = in + pb[p + i];
  for (int k = 0; k < v.ngroups32; ++k) {
    const int nl = v.cout - k * 32 < 32 ? v.cout - k * 32 : 32;
    const __mmask32 m = (__mmask32)(nl == 32 ? ~0u : (1u << nl) - 1);
    __m512i a0[P], a1[P];  // halves 0 and 1 (int8_internal.h)
    const __m512i b0 = _mm512_loadu_si512(v.pbias + 32 * k);
    const __m512i b1 = _mm512_loadu_si512(v.pbias + 32 * k + 16);
    for (int i = 0; i < P; ++i) {
      a0[i] = b0;
      a1[i] = b1;
    }
    for (int j = v.pstart[k]; j < v.pstart[k + 1]; ++j) {
      const __m512i w0 = _mm512_loadu_si512(v.pw + 64 * j);
      const __m512i w1 = _mm512_loadu_si512(v.pw + 64 * j + 32);
      const int32_t o0 = v.poffs[2 * j] + 32 * k, o1 = v.poffs[2 * j + 1] + 32 * k;
      for (int i = 0; i < P; ++i) {
        const __m256i t0 = _mm256_maskz_loadu_epi8(m, x[i] + o0);
        const __m256i t1 = _mm256_maskz_loadu_epi8(m, x[i] + o1);
        const __m512i l = _mm512_cvtepi8_epi16(_mm256_unpacklo_epi8(t0, t1));
        const __m512i h = _mm512_cvtepi8_epi16(_mm256_unpackhi_epi8(t0, t1));
        a0[i] = _mm512_add_epi32(a0[i], _mm512_madd_epi16(l, w0));
        a1[i] = _mm512_add_epi32(a1[i], _mm512_madd_epi16(h, w1));
      }
    }
    const int32_t* pm = v.pmult + 32 * k;
    const int32_t* pl = v.plsh + 32 * k;
    const int32_t* pr = v.prsh + 32 * k;
    const __m512i m0 = _mm512_loadu_si512(pm), m1 = _mm512_loadu_si512(pm + 16);
    const __m512i l0 = _mm512_loadu_si512(pl), l1 = _mm512_loadu_si512(pl + 16);
    const __m512i r0 = _mm512_loadu_si512(pr), r1 = _mm512_loadu_si512(pr + 16);
    for (int i = 0; i < P; ++i) {
      const __m128i q0 = _mm512_cvtepi32_epi8(Requant(a0[i], m0, l0, r0, zp, lo, hi));
      const __m128i q1 = _mm512_cvtepi32_epi8(Requant(a1[i], m1, l1, r1, zp, lo, hi));
      // q0 = channels 0-7, 16-23; q1 = 8-15, 24-31.
      const __m256i bytes = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_unpacklo_epi64(q0, q1)), _mm_unpackhi_epi64(q0, q1), 1);
      _mm256_mask_storeu_epi8(out + (size_t)(p + i) * v.cout + 32 * k, m, bytes);
    }
  }
}

void DepthwiseInt8Avx512(const DepthwiseInt8View& v, const int8_t* in, const int32_t* pb, int p0,
                         int p1, int8_t* out) {
  int p = p0;
  for (; p + 4 <= p1; p += 4) DwTile<4>(v, in, pb, p, out);
  for (; p < p1; ++p) DwTile<1>(v, in, pb, p, out);
}

#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")

namespace {

template <int P>
static inline void Tile(const RowBlockInt8View& v, const uint8_t* in, const int32_t* pb, int p,
                        int g, int8_t* out, __mmask16 store_mask) {
  __m512i acc[P];
  const __m512i b = _mm512_load_si512(v.bias + g * 16);
  for (int i = 0; i < P; ++i) acc[i] = b;
  const uint8_t* base[P];
  for (int i = 0; i < P; ++i) base[i] = in + pb[p + i];
  const int q0 = v.qstart[g], qm = v.qmid[g], q1 = v.qstart[g + 1];
  for (int q = q0; q < qm; ++q) {
    const __m512i w = _mm512_load_si512(v.w + 64 * q);
    const int32_t off = v.qoffs[4 * q];
    for (int i = 0; i < P; ++i) {
      int32_t word;
      __builtin_memcpy(&word, base[i] + off, 4);
      acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_set1_epi32(word), w);
    }
  }
  for (int q = qm; q < q1; ++q) {
    const __m512i w = _mm512_load_si512(v.w + 64 * q);
    const int32_t* o = v.qoffs + 4 * q;
    for (int i = 0; i < P; ++i)
      acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_set1_epi32(Gather4(base[i], o)), w);
  }
  const __m512i mult = _mm512_load_si512(v.mult + g * 16);
  const __m512i lsh = _mm512_load_si512(v.lshift + g * 16);
  const __m512i rsh = _mm512_load_si512(v.rshift + g * 16);
  const __m512i zp = _mm512_set1_epi32(v.out_zp);
  const __m512i lo = _mm512_set1_epi32(v.act_min), hi = _mm512_set1_epi32(v.act_max);
  for (int i = 0; i < P; ++i) {
    const __m512i r = Requant(acc[i], mult, lsh, rsh, zp, lo, hi);
    _mm_mask_storeu_epi8(out + (size_t)(p + i) * v.rows + g * 16, store_mask,
                         _mm512_cvtepi32_epi8(r));
  }
}

}  // namespace

void RowBlockInt8Vnni(const RowBlockInt8View& v, const void* input, const int32_t* pb, int p0,
                      int p1, int g0, int g1, int8_t* out) {
  const uint8_t* in = (const uint8_t*)input;  // Int8Input::kU8
  for (int g = g0; g < g1; ++g) {
    const int nl = v.rows - g * 16 < 16 ? v.rows - g * 16 : 16;
    const __mmask16 m = (__mmask16)((1u << nl) - 1);
    int p = p0;
    for (; p + 8 <= p1; p += 8) Tile<8>(v, in, pb, p, g, out, m);
    if (p + 4 <= p1) {
      Tile<4>(v, in, pb, p, g, out, m);
      p += 4;
    }
    for (; p < p1; ++p) Tile<1>(v, in, pb, p, g, out, m);
  }
}

#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi")

namespace {

// As Tile, with the gathered quads read through windows (int8_internal.h): per window and pixel
// one 64-byte load, per quad and pixel one vpermb that broadcasts the quad's 4 bytes. A
// accumulators per pixel take consecutive quads in turn (A > 1 when few pixels would leave the
// vpdpbusd latency chain exposed, e.g. a batch-1 FC).
template <int P, int A>
static inline void TileVbmi(const RowBlockInt8View& v, const uint8_t* in, const int32_t* pb,
                            int p, int g, int8_t* out, __mmask16 store_mask) {
  __m512i acc[P][A];
  const __m512i b = _mm512_load_si512(v.bias + g * 16);
  for (int i = 0; i < P; ++i) {
    acc[i][0] = b;
    for (int a = 1; a < A; ++a) acc[i][a] = _mm512_setzero_si512();
  }
  const uint8_t* base[P];
  for (int i = 0; i < P; ++i) base[i] = in + pb[p + i];
  // One quad into accumulator a: x(i) gives pixel i's 4 bytes broadcast.
  auto quad = [&](int q, int a, auto x) {
    const __m512i w = _mm512_load_si512(v.w + 64 * q);
    for (int i = 0; i < P; ++i) acc[i][a] = _mm512_dpbusd_epi32(acc[i][a], x(i, q), w);
  };
  auto contiguous = [&](int i, int q) {
    int32_t word;
    __builtin_memcpy(&word, base[i] + v.qoffs[4 * q], 4);
    return _mm512_set1_epi32(word);
  };
  const int q0 = v.qstart[g], qm = v.qmid[g];
  int q = q0;
  for (; q + A <= qm; q += A)
    for (int a = 0; a < A; ++a) quad(q + a, a, contiguous);
  for (; q < qm; ++q) quad(q, 0, contiguous);
  for (int wi = v.wbeg[g]; wi < v.wbeg[g + 1]; ++wi) {
    const int32_t off = v.woff[wi];
    const int qe = v.wqend[wi];
    __m512i win[P];
    for (int i = 0; i < P; ++i) win[i] = _mm512_loadu_si512(base[i] + off);
    auto gathered = [&](int i, int qq) {
      return _mm512_permutexvar_epi8(_mm512_set1_epi32((int32_t)v.qidx[qq]), win[i]);
    };
    switch (qe - q) {  // unrolled for the usual 1-3 quads per window (fewer loop branches)
      case 1:
        quad(q, 0, gathered);
        break;
      case 2:
        quad(q, 0, gathered);
        quad(q + 1, 1 % A, gathered);
        break;
      case 3:
        quad(q, 0, gathered);
        quad(q + 1, 1 % A, gathered);
        quad(q + 2, 2 % A, gathered);
        break;
      default:
        for (; q + A <= qe; q += A)
          for (int a = 0; a < A; ++a) quad(q + a, a, gathered);
        for (; q < qe; ++q) quad(q, 0, gathered);
    }
    q = qe;
  }
  const __m512i mult = _mm512_load_si512(v.mult + g * 16);
  const __m512i lsh = _mm512_load_si512(v.lshift + g * 16);
  const __m512i rsh = _mm512_load_si512(v.rshift + g * 16);
  const __m512i zp = _mm512_set1_epi32(v.out_zp);
  const __m512i lo = _mm512_set1_epi32(v.act_min), hi = _mm512_set1_epi32(v.act_max);
  for (int i = 0; i < P; ++i) {
    __m512i sum = acc[i][0];
    for (int a = 1; a < A; ++a) sum = _mm512_add_epi32(sum, acc[i][a]);
    const __m512i r = Requant(sum, mult, lsh, rsh, zp, lo, hi);
    _mm_mask_storeu_epi8(out + (size_t)(p + i) * v.rows + g * 16, store_mask,
                         _mm512_cvtepi32_epi8(r));
  }
}

// Pixel tiles outer, groups inner: a tile's input windows stay in L1 while the groups' weights
// stream through in order (the other order re-reads every window from L2 for each group).
template <int P, int A>
static inline void Groups(const RowBlockInt8View& v, const uint8_t* in, const int32_t* pb, int p,
                          int g0, int g1, int8_t* out) {
  for (int g = g0; g < g1; ++g) {
    const int nl = v.rows - g * 16 < 16 ? v.rows - g * 16 : 16;
    TileVbmi<P, A>(v, in, pb, p, g, out, (__mmask16)((1u << nl) - 1));
  }
}

}  // namespace

void RowBlockInt8VnniVbmi(const RowBlockInt8View& v, const void* input, const int32_t* pb,
                          int p0, int p1, int g0, int g1, int8_t* out) {
  const uint8_t* in = (const uint8_t*)input;  // Int8Input::kU8, kWindowSlack past the end
  int p = p0;
  for (; p + 12 <= p1; p += 12) Groups<12, 1>(v, in, pb, p, g0, g1, out);
  if (p + 8 <= p1) {
    Groups<8, 1>(v, in, pb, p, g0, g1, out);
    p += 8;
  }
  if (p + 4 <= p1) {
    Groups<4, 2>(v, in, pb, p, g0, g1, out);
    p += 4;
  }
  for (; p < p1; ++p) Groups<1, 4>(v, in, pb, p, g0, g1, out);
}

#pragma GCC pop_options

}  // namespace internal
}  // namespace npas
#endif
