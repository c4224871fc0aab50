// Micro-benchmark of the npas kernels on the layers of issue 3 (not a test: not run by test.sh).
// Usage: bench_kernels [layer-substring] [threads (default: 1 and 2)] [reps]
// Prints, per case, the best-of-reps time of each kernel kind and the effective GFLOP/s
// (dense FLOPs / time), so sparse kernels are compared on the work they replace.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/npas_kernels.h"

using namespace npas;
static std::mt19937 rng(7);
static float Uni() { return std::uniform_real_distribution<float>(-1.f, 1.f)(rng); }

struct Layer {
  std::string name;
  int rows, cols, kh, cin;
  std::vector<int32_t> col_offset, pixel_base;
  int64_t in_elems;
};

static Layer Fc(int rows, int cols) {
  Layer l{"fc" + std::to_string(cols) + "x" + std::to_string(rows), rows, cols, 1, cols, {}, {0}, cols};
  for (int k = 0; k < cols; ++k) l.col_offset.push_back(k);
  return l;
}
static Layer Conv(int rows, int cin, int k, int hw) {
  Layer l{"conv" + std::to_string(k) + "x" + std::to_string(k) + "_" + std::to_string(cin) + "-" +
              std::to_string(rows) + "_" + std::to_string(hw),
          rows, k * k * cin, k, cin, {}, {}, 0};
  const int pad = k / 2, Wp = hw + 2 * pad;
  for (int ky = 0; ky < k; ++ky)
    for (int kx = 0; kx < k; ++kx)
      for (int c = 0; c < cin; ++c) l.col_offset.push_back((ky * Wp + kx) * cin + c);
  for (int y = 0; y < hw; ++y)
    for (int x = 0; x < hw; ++x) l.pixel_base.push_back((y * Wp + x) * cin);
  l.in_elems = (int64_t)Wp * Wp * cin;
  return l;
}

static std::vector<int> Pick(int n, int k) {
  std::vector<int> idx(n);
  for (int i = 0; i < n; ++i) idx[i] = i;
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(std::max(0, std::min(n, k)));
  return idx;
}

static std::vector<float> MakeWeights(const std::string& scheme, int rows, int cols, double density) {
  std::vector<float> w((size_t)rows * cols, 0.f);
  auto set = [&](int r, int c) { w[(size_t)r * cols + c] = Uni() + 2.f; };
  const int B = 16;
  if (scheme == "dense") {
    for (auto& x : w) x = Uni() + 2.f;
  } else if (scheme == "block16x16") {
    for (int r0 = 0; r0 < rows; r0 += B)
      for (int c0 = 0; c0 < cols; c0 += B) {
        int nc = std::min(B, cols - c0);
        for (int c : Pick(nc, (int)std::lround(nc * density)))
          for (int r = r0; r < std::min(rows, r0 + B); ++r) set(r, c0 + c);
      }
  } else if (scheme == "bcr16x16") {
    for (int r0 = 0; r0 < rows; r0 += B)
      for (int c0 = 0; c0 < cols; c0 += B) {
        int nr = std::min(B, rows - r0), nc = std::min(B, cols - c0);
        int kr = std::max(1, (int)std::lround(nr * std::sqrt(density)));
        int kc = std::max(1, (int)std::lround(nr * nc * density / kr));
        // One kept-column set per block, shared by its kept rows (the package's bcr: a dense
        // kept_rows x kept_cols tile per block).
        const std::vector<int> kcols = Pick(nc, kc);
        for (int r : Pick(nr, kr))
          for (int c : kcols) set(r0 + r, c0 + c);
      }
  } else {  // unstructured
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c)
        if (Uni() * 0.5 + 0.5 < density) set(r, c);
  }
  return w;
}

template <class F>
static double BestMs(F&& f, int reps) {
  f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  // The shared 2-core machine is noisy (other builds): the fastest run is the best estimate of
  // what the kernel costs on a quiet core.
  std::sort(t.begin(), t.end());
  return t[0];
}

int main(int argc, char** argv) {
  std::string filter = argc > 1 ? argv[1] : "";
  std::vector<int> threads = {1, 2};
  if (argc > 2 && atoi(argv[2]) > 0) threads = {atoi(argv[2])};
  int reps = argc > 3 ? atoi(argv[3]) : 15;
  std::printf("isa %s\n", IsaName(DetectIsa()));
  std::vector<Layer> layers = {Fc(1024, 1024), Fc(4096, 4096), Conv(256, 256, 3, 28), Conv(512, 512, 1, 14)};
  std::printf("%-22s %-13s %6s %3s | %9s %9s %9s | %-12s %7s %7s %6s\n", "layer", "scheme", "dens", "thr",
              "dense_ms", "rowblk_ms", "pixvec_ms", "auto", "auto_ms", "GFLOP/s", "xdense");
  for (const Layer& l : layers) {
    if (!filter.empty() && l.name.find(filter) == std::string::npos) continue;
    std::vector<float> in(l.in_elems);
    for (auto& x : in) x = Uni();
    const int np = (int)l.pixel_base.size();
    std::vector<float> out((size_t)np * l.rows);
    const double flops = 2.0 * l.rows * l.cols * np;
    for (std::string scheme : {"dense", "block16x16", "bcr16x16", "unstructured"})
      for (double dens : {1.0, 0.5, 0.25, 0.125}) {
        if ((scheme == "dense") != (dens == 1.0)) continue;
        auto w = MakeWeights(scheme, l.rows, l.cols, dens);
        GemmDesc d;
        d.rows = l.rows;
        d.cols = l.cols;
        d.kh = d.kw = l.kh;
        d.cin = l.cin;
        d.weights = w.data();
        d.col_offset = l.col_offset.data();
        d.act_min = 0.f;
        for (int th : threads) {
          double ms[3];
          KernelKind kinds[3] = {KernelKind::kDense, KernelKind::kRowBlock, KernelKind::kPixelVector};
          for (int k = 0; k < 3; ++k) {
            std::string err;
            auto g = PackGemm(d, kinds[k], np, l.pixel_base.data(), l.in_elems, th, nullptr, nullptr, &err);
            ms[k] = BestMs([&] { g->Run(in.data(), l.pixel_base.data(), np, out.data(), SharedThreadPool(), th); }, reps);
          }
          std::string err;
          double dms = 0, bms = 0;
          auto a = PackGemm(d, KernelKind::kAuto, np, l.pixel_base.data(), l.in_elems, th, &dms, &bms, &err);
          double ams = BestMs([&] { a->Run(in.data(), l.pixel_base.data(), np, out.data(), SharedThreadPool(), th); }, reps);
          std::printf("%-22s %-13s %6.3f %3d | %9.3f %9.3f %9.3f | %-12s %7.3f %7.1f %6.2f\n", l.name.c_str(),
                      scheme.c_str(), dens, th, ms[0], ms[1], ms[2], KernelKindName(a->kind()), ams,
                      flops / ams * 1e-6, ms[0] / ams);
          std::fflush(stdout);
        }
      }
  }
  // Depthwise 3x3 on 56x56x144.
  if (filter.empty() || std::string("dw3x3_144_56").find(filter) != std::string::npos) {
    const int c = 144, hw = 56, Wp = hw + 2;
    std::vector<float> in((size_t)Wp * Wp * c), out((size_t)hw * hw * c);
    for (auto& x : in) x = Uni();
    std::vector<int32_t> toff, pb;
    for (int ky = 0; ky < 3; ++ky)
      for (int kx = 0; kx < 3; ++kx) toff.push_back((ky * Wp + kx) * c);
    for (int y = 0; y < hw; ++y)
      for (int x = 0; x < hw; ++x) pb.push_back((y * Wp + x) * c);
    for (double dens : {1.0, 0.5}) {
      std::vector<float> w(9 * c);
      for (auto& x : w) x = Uni() * 0.5 + 0.5 < dens ? Uni() : 0.f;
      DepthwiseDesc d;
      d.kh = d.kw = 3;
      d.cin = c;
      d.weights = w.data();
      d.tap_offset = toff.data();
      std::string err;
      auto p = PackDepthwise(d, &err);
      for (int th : threads) {
        double ms = BestMs([&] { p->Run(in.data(), pb.data(), (int)pb.size(), out.data(), SharedThreadPool(), th); }, reps);
        std::printf("%-22s %-13s %6.3f %3d | %9.3f   GFLOP/s %.1f\n", "dw3x3_144_56", "unstructured", dens, th, ms,
                    2.0 * 9 * c * hw * hw / ms * 1e-6);
      }
    }
  }
  return 0;
}
