// Portable scalar kernels (any lane count). They are the reference for the SIMD ones and the
// fallback on CPUs without AVX2 (and on aarch64 until NEON kernels exist).
#include <algorithm>
#include <cstring>

#include "kernels/npas_internal.h"

namespace npas {
namespace internal {

static inline float Clamp(float x, float lo, float hi) { return std::min(std::max(x, lo), hi); }

void RowBlockScalar(const RowBlockView& v, const float* in, const int32_t* pb, int p0, int p1,
                    int g0, int g1, float* out) {
  const int L = v.L;
  constexpr int P = 4;
  float acc[P][64];
  for (int g = g0; g < g1; ++g) {
    const int k0 = v.kstart[g], k1 = v.kstart[g + 1];
    const float* bias = v.bias + (size_t)g * L;
    const int32_t* perm = v.perm + (size_t)g * L;
    for (int p = p0; p < p1; p += P) {
      const int np = std::min(P, p1 - p);
      for (int i = 0; i < np; ++i)
        for (int l = 0; l < L; ++l) acc[i][l] = 0.f;
      for (int k = k0; k < k1; ++k) {
        const float* w = v.w + (size_t)k * L;
        const int32_t off = v.offs[k];
        for (int i = 0; i < np; ++i) {
          const float x = in[pb[p + i] + off];
          for (int l = 0; l < L; ++l) acc[i][l] += x * w[l];
        }
      }
      for (int i = 0; i < np; ++i) {
        float* o = out + (size_t)(p + i) * v.rows;
        for (int l = 0; l < L; ++l)
          if (perm[l] >= 0) o[perm[l]] = Clamp(acc[i][l] + bias[l], v.act_min, v.act_max);
      }
    }
  }
}

void PixelVectorScalar(const PixelVectorView& v, const float* in, const int32_t* pb, int p0, int p1,
                       float* out, float* scratch) {
  constexpr int V = kPixelTileV;
  float* xt = scratch;                          // [nused][V]
  float* acc = scratch + (size_t)v.nused * V;   // [rows][V]
  for (int p = p0; p < p1; p += V) {
    const int np = std::min(V, p1 - p);
    for (int u = 0; u < v.nused; ++u) {
      const int32_t off = v.used_offs[u];
      for (int i = 0; i < np; ++i) xt[(size_t)u * V + i] = in[pb[p + i] + off];
      for (int i = np; i < V; ++i) xt[(size_t)u * V + i] = 0.f;
    }
    std::memset(acc, 0, sizeof(float) * (size_t)v.rows * V);
    for (int t = 0; t < v.ntiles; ++t) {
      const PixelTile& tile = v.tiles[t];
      const float* w = v.w + tile.ws;
      for (int c = 0; c < tile.nc; ++c) {
        const float* x = xt + (size_t)v.tile_cols[tile.cs + c] * V;
        for (int r = 0; r < tile.nr; ++r) {
          const float wr = w[c * tile.nr + r];
          float* a = acc + (size_t)v.tile_rows[tile.rs + r] * V;
          for (int i = 0; i < V; ++i) a[i] += wr * x[i];
        }
      }
    }
    for (int i = 0; i < np; ++i) {
      float* o = out + (size_t)(p + i) * v.rows;
      for (int r = 0; r < v.rows; ++r) o[r] = Clamp(acc[(size_t)r * V + i] + v.bias[r], v.act_min, v.act_max);
    }
  }
}

void DepthwiseScalar(const DepthwiseView& v, const float* in, const int32_t* pb, int p0, int p1,
                     float* out) {
  const int L = v.L;
  float acc[64];
  for (int p = p0; p < p1; ++p) {
    float* o = out + (size_t)p * v.cout;
    for (int g = 0; g < v.ngroups; ++g) {
      const int c0 = g * L;
      const int nl = std::min(L, v.cout - c0);
      for (int l = 0; l < nl; ++l) acc[l] = v.bias[c0 + l];
      for (int j = v.tstart[g]; j < v.tstart[g + 1]; ++j) {
        const float* w = v.w + (size_t)j * L;
        const float* x = in + pb[p] + v.toffs[j];
        for (int l = 0; l < nl; ++l) acc[l] += w[l] * x[(c0 + l) / v.dm];
      }
      for (int l = 0; l < nl; ++l) o[c0 + l] = Clamp(acc[l], v.act_min, v.act_max);
    }
  }
}

}  // namespace internal
}  // namespace npas
