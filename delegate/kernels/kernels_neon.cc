// NEON (AArch64 Advanced SIMD) kernels: 4 fp32 lanes per q-register. Advanced SIMD is part of the
// AArch64 baseline, so this file needs no target attributes and is selected at build time
// (`#if defined(__aarch64__)`); on other targets it compiles to nothing.
//
// Layout choices (also in delegate/README.md):
//   row block   L = 16 rows per group = 4 q-registers; micro-tile 5 pixels x 16 rows = 20
//               accumulators, per kept column 4 weight loads + 5 broadcast loads for 20 FMAs.
//   pixel vec.  32 pixels = 8 q-registers; a tile of NR rows runs over 32 / (4 Q) slices of 4 Q
//               pixels with NR x Q accumulators (<= 16), weights as scalar FMA operands.
//   depthwise   channel groups of 16 = 4 q-registers, 4 pixels share each weight load.
// NEON has no masked loads/stores: partial vectors (rows or channels past the end) are handled
// lane by lane, never by reading or writing past the caller's buffers.
#include <stdint.h>
#include <string.h>

#include "kernels/npas_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

namespace npas {
namespace internal {
namespace {

inline int MinI(int a, int b) { return a < b ? a : b; }

inline float32x4_t BiasClamp(float32x4_t acc, float32x4_t bias, float32x4_t lo, float32x4_t hi) {
  return vminq_f32(vmaxq_f32(vaddq_f32(acc, bias), lo), hi);
}

// 4x4 transpose: t[j] = {r[0][j], r[1][j], r[2][j], r[3][j]}.
inline void Transpose4(const float32x4_t r[4], float32x4_t t[4]) {
  const float32x4x2_t p01 = vtrnq_f32(r[0], r[1]);  // {r0[0] r1[0] r0[2] r1[2]}, {r0[1] r1[1] r0[3] r1[3]}
  const float32x4x2_t p23 = vtrnq_f32(r[2], r[3]);
  t[0] = vcombine_f32(vget_low_f32(p01.val[0]), vget_low_f32(p23.val[0]));
  t[1] = vcombine_f32(vget_low_f32(p01.val[1]), vget_low_f32(p23.val[1]));
  t[2] = vcombine_f32(vget_high_f32(p01.val[0]), vget_high_f32(p23.val[0]));
  t[3] = vcombine_f32(vget_high_f32(p01.val[1]), vget_high_f32(p23.val[1]));
}

// ---- row block ----------------------------------------------------------------------------------
// Bias, clamp and store the 16 lanes (4 vectors) of group g for one pixel row o = out + p * rows.
// Vectors by value (not an array pointer) so that the caller's accumulators stay in registers.
inline void StoreLanes(const RowBlockView& v, int g, float32x4_t a0, float32x4_t a1, float32x4_t a2,
                       float32x4_t a3, const float* bias, float32x4_t lo, float32x4_t hi, float* o) {
  const int r0 = g * 16;
  a0 = BiasClamp(a0, vld1q_f32(bias), lo, hi);
  a1 = BiasClamp(a1, vld1q_f32(bias + 4), lo, hi);
  a2 = BiasClamp(a2, vld1q_f32(bias + 8), lo, hi);
  a3 = BiasClamp(a3, vld1q_f32(bias + 12), lo, hi);
  if (v.contiguous[g] && v.rows - r0 >= 16) {
    vst1q_f32(o + r0, a0);
    vst1q_f32(o + r0 + 4, a1);
    vst1q_f32(o + r0 + 8, a2);
    vst1q_f32(o + r0 + 12, a3);
    return;
  }
  float t[16];
  vst1q_f32(t, a0);
  vst1q_f32(t + 4, a1);
  vst1q_f32(t + 8, a2);
  vst1q_f32(t + 12, a3);
  const int32_t* perm = v.perm + r0;  // contiguous tail group: perm[l] = r0 + l or -1
  for (int l = 0; l < 16; ++l)
    if (perm[l] >= 0) o[perm[l]] = t[l];
}

// NP pixels x one group of 16 rows: acc[i] += in[base_i + off[k]] * w[k]. With few pixels (FC
// batch 1) U independent accumulator sets over interleaved k hide the FMA latency. The register
// budget (32 q-registers): NP * 4 * U accumulators + 4 * U weights + NP broadcasts, so NP <= 5
// (NP = 6 spills three accumulators with GCC 12). Every loop over i / j / u is fully unrolled
// (GCC otherwise keeps `acc` in memory and stores it on every k).
#define NPAS_UNROLL _Pragma("GCC unroll 8")
template <int NP>
inline void RowTile(const RowBlockView& v, int g, const float* in, const int32_t* pb, int p, float* out) {
  constexpr int U = NP <= 2 ? 2 : 1;
  const int k0 = v.kstart[g], k1 = v.kstart[g + 1];
  const float* w = v.w + (size_t)k0 * 16;
  const int32_t* offs = v.offs + k0;
  const int nk = k1 - k0;
  const float* b[NP];
  NPAS_UNROLL for (int i = 0; i < NP; ++i) b[i] = in + pb[p + i];
  float32x4_t acc[U][NP][4];
  NPAS_UNROLL for (int u = 0; u < U; ++u) {
    NPAS_UNROLL for (int i = 0; i < NP; ++i) {
      NPAS_UNROLL for (int j = 0; j < 4; ++j) acc[u][i][j] = vdupq_n_f32(0.f);
    }
  }
  int k = 0;
  for (; k + U <= nk; k += U) {
    NPAS_UNROLL for (int u = 0; u < U; ++u) {
      const float* wk = w + (size_t)(k + u) * 16;
      const float32x4_t w0 = vld1q_f32(wk), w1 = vld1q_f32(wk + 4);
      const float32x4_t w2 = vld1q_f32(wk + 8), w3 = vld1q_f32(wk + 12);
      const int32_t o = offs[k + u];
      NPAS_UNROLL for (int i = 0; i < NP; ++i) {
        const float32x4_t x = vld1q_dup_f32(b[i] + o);
        acc[u][i][0] = vfmaq_f32(acc[u][i][0], w0, x);
        acc[u][i][1] = vfmaq_f32(acc[u][i][1], w1, x);
        acc[u][i][2] = vfmaq_f32(acc[u][i][2], w2, x);
        acc[u][i][3] = vfmaq_f32(acc[u][i][3], w3, x);
      }
    }
  }
  for (; k < nk; ++k) {
    const float* wk = w + (size_t)k * 16;
    const float32x4_t w0 = vld1q_f32(wk), w1 = vld1q_f32(wk + 4);
    const float32x4_t w2 = vld1q_f32(wk + 8), w3 = vld1q_f32(wk + 12);
    const int32_t o = offs[k];
    NPAS_UNROLL for (int i = 0; i < NP; ++i) {
      const float32x4_t x = vld1q_dup_f32(b[i] + o);
      acc[0][i][0] = vfmaq_f32(acc[0][i][0], w0, x);
      acc[0][i][1] = vfmaq_f32(acc[0][i][1], w1, x);
      acc[0][i][2] = vfmaq_f32(acc[0][i][2], w2, x);
      acc[0][i][3] = vfmaq_f32(acc[0][i][3], w3, x);
    }
  }
  NPAS_UNROLL for (int u = 1; u < U; ++u) {
    NPAS_UNROLL for (int i = 0; i < NP; ++i) {
      NPAS_UNROLL for (int j = 0; j < 4; ++j) acc[0][i][j] = vaddq_f32(acc[0][i][j], acc[u][i][j]);
    }
  }
  const float* bias = v.bias + (size_t)g * 16;
  const float32x4_t lo = vdupq_n_f32(v.act_min), hi = vdupq_n_f32(v.act_max);
  NPAS_UNROLL for (int i = 0; i < NP; ++i) {
    StoreLanes(v, g, acc[0][i][0], acc[0][i][1], acc[0][i][2], acc[0][i][3], bias, lo, hi,
               out + (size_t)(p + i) * v.rows);
  }
}

constexpr int kRowP = 5;  // == RowBlockPixelTile(Isa::kNeon)
typedef void (*RowTileFn)(const RowBlockView&, int, const float*, const int32_t*, int, float*);
const RowTileFn kRowTiles[kRowP + 1] = {nullptr, RowTile<1>, RowTile<2>, RowTile<3>, RowTile<4>, RowTile<5>};

// ---- pixel vector ---------------------------------------------------------------------------------
// acc[row][0..32) += sum_c w[c, r] * xt[col c][0..32) for the NR rows of tile t, Q vectors (4 Q
// pixels) per slice so that NR x Q accumulators stay in registers.
template <int NR>
inline void PixTile(const PixelVectorView& v, const PixelTile& t, const float* xt, float* acc) {
  constexpr int Q = NR <= 2 ? 8 : NR <= 4 ? 4 : 2;
  const float* w = v.w + t.ws;
  const int32_t* cols = v.tile_cols + t.cs;
  const int32_t* rows = v.tile_rows + t.rs;
  for (int h = 0; h < 32; h += 4 * Q) {
    float32x4_t a[NR][Q];
    for (int r = 0; r < NR; ++r)
      for (int q = 0; q < Q; ++q) a[r][q] = vdupq_n_f32(0.f);
    for (int c = 0; c < t.nc; ++c) {
      const float* x = xt + (size_t)cols[c] * 32 + h;
      float32x4_t xv[Q];
      for (int q = 0; q < Q; ++q) xv[q] = vld1q_f32(x + 4 * q);
      const float* wc = w + c * NR;
      for (int r = 0; r < NR; ++r) {
        const float wr = wc[r];
        for (int q = 0; q < Q; ++q) a[r][q] = vfmaq_n_f32(a[r][q], xv[q], wr);
      }
    }
    for (int r = 0; r < NR; ++r) {
      float* ar = acc + (size_t)rows[r] * 32 + h;
      for (int q = 0; q < Q; ++q) vst1q_f32(ar + 4 * q, vaddq_f32(vld1q_f32(ar + 4 * q), a[r][q]));
    }
  }
}
typedef void (*PixTileFn)(const PixelVectorView&, const PixelTile&, const float*, float*);
const PixTileFn kPixTiles[9] = {nullptr, PixTile<1>, PixTile<2>, PixTile<3>, PixTile<4>,
                                PixTile<5>, PixTile<6>, PixTile<7>, PixTile<8>};

// ---- depthwise ------------------------------------------------------------------------------------
// One pixel, one channel group of n <= 16 lanes: full vectors, then the last n % 4 lanes scalar.
inline void DepthwiseGroup1(const DepthwiseView& v, int g, const float* x, float* o, float32x4_t lo,
                            float32x4_t hi) {
  const int c0 = g * 16;
  const int n = MinI(16, v.cout - c0);
  const int j0 = v.tstart[g], j1 = v.tstart[g + 1];
  int l = 0;
  for (; l + 4 <= n; l += 4) {
    float32x4_t a = vld1q_f32(v.bias + c0 + l);
    for (int j = j0; j < j1; ++j)
      a = vfmaq_f32(a, vld1q_f32(v.w + (size_t)j * 16 + l), vld1q_f32(x + v.toffs[j] + c0 + l));
    vst1q_f32(o + c0 + l, vminq_f32(vmaxq_f32(a, lo), hi));
  }
  for (; l < n; ++l) {
    float a = v.bias[c0 + l];
    for (int j = j0; j < j1; ++j) a += v.w[(size_t)j * 16 + l] * x[v.toffs[j] + c0 + l];
    a = a > v.act_min ? a : v.act_min;
    o[c0 + l] = a < v.act_max ? a : v.act_max;
  }
}

}  // namespace

void RowBlockNeon(const RowBlockView& v, const float* in, const int32_t* pb, int p0, int p1, int g0,
                  int g1, float* out) {
  for (int g = g0; g < g1; ++g) {
    int p = p0;
    for (; p + kRowP <= p1; p += kRowP) RowTile<kRowP>(v, g, in, pb, p, out);
    if (p < p1) kRowTiles[p1 - p](v, g, in, pb, p, out);
  }
}

void PixelVectorNeon(const PixelVectorView& v, const float* in, const int32_t* pb, int p0, int p1,
                     float* out, float* scratch) {
  float* xt = scratch;                          // [nused][32]
  float* acc = scratch + (size_t)v.nused * 32;  // [rows rounded to 16][32]
  const int rows4 = (v.rows + 3) / 4 * 4;
  const float32x4_t lo = vdupq_n_f32(v.act_min), hi = vdupq_n_f32(v.act_max);
  for (int p = p0; p < p1; p += 32) {
    const int np = MinI(32, p1 - p);
    // Gather the used columns of these pixels transposed, xt[u][pixel]; pixels past np repeat
    // pixel p (finite values, never stored).
    const float* base[32];
    for (int i = 0; i < 32; ++i) base[i] = in + pb[p + (i < np ? i : 0)];
    for (int c = 0; c < v.nchunk16; ++c) {
      const int u = v.chunk16[c];
      const int32_t off = v.used_offs[u];
      for (int i0 = 0; i0 < 32; i0 += 4)
        for (int j4 = 0; j4 < 16; j4 += 4) {
          float32x4_t r[4], t[4];
          for (int i = 0; i < 4; ++i) r[i] = vld1q_f32(base[i0 + i] + off + j4);
          Transpose4(r, t);
          float* x = xt + (size_t)(u + j4) * 32 + i0;
          for (int j = 0; j < 4; ++j) vst1q_f32(x + (size_t)j * 32, t[j]);
        }
    }
    for (int s = 0; s < v.nsingle; ++s) {
      const int u = v.single[s];
      const int32_t off = v.used_offs[u];
      float* x = xt + (size_t)u * 32;
      for (int i = 0; i < 32; ++i) x[i] = base[i][off];
    }
    memset(acc, 0, sizeof(float) * (size_t)rows4 * 32);
    for (int t = 0; t < v.ntiles; ++t) kPixTiles[v.tiles[t].nr](v, v.tiles[t], xt, acc);
    // Transpose-on-store, 4 rows x 4 pixels at a time, with bias + clamp.
    for (int r0 = 0; r0 < v.rows; r0 += 4) {
      const int nr = MinI(4, v.rows - r0);
      float bb[4] = {0.f, 0.f, 0.f, 0.f};
      for (int r = 0; r < nr; ++r) bb[r] = v.bias[r0 + r];
      const float32x4_t bias = vld1q_f32(bb);
      for (int i0 = 0; i0 < np; i0 += 4) {
        float32x4_t rv[4], t[4];
        for (int r = 0; r < 4; ++r) rv[r] = vld1q_f32(acc + (size_t)(r0 + r) * 32 + i0);
        Transpose4(rv, t);
        const int npi = MinI(4, np - i0);
        for (int i = 0; i < npi; ++i) {
          const float32x4_t y = BiasClamp(t[i], bias, lo, hi);
          float* o = out + (size_t)(p + i0 + i) * v.rows + r0;
          if (nr == 4) {
            vst1q_f32(o, y);
          } else {
            float tmp[4];
            vst1q_f32(tmp, y);
            for (int r = 0; r < nr; ++r) o[r] = tmp[r];
          }
        }
      }
    }
  }
}

void DepthwiseNeon(const DepthwiseView& v, const float* in, const int32_t* pb, int p0, int p1, float* out) {
  // depth_multiplier == 1 only (PackDepthwise packs for the scalar kernel otherwise).
  if (v.dm != 1 || v.L != 16) {
    DepthwiseScalar(v, in, pb, p0, p1, out);
    return;
  }
  const float32x4_t lo = vdupq_n_f32(v.act_min), hi = vdupq_n_f32(v.act_max);
  const int full = v.cout / 16;  // groups with all 16 lanes
  int p = p0;
  for (; p + 4 <= p1; p += 4) {
    const float* x[4];
    float* o[4];
    for (int i = 0; i < 4; ++i) {
      x[i] = in + pb[p + i];
      o[i] = out + (size_t)(p + i) * v.cout;
    }
    for (int g = 0; g < full; ++g) {
      const int c0 = g * 16;
      float32x4_t a[4][4];
      for (int q = 0; q < 4; ++q) {
        const float32x4_t b = vld1q_f32(v.bias + c0 + 4 * q);
        for (int i = 0; i < 4; ++i) a[i][q] = b;
      }
      for (int j = v.tstart[g]; j < v.tstart[g + 1]; ++j) {
        const float* wj = v.w + (size_t)j * 16;
        const float32x4_t w0 = vld1q_f32(wj), w1 = vld1q_f32(wj + 4);
        const float32x4_t w2 = vld1q_f32(wj + 8), w3 = vld1q_f32(wj + 12);
        const int32_t off = v.toffs[j] + c0;
        for (int i = 0; i < 4; ++i) {
          const float* xi = x[i] + off;
          a[i][0] = vfmaq_f32(a[i][0], w0, vld1q_f32(xi));
          a[i][1] = vfmaq_f32(a[i][1], w1, vld1q_f32(xi + 4));
          a[i][2] = vfmaq_f32(a[i][2], w2, vld1q_f32(xi + 8));
          a[i][3] = vfmaq_f32(a[i][3], w3, vld1q_f32(xi + 12));
        }
      }
      for (int i = 0; i < 4; ++i)
        for (int q = 0; q < 4; ++q) vst1q_f32(o[i] + c0 + 4 * q, vminq_f32(vmaxq_f32(a[i][q], lo), hi));
    }
    for (int g = full; g < v.ngroups; ++g)
      for (int i = 0; i < 4; ++i) DepthwiseGroup1(v, g, x[i], o[i], lo, hi);
  }
  for (; p < p1; ++p) {
    const float* x = in + pb[p];
    float* o = out + (size_t)p * v.cout;
    for (int g = 0; g < v.ngroups; ++g) DepthwiseGroup1(v, g, x, o, lo, hi);
  }
}

}  // namespace internal
}  // namespace npas

#endif  // __aarch64__
