// int8 ADD / SUB / MUL and lookup-table activations with TFLite's arithmetic (npas_kernels.h):
// parameters as TFLite's prepare computes them, scalar kernels, the AVX2 ones by DetectIsa() and
// the NEON ones on aarch64.
#include <algorithm>
#include <cmath>

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

}  // namespace

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
  if (UseAvx2()) done = internal::AddInt8Avx2(p, in1, n1, in2, n2, out, n);
#elif defined(__aarch64__)
  done = internal::AddInt8Neon(p, in1, n1, in2, n2, out, n);
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
