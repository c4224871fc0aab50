// NEON int8 row-block kernels (AArch64; selected at build time like kernels_neon.cc, on other
// targets this file compiles to nothing). The input is read as int8 (Int8Input::kS8) and a row
// group of 16 is 4 int32x4_t accumulators per pixel.
//   dot product  sdot (vdotq_s32): a quad's 16 weight bytes per 4 lanes (w[64q + 4l + j]) against
//                the pixel's 4 input bytes broadcast = the 4 lanes' sums; P = 4 pixels. Compiled
//                for +dotprod and used when the compiler targets it (__ARM_FEATURE_DOTPROD) or
//                getauxval(AT_HWCAP) has HWCAP_ASIMDDP.
//   plain NEON   vmull_s8 (exact int16 products) + vpadalq_s16 into half sums per lane pair,
//                combined with vpaddq_s32 before the store; P = 2 pixels.
// Depthwise (DepthwiseInt8Neon): int16 widening multiply-accumulate over 16-channel groups.
// Requantization: vqrdmulhq_s32 is exactly TFLite's SaturatingRoundingDoublingHighMul (see
// int8_internal.h) and the rounding right shift is gemmlowp's fixup + vrshlq_s32.
#include <stdint.h>
#include <string.h>

#include "kernels/int8_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

// Without a +dotprod compiler target, the sdot kernel alone is built for ARMv8.2-A + dot product
// (the form arm_neon.h declares vdotq_s32 under; GCC and Clang both accept it) and is only called
// after CpuHasDotProd().
#if defined(__ARM_FEATURE_DOTPROD)
#define NPAS_DOTPROD
#else
#define NPAS_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

namespace npas {
namespace internal {

bool CpuHasDotProd() {
#if defined(__ARM_FEATURE_DOTPROD)
  return true;
#elif defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
  return false;
#endif
}

namespace {

inline int32x4_t Requant(int32x4_t acc, int32x4_t mult, int32x4_t lsh, int32x4_t rsh,
                         int32x4_t zp, int32x4_t lo, int32x4_t hi) {
  const int32x4_t h = vqrdmulhq_s32(vshlq_s32(acc, lsh), mult);
  // RoundingDivideByPOT: round half away from zero = subtract 1 from negatives (when rsh > 0),
  // then a rounding (half up) shift right.
  const int32x4_t neg_rsh = vnegq_s32(rsh);
  const int32x4_t fixup = vshrq_n_s32(vandq_s32(h, neg_rsh), 31);
  const int32x4_t r = vrshlq_s32(vqaddq_s32(h, fixup), neg_rsh);
  return vminq_s32(vmaxq_s32(vaddq_s32(r, zp), lo), hi);
}

// Requantizes 16 accumulators of group g and stores the first nl lanes.
inline void Store(const RowBlockInt8View& v, int g, const int32x4_t* acc, int8_t* dst, int nl) {
  const int32x4_t zp = vdupq_n_s32(v.out_zp);
  const int32x4_t lo = vdupq_n_s32(v.act_min), hi = vdupq_n_s32(v.act_max);
  int16x4_t h[4];
  for (int k = 0; k < 4; ++k) {
    const int i = g * 16 + 4 * k;
    h[k] = vqmovn_s32(Requant(acc[k], vld1q_s32(v.mult + i), vld1q_s32(v.lshift + i),
                              vld1q_s32(v.rshift + i), zp, lo, hi));
  }
  const int8x16_t bytes =
      vcombine_s8(vqmovn_s16(vcombine_s16(h[0], h[1])), vqmovn_s16(vcombine_s16(h[2], h[3])));
  if (nl == 16) {
    vst1q_s8(dst, bytes);
  } else {
    int8_t tmp[16];
    vst1q_s8(tmp, bytes);
    for (int l = 0; l < nl; ++l) dst[l] = tmp[l];
  }
}

inline int32_t Gather4(const int8_t* x, const int32_t* o) {
  return (int32_t)((uint32_t)(uint8_t)x[o[0]] | ((uint32_t)(uint8_t)x[o[1]] << 8) |
                   ((uint32_t)(uint8_t)x[o[2]] << 16) | ((uint32_t)(uint8_t)x[o[3]] << 24));
}

inline int32_t Load4(const int8_t* x) {
  int32_t word;
  memcpy(&word, x, 4);
  return word;
}

template <int P>
NPAS_DOTPROD inline void TileDot(const RowBlockInt8View& v, const int8_t* in, const int32_t* pb,
                                 int p, int g, int8_t* out, int nl) {
  int32x4_t acc[P][4];
  for (int k = 0; k < 4; ++k) {
    const int32x4_t b = vld1q_s32(v.bias + g * 16 + 4 * k);
    for (int i = 0; i < P; ++i) acc[i][k] = b;
  }
  const int8_t* base[P];
  for (int i = 0; i < P; ++i) base[i] = in + pb[p + i];
  const int q0 = v.qstart[g], qm = v.qmid[g], q1 = v.qstart[g + 1];
  for (int q = q0; q < q1; ++q) {
    const int8_t* wq = v.w + 64 * q;
    const int8x16_t w0 = vld1q_s8(wq), w1 = vld1q_s8(wq + 16), w2 = vld1q_s8(wq + 32),
                    w3 = vld1q_s8(wq + 48);
    const int32_t* o = v.qoffs + 4 * q;
    for (int i = 0; i < P; ++i) {
      const int32_t word = q < qm ? Load4(base[i] + o[0]) : Gather4(base[i], o);
      const int8x16_t x = vreinterpretq_s8_s32(vdupq_n_s32(word));
      acc[i][0] = vdotq_s32(acc[i][0], w0, x);
      acc[i][1] = vdotq_s32(acc[i][1], w1, x);
      acc[i][2] = vdotq_s32(acc[i][2], w2, x);
      acc[i][3] = vdotq_s32(acc[i][3], w3, x);
    }
  }
  for (int i = 0; i < P; ++i) Store(v, g, acc[i], out + (size_t)(p + i) * v.rows + g * 16, nl);
}

template <int P>
inline void Tile(const RowBlockInt8View& v, const int8_t* in, const int32_t* pb, int p, int g,
                 int8_t* out, int nl) {
  // half[i][2k + s]: lanes 4k + 2s, 4k + 2s + 1, each as (columns 0+1, columns 2+3).
  int32x4_t half[P][8];
  for (int i = 0; i < P; ++i)
    for (int k = 0; k < 8; ++k) half[i][k] = vdupq_n_s32(0);
  const int8_t* base[P];
  for (int i = 0; i < P; ++i) base[i] = in + pb[p + i];
  const int q0 = v.qstart[g], qm = v.qmid[g], q1 = v.qstart[g + 1];
  for (int q = q0; q < q1; ++q) {
    const int8_t* wq = v.w + 64 * q;
    int8x16_t w[4];
    for (int k = 0; k < 4; ++k) w[k] = vld1q_s8(wq + 16 * k);
    const int32_t* o = v.qoffs + 4 * q;
    for (int i = 0; i < P; ++i) {
      const int32_t word = q < qm ? Load4(base[i] + o[0]) : Gather4(base[i], o);
      const int8x16_t x = vreinterpretq_s8_s32(vdupq_n_s32(word));
      for (int k = 0; k < 4; ++k) {
        half[i][2 * k] = vpadalq_s16(half[i][2 * k], vmull_s8(vget_low_s8(w[k]), vget_low_s8(x)));
        half[i][2 * k + 1] = vpadalq_s16(half[i][2 * k + 1], vmull_high_s8(w[k], x));
      }
    }
  }
  for (int i = 0; i < P; ++i) {
    int32x4_t acc[4];
    for (int k = 0; k < 4; ++k)
      acc[k] = vaddq_s32(vld1q_s32(v.bias + g * 16 + 4 * k),
                         vpaddq_s32(half[i][2 * k], half[i][2 * k + 1]));
    Store(v, g, acc, out + (size_t)(p + i) * v.rows + g * 16, nl);
  }
}

}  // namespace

NPAS_DOTPROD void RowBlockInt8NeonDot(const RowBlockInt8View& v, const void* input,
                                      const int32_t* pb, int p0, int p1, int g0, int g1,
                                      int8_t* out) {
  const int8_t* in = (const int8_t*)input;
  for (int g = g0; g < g1; ++g) {
    const int nl = v.rows - g * 16 < 16 ? v.rows - g * 16 : 16;
    int p = p0;
    for (; p + 4 <= p1; p += 4) TileDot<4>(v, in, pb, p, g, out, nl);
    for (; p < p1; ++p) TileDot<1>(v, in, pb, p, g, out, nl);
  }
}

void RowBlockInt8Neon(const RowBlockInt8View& v, const void* input, const int32_t* pb, int p0,
                      int p1, int g0, int g1, int8_t* out) {
  const int8_t* in = (const int8_t*)input;
  for (int g = g0; g < g1; ++g) {
    const int nl = v.rows - g * 16 < 16 ? v.rows - g * 16 : 16;
    int p = p0;
    for (; p + 2 <= p1; p += 2) Tile<2>(v, in, pb, p, g, out, nl);
    for (; p < p1; ++p) Tile<1>(v, in, pb, p, g, out, nl);
  }
}

// Depthwise: per pixel and full group of 16 channels 4 int32x4_t accumulators; per tap the 16
// input bytes widened to int16 (vmovl_s8) and multiplied-accumulated with the tap's int16 weights
// (vmlal_s16, exact); a partial last group runs the scalar group kernel.
void DepthwiseInt8Neon(const DepthwiseInt8View& v, const int8_t* in, const int32_t* pb, int p0,
                       int p1, int8_t* out) {
  const int full = v.cout / 16;
  const int32x4_t zp = vdupq_n_s32(v.out_zp);
  const int32x4_t lo = vdupq_n_s32(v.act_min), hi = vdupq_n_s32(v.act_max);
  for (int p = p0; p < p1; ++p) {
    const int8_t* x = in + pb[p];
    int8_t* dst = out + (size_t)p * v.cout;
    for (int g = 0; g < full; ++g) {
      int32x4_t acc[4];
      for (int k = 0; k < 4; ++k) acc[k] = vld1q_s32(v.bias + g * 16 + 4 * k);
      for (int j = v.tstart[g]; j < v.tstart[g + 1]; ++j) {
        const int8x16_t xb = vld1q_s8(x + v.toffs[j] + g * 16);
        const int16x8_t x0 = vmovl_s8(vget_low_s8(xb)), x1 = vmovl_high_s8(xb);
        const int16x8_t w0 = vld1q_s16(v.w16 + 16 * j), w1 = vld1q_s16(v.w16 + 16 * j + 8);
        acc[0] = vmlal_s16(acc[0], vget_low_s16(w0), vget_low_s16(x0));
        acc[1] = vmlal_high_s16(acc[1], w0, x0);
        acc[2] = vmlal_s16(acc[2], vget_low_s16(w1), vget_low_s16(x1));
        acc[3] = vmlal_high_s16(acc[3], w1, x1);
      }
      int16x4_t h[4];
      for (int k = 0; k < 4; ++k) {
        const int i = g * 16 + 4 * k;
        h[k] = vqmovn_s32(Requant(acc[k], vld1q_s32(v.mult + i), vld1q_s32(v.lshift + i),
                                  vld1q_s32(v.rshift + i), zp, lo, hi));
      }
      vst1q_s8(dst + g * 16, vcombine_s8(vqmovn_s16(vcombine_s16(h[0], h[1])),
                                         vqmovn_s16(vcombine_s16(h[2], h[3]))));
    }
    if (full < v.ngroups) DepthwiseInt8GroupScalar(v, x, full, dst);
  }
}

// ---- int8 elementwise ops (elementwise_int8.cc: TFLite's ADD / SUB / MUL arithmetic, tables) --

namespace {

// RoundingDivideByPOT by the exponent -neg_e (neg_e <= 0, the same in every lane).
inline int32x4_t RoundingShiftRight(int32x4_t h, int32x4_t neg_e) {
  const int32x4_t fixup = vshrq_n_s32(vandq_s32(h, neg_e), 31);
  return vrshlq_s32(vqaddq_s32(h, fixup), neg_e);
}

// 16 int8 values at p (or p[0] in every lane when `one`) as 4 x int32x4, plus `offset`.
inline void Load16(const int8_t* p, bool one, int32x4_t offset, int32x4_t v[4]) {
  const int8x16_t x = one ? vdupq_n_s8(p[0]) : vld1q_s8(p);
  const int16x8_t lo = vmovl_s8(vget_low_s8(x)), hi = vmovl_s8(vget_high_s8(x));
  v[0] = vaddq_s32(vmovl_s16(vget_low_s16(lo)), offset);
  v[1] = vaddq_s32(vmovl_s16(vget_high_s16(lo)), offset);
  v[2] = vaddq_s32(vmovl_s16(vget_low_s16(hi)), offset);
  v[3] = vaddq_s32(vmovl_s16(vget_high_s16(hi)), offset);
}

// 4 x int32x4 already within [-128, 127] stored as 16 int8.
inline void Store16(int8_t* dst, const int32x4_t v[4]) {
  const int16x8_t a = vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[1]));
  const int16x8_t b = vcombine_s16(vqmovn_s32(v[2]), vqmovn_s32(v[3]));
  vst1q_s8(dst, vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
}

}  // namespace

// out = op(in1 + off1, in2 + off2) clamped to [lo, hi], 16 values per step (an input of one
// element is broadcast): the loop ADD / SUB and MUL share. Returns how many were written.
template <typename Op>
int64_t Binary16(const int8_t* in1, int64_t n1, int32_t off1, const int8_t* in2, int64_t n2,
                 int32_t off2, int32_t act_min, int32_t act_max, int8_t* out, int64_t n, Op op) {
  const int32x4_t o1 = vdupq_n_s32(off1), o2 = vdupq_n_s32(off2);
  const int32x4_t lo = vdupq_n_s32(act_min), hi = vdupq_n_s32(act_max);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    int32x4_t a[4], b[4];
    Load16(in1 + (n1 == 1 ? 0 : i), n1 == 1, o1, a);
    Load16(in2 + (n2 == 1 ? 0 : i), n2 == 1, o2, b);
    for (int k = 0; k < 4; ++k) a[k] = vminq_s32(vmaxq_s32(op(a[k], b[k]), lo), hi);
    Store16(out + i, a);
  }
  return i;
}

int64_t AddInt8Neon(const AddInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2,
                    int64_t n2, int8_t* out, int64_t n) {
  // The shifts are <= 0 (MakeAddInt8Params): each is its own negated exponent.
  const int32x4_t m1 = vdupq_n_s32(p.input1_multiplier), e1 = vdupq_n_s32(p.input1_shift);
  const int32x4_t m2 = vdupq_n_s32(p.input2_multiplier), e2 = vdupq_n_s32(p.input2_shift);
  const int32x4_t mo = vdupq_n_s32(p.output_multiplier), eo = vdupq_n_s32(p.output_shift);
  const int32x4_t zp = vdupq_n_s32(p.output_offset);
  return Binary16(in1, n1, p.input1_offset, in2, n2, p.input2_offset, p.act_min, p.act_max, out,
                  n, [&](int32x4_t a, int32x4_t b) {
                    // inputs scaled by 2^20, each rescaled, the sum requantized (add.cc)
                    a = RoundingShiftRight(vqrdmulhq_s32(vshlq_n_s32(a, 20), m1), e1);
                    b = RoundingShiftRight(vqrdmulhq_s32(vshlq_n_s32(b, 20), m2), e2);
                    return vaddq_s32(RoundingShiftRight(vqrdmulhq_s32(vaddq_s32(a, b), mo), eo),
                                     zp);
                  });
}

int64_t AddInt8LinearNeon(const AddInt8Params& p, const int8_t* in1, int64_t n1,
                          const int8_t* in2, int64_t n2, int8_t* out, int64_t n) {
  const int32x4_t m1 = vdupq_n_s32(p.linear1), m2 = vdupq_n_s32(p.linear2);
  const int32x4_t bias = vdupq_n_s32(p.linear_bias), zp = vdupq_n_s32(p.output_offset);
  const int32x4_t neg_k = vdupq_n_s32(-p.linear_shift);  // vshl by -k: the arithmetic >> k
  return Binary16(in1, n1, 0, in2, n2, 0, p.act_min, p.act_max, out, n,
                  [&](int32x4_t a, int32x4_t b) {
                    return vaddq_s32(vshlq_s32(vmlaq_s32(vmlaq_s32(bias, a, m1), b, m2), neg_k),
                                     zp);
                  });
}

int64_t MulInt8Neon(const MulInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2,
                    int64_t n2, int8_t* out, int64_t n) {
  const int32x4_t m = vdupq_n_s32(p.output_multiplier);
  const int32x4_t lsh = vdupq_n_s32(p.output_shift > 0 ? p.output_shift : 0);
  const int32x4_t neg_e = vdupq_n_s32(p.output_shift > 0 ? 0 : p.output_shift);
  const int32x4_t zp = vdupq_n_s32(p.output_offset);
  return Binary16(in1, n1, p.input1_offset, in2, n2, p.input2_offset, p.act_min, p.act_max, out,
                  n, [&](int32x4_t a, int32x4_t b) {
                    const int32x4_t h = vqrdmulhq_s32(vshlq_s32(vmulq_s32(a, b), lsh), m);
                    return vaddq_s32(RoundingShiftRight(h, neg_e), zp);
                  });
}

// table[(uint8_t)x] for 16 bytes at a time: vqtbl4q looks up the first 64 entries (0 for other
// indices), vqtbx4q each next 64 with the index lowered by 64 (out of range keeps the result).
int64_t LookupInt8Neon(const int8_t* table, const int8_t* in, int8_t* out, int64_t n) {
  int8x16x4_t t[4];
  for (int h = 0; h < 4; ++h)
    for (int j = 0; j < 4; ++j) t[h].val[j] = vld1q_s8(table + 64 * h + 16 * j);
  const uint8x16_t step = vdupq_n_u8(64);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    uint8x16_t idx = vreinterpretq_u8_s8(vld1q_s8(in + i));
    int8x16_t r = vqtbl4q_s8(t[0], idx);
    for (int h = 1; h < 4; ++h) {
      idx = vsubq_u8(idx, step);
      r = vqtbx4q_s8(r, t[h], idx);
    }
    vst1q_s8(out + i, r);
  }
  return i;
}

}  // namespace internal
}  // namespace npas
#endif
