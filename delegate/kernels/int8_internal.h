// Internal pieces of the int8 kernels (int8_gemm.cc: packing, runners, scalar kernels;
// int8_avx512.cc: AVX-512 VNNI; int8_avx2.cc: AVX2). Plain data only (see npas_internal.h: the
// per-ISA files are compiled with target attributes and must not instantiate std templates).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/npas_internal.h"

namespace npas {
namespace internal {

// ---- int8 row-block format -------------------------------------------------------------------
// Output rows in groups of 16 (original order; the last group's padding lanes have zero weights
// and are never stored). Group g's kept columns are stored as *quads* of 4 columns (the unit of
// one vpdpbusd): quads qstart[g] .. qmid[g]-1 are "contiguous" (4 consecutive input bytes from
// qoffs[4q]); quads qmid[g] .. qstart[g+1]-1 are "gathered" (4 arbitrary offsets qoffs[4q+j];
// unused slots have weight 0 and repeat a valid offset). Weights of quad q: 64 bytes at w + 64q,
// lane l (row 16g+l) holding the 4 int8 weights of its columns j = 0..3 at w[64q + 4l + j].
// The kernels read the input as u8 (x + 128); bias[] has -(input_zp + 128) * sum_k W folded in, so
//   acc = bias' + sum W * (x + 128) = bias + sum W * (x - input_zp)   (exactly).
struct RowBlockInt8View {
  int rows = 0;
  int ngroups = 0;
  const int32_t* qstart = nullptr;  // [ngroups + 1]
  const int32_t* qmid = nullptr;    // [ngroups]
  const int32_t* qoffs = nullptr;   // [nquads * 4]
  const int8_t* w = nullptr;        // [nquads * 64], 64-byte aligned
  const int32_t* bias = nullptr;    // [ngroups * 16] (folded)
  const int32_t* mult = nullptr;    // [ngroups * 16]
  const int32_t* lshift = nullptr;  // [ngroups * 16]: max(shift, 0)
  const int32_t* rshift = nullptr;  // [ngroups * 16]: max(-shift, 0)
  int32_t out_zp = 0, act_min = -128, act_max = 127;
};
typedef void (*RowBlockInt8Fn)(const RowBlockInt8View& v, const uint8_t* in,
                               const int32_t* pixel_base, int p0, int p1, int g0, int g1,
                               int8_t* out);
constexpr int kInt8PixelTile = 8;  // pixels per micro-tile (runners split on multiples of it)

// Shared requantization (scalar; the exact TFLite double-rounding arithmetic).
inline int32_t SrdhmInt8(int32_t a, int32_t b) {
  const bool overflow = a == b && a == INT32_MIN;
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  const int32_t r = (int32_t)((ab + nudge) / (1ll << 31));
  return overflow ? INT32_MAX : r;
}
inline int32_t RdbpotInt8(int32_t x, int e) {
  const int32_t mask = (int32_t)((1ll << e) - 1);
  const int32_t rem = x & mask;
  const int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (rem > thr ? 1 : 0);
}
inline int32_t RequantInt8(int32_t acc, int32_t mult, int32_t lshift, int32_t rshift) {
  return RdbpotInt8(SrdhmInt8((int32_t)((uint32_t)acc << lshift), mult), rshift);
}

void RowBlockInt8Scalar(const RowBlockInt8View&, const uint8_t*, const int32_t*, int, int, int,
                        int, int8_t*);
#if defined(__x86_64__) || defined(__i386__)
void RowBlockInt8Vnni(const RowBlockInt8View&, const uint8_t*, const int32_t*, int, int, int, int,
                      int8_t*);
bool CpuHasAvx512Vnni();
#endif

}  // namespace internal
}  // namespace npas
