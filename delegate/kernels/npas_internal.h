// Internal pieces of the npas kernel library shared between the generic code (packing, dispatch,
// threads) and the per-ISA kernel files. The per-ISA files are compiled with target attributes:
// they must not instantiate std templates (ODR: an AVX-512 copy of an inline std function could be
// picked by the linker for generic code), so everything they see here is plain data.
#pragma once

#include <stdlib.h>

#include <cstddef>
#include <cstdint>

#include "kernels/npas_kernels.h"

namespace npas {
namespace internal {

// ---- row-block format (kDense, kRowBlock) ------------------------------------------------------
// Output rows in groups of L (the vector lane count); group g keeps the columns
// kstart[g] .. kstart[g+1]-1 of `offs` (input offsets, col_offset baked in) and, for each kept
// column j, L weights at w[j * L] (zeros in lanes whose row does not use that column).
// Lane l of group g is original row perm[g * L + l] (-1: padding lane, never stored).
struct RowBlockView {
  int L = 16;
  int rows = 0;
  int ngroups = 0;
  const int32_t* kstart = nullptr;  // [ngroups + 1]
  const int32_t* offs = nullptr;    // [kstart[ngroups]]
  const float* w = nullptr;         // [kstart[ngroups] * L], 64-byte aligned
  const int32_t* perm = nullptr;    // [ngroups * L]
  const float* bias = nullptr;      // [ngroups * L] (0 in padding lanes)
  const uint8_t* contiguous = nullptr;  // [ngroups]: 1 if perm[g*L+l] == g*L+l for all l (< rows)
  // Compressed variant (AVX-512 only; null otherwise). A group's kept columns form runs of equal
  // lane masks (a BCR block: its kept columns share its kept rows); run j of group g
  // (rstart[g] <= j < rstart[g+1]) covers run_len[j] consecutive kept columns whose weights hold
  // only the popcount(lane_mask[j]) lanes of the mask, packed, from w + wstart[g] on. The kernel
  // accumulates a run in compressed lane order and expands the partial sums once per run.
  const int32_t* rstart = nullptr;      // [ngroups + 1]
  const uint16_t* lane_mask = nullptr;  // [runs]
  const int32_t* run_len = nullptr;     // [runs]
  const int64_t* wstart = nullptr;      // [ngroups]
  float act_min = -INFINITY, act_max = INFINITY;
};
// Computes pixels [p0, p1) x groups [g0, g1).
typedef void (*RowBlockFn)(const RowBlockView& v, const float* in, const int32_t* pixel_base,
                           int p0, int p1, int g0, int g1, float* out);

// ---- pixel-vector format (kPixelVector) ----------------------------------------------------------
// A list of dense tiles: tile t covers rows tile_rows[rs .. rs+nr) and the used-column indices
// tile_cols[cs .. cs+nc) (indices into `used_offs`), with values w[ws + c * nr + r].
// The kernel gathers a tile of V pixels' used columns into a [nused][V] scratch once, then
// accumulates every tile vectorised over the pixels.
struct PixelTile {
  int32_t nr, nc, rs, cs, ws;
};
struct PixelVectorView {
  int rows = 0;
  int nused = 0;
  const int32_t* used_offs = nullptr;   // [nused]
  int ntiles = 0;
  const PixelTile* tiles = nullptr;
  const int32_t* tile_rows = nullptr;
  const int32_t* tile_cols = nullptr;
  const float* w = nullptr;
  const float* bias = nullptr;          // [rows] (zeros if none)
  float act_min = -INFINITY, act_max = INFINITY;
  // Used columns u .. u+15 with consecutive offsets (chunk16[i] = u) are gathered with 16x16
  // register transposes; the others (single[i] = u) one by one.
  int nchunk16 = 0;
  const int32_t* chunk16 = nullptr;
  int nsingle = 0;
  const int32_t* single = nullptr;
};
// Computes pixels [p0, p1) for all rows. `scratch` holds at least
// PixelVectorScratchFloats(v) floats, 64-byte aligned.
typedef void (*PixelVectorFn)(const PixelVectorView& v, const float* in, const int32_t* pixel_base,
                              int p0, int p1, float* out, float* scratch);
constexpr int kPixelTileV = 32;  // pixels per pixel-vector tile (all ISAs)
inline size_t PixelVectorScratchFloats(const PixelVectorView& v) {
  return (size_t)(v.nused + (v.rows + 15) / 16 * 16) * kPixelTileV + 64;
}

// ---- depthwise ---------------------------------------------------------------------------------
// Output channels in groups of L (original order); group g keeps taps tstart[g] .. tstart[g+1]-1,
// each with its input offset toffs[j] (tap_offset) and L weights w[j * L] (zero lanes past cout).
struct DepthwiseView {
  int L = 16;
  int cout = 0, cin = 0, dm = 1;
  int ngroups = 0;
  const int32_t* tstart = nullptr;
  const int32_t* toffs = nullptr;
  const float* w = nullptr;
  const float* bias = nullptr;  // [ngroups * L]
  float act_min = -INFINITY, act_max = INFINITY;
};
typedef void (*DepthwiseFn)(const DepthwiseView& v, const float* in, const int32_t* pixel_base,
                            int p0, int p1, float* out);

// Per-ISA entry points (defined in kernels_<isa>.cc; the x86 ones only on x86).
void RowBlockScalar(const RowBlockView&, const float*, const int32_t*, int, int, int, int, float*);
void PixelVectorScalar(const PixelVectorView&, const float*, const int32_t*, int, int, float*, float*);
void DepthwiseScalar(const DepthwiseView&, const float*, const int32_t*, int, int, float*);
#if defined(__x86_64__) || defined(__i386__)
void RowBlockAvx2(const RowBlockView&, const float*, const int32_t*, int, int, int, int, float*);
void PixelVectorAvx2(const PixelVectorView&, const float*, const int32_t*, int, int, float*, float*);
void DepthwiseAvx2(const DepthwiseView&, const float*, const int32_t*, int, int, float*);
void RowBlockAvx512(const RowBlockView&, const float*, const int32_t*, int, int, int, int, float*);
void PixelVectorAvx512(const PixelVectorView&, const float*, const int32_t*, int, int, float*, float*);
void DepthwiseAvx512(const DepthwiseView&, const float*, const int32_t*, int, int, float*);
#endif
#if defined(__aarch64__)
// NEON (kernels_neon.cc): 16 lanes = 4 float32x4_t per row group / depthwise channel group.
void RowBlockNeon(const RowBlockView&, const float*, const int32_t*, int, int, int, int, float*);
void PixelVectorNeon(const PixelVectorView&, const float*, const int32_t*, int, int, float*, float*);
void DepthwiseNeon(const DepthwiseView&, const float*, const int32_t*, int, int, float*);
#endif

// Lane count used for packing for an ISA.
inline int LanesFor(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return 16;
    case Isa::kAvx2: return 8;
    case Isa::kNeon: return 16;  // 4 q-registers: one broadcast input feeds 4 FMAs
    default: return 16;
  }
}
// Pixels per row-block micro-tile (the runner splits pixel ranges on multiples of this).
inline int RowBlockPixelTile(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return 14;
    case Isa::kAvx2: return 12;
    case Isa::kNeon: return 5;
    default: return 4;
  }
}

Isa CpuIsa();  // best ISA of this CPU, ignoring NPAS_ISA

// `alignment`-aligned allocation, released with free(). posix_memalign rather than aligned_alloc:
// Android's libc has aligned_alloc only from API 28, the delegate supports API 26.
inline void* AlignedAlloc(size_t alignment, size_t bytes) {
  void* p = nullptr;
  return posix_memalign(&p, alignment, bytes) == 0 ? p : nullptr;
}

}  // namespace internal
}  // namespace npas
