// Depthwise packing (channel groups of L lanes, per group only the taps nonzero in some lane) and
// its runner.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/npas_internal.h"

namespace npas {
namespace internal {
namespace {

DepthwiseFn DepthwiseFor(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  if (isa == Isa::kAvx512) return DepthwiseAvx512;
  if (isa == Isa::kAvx2) return DepthwiseAvx2;
#endif
#if defined(__aarch64__)
  if (isa == Isa::kNeon) return DepthwiseNeon;
#endif
  return DepthwiseScalar;
}

class DepthwiseImpl : public PackedDepthwise {
 public:
  DepthwiseImpl(const DepthwiseDesc& d, Isa isa) {
    // depth_multiplier > 1 reads each input channel for several outputs: the SIMD kernels assume
    // contiguous channels, so that case runs the scalar kernel.
    if (d.depth_multiplier != 1) isa = Isa::kScalar;
    fn_ = DepthwiseFor(isa);
    const int L = LanesFor(isa);
    const int taps = d.kh * d.kw;
    const int cout = d.cin * d.depth_multiplier;
    const int ngroups = (cout + L - 1) / L;
    tstart_.assign(ngroups + 1, 0);
    std::vector<float> w;
    size_t nnz = 0;
    for (int g = 0; g < ngroups; ++g) {
      for (int t = 0; t < taps; ++t) {
        bool any = false;
        for (int l = 0; l < L && g * L + l < cout; ++l) {
          bool nz = d.weights[(size_t)t * cout + g * L + l] != 0.0f;
          any |= nz;
          nnz += nz;
        }
        if (!any) continue;
        toffs_.push_back(d.tap_offset[t]);
        for (int l = 0; l < L; ++l)
          w.push_back(g * L + l < cout ? d.weights[(size_t)t * cout + g * L + l] : 0.0f);
      }
      tstart_[g + 1] = (int32_t)toffs_.size();
    }
    w_ = static_cast<float*>(AlignedAlloc(64, (w.size() * 4 + 127) / 64 * 64));
    if (!w.empty()) std::memcpy(w_, w.data(), w.size() * 4);
    w_floats_ = w.size();
    bias_.assign((size_t)ngroups * L, 0.0f);
    if (d.bias) std::memcpy(bias_.data(), d.bias, (size_t)cout * 4);
    info_.density = (double)nnz / ((double)taps * cout);
    info_.kind = nnz == (size_t)taps * cout ? Structure::kDense : Structure::kUnstructured;
    view_.L = L;
    view_.cout = cout;
    view_.cin = d.cin;
    view_.dm = d.depth_multiplier;
    view_.ngroups = ngroups;
    view_.tstart = tstart_.data();
    view_.toffs = toffs_.data();
    view_.w = w_;
    view_.bias = bias_.data();
    view_.act_min = d.act_min;
    view_.act_max = d.act_max;
  }
  ~DepthwiseImpl() override { std::free(w_); }

  StructureInfo structure() const override { return info_; }
  size_t packed_bytes() const override { return w_floats_ * 4 + toffs_.size() * 4 + bias_.size() * 4; }

  void Run(const float* in, const int32_t* pixel_base, int num_pixels, float* out, ThreadPool* pool,
           int num_threads) const override {
    if (num_pixels <= 0) return;
    if (num_threads > 1 && !pool) num_threads = 1;
    const int ntasks = std::min(num_pixels, std::max(1, num_threads));
    if (ntasks <= 1) {
      fn_(view_, in, pixel_base, 0, num_pixels, out);
      return;
    }
    pool->ParallelFor(ntasks, num_threads, [&](int t) {
      int p0 = (int)((int64_t)num_pixels * t / ntasks), p1 = (int)((int64_t)num_pixels * (t + 1) / ntasks);
      if (p0 < p1) fn_(view_, in, pixel_base, p0, p1, out);
    });
  }

 private:
  DepthwiseFn fn_;
  StructureInfo info_;
  std::vector<int32_t> tstart_, toffs_;
  float* w_ = nullptr;
  size_t w_floats_ = 0;
  std::vector<float> bias_;
  DepthwiseView view_;
};

}  // namespace
}  // namespace internal

std::unique_ptr<PackedDepthwise> PackDepthwise(const DepthwiseDesc& d, std::string* error) {
  auto fail = [&](const char* msg) -> std::unique_ptr<PackedDepthwise> {
    if (error) *error = msg;
    return nullptr;
  };
  if (d.kh <= 0 || d.kw <= 0 || d.cin <= 0 || d.depth_multiplier <= 0)
    return fail("PackDepthwise: kh, kw, cin and depth_multiplier must be positive");
  if (!d.weights || !d.tap_offset) return fail("PackDepthwise: weights or tap_offset is null");
  if (!(d.act_min <= d.act_max)) return fail("PackDepthwise: act_min > act_max");
  return std::unique_ptr<PackedDepthwise>(new internal::DepthwiseImpl(d, DetectIsa()));
}

}  // namespace npas
