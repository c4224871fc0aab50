// AVX-512 kernels (16 fp32 lanes). Compiled for the baseline ISA with a target pragma, so they are
// only ever called after DetectIsa() found AVX-512. No std templates below the pragma (ODR).
#include <stdint.h>
#include <string.h>

#include "kernels/npas_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 intrinsics headers
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2,bmi2")

namespace npas {
namespace internal {
namespace {

inline int MinI(int a, int b) { return a < b ? a : b; }

// Bias, clamp and store 16 lanes of group g for one pixel row `o` (= out + p * rows).
inline void StoreLanes(const RowBlockView& v, int g, __m512 acc, __m512 bias, __m512 lo, __m512 hi,
                       float* o) {
  acc = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(acc, bias), lo), hi);
  const int r0 = g * 16;
  if (v.contiguous[g]) {
    const int n = MinI(16, v.rows - r0);
    if (n == 16) _mm512_storeu_ps(o + r0, acc);
    else _mm512_mask_storeu_ps(o + r0, (__mmask16)((1u << n) - 1), acc);
  } else {
    const __m512i idx = _mm512_loadu_si512(v.perm + r0);
    const __mmask16 m = _mm512_cmpge_epi32_mask(idx, _mm512_setzero_si512());
    _mm512_mask_i32scatter_ps(o, m, idx, acc, 4);
  }
}

// NP pixels x one group of 16 rows: acc[i] += in[base_i + off[k]] * w[k]. With few pixels (FC
// batch 1) U independent accumulator sets over interleaved k hide the FMA latency.
template <int NP>
inline void RowTile(const RowBlockView& v, int g, const float* in, const int32_t* pb, int p,
                    float* out) {
  constexpr int U = NP == 1 ? 4 : NP == 2 ? 2 : NP == 3 ? 2 : 1;
  const int k0 = v.kstart[g], k1 = v.kstart[g + 1];
  const float* w = v.w + (size_t)k0 * 16;
  const int32_t* offs = v.offs + k0;
  const int nk = k1 - k0;
  const float* b[NP];
  for (int i = 0; i < NP; ++i) b[i] = in + pb[p + i];
  __m512 acc[U][NP];
  for (int u = 0; u < U; ++u)
    for (int i = 0; i < NP; ++i) acc[u][i] = _mm512_setzero_ps();
  int k = 0;
  for (; k + U <= nk; k += U)
    for (int u = 0; u < U; ++u) {
      const __m512 wv = _mm512_load_ps(w + (size_t)(k + u) * 16);
      const int32_t o = offs[k + u];
      for (int i = 0; i < NP; ++i) acc[u][i] = _mm512_fmadd_ps(_mm512_set1_ps(b[i][o]), wv, acc[u][i]);
    }
  for (; k < nk; ++k) {
    const __m512 wv = _mm512_load_ps(w + (size_t)k * 16);
    const int32_t o = offs[k];
    for (int i = 0; i < NP; ++i) acc[0][i] = _mm512_fmadd_ps(_mm512_set1_ps(b[i][o]), wv, acc[0][i]);
  }
  for (int u = 1; u < U; ++u)
    for (int i = 0; i < NP; ++i) acc[0][i] = _mm512_add_ps(acc[0][i], acc[u][i]);
  const __m512 bias = _mm512_load_ps(v.bias + (size_t)g * 16);
  const __m512 lo = _mm512_set1_ps(v.act_min), hi = _mm512_set1_ps(v.act_max);
  for (int i = 0; i < NP; ++i) StoreLanes(v, g, acc[0][i], bias, lo, hi, out + (size_t)(p + i) * v.rows);
}

// Compressed runs: per run, R = popcount(mask) packed lanes per column; partial sums in packed
// lane order, expanded into the full accumulator once per run.
template <int NP>
inline void RowTileRuns(const RowBlockView& v, int g, const float* in, const int32_t* pb, int p,
                        float* out) {
  const float* w = v.w + v.wstart[g];
  const int32_t* offs = v.offs + v.kstart[g];
  const float* b[NP];
  for (int i = 0; i < NP; ++i) b[i] = in + pb[p + i];
  __m512 acc[NP];
  for (int i = 0; i < NP; ++i) acc[i] = _mm512_setzero_ps();
  for (int j = v.rstart[g]; j < v.rstart[g + 1]; ++j) {
    const __mmask16 m = (__mmask16)v.lane_mask[j];
    const int R = __builtin_popcount(m);
    const int n = v.run_len[j];
    __m512 part[NP];
    for (int i = 0; i < NP; ++i) part[i] = _mm512_setzero_ps();
    for (int k = 0; k < n; ++k) {
      const __m512 wv = _mm512_loadu_ps(w);  // lanes >= R hold the next column's weights: unused
      w += R;
      const int32_t o = offs[k];
      for (int i = 0; i < NP; ++i) part[i] = _mm512_fmadd_ps(_mm512_set1_ps(b[i][o]), wv, part[i]);
    }
    offs += n;
    for (int i = 0; i < NP; ++i) acc[i] = _mm512_add_ps(acc[i], _mm512_maskz_expand_ps(m, part[i]));
  }
  const __m512 bias = _mm512_load_ps(v.bias + (size_t)g * 16);
  const __m512 lo = _mm512_set1_ps(v.act_min), hi = _mm512_set1_ps(v.act_max);
  for (int i = 0; i < NP; ++i) StoreLanes(v, g, acc[i], bias, lo, hi, out + (size_t)(p + i) * v.rows);
}

constexpr int kRowP = 12;

typedef void (*RowTileFn)(const RowBlockView&, int, const float*, const int32_t*, int, float*);
const RowTileFn kRowTiles[kRowP + 1] = {nullptr,     RowTile<1>,  RowTile<2>,  RowTile<3>, RowTile<4>,
                                        RowTile<5>,  RowTile<6>,  RowTile<7>,  RowTile<8>, RowTile<9>,
                                        RowTile<10>, RowTile<11>, RowTile<12>};
const RowTileFn kRunTiles[kRowP + 1] = {nullptr,         RowTileRuns<1>,  RowTileRuns<2>,  RowTileRuns<3>,
                                        RowTileRuns<4>,  RowTileRuns<5>,  RowTileRuns<6>,  RowTileRuns<7>,
                                        RowTileRuns<8>,  RowTileRuns<9>,  RowTileRuns<10>, RowTileRuns<11>,
                                        RowTileRuns<12>};

// ---- pixel vector ---------------------------------------------------------------------------------
// out[j][i] = r[i][j] for a 16x16 block (64 shuffles).
inline void Transpose16(const __m512 r[16], __m512 out[16]) {
  __m512 t[16], q[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
    q[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    q[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    q[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    q[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  // q[4i + j], 128-bit lane L: rows 4i..4i+3 at element 4L + j.
  for (int j = 0; j < 4; ++j) {
    const __m512 ab02 = _mm512_shuffle_f32x4(q[j], q[4 + j], 0x88);
    const __m512 ab13 = _mm512_shuffle_f32x4(q[j], q[4 + j], 0xdd);
    const __m512 cd02 = _mm512_shuffle_f32x4(q[8 + j], q[12 + j], 0x88);
    const __m512 cd13 = _mm512_shuffle_f32x4(q[8 + j], q[12 + j], 0xdd);
    out[j] = _mm512_shuffle_f32x4(ab02, cd02, 0x88);
    out[8 + j] = _mm512_shuffle_f32x4(ab02, cd02, 0xdd);
    out[4 + j] = _mm512_shuffle_f32x4(ab13, cd13, 0x88);
    out[12 + j] = _mm512_shuffle_f32x4(ab13, cd13, 0xdd);
  }
}

// acc[rows[r]][0..31] += sum_c w[c][r] * xt[cols[c]][0..31]. The accumulators are loaded from
// `acc` (no separate add) and every loop over rows is fully unrolled: with arrays of __m512 and
// rolled loops GCC 12 kept them on the stack (zeroed with rep stos per tile), which halved the
// speed of the multi-row (BCR) tiles.
// H = 2: 32 pixels (two zmm per row); H = 1: the first 16 only (a pixel tail of <= 16).
template <int NR, int H>
inline void PixTile(const PixelVectorView& v, const PixelTile& t, const float* xt, float* acc) {
  __m512 a[2 * NR];
  float* ap[NR];
  const int32_t* rows = v.tile_rows + t.rs;
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
    ap[r] = acc + (size_t)rows[r] * 32;
    a[2 * r] = _mm512_load_ps(ap[r]);
    if (H == 2) a[2 * r + 1] = _mm512_load_ps(ap[r] + 16);
  }
  const float* w = v.w + t.ws;
  const int32_t* cols = v.tile_cols + t.cs;
  const int nc = t.nc;
  for (int c = 0; c < nc; ++c, w += NR) {
    const float* x = xt + (size_t)cols[c] * 32;
    const __m512 x0 = _mm512_load_ps(x);
    const __m512 x1 = H == 2 ? _mm512_load_ps(x + 16) : x0;
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const __m512 wv = _mm512_set1_ps(w[r]);
      a[2 * r] = _mm512_fmadd_ps(wv, x0, a[2 * r]);
      if (H == 2) a[2 * r + 1] = _mm512_fmadd_ps(wv, x1, a[2 * r + 1]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
    _mm512_store_ps(ap[r], a[2 * r]);
    if (H == 2) _mm512_store_ps(ap[r] + 16, a[2 * r + 1]);
  }
}
typedef void (*PixTileFn)(const PixelVectorView&, const PixelTile&, const float*, float*);
const PixTileFn kPixTiles[9] = {nullptr,       PixTile<1, 2>, PixTile<2, 2>, PixTile<3, 2>, PixTile<4, 2>,
                                PixTile<5, 2>, PixTile<6, 2>, PixTile<7, 2>, PixTile<8, 2>};
const PixTileFn kPixTiles16[9] = {nullptr,       PixTile<1, 1>, PixTile<2, 1>, PixTile<3, 1>, PixTile<4, 1>,
                                  PixTile<5, 1>, PixTile<6, 1>, PixTile<7, 1>, PixTile<8, 1>};

}  // namespace

void RowBlockAvx512(const RowBlockView& v, const float* in, const int32_t* pb, int p0, int p1, int g0,
                    int g1, float* out) {
  const RowTileFn* tiles = v.lane_mask ? kRunTiles : kRowTiles;
  for (int g = g0; g < g1; ++g) {
    int p = p0;
    for (; p + kRowP <= p1; p += kRowP) tiles[kRowP](v, g, in, pb, p, out);
    if (p < p1) tiles[p1 - p](v, g, in, pb, p, out);
  }
}

void PixelVectorAvx512(const PixelVectorView& v, const float* in, const int32_t* pb, int p0, int p1,
                       float* out, float* scratch) {
  float* xt = scratch;                         // [nused][32]
  float* acc = scratch + (size_t)v.nused * 32; // [rows rounded to 16][32]
  const int rows16 = (v.rows + 15) / 16 * 16;
  const __m512 lo = _mm512_set1_ps(v.act_min), hi = _mm512_set1_ps(v.act_max);
  for (int p = p0; p < p1; p += 32) {
    const int np = MinI(32, p1 - p);
    // Gather the used columns of these pixels, transposed: xt[u][pixel].
    const int halves = np > 16 ? 2 : 1;
    for (int h = 0; h < halves; ++h) {
      const int nph = MinI(16, np - h * 16);
      const float* base[16];
      for (int i = 0; i < 16; ++i) base[i] = in + pb[p + (i < nph ? h * 16 + i : 0)];
      for (int c = 0; c < v.nchunk16; ++c) {
        const int u = v.chunk16[c];
        const int32_t off = v.used_offs[u];
        __m512 r[16], t[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(base[i] + off);
        Transpose16(r, t);
        float* x = xt + (size_t)u * 32 + h * 16;
        for (int j = 0; j < 16; ++j) _mm512_store_ps(x + (size_t)j * 32, t[j]);
      }
      if (v.nsingle) {
        for (int s = 0; s < v.nsingle; ++s) {
          const int u = v.single[s];
          const int32_t off = v.used_offs[u];
          float* x = xt + (size_t)u * 32 + h * 16;
          for (int i = 0; i < 16; ++i) x[i] = base[i][off];
        }
      }
    }
    memset(acc, 0, sizeof(float) * (size_t)rows16 * 32);
    const PixTileFn* tile_fns = halves == 2 ? kPixTiles : kPixTiles16;
    for (int t = 0; t < v.ntiles; ++t) {
      const PixelTile& tile = v.tiles[t];
      tile_fns[tile.nr](v, tile, xt, acc);
    }
    // Transpose-on-store: 16 rows x 16 pixels at a time.
    for (int r0 = 0; r0 < v.rows; r0 += 16) {
      const int nr = MinI(16, v.rows - r0);
      const __mmask16 rm = (__mmask16)(nr == 16 ? 0xffff : (1u << nr) - 1);
      const __m512 bias = _mm512_maskz_loadu_ps(rm, v.bias + r0);
      for (int h = 0; h * 16 < np; ++h) {
        __m512 r[16], t[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_load_ps(acc + (size_t)(r0 + i) * 32 + h * 16);
        Transpose16(r, t);
        const int nph = MinI(16, np - h * 16);
        for (int i = 0; i < nph; ++i) {
          const __m512 y = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(t[i], bias), lo), hi);
          float* o = out + (size_t)(p + h * 16 + i) * v.rows + r0;
          if (nr == 16) _mm512_storeu_ps(o, y);
          else _mm512_mask_storeu_ps(o, rm, y);
        }
      }
    }
  }
}

void DepthwiseAvx512(const DepthwiseView& v, const float* in, const int32_t* pb, int p0, int p1,
                     float* out) {
  // dm == 1 only (PackDepthwise uses the scalar kernel otherwise). 4 pixels share each weight load.
  const __m512 lo = _mm512_set1_ps(v.act_min), hi = _mm512_set1_ps(v.act_max);
  int p = p0;
  for (; p + 4 <= p1; p += 4) {
    for (int g = 0; g < v.ngroups; ++g) {
      const int c0 = g * 16;
      const int n = MinI(16, v.cout - c0);
      const __mmask16 m = (__mmask16)(n == 16 ? 0xffff : (1u << n) - 1);
      const __m512 bias = _mm512_loadu_ps(v.bias + c0);
      __m512 a0 = bias, a1 = bias, a2 = bias, a3 = bias;
      const float* x0 = in + pb[p] + c0;
      const float* x1 = in + pb[p + 1] + c0;
      const float* x2 = in + pb[p + 2] + c0;
      const float* x3 = in + pb[p + 3] + c0;
      for (int j = v.tstart[g]; j < v.tstart[g + 1]; ++j) {
        const __m512 w = _mm512_load_ps(v.w + (size_t)j * 16);
        const int32_t o = v.toffs[j];
        a0 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, x0 + o), a0);
        a1 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, x1 + o), a1);
        a2 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, x2 + o), a2);
        a3 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, x3 + o), a3);
      }
      _mm512_mask_storeu_ps(out + (size_t)p * v.cout + c0, m, _mm512_min_ps(_mm512_max_ps(a0, lo), hi));
      _mm512_mask_storeu_ps(out + (size_t)(p + 1) * v.cout + c0, m, _mm512_min_ps(_mm512_max_ps(a1, lo), hi));
      _mm512_mask_storeu_ps(out + (size_t)(p + 2) * v.cout + c0, m, _mm512_min_ps(_mm512_max_ps(a2, lo), hi));
      _mm512_mask_storeu_ps(out + (size_t)(p + 3) * v.cout + c0, m, _mm512_min_ps(_mm512_max_ps(a3, lo), hi));
    }
  }
  for (; p < p1; ++p) {
    for (int g = 0; g < v.ngroups; ++g) {
      const int c0 = g * 16;
      const int n = MinI(16, v.cout - c0);
      const __mmask16 m = (__mmask16)(n == 16 ? 0xffff : (1u << n) - 1);
      __m512 a = _mm512_loadu_ps(v.bias + c0);
      const float* x = in + pb[p] + c0;
      for (int j = v.tstart[g]; j < v.tstart[g + 1]; ++j)
        a = _mm512_fmadd_ps(_mm512_load_ps(v.w + (size_t)j * 16), _mm512_maskz_loadu_ps(m, x + v.toffs[j]), a);
      _mm512_mask_storeu_ps(out + (size_t)p * v.cout + c0, m, _mm512_min_ps(_mm512_max_ps(a, lo), hi));
    }
  }
}

}  // namespace internal
}  // namespace npas

#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
