// Internal pieces of the int8 kernels (int8_gemm.cc: packing, runners, scalar kernels, kernel
// choice; int8_avx512.cc: AVX-512 VNNI; int8_avx2.cc: AVX2; int8_neon.cc: NEON with and without
// dot product). Plain data only (see npas_internal.h: the per-ISA files are compiled with target
// attributes and must not instantiate std templates).
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
// AVX2 reads the same weights from w16, an int16 copy ordered for vpmaddwd (column pairs):
//   w16[64q + 32h + 16p + 2l + j] = w[64q + 4(8h + l) + 2p + j]   (lane 8h+l, column 2p+j).
// Gathered quads are formed per *window*: kept columns sorted by offset, each window holding the
// columns of one 64-aligned block of 64 offsets (woff[w], a multiple of 64); window w's quads end at wqend[w] (they
// start at qmid[g] for the group's first window wbeg[g], else at wqend[w - 1]), and qidx[q] packs
// the 4 columns' offsets relative to woff as bytes (column j in bits 8j..8j+7). qoffs holds the
// absolute offsets of every quad as well, so kernels without a byte permute ignore the windows;
// the AVX-512 VBMI kernel loads each window once per pixel and picks a quad's 4 bytes with one
// vpermb. Inputs read as windows carry kWindowSlack readable elements past in_elems.
// Each kernel reads the input in its own encoding (Int8Input; Run converts once per call) and
// bias[] has -zero * sum_k W folded in, zero = input_zp + 128 for kU8, input_zp otherwise, so
//   acc = bias' + sum W * x_encoded = bias + sum W * (x - input_zp)   (exactly).
enum class Int8Input {
  kS8,   // int8 as given (scalar, NEON)
  kU8,   // u8 = x + 128 (AVX-512 VNNI: vpdpbusd multiplies u8 by s8)
  kS16,  // int16 = x (AVX2: vpmaddwd multiplies int16 pairs; exact, unlike vpmaddubsw)
};
struct RowBlockInt8View {
  int rows = 0;
  int ngroups = 0;
  const int32_t* qstart = nullptr;  // [ngroups + 1]
  const int32_t* qmid = nullptr;    // [ngroups]
  const int32_t* qoffs = nullptr;   // [nquads * 4]
  const int8_t* w = nullptr;        // [nquads * 64], 64-byte aligned
  const int16_t* w16 = nullptr;     // [nquads * 64], AVX2 only (else null)
  const int8_t* w8 = nullptr;       // [nquads * 64] or null: w16 as int8 (AVX2, large layers)
  const int32_t* wbeg = nullptr;    // [ngroups + 1]
  const int32_t* woff = nullptr;    // [nwindows]
  const int32_t* wqend = nullptr;   // [nwindows]
  const uint32_t* qidx = nullptr;   // [nquads] (0 for contiguous quads)
  const int32_t* bias = nullptr;    // [ngroups * 16] (folded)
  const int32_t* mult = nullptr;    // [ngroups * 16]
  const int32_t* lshift = nullptr;  // [ngroups * 16]: max(shift, 0)
  const int32_t* rshift = nullptr;  // [ngroups * 16]: max(-shift, 0)
  int32_t out_zp = 0, act_min = -128, act_max = 127;
};
// `in` points to the input in the kernel's Int8Input encoding; pixel_base/qoffs count elements.
typedef void (*RowBlockInt8Fn)(const RowBlockInt8View& v, const void* in,
                               const int32_t* pixel_base, int p0, int p1, int g0, int g1,
                               int8_t* out);
constexpr size_t kOnePixelInt8WeightBytes = 64 * 1024;  // AVX2 w16 size from which w8 is packed
constexpr int kInt8PixelTile = 8;  // runners split pixels on multiples of it (kernels take any range)
constexpr int kWindowSpan = 64;    // elements of one gather window (one zmm of u8)
constexpr int kWindowSlack = 64;   // readable elements past the input's end (window loads)

// ---- int8 AMX row block (AMX-INT8: tdpbsud, s8 weights x u8 activations) ---------------------
// For layers whose columns are taps x cin channels (cin % 4 == 0) read at pixel bases that are
// multiples of cin, so that every input element sits at a *grid position* g = offset / cin: a
// stride-1 conv's pixels are consecutive grid positions along a row of the padded input, a 1x1
// conv's or a FC's pixels are all positions. Run transposes the input into planes of channel
// quads (ToPlanarU8Avx512: plane q holds, for every grid position, the 4 bytes of channels
// 4q..4q+3 as u8 = x + 128), so 16 consecutive positions of one plane are 64 contiguous bytes.
// A B-tile row (K = 4 columns x 16 positions) has 4 *slots*: slot j holds a kept column whose
// channel c has c % 4 == j (or none: weight 0), read from its plane at its tap's shift, so the
// row is 4 loads and 3 byte blends (boff[64 ch + 4 i + j] = byte offset of row i's slot j:
// plane * (c / 4) + 4 * tap_offset / cin, added to 4 * the sub-tile's first position). Rows
// come in chunks of 16 (one A tile: a[1024 ch + 64 m + 4 i + j] = W[16g + m][slot j of row i]);
// group g owns chunks cstart[g] .. cstart[g+1]-1 (at least one). Packing fills rows first from
// channel quads holding >= 2 kept columns, then the remaining columns by slot. A *direct* chunk
// covers one tap's 16 consecutive planes (64 channels, kept when the group keeps >= 16 of them):
// its B tile is loaded straight from the planar input at cdirect[ch] with row stride `plane`
// (no gathering), A holding the 64 columns in channel order.
// Super-tiles: tile_nsub[t] (1-4) sub-tiles of 16 consecutive positions from tile_start[t];
// tile_pix[64t + i] is the output pixel at position tile_start[t] + i, or -1 (padding columns:
// computed, not stored).
struct AmxInt8View {
  int rows = 0, ngroups = 0, ntiles = 0;
  const int32_t* cstart = nullptr;     // [ngroups + 1]
  const int8_t* a = nullptr;           // [nchunks * 1024], 64-byte aligned
  const int32_t* boff = nullptr;       // [nchunks * 64]
  const int32_t* cdirect = nullptr;    // [nchunks]: >= 0: a direct chunk (below), else -1
  int64_t plane = 0;                   // bytes between planes
  const int32_t* tile_start = nullptr; // [ntiles]
  const int32_t* tile_nsub = nullptr;  // [ntiles]
  const int32_t* tile_pix = nullptr;   // [ntiles * 64]
  const int32_t* bias = nullptr;       // [ngroups * 16] (folded: - (input_zp + 128) * sum W)
  const int32_t* mult = nullptr;       // [ngroups * 16]
  const int32_t* lshift = nullptr;     // [ngroups * 16]
  const int32_t* rshift = nullptr;     // [ngroups * 16]
  int32_t out_zp = 0, act_min = -128, act_max = 127;
};

// ---- int8 pixel lanes (AVX2: pixels in the vector lanes) --------------------------------------
// For the grid layers of the AMX kernel above (columns = tap shift x cin + channel, pixel bases
// multiples of cin: stride-1 convs, 1x1 convs, FC batches). Where the row-block kernel gathers a
// sparse column's input per pixel with scalar loads, this one reads it for 16 pixels at once: Run
// copies the input into int16 *planes* (ToPlanarS16Avx2: plane c holds channel c of every grid
// position, planes `plane` elements apart, zeros past the grid), so 16 consecutive positions of a
// column are one ymm. A tile is 16 consecutive positions from tile_start[t]; tile_pix[16t + i] is
// the output pixel at position tile_start[t] + i, or -1 (computed, not stored). Rows come in
// chunks of at most kLaneRows rows of one 16-row group (group g: chunks cstart[g] ..
// cstart[g+1]-1; chunk k: rows crow[k] .. crow[k] + cnum[k] - 1 within the group), each chunk
// with the columns any of its rows keeps, in pairs pstart[k] .. pstart[k+1]-1: pair j reads
// element offsets poff[2j], poff[2j+1] (c * plane + tap shift; an odd last column pairs with
// itself at weight 0) and row r of the chunk multiplies them by the int16 pair
// pw[kLaneRows * j + r] (low half: the first column) with vpmaddwd. bias has -input_zp * sum W
// folded in. Outputs of a 16-row group are transposed in registers and stored per pixel.
constexpr int kLaneRows = 6;   // rows per chunk: 2 ymm accumulators each, 8 of 16 registers
constexpr int kLaneTile = 16;  // positions per tile (one ymm of int16)
struct LanesInt8View {
  int rows = 0, ngroups = 0, ntiles = 0;
  const int32_t* cstart = nullptr;      // [ngroups + 1]
  const int32_t* crow = nullptr;        // [nchunks]
  const int32_t* cnum = nullptr;        // [nchunks]: 1 .. kLaneRows
  const int32_t* pstart = nullptr;      // [nchunks + 1]
  const int32_t* poff = nullptr;        // [npairs * 2]
  const int32_t* pw = nullptr;          // [npairs * kLaneRows]
  const int32_t* tile_start = nullptr;  // [ntiles]
  const int32_t* tile_pix = nullptr;    // [ntiles * kLaneTile]
  const int32_t* bias = nullptr;        // [ngroups * 16] (folded)
  const int32_t* mult = nullptr;        // [ngroups * 16]
  const int32_t* lshift = nullptr;      // [ngroups * 16]
  const int32_t* rshift = nullptr;      // [ngroups * 16]
  int32_t out_zp = 0, act_min = -128, act_max = 127;
};

// ---- int8 depthwise (depth_multiplier 1) -----------------------------------------------------
// Channels in groups of 16; group g keeps the taps tstart[g] .. tstart[g+1]-1 (sparse: only taps
// nonzero in some lane), tap j at input offset toffs[j] with its 16 weights at w[16j] (int32) and
// w16[16j] (int16, NEON). Output channel c reads input channel c (pb[p] + toffs[j] + c); bias has
// -input_zp * sum W folded in. Kernels vectorise over the 16 lanes of a group; a last group of
// fewer than 16 channels runs DepthwiseInt8GroupScalar (AVX2, NEON) or masked loads (AVX-512).
struct DepthwiseInt8View {
  int cout = 0, ngroups = 0;
  const int32_t* tstart = nullptr;  // [ngroups + 1]
  const int32_t* toffs = nullptr;   // [ntaps]
  const int32_t* w = nullptr;       // [ntaps * 16]
  const int16_t* w16 = nullptr;     // [ntaps * 16]
  const int32_t* bias = nullptr;    // [ngroups * 16] (folded)
  const int32_t* mult = nullptr;    // [ngroups * 16]
  const int32_t* lshift = nullptr;  // [ngroups * 16]
  const int32_t* rshift = nullptr;  // [ngroups * 16]
  int32_t out_zp = 0, act_min = -128, act_max = 127;
  // AVX-512 only: 32-channel groups by tap pairs (vpmaddwd on interleaved int16 pairs). Pair j
  // of group k (pstart[k] <= j < pstart[k+1]) reads taps poffs[2j], poffs[2j+1] (an odd last tap
  // pairs with itself at zero weight); pw[64j + 32h + 2m + i] = weight of tap i for the channel
  // in lane m of half h, lanes in the order vpunpck{l,h}bw leaves a 32-byte load in:
  // half 0 = channels 0-7, 16-23, half 1 = 8-15, 24-31. pbias/pmult/plsh/prsh: [32k + 16h + m].
  int ngroups32 = 0;
  const int32_t* pstart = nullptr;
  const int32_t* poffs = nullptr;
  const int16_t* pw = nullptr;
  const int32_t *pbias = nullptr, *pmult = nullptr, *plsh = nullptr, *prsh = nullptr;
};
// Channel (within a 32-group) of lane m of half h in the tap-pair layout above.
inline int PairLaneChannel(int h, int m) { return (m < 8 ? m : m + 8) + 8 * h; }
typedef void (*DepthwiseInt8Fn)(const DepthwiseInt8View& v, const int8_t* in, const int32_t* pb,
                                int p0, int p1, int8_t* out);
struct DepthwiseInt8Kernel {
  DepthwiseInt8Fn fn = nullptr;
  Isa isa = Isa::kScalar;
  const char* name = "";
};
DepthwiseInt8Kernel SelectDepthwiseInt8();  // by DetectIsa(), as SelectRowBlockInt8
void DepthwiseInt8GroupScalar(const DepthwiseInt8View& v, const int8_t* x, int g, int8_t* dst);
void DepthwiseInt8Scalar(const DepthwiseInt8View&, const int8_t*, const int32_t*, int, int,
                         int8_t*);
#if defined(__x86_64__) || defined(__i386__)
void DepthwiseInt8Avx512(const DepthwiseInt8View&, const int8_t*, const int32_t*, int, int,
                         int8_t*);
void DepthwiseInt8Avx2(const DepthwiseInt8View&, const int8_t*, const int32_t*, int, int,
                       int8_t*);
#endif
#if defined(__aarch64__)
void DepthwiseInt8Neon(const DepthwiseInt8View&, const int8_t*, const int32_t*, int, int,
                       int8_t*);
// int8 elementwise ops (npas_kernels.h) on whole groups of 16 elements, as the AVX2 ones below.
int64_t AddInt8Neon(const AddInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2,
                    int64_t n2, int8_t* out, int64_t n);
int64_t AddInt8LinearNeon(const AddInt8Params& p, const int8_t* in1, int64_t n1,
                          const int8_t* in2, int64_t n2, int8_t* out, int64_t n);
int64_t MulInt8Neon(const MulInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2,
                    int64_t n2, int8_t* out, int64_t n);
int64_t LookupInt8Neon(const int8_t* table, const int8_t* in, int8_t* out, int64_t n);
#endif

// Shared requantization (scalar; the exact TFLite double-rounding arithmetic).
// For a * b not both INT32_MIN this equals floor((a * b + 2^30) / 2^31) (the nudge -(2^30 - 1) and
// truncation toward zero of negative products is a floor after adding 2^31 - 1): the AVX2 kernel
// uses that form and NEON's vqrdmulh computes exactly it.
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

// The row-block kernel for the ISA DetectIsa() allows (AVX-512 VNNI > AVX2 > scalar on x86;
// NEON dot product > NEON on aarch64); `name` tells the variant apart (tests, benchmarks).
struct RowBlockInt8Kernel {
  RowBlockInt8Fn fn = nullptr;
  Isa isa = Isa::kScalar;
  Int8Input input = Int8Input::kS8;
  const char* name = "";
  bool windows = false;  // reads gathered quads through windows (packs contiguous quads only
                         // from 4 kept columns: a half-empty one costs more than 2 window slots)
};
RowBlockInt8Kernel SelectRowBlockInt8();
// Whether a packed layer runs the AMX kernel (tests).
bool IsAmxInt8(const PackedGemmInt8& p);
// Whether a packed layer runs the pixel-lane kernel (tests). NPAS_INT8_LANES=1 makes packing use
// it wherever the layer fits (AVX2 only), =0 never; unset: when it measures faster.
bool IsLanesInt8(const PackedGemmInt8& p);

void RowBlockInt8Scalar(const RowBlockInt8View&, const void*, const int32_t*, int, int, int, int,
                        int8_t*);
#if defined(__x86_64__) || defined(__i386__)
void RowBlockInt8Vnni(const RowBlockInt8View&, const void*, const int32_t*, int, int, int, int,
                      int8_t*);
void RowBlockInt8VnniVbmi(const RowBlockInt8View&, const void*, const int32_t*, int, int, int,
                          int, int8_t*);
void RowBlockInt8Avx2(const RowBlockInt8View&, const void*, const int32_t*, int, int, int, int,
                      int8_t*);
// Pixel-lane kernel (LanesInt8View) over tiles t0..t1-1 and row groups g0..g1-1; and the planar
// int16 copy of grid positions g0..g1-1 (NHWC int8 -> planes[c * plane + position]).
void LanesInt8Avx2(const LanesInt8View& v, const int16_t* planes, int t0, int t1, int g0, int g1,
                   int8_t* out);
// int8 elementwise ops (npas_kernels.h) on whole groups of 8 elements; return how many they
// wrote (the caller finishes the tail with the scalar kernels).
int64_t AddInt8Avx2(const AddInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2,
                    int64_t n2, int8_t* out, int64_t n);
int64_t MulInt8Avx2(const MulInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2,
                    int64_t n2, int8_t* out, int64_t n);
// ADD / SUB by AddInt8Params::linear, on whole groups of 32 elements.
int64_t AddInt8LinearAvx2(const AddInt8Params& p, const int8_t* in1, int64_t n1,
                          const int8_t* in2, int64_t n2, int8_t* out, int64_t n);
int64_t LookupInt8Avx2(const int8_t* table, const int8_t* in, int8_t* out, int64_t n);
void ToPlanarS16Avx2(const int8_t* in, int64_t g0, int64_t g1, int cin, int16_t* planes,
                     int64_t plane);
bool CpuHasAvx512Vnni();
void ToU8Avx512(const int8_t* in, uint8_t* out, int64_t n);  // x ^ 0x80 (AVX-512BW)
bool CpuHasAvx512Vbmi();  // vpermb (Ice Lake, Zen 4 and later); NPAS_INT8_NO_VBMI=1 hides it
// AMX-INT8 usable (CPU + the OS granted tile state) with AVX-512 VNNI. NPAS_INT8_AMX=0 hides it;
// NPAS_INT8_AMX=1 makes packing use it wherever the layer qualifies (tests), without timing it
// against the VNNI kernel first.
bool CpuHasAmxInt8();
void ToPlanarU8Avx512(const int8_t* in, int64_t g0, int64_t g1, int cin, uint8_t* t,
                      int64_t plane);
void RowBlockInt8Amx(const AmxInt8View& v, const uint8_t* t, int t0, int t1, int g0, int g1,
                     int8_t* out);
#endif
#if defined(__aarch64__)
void RowBlockInt8NeonDot(const RowBlockInt8View&, const void*, const int32_t*, int, int, int, int,
                         int8_t*);
void RowBlockInt8Neon(const RowBlockInt8View&, const void*, const int32_t*, int, int, int, int,
                      int8_t*);
bool CpuHasDotProd();  // sdot/udot (compiled in, or HWCAP_ASIMDDP at run time)
#endif

}  // namespace internal
}  // namespace npas
