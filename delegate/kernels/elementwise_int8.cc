// int8 ADD / SUB / MUL and lookup-table activations with TFLite's arithmetic (npas_kernels.h):
// parameters as TFLite's prepare computes them, scalar kernels, the AVX2 ones by DetectIsa() and
// the NEON ones on aarch64.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "kernels/int8_internal.h"

namespace npas {
namespace {

// TFLite's QuantizeMultiplierSmallerThanOneExp: QuantizeMultiplier with a shift <= 0.
bool QuantizeSmallerThanOne(double real, int32_t* multiplier, int* shift) {
  QuantizeMultiplier(real, multiplier, shift);
  return *shift <= 0;
}

int32_t Clamp(int32_t v, int32_t lo, int32_t hi) { return std::min(std::max(v, lo), hi); }

void AddInt8Scalar(const AddInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2,
                   int64_t n2, int8_t* out, int64_t i0, int64_t n) {
  using internal::RequantInt8;
  for (int64_t i = i0; i < n; ++i) {
    const int32_t a = (p.input1_offset + in1[n1 == 1 ? 0 : i]) * (1 << 20);
    const int32_t b = (p.input2_offset + in2[n2 == 1 ? 0 : i]) * (1 << 20);
    const int32_t sum = RequantInt8(a, p.input1_multiplier, 0, -p.input1_shift) +
                        RequantInt8(b, p.input2_multiplier, 0, -p.input2_shift);
    out[i] = (int8_t)Clamp(RequantInt8(sum, p.output_multiplier, 0, -p.output_shift) +
                               p.output_offset, p.act_min, p.act_max);
  }
}

void MulInt8Scalar(const MulInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2,
                   int64_t n2, int8_t* out, int64_t i0, int64_t n) {
  for (int64_t i = i0; i < n; ++i) {
    const int32_t prod = (p.input1_offset + in1[n1 == 1 ? 0 : i]) *
                         (p.input2_offset + in2[n2 == 1 ? 0 : i]);
    out[i] = (int8_t)Clamp(MultiplyByQuantizedMultiplier(prod, p.output_multiplier,
                                                         p.output_shift) + p.output_offset,
                           p.act_min, p.act_max);
  }
}

bool UseAvx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx2 = DetectIsa() == Isa::kAvx2 || DetectIsa() == Isa::kAvx512;
  return avx2;
#else
  return false;
#endif
}

// The bias of AddInt8Params::linear for multipliers m1, m2 and shift k: every input pair's exact
// output leaves an interval of biases, and any bias in all of them reproduces all 65536 outputs.
// False when the intervals do not meet (near ties TFLite's intermediate roundings decide).
bool FitLinearBias(const AddInt8Params& p, const int8_t* exact, int64_t m1, int64_t m2, int k,
                   int64_t* bias) {
  const int64_t unit = int64_t{1} << k;
  int64_t lower = INT64_MIN, upper = INT64_MAX;
  for (int x = -128; x < 128; ++x) {  // one row of pairs (x, all bytes) at a time
    const int8_t* row = exact + 256 * (x & 255);
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    for (int y = -128; y < 128; ++y) {
      const int32_t out = row[y & 255];
      const int64_t least = (out - p.output_offset) * unit - (x * m1 + y * m2);
      // Below act_max the sum must stay under the next output, above act_min reach this one.
      hi = std::min(hi, out < p.act_max ? least + unit - 1 : INT64_MAX);
      lo = std::max(lo, out > p.act_min ? least : INT64_MIN);
    }
    lower = std::max(lower, lo);
    upper = std::min(upper, hi);
    if (lower > upper) return false;
  }
  *bias = std::min(std::max(int64_t{0}, lower), upper);
  for (int64_t x : {-128, 127})  // every sum in int32 (the extremes are at the corners)
    for (int64_t y : {-128, 127})
      if (std::llabs(*bias + x * m1 + y * m2) >= (int64_t{1} << 31)) return false;
  return true;
}

}  // namespace

// TFLite's ADD is round(alpha * (in1 - zp1) + beta * (in2 - zp2)) up to its intermediate
// roundings: alpha and beta get k fractional bits (k as large as int32 sums allow, or one less),
// rounded and then +-1, until a bias fits (FitLinearBias).
void FitLinearAdd(AddInt8Params* p) {
  p->linear = false;
  std::vector<int8_t> a(65536), b(65536), exact(65536);
  for (int i = 0; i < 65536; ++i) {
    a[i] = static_cast<int8_t>(i >> 8);
    b[i] = static_cast<int8_t>(i & 255);
  }
  AddInt8(*p, a.data(), 65536, b.data(), 65536, exact.data(), 65536);
  auto real = [](int32_t m, int shift) { return std::ldexp(static_cast<double>(m), shift - 31); };
  const double out = real(p->output_multiplier, p->output_shift) * (1 << 20);
  const double alpha = real(p->input1_multiplier, p->input1_shift) * out;
  const double beta = real(p->input2_multiplier, p->input2_shift) * out;
  int k = 30;
  while (k > 8 && 128 * (std::fabs(alpha) + std::fabs(beta)) * std::ldexp(1.0, k) > 0x1p30) --k;
  for (int shift : {k, k - 1})
    for (int d : {4, 1, 3, 5, 7, 0, 2, 6, 8}) {  // (0, 0) first, then the neighbours
      const int64_t m1 = std::llround(std::ldexp(alpha, shift)) + d / 3 - 1;
      const int64_t m2 = std::llround(std::ldexp(beta, shift)) + d % 3 - 1;
      int64_t bias;
      if (!FitLinearBias(*p, exact.data(), m1, m2, shift, &bias)) continue;
      p->linear1 = static_cast<int32_t>(m1);
      p->linear2 = static_cast<int32_t>(m2);
      p->linear_bias = static_cast<int32_t>(bias);
      p->linear_shift = shift;
      p->linear = true;
      return;
    }
}

bool MakeAddInt8Params(float scale1, int32_t zp1, float scale2, int32_t zp2, float scale_out,
                       int32_t zp_out, int sign, int32_t act_min, int32_t act_max,
                       AddInt8Params* p) {
  // The expressions of TFLite's add.cc / sub.cc, with their float and double steps.
  const double twice_max_input_scale = 2 * std::max(scale1, scale2);
  const double real1 = scale1 / twice_max_input_scale;
  const double real2 = scale2 / twice_max_input_scale;
  const double real_out = twice_max_input_scale / ((1 << 20) * scale_out);
  p->input1_offset = -zp1;
  p->input2_offset = -zp2;
  p->output_offset = zp_out;
  p->act_min = act_min;
  p->act_max = act_max;
  if (!QuantizeSmallerThanOne(real1, &p->input1_multiplier, &p->input1_shift) ||
      !QuantizeSmallerThanOne(real2, &p->input2_multiplier, &p->input2_shift) ||
      !QuantizeSmallerThanOne(real_out, &p->output_multiplier, &p->output_shift))
    return false;
  p->input2_multiplier *= sign;
  return true;
}

void MakeMulInt8Params(float scale1, int32_t zp1, float scale2, int32_t zp2, float scale_out,
                       int32_t zp_out, int32_t act_min, int32_t act_max, MulInt8Params* p) {
  const double real = scale1 * scale2 / scale_out;  // in float, as mul.cc writes it
  QuantizeMultiplier(real, &p->output_multiplier, &p->output_shift);
  p->input1_offset = -zp1;
  p->input2_offset = -zp2;
  p->output_offset = zp_out;
  p->act_min = act_min;
  p->act_max = act_max;
}

void AddInt8(const AddInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2, int64_t n2,
             int8_t* out, int64_t n) {
  int64_t done = 0;
#if defined(__x86_64__) || defined(__i386__)
  if (UseAvx2())
    done = p.linear ? internal::AddInt8LinearAvx2(p, in1, n1, in2, n2, out, n)
                    : internal::AddInt8Avx2(p, in1, n1, in2, n2, out, n);
#elif defined(__aarch64__)
  done = p.linear ? internal::AddInt8LinearNeon(p, in1, n1, in2, n2, out, n)
                  : internal::AddInt8Neon(p, in1, n1, in2, n2, out, n);
#endif
  AddInt8Scalar(p, in1, n1, in2, n2, out, done, n);
}

void MulInt8(const MulInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2, int64_t n2,
             int8_t* out, int64_t n) {
  int64_t done = 0;
#if defined(__x86_64__) || defined(__i386__)
  if (UseAvx2()) done = internal::MulInt8Avx2(p, in1, n1, in2, n2, out, n);
#elif defined(__aarch64__)
  done = internal::MulInt8Neon(p, in1, n1, in2, n2, out, n);
#endif
  MulInt8Scalar(p, in1, n1, in2, n2, out, done, n);
}

void MakeLookupInt8(float in_scale, int32_t in_zp, float out_scale, int32_t out_zp,
                    float (*f)(float), int8_t table[256]) {
  const float inverse_scale = 1 / out_scale;
  for (int32_t q = -128; q <= 127; ++q) {
    const float dequantized = in_scale * (q - in_zp);
    const float rescaled = std::round(f(dequantized) * inverse_scale);
    const int32_t quantized = static_cast<int32_t>(rescaled + out_zp);
    table[(uint8_t)(int8_t)q] = (int8_t)Clamp(quantized, -128, 127);
  }
}

void LookupInt8(const int8_t* table, const int8_t* in, int8_t* out, int64_t n) {
  int64_t i = 0;
#if defined(__x86_64__) || defined(__i386__)
  if (UseAvx2()) i = internal::LookupInt8Avx2(table, in, out, n);
#elif defined(__aarch64__)
  i = internal::LookupInt8Neon(table, in, out, n);
#endif
  for (; i < n; ++i) out[i] = table[(uint8_t)in[i]];
}

}  // namespace npas
