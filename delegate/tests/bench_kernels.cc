// Micro-benchmark of the npas kernels on the layers of issue 3 (not a test: not run by test.sh).
// Usage: bench_kernels [layer-substring] [threads (default: 1 and 2)] [reps]
// Prints, per case, the best-of-reps time of each kernel kind and the effective GFLOP/s
// (dense FLOPs / time), so sparse kernels are compared on the work they replace.
//        bench_kernels int8 [threads (default 1)] [reps]
// int8 row-block kernels of every ISA (scalar, AVX2, AVX-512 VNNI) against fp32 row-block (AVX2,
// AVX-512) on FC 1024x1024 (batch 1) and conv 3x3 256->256 @ 28x28, dense and block16x16 at 1/8;
// the runs of all variants are interleaved and the fastest of each is kept; then int8 depthwise
// 3x3 (scalar, AVX2, AVX-512) against fp32 depthwise (AVX2, AVX-512) at 128@56 and 512@14.
#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <ctime>
#include <string>
#include <vector>

#include "kernels/int8_internal.h"
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

// NPAS_BENCH_CPUTIME=1: the calling thread's CPU time instead of wall time (1 thread only:
// a preempted run then costs nothing extra on a busy machine).
static double MsOnce(const std::function<void()>& f) {
  if (getenv("NPAS_BENCH_CPUTIME")) {
    timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    f();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) * 1e-6;
  }
  auto a = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
}

static void BenchInt8(int th, int reps) {
  std::printf("int8 vs fp32 row-block, %d thread(s), fastest of %d interleaved runs (ms)\n", th, reps);
  // The scalar kernel only where it is quick (NPAS_BENCH_SCALAR=1: on the convs too).
  const bool skip_scalar = !getenv("NPAS_BENCH_SCALAR");
  // NPAS_BENCH_VNNI_ONLY=1: only the AVX-512 int8 kernels (VNNI and AMX), for quick A/B runs.
  const bool vnni_only = getenv("NPAS_BENCH_VNNI_ONLY") != nullptr;
  const char* only = getenv("NPAS_BENCH_LAYER");  // a substring of the layer names
  // The Fashion-MNIST CNN's convs (benchmarks/accuracy.py) after the issue-3 layers.
  for (const Layer& l : {Fc(1024, 1024), Conv(256, 256, 3, 28), Conv(512, 512, 1, 14),
                         Conv(32, 1, 3, 28), Conv(32, 32, 3, 28), Conv(64, 64, 3, 14)}) {
    if (only && l.name.find(only) == std::string::npos) continue;
    const int np = (int)l.pixel_base.size();
    std::vector<float> inf(l.in_elems);
    for (auto& x : inf) x = Uni();
    std::vector<int8_t> in8(l.in_elems);
    for (auto& x : in8) x = (int8_t)std::lround(Uni() * 127);
    std::vector<float> outf((size_t)np * l.rows);
    std::vector<int8_t> out8((size_t)np * l.rows);
    for (double dens : {1.0, 0.125}) {
      const auto wf = MakeWeights(dens == 1.0 ? "dense" : "block16x16", l.rows, l.cols, dens);
      const KernelKind kind = dens == 1.0 ? KernelKind::kDense : KernelKind::kRowBlock;
      float wmax = 0.f;
      for (float x : wf) wmax = std::max(wmax, std::fabs(x));
      std::vector<int8_t> w8(wf.size());
      // Signed int8 weights (random signs, as a real model's; MakeWeights' values are all
      // positive). Same-process A/B on this Xeon: no speed difference for either kernel.
      for (size_t i = 0; i < wf.size(); ++i)
        w8[i] = (int8_t)std::lround(wf[i] / wmax * 127.f * (rng() & 1 ? 1 : -1));
      std::vector<int32_t> mult(l.rows), shift(l.rows);
      for (int r = 0; r < l.rows; ++r) {
        int sh;
        QuantizeMultiplier(0.0004, &mult[r], &sh);
        shift[r] = sh;
      }
      std::vector<std::string> names;
      std::vector<std::function<void()>> runs;
      std::vector<std::shared_ptr<void>> keep;
      for (const char* isa : {"avx2", "avx512"}) {
        setenv("NPAS_ISA", isa, 1);
        if (DetectIsa() != (std::string(isa) == "avx2" ? Isa::kAvx2 : Isa::kAvx512)) continue;
        if (vnni_only) continue;
        GemmDesc d;
        d.rows = l.rows; d.cols = l.cols; d.kh = d.kw = l.kh; d.cin = l.cin;
        d.weights = wf.data(); d.col_offset = l.col_offset.data(); d.act_min = 0.f;
        std::string err;
        std::shared_ptr<PackedGemm> g(PackGemm(d, kind, np, l.pixel_base.data(), l.in_elems, th, nullptr, nullptr, &err).release());
        keep.push_back(g);
        names.push_back(std::string("fp32-") + isa);
        runs.push_back([&, g] { g->Run(inf.data(), l.pixel_base.data(), np, outf.data(), SharedThreadPool(), th); });
      }
      for (const char* isa : {"scalar", "avx2", "lanes", "avx512", "amx"}) {
        const bool amx = std::string(isa) == "amx", lanes = std::string(isa) == "lanes";
        setenv("NPAS_ISA", amx ? "avx512" : lanes ? "avx2" : isa, 1);
        setenv("NPAS_INT8_AMX", amx ? "1" : "0", 1);
        setenv("NPAS_INT8_LANES", lanes ? "1" : "0", 1);
#if defined(__x86_64__) || defined(__i386__)
        if (amx && !internal::CpuHasAmxInt8()) continue;
#else
        if (amx) continue;
#endif
        if (!amx && std::string(isa) == "scalar" && l.name.find("conv") == 0 && skip_scalar) continue;
        if (vnni_only && std::string(isa) != "avx512" && !amx) continue;
        if (lanes && DetectIsa() != Isa::kAvx2) continue;
        const std::string kname = amx ? "avx512-amx" : lanes ? "avx2-lanes" : internal::SelectRowBlockInt8().name;
        if (std::find(names.begin(), names.end(), "int8-" + kname) != names.end()) continue;
        GemmInt8Desc d;
        d.rows = l.rows; d.cols = l.cols; d.kh = d.kw = l.kh; d.cin = l.cin;
        d.weights = w8.data(); d.col_offset = l.col_offset.data();
        d.multiplier = mult.data(); d.shift = shift.data(); d.act_min = -128;
        std::string err;
        std::shared_ptr<PackedGemmInt8> g(PackGemmInt8(d, kind, np, l.pixel_base.data(), l.in_elems, th, nullptr, nullptr, &err).release());
        keep.push_back(g);
        names.push_back("int8-" + kname);
        runs.push_back([&, g] { g->Run(in8.data(), l.in_elems, l.pixel_base.data(), np, out8.data(), SharedThreadPool(), th); });
      }
      unsetenv("NPAS_ISA");
      unsetenv("NPAS_INT8_AMX");
      unsetenv("NPAS_INT8_LANES");
      std::vector<double> best(runs.size(), 1e30);
      for (auto& r : runs) r();  // warm-up
      for (int i = 0; i < reps; ++i)
        for (size_t k = 0; k < runs.size(); ++k) best[k] = std::min(best[k], MsOnce(runs[k]));
      std::printf("%-22s dens %.3f:", l.name.c_str(), dens);
      for (size_t k = 0; k < runs.size(); ++k) std::printf("  %s %.4f", names[k].c_str(), best[k]);
      std::printf("\n");
      // Ratios against fp32 AVX2 (the first entry when the CPU has AVX2).
      if (!names.empty() && names[0] == "fp32-avx2") {
        std::printf("%-22s   speed vs fp32-avx2:", "");
        for (size_t k = 1; k < runs.size(); ++k) std::printf("  %s %.2fx", names[k].c_str(), best[0] / best[k]);
        std::printf("\n");
      }
      std::fflush(stdout);
    }
  }
}

// int8 depthwise 3x3 (stride 1, same) of every ISA against fp32 depthwise, dense weights,
// interleaved as BenchInt8.
static void BenchDepthwiseInt8(int th, int reps) {
  for (int c : {128, 512}) {
    const int hw = c == 128 ? 56 : 14, k = 3, Wp = hw + 2;
    std::vector<int32_t> taps, pb;
    for (int ky = 0; ky < k; ++ky)
      for (int kx = 0; kx < k; ++kx) taps.push_back((ky * Wp + kx) * c);
    for (int y = 0; y < hw; ++y)
      for (int x = 0; x < hw; ++x) pb.push_back((y * Wp + x) * c);
    const int np = (int)pb.size();
    const size_t in_elems = (size_t)Wp * Wp * c;
    std::vector<float> inf(in_elems), wf((size_t)k * k * c), outf((size_t)np * c);
    for (auto& x : inf) x = Uni();
    for (auto& x : wf) x = Uni();
    std::vector<int8_t> in8(in_elems), w8(wf.size()), out8((size_t)np * c);
    for (auto& x : in8) x = (int8_t)std::lround(Uni() * 127);
    for (size_t i = 0; i < wf.size(); ++i) w8[i] = (int8_t)std::lround(wf[i] * 127);
    std::vector<int32_t> mult(c), shift(c);
    for (int i = 0; i < c; ++i) QuantizeMultiplier(0.004, &mult[i], &shift[i]);
    std::vector<std::string> names;
    std::vector<std::function<void()>> runs;
    std::vector<std::shared_ptr<void>> keep;
    for (const char* isa : {"avx2", "avx512"}) {
      setenv("NPAS_ISA", isa, 1);
      if (DetectIsa() != (std::string(isa) == "avx2" ? Isa::kAvx2 : Isa::kAvx512)) continue;
      DepthwiseDesc d;
      d.kh = d.kw = k; d.cin = c; d.weights = wf.data(); d.tap_offset = taps.data();
      std::string err;
      std::shared_ptr<PackedDepthwise> g(PackDepthwise(d, &err).release());
      keep.push_back(g);
      names.push_back(std::string("fp32-") + isa);
      runs.push_back([&, g] { g->Run(inf.data(), pb.data(), np, outf.data(), SharedThreadPool(), th); });
    }
    for (const char* isa : {"scalar", "avx2", "avx512"}) {
      setenv("NPAS_ISA", isa, 1);
      const std::string name = std::string("int8-") + internal::SelectDepthwiseInt8().name;
      if (std::find(names.begin(), names.end(), name) != names.end()) continue;
      DepthwiseInt8Desc d;
      d.kh = d.kw = k; d.cin = c; d.weights = w8.data(); d.tap_offset = taps.data();
      d.multiplier = mult.data(); d.shift = shift.data();
      std::string err;
      std::shared_ptr<PackedDepthwiseInt8> g(PackDepthwiseInt8(d, false, &err).release());
      keep.push_back(g);
      names.push_back(name);
      runs.push_back([&, g] { g->Run(in8.data(), pb.data(), np, out8.data(), SharedThreadPool(), th); });
    }
    unsetenv("NPAS_ISA");
    std::vector<double> best(runs.size(), 1e30);
    for (auto& r : runs) r();
    for (int i = 0; i < reps; ++i)
      for (size_t j = 0; j < runs.size(); ++j) best[j] = std::min(best[j], MsOnce(runs[j]));
    std::printf("dw3x3_%d_%-14d dens 1.000:", c, hw);
    for (size_t j = 0; j < runs.size(); ++j) std::printf("  %s %.4f", names[j].c_str(), best[j]);
    std::printf("\n");
    std::fflush(stdout);
  }
}

int main(int argc, char** argv) {
  std::string filter = argc > 1 ? argv[1] : "";
  if (filter == "int8") {
    const int th = argc > 2 && atoi(argv[2]) > 0 ? atoi(argv[2]) : 1, reps = argc > 3 ? atoi(argv[3]) : 30;
    BenchInt8(th, reps);
    BenchDepthwiseInt8(th, reps);
    return 0;
  }
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
