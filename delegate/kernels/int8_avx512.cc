// AVX-512 int8 kernels. Row block (VNNI): 16 output rows per zmm (int32 lanes), vpdpbusd (u8
// activations x s8 weights, 4 columns per instruction), P = 8 pixels of accumulators, vectorised
// TFLite requantization in the store; with VBMI the gathered quads come from 64-byte windows by
// vpermb (int8_internal.h), without it from 4 byte loads. Depthwise (F/BW only). Each function is
// compiled with the narrowest target it needs and only called after CPU detection (see
// npas_internal.h on what this file may instantiate).
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

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
// 16x16 dword transpose in registers: r[i] lane j -> r[j] lane i.
static inline void Transpose16x16Epi32(__m512i r[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    b[i] = _mm512_unpacklo_epi64(a[i], a[i + 2]);
    b[i + 1] = _mm512_unpackhi_epi64(a[i], a[i + 2]);
    b[i + 2] = _mm512_unpacklo_epi64(a[i + 1], a[i + 3]);
    b[i + 3] = _mm512_unpackhi_epi64(a[i + 1], a[i + 3]);
  }
  // b[4k + m] lane block L (128-bit) holds rows 4k..4k+3 of column 4L + m'.
  for (int i = 0; i < 4; ++i) {
    a[i] = _mm512_shuffle_i32x4(b[i], b[4 + i], 0x88);
    a[4 + i] = _mm512_shuffle_i32x4(b[i], b[4 + i], 0xDD);
    a[8 + i] = _mm512_shuffle_i32x4(b[8 + i], b[12 + i], 0x88);
    a[12 + i] = _mm512_shuffle_i32x4(b[8 + i], b[12 + i], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(a[i], a[8 + i], 0x88);
    r[8 + i] = _mm512_shuffle_i32x4(a[i], a[8 + i], 0xDD);
    r[4 + i] = _mm512_shuffle_i32x4(a[4 + i], a[12 + i], 0x88);
    r[12 + i] = _mm512_shuffle_i32x4(a[4 + i], a[12 + i], 0xDD);
  }
}

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

// ---- AMX-INT8 (Sapphire Rapids and later) -----------------------------------------------------
// Linux hands out the 8 KB tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM, once per
// process); CPUID leaf 7 EDX bits 24/25 say the CPU has AMX-TILE / AMX-INT8.
bool CpuHasAmxInt8() {
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((d >> 24) & 1) || !((d >> 25) & 1)) return false;
#if defined(__linux__)
    const long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  const char* mode = getenv("NPAS_INT8_AMX");
  if (mode && *mode == '0') return false;
  return ok && CpuHasAvx512Vnni();
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")

// The AMX kernel's input: plane cq holds, for every grid position g, the 4 bytes of channels
// 4cq..4cq+3 as u8 (x ^ 0x80): t[cq * plane + 4g + j] = in[g * cin + 4cq + j] ^ 0x80, by 16x16
// dword transposes (masked at the edges). Grid positions [g0, g1) only (thread split).
void ToPlanarU8Avx512(const int8_t* in, int64_t g0, int64_t g1, int cin, uint8_t* t,
                      int64_t plane) {
  const int cq_n = cin / 4;
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  for (int64_t gb = g0; gb < g1; gb += 16) {
    const int ng = g1 - gb < 16 ? (int)(g1 - gb) : 16;
    const __mmask64 gmask = ng == 16 ? ~0ull : (~0ull) >> (64 - 4 * ng);
    for (int cb = 0; cb < cq_n; cb += 16) {
      const int nq = cq_n - cb < 16 ? cq_n - cb : 16;
      const __mmask64 cmask = nq == 16 ? ~0ull : (~0ull) >> (64 - 4 * nq);
      __m512i r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = i < ng ? _mm512_maskz_loadu_epi8(cmask, in + (gb + i) * cin + 4 * cb)
                      : _mm512_setzero_si512();
      Transpose16x16Epi32(r);
      for (int j = 0; j < nq; ++j)
        _mm512_mask_storeu_epi8(t + (int64_t)(cb + j) * plane + 4 * gb, gmask,
                                _mm512_xor_si512(r[j], flip));
    }
  }
}

#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-int8")

namespace {
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// B rows of chunk ch for NS sub-tiles into buf (sub-tile k at buf + 1024k): row i's byte j of
// position x is channel slot j's byte, i.e. the slot's plane at position x, byte j (slots hold
// channels c with c % 4 == j, so no byte moves within a dword: 4 loads and 3 byte blends).
template <int NS>
static inline void BuildB(const AmxInt8View& v, const uint8_t* base, int ch, uint8_t* buf) {
  const __mmask64 m1 = 0x2222222222222222ull, m2 = 0x4444444444444444ull,
                  m3 = 0x8888888888888888ull;
  if (v.cdirect[ch] >= 0) {  // read in place by tileloadd: fetch its lines into L1 now
    const uint8_t* p = base + v.cdirect[ch];
    for (int i = 0; i < 16; ++i, p += v.plane)
      for (int k = 0; k < NS; ++k) _mm_prefetch((const char*)p + 64 * k, _MM_HINT_T0);
    return;
  }
  const int32_t* o = v.boff + 64 * ch;
  for (int i = 0; i < 16; ++i, o += 4) {
    for (int k = 0; k < NS; ++k) {
      const uint8_t* p = base + 64 * k;
      __m512i x = _mm512_loadu_si512(p + o[0]);
      x = _mm512_mask_blend_epi8(m1, x, _mm512_loadu_si512(p + o[1]));
      x = _mm512_mask_blend_epi8(m2, x, _mm512_loadu_si512(p + o[2]));
      x = _mm512_mask_blend_epi8(m3, x, _mm512_loadu_si512(p + o[3]));
      _mm512_store_si512(buf + 1024 * k + 64 * i, x);
    }
  }
}

// C tile (16 rows x 16 positions, int32, row-major in c) -> requantized int8 outputs of the
// positions' pixels (16x16 dword transpose, then per pixel the VNNI kernels' requantization).
static inline void StoreC(const AmxInt8View& v, const int32_t* c, const int32_t* pix, int g,
                          int8_t* out) {
  __m512i r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_load_si512(c + 16 * i);
  Transpose16x16Epi32(r);
  const __m512i zp = _mm512_set1_epi32(v.out_zp);
  const __m512i lo = _mm512_set1_epi32(v.act_min), hi = _mm512_set1_epi32(v.act_max);
  const __m512i bias = _mm512_load_si512(v.bias + g * 16);
  const __m512i mult = _mm512_load_si512(v.mult + g * 16);
  const __m512i lsh = _mm512_load_si512(v.lshift + g * 16);
  const __m512i rsh = _mm512_load_si512(v.rshift + g * 16);
  const int nl = v.rows - g * 16 < 16 ? v.rows - g * 16 : 16;
  const __mmask16 m = (__mmask16)((1u << nl) - 1);
  for (int i = 0; i < 16; ++i) {
    if (pix[i] < 0) continue;
    const __m512i q = Requant(_mm512_add_epi32(r[i], bias), mult, lsh, rsh, zp, lo, hi);
    _mm_mask_storeu_epi8(out + (int64_t)pix[i] * v.rows + g * 16, m, _mm512_cvtepi32_epi8(q));
  }
}

// One super-tile (NS sub-tiles of 16 positions) over groups [g0, g1). Tiles: 0-3 the sub-tiles'
// C, 4 the chunk's A (shared by the NS multiplies: reloading A per multiply halves the rate),
// 5-7 B. Software-pipelined, because a tileloadd of rows just stored waits until the stores
// commit, stores commit only after every earlier tdpbsud retired, and a tilestored waits for the
// multiplies: the B rows of chunk ch + kAhead are built (ring of kAhead + 1 buffers) before the
// multiplies of chunk ch, and a group's outputs are requantized from its stored C tiles after
// the first multiplies of the next group were issued.
static constexpr int kAhead = 2;
template <int NS>
static void SuperTile(const AmxInt8View& v, const uint8_t* base, const int32_t* pix, int g0,
                      int g1, uint8_t* bscr, int32_t* cbuf, int8_t* out) {
  const int c0 = v.cstart[g0], c1 = v.cstart[g1];
  auto buf = [&](int ch) { return bscr + 4096 * ((ch - c0) % (kAhead + 1)); };
  for (int ch = c0; ch < c1 && ch < c0 + kAhead; ++ch) BuildB<NS>(v, base, ch, buf(ch));
  int g = g0, pending = -1;  // every group has >= 1 chunk (packing)
  for (int ch = c0; ch < c1; ++ch) {
    uint8_t* b = buf(ch);
    if (ch + kAhead < c1) BuildB<NS>(v, base, ch + kAhead, buf(ch + kAhead));
    const bool first = ch == v.cstart[g];
    if (first) {
      _tile_zero(0);
      if (NS > 1) _tile_zero(1);
      if (NS > 2) _tile_zero(2);
      if (NS > 3) _tile_zero(3);
    }
    // Sub-tile k's B: built rows (stride 64), or a direct chunk's planes (stride `plane`).
    const int32_t dir = v.cdirect[ch];
    const uint8_t* bk = dir >= 0 ? base + dir : b;
    const int64_t bstep = dir >= 0 ? 64 : 1024, bstride = dir >= 0 ? v.plane : 64;
    _tile_loadd(4, v.a + 1024 * (int64_t)ch, 64);
    _tile_loadd(5, bk, bstride);
    _tile_dpbsud(0, 4, 5);
    if (NS > 1) {
      _tile_loadd(6, bk + bstep, bstride);
      _tile_dpbsud(1, 4, 6);
    }
    if (NS > 2) {
      _tile_loadd(7, bk + 2 * bstep, bstride);
      _tile_dpbsud(2, 4, 7);
    }
    if (NS > 3) {
      _tile_loadd(5, bk + 3 * bstep, bstride);
      _tile_dpbsud(3, 4, 5);
    }
    if (first && pending >= 0) {
      for (int k = 0; k < NS; ++k)
          StoreC(v, cbuf + 1024 * (pending & 1) + 256 * k, pix + 16 * k, pending, out);
      pending = -1;
    }
    if (ch + 1 == v.cstart[g + 1]) {
      int32_t* c = cbuf + 1024 * (g & 1);
      _tile_stored(0, c, 64);
      if (NS > 1) _tile_stored(1, c + 256, 64);
      if (NS > 2) _tile_stored(2, c + 512, 64);
      if (NS > 3) _tile_stored(3, c + 768, 64);
      pending = g++;
    }
  }
  if (pending >= 0)
    for (int k = 0; k < NS; ++k)
      StoreC(v, cbuf + 1024 * (pending & 1) + 256 * k, pix + 16 * k, pending, out);
}
}  // namespace

// AMX row block (AmxInt8View): per super-tile of up to 4 x 16 grid positions and 16-row group,
// C (16 rows x 16 positions per sub-tile) += A (the chunk's s8 weights) x B (16 rows of u8
// input gathered from the planar input), one tdpbsud per chunk of 16 rows and sub-tile.
void RowBlockInt8Amx(const AmxInt8View& v, const uint8_t* t, int t0, int t1, int g0, int g1,
                     int8_t* out) {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  _tile_loadconfig(&cfg);
  alignas(64) uint8_t bscr[(kAhead + 1) * 4096];
  alignas(64) int32_t cbuf[2 * 1024];
  for (int tile = t0; tile < t1; ++tile) {
    const uint8_t* base = t + (int64_t)v.tile_start[tile] * 4;
    const int32_t* pix = v.tile_pix + 64 * tile;
    switch (v.tile_nsub[tile]) {
      case 1: SuperTile<1>(v, base, pix, g0, g1, bscr, cbuf, out); break;
      case 2: SuperTile<2>(v, base, pix, g0, g1, bscr, cbuf, out); break;
      case 3: SuperTile<3>(v, base, pix, g0, g1, bscr, cbuf, out); break;
      default: SuperTile<4>(v, base, pix, g0, g1, bscr, cbuf, out);
    }
  }
  _tile_release();
}

#pragma GCC pop_options

}  // namespace internal
}  // namespace npas
#endif
