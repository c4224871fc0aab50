// AVX2 + FMA kernels (8 fp32 lanes). Same rules as kernels_avx512.cc: target pragma, no std
// templates below it.
#include <stdint.h>
#include <string.h>

#include "kernels/npas_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace npas {
namespace internal {
namespace {

inline int MinI(int a, int b) { return a < b ? a : b; }

inline __m256i TailMask(int n) {  // lanes < n all-ones
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0));
}

inline void StoreLanes(const RowBlockView& v, int g, __m256 acc, __m256 bias, __m256 lo, __m256 hi,
                       float* o) {
  acc = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(acc, bias), lo), hi);
  const int r0 = g * 8;
  if (v.contiguous[g]) {
    const int n = MinI(8, v.rows - r0);
    if (n == 8) _mm256_storeu_ps(o + r0, acc);
    else _mm256_maskstore_ps(o + r0, TailMask(n), acc);
  } else {
    alignas(32) float t[8];
    _mm256_store_ps(t, acc);
    const int32_t* perm = v.perm + r0;
    for (int l = 0; l < 8; ++l)
      if (perm[l] >= 0) o[perm[l]] = t[l];
  }
}

template <int NP>
inline void RowTile(const RowBlockView& v, int g, const float* in, const int32_t* pb, int p, float* out) {
  constexpr int U = NP == 1 ? 4 : NP == 2 ? 2 : NP == 3 ? 2 : 1;  // latency hiding for FC batch 1
  const int k0 = v.kstart[g], k1 = v.kstart[g + 1];
  const float* w = v.w + (size_t)k0 * 8;
  const int32_t* offs = v.offs + k0;
  const int nk = k1 - k0;
  const float* b[NP];
  for (int i = 0; i < NP; ++i) b[i] = in + pb[p + i];
  __m256 acc[U][NP];
  for (int u = 0; u < U; ++u)
    for (int i = 0; i < NP; ++i) acc[u][i] = _mm256_setzero_ps();
  int k = 0;
  for (; k + U <= nk; k += U)
    for (int u = 0; u < U; ++u) {
      const __m256 wv = _mm256_load_ps(w + (size_t)(k + u) * 8);
      const int32_t o = offs[k + u];
      for (int i = 0; i < NP; ++i) acc[u][i] = _mm256_fmadd_ps(_mm256_broadcast_ss(b[i] + o), wv, acc[u][i]);
    }
  for (; k < nk; ++k) {
    const __m256 wv = _mm256_load_ps(w + (size_t)k * 8);
    const int32_t o = offs[k];
    for (int i = 0; i < NP; ++i) acc[0][i] = _mm256_fmadd_ps(_mm256_broadcast_ss(b[i] + o), wv, acc[0][i]);
  }
  for (int u = 1; u < U; ++u)
    for (int i = 0; i < NP; ++i) acc[0][i] = _mm256_add_ps(acc[0][i], acc[u][i]);
  const __m256 bias = _mm256_load_ps(v.bias + (size_t)g * 8);
  const __m256 lo = _mm256_set1_ps(v.act_min), hi = _mm256_set1_ps(v.act_max);
  for (int i = 0; i < NP; ++i) StoreLanes(v, g, acc[0][i], bias, lo, hi, out + (size_t)(p + i) * v.rows);
}

constexpr int kRowP = 8;
typedef void (*RowTileFn)(const RowBlockView&, int, const float*, const int32_t*, int, float*);
const RowTileFn kRowTiles[kRowP + 1] = {nullptr,    RowTile<1>, RowTile<2>, RowTile<3>, RowTile<4>,
                                        RowTile<5>, RowTile<6>, RowTile<7>, RowTile<8>};

// Pixel vector: 32 pixels = 4 vectors; each tile runs once per vector (NR accumulators).
template <int NR>
inline void PixTile(const PixelVectorView& v, const PixelTile& t, const float* xt, float* acc) {
  const int32_t* cols = v.tile_cols + t.cs;
  const int32_t* rows = v.tile_rows + t.rs;
  const int nc = t.nc;
  // Accumulators loaded from `acc`, row loops fully unrolled (see the AVX-512 PixTile).
  for (int q = 0; q < 4; ++q) {
    const float* w = v.w + t.ws;
    __m256 a[NR];
    float* ap[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      ap[r] = acc + (size_t)rows[r] * 32 + q * 8;
      a[r] = _mm256_load_ps(ap[r]);
    }
    for (int c = 0; c < nc; ++c, w += NR) {
      const __m256 x = _mm256_load_ps(xt + (size_t)cols[c] * 32 + q * 8);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(w + r), x, a[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) _mm256_store_ps(ap[r], a[r]);
  }
}
typedef void (*PixTileFn)(const PixelVectorView&, const PixelTile&, const float*, float*);
const PixTileFn kPixTiles[9] = {nullptr, PixTile<1>, PixTile<2>, PixTile<3>, PixTile<4>,
                                PixTile<5>, PixTile<6>, PixTile<7>, PixTile<8>};

}  // namespace

void RowBlockAvx2(const RowBlockView& v, const float* in, const int32_t* pb, int p0, int p1, int g0,
                  int g1, float* out) {
  for (int g = g0; g < g1; ++g) {
    int p = p0;
    for (; p + kRowP <= p1; p += kRowP) RowTile<kRowP>(v, g, in, pb, p, out);
    if (p < p1) kRowTiles[p1 - p](v, g, in, pb, p, out);
  }
}

void PixelVectorAvx2(const PixelVectorView& v, const float* in, const int32_t* pb, int p0, int p1,
                     float* out, float* scratch) {
  float* xt = scratch;
  float* acc = scratch + (size_t)v.nused * 32;
  for (int p = p0; p < p1; p += 32) {
    const int np = MinI(32, p1 - p);
    const float* base[32];
    for (int i = 0; i < np; ++i) base[i] = in + pb[p + i];
    for (int u = 0; u < v.nused; ++u) {
      const int32_t o = v.used_offs[u];
      float* x = xt + (size_t)u * 32;
      for (int i = 0; i < np; ++i) x[i] = base[i][o];
      for (int i = np; i < 32; ++i) x[i] = 0.f;
    }
    memset(acc, 0, sizeof(float) * (size_t)v.rows * 32);
    for (int t = 0; t < v.ntiles; ++t) kPixTiles[v.tiles[t].nr](v, v.tiles[t], xt, acc);
    for (int i = 0; i < np; ++i) {
      float* o = out + (size_t)(p + i) * v.rows;
      for (int r = 0; r < v.rows; ++r) {
        float y = acc[(size_t)r * 32 + i] + v.bias[r];
        y = y > v.act_min ? y : v.act_min;
        o[r] = y < v.act_max ? y : v.act_max;
      }
    }
  }
}

void DepthwiseAvx2(const DepthwiseView& v, const float* in, const int32_t* pb, int p0, int p1, float* out) {
  const __m256 lo = _mm256_set1_ps(v.act_min), hi = _mm256_set1_ps(v.act_max);
  for (int p = p0; p < p1; ++p) {
    const float* x = in + pb[p];
    float* o = out + (size_t)p * v.cout;
    for (int g = 0; g < v.ngroups; ++g) {
      const int c0 = g * 8;
      const int n = MinI(8, v.cout - c0);
      const __m256i m = TailMask(n);
      __m256 a = _mm256_loadu_ps(v.bias + c0);
      for (int j = v.tstart[g]; j < v.tstart[g + 1]; ++j)
        a = _mm256_fmadd_ps(_mm256_load_ps(v.w + (size_t)j * 8), _mm256_maskload_ps(x + v.toffs[j] + c0, m), a);
      a = _mm256_min_ps(_mm256_max_ps(a, lo), hi);
      if (n == 8) _mm256_storeu_ps(o + c0, a);
      else _mm256_maskstore_ps(o + c0, m, a);
    }
  }
}

}  // namespace internal
}  // namespace npas

#pragma GCC pop_options
#endif
