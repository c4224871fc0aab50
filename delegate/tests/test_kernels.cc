// Native tests of the npas kernel library: every kernel kind x ISA x thread count against a naive
// double-precision reference of the implicit-GEMM / depthwise contract, plus structure analysis.
// Exit code 0 iff everything passed.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/npas_kernels.h"

using namespace npas;

static int g_pass = 0, g_fail = 0;
static std::mt19937 rng(42);

static void Check(bool ok, const std::string& what) {
  if (ok) {
    g_pass++;
  } else {
    g_fail++;
    if (g_fail <= 40) std::printf("FAIL %s\n", what.c_str());
  }
}

static float Uni() { return std::uniform_real_distribution<float>(-1.f, 1.f)(rng); }
static int RandInt(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }

// ---- geometry ----------------------------------------------------------------------------------
struct Geometry {
  std::string name;
  int rows, cols, kh, kw, cin;
  std::vector<int32_t> col_offset, pixel_base;
  int64_t in_elems;
};

static Geometry Fc(int rows, int cols, int batch) {
  Geometry g{"fc" + std::to_string(rows) + "x" + std::to_string(cols) + "b" + std::to_string(batch),
             rows, cols, 1, 1, cols, {}, {}, 0};
  for (int k = 0; k < cols; ++k) g.col_offset.push_back(k);
  for (int p = 0; p < batch; ++p) g.pixel_base.push_back(p * cols);
  g.in_elems = (int64_t)batch * cols;
  return g;
}

// NHWC input (h, w, cin) copied into a zero-padded buffer with `pad` on every side.
static Geometry Conv(int rows, int cin, int kh, int kw, int h, int w, int stride, int dil, int pad) {
  Geometry g{"conv" + std::to_string(kh) + "x" + std::to_string(kw) + "_" + std::to_string(cin) + "->" +
                 std::to_string(rows) + "_s" + std::to_string(stride) + "d" + std::to_string(dil),
             rows, kh * kw * cin, kh, kw, cin, {}, {}, 0};
  const int Hp = h + 2 * pad, Wp = w + 2 * pad;
  for (int ky = 0; ky < kh; ++ky)
    for (int kx = 0; kx < kw; ++kx)
      for (int c = 0; c < cin; ++c) g.col_offset.push_back((ky * dil * Wp + kx * dil) * cin + c);
  const int oh = (Hp - dil * (kh - 1) - 1) / stride + 1, ow = (Wp - dil * (kw - 1) - 1) / stride + 1;
  for (int oy = 0; oy < oh; ++oy)
    for (int ox = 0; ox < ow; ++ox) g.pixel_base.push_back(((oy * stride) * Wp + ox * stride) * cin);
  g.in_elems = (int64_t)Hp * Wp * cin;
  return g;
}

// ---- masks ---------------------------------------------------------------------------------------
enum MaskKind { kMDense, kMBlock, kMBcr, kMNM, kMPattern, kMUnstructured, kMFilter, kMChannel };
static const char* MaskName(MaskKind m) {
  static const char* n[] = {"dense", "block_punched", "bcr", "n_m", "pattern", "unstructured", "filter", "channel"};
  return n[m];
}

// Returns a [rows, cols] 0/1 mask.
static std::vector<uint8_t> MakeMask(MaskKind kind, int rows, int cols, int cin, double density,
                                     int br = 16, int bc = 16) {
  std::vector<uint8_t> m((size_t)rows * cols, 0);
  auto pick = [&](int n, int k) {  // k distinct of n
    std::vector<int> idx(n);
    for (int i = 0; i < n; ++i) idx[i] = i;
    std::shuffle(idx.begin(), idx.end(), rng);
    idx.resize(std::max(0, std::min(n, k)));
    return idx;
  };
  switch (kind) {
    case kMDense:
      std::fill(m.begin(), m.end(), 1);
      break;
    case kMBlock:
      for (int r0 = 0; r0 < rows; r0 += br)
        for (int c0 = 0; c0 < cols; c0 += bc) {
          int nc = std::min(bc, cols - c0);
          for (int c : pick(nc, (int)std::lround(nc * density)))
            for (int r = r0; r < std::min(rows, r0 + br); ++r) m[(size_t)r * cols + c0 + c] = 1;
        }
      break;
    case kMBcr:
      for (int r0 = 0; r0 < rows; r0 += br)
        for (int c0 = 0; c0 < cols; c0 += bc) {
          int nr = std::min(br, rows - r0), nc = std::min(bc, cols - c0);
          int kr = std::max(1, (int)std::lround(nr * std::sqrt(density)));
          int kc = std::max(1, (int)std::lround(nr * nc * density / kr));
          auto rs = pick(nr, kr), cs = pick(nc, kc);
          for (int r : rs)
            for (int c : cs) m[(size_t)(r0 + r) * cols + c0 + c] = 1;
        }
      break;
    case kMNM:  // 2:4
      for (int r = 0; r < rows; ++r)
        for (int c0 = 0; c0 + 4 <= cols; c0 += 4)
          for (int c : pick(4, 2)) m[(size_t)r * cols + c0 + c] = 1;
      break;
    case kMPattern: {  // 3x3 kernels: 4 of 9 from 6 patterns, 1 of 5 kernels removed
      std::vector<std::vector<int>> pats;
      for (int i = 0; i < 6; ++i) {
        auto p = pick(9, 4);
        pats.push_back(p);
      }
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cin; ++c) {
          if (RandInt(5) == 0) continue;
          for (int t : pats[RandInt(6)]) m[(size_t)r * cols + (size_t)t * cin + c] = 1;
        }
      break;
    }
    case kMUnstructured:
      for (auto& x : m) x = Uni() * 0.5 + 0.5 < density;
      break;
    case kMFilter:
      for (int r = 0; r < rows; ++r)
        if (Uni() * 0.5 + 0.5 < density)
          for (int c = 0; c < cols; ++c) m[(size_t)r * cols + c] = 1;
      break;
    case kMChannel: {
      std::vector<uint8_t> keep(cols);
      for (auto& k : keep) k = Uni() * 0.5 + 0.5 < density;
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) m[(size_t)r * cols + c] = keep[c];
      break;
    }
  }
  return m;
}

static std::vector<float> Weights(const std::vector<uint8_t>& mask) {
  std::vector<float> w(mask.size());
  for (size_t i = 0; i < w.size(); ++i) {
    float v = Uni();
    if (v == 0.f) v = 0.5f;
    w[i] = mask[i] ? v : 0.f;
  }
  return w;
}

// ---- GEMM tests ----------------------------------------------------------------------------------
static bool Compare(const std::vector<float>& got, const std::vector<double>& ref,
                    const std::vector<double>& scale, double* max_rel) {
  *max_rel = 0;
  bool ok = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    double e = std::fabs(got[i] - ref[i]) / (scale[i] + 1e-6);
    if (!(e <= 1e-5)) ok = false;  // catches NaN
    *max_rel = std::max(*max_rel, std::isfinite(e) ? e : 1e30);
  }
  return ok;
}

static void TestGemm(const Geometry& g, MaskKind mk, double density, int variant,
                     const std::vector<Isa>& isas) {
  auto mask = MakeMask(mk, g.rows, g.cols, g.cin, density);
  auto w = Weights(mask);
  std::vector<float> bias(g.rows);
  for (auto& b : bias) b = Uni();
  std::vector<float> in(g.in_elems);
  for (auto& x : in) x = Uni();
  GemmDesc d;
  d.rows = g.rows;
  d.cols = g.cols;
  d.kh = g.kh;
  d.kw = g.kw;
  d.cin = g.cin;
  d.weights = w.data();
  d.bias = (variant & 1) ? bias.data() : nullptr;
  d.col_offset = g.col_offset.data();
  if (variant & 2) {
    d.act_min = 0.f;  // relu
    if (variant & 4) d.act_max = 0.25f;  // relu-like clamp that bites
  }
  const int np = (int)g.pixel_base.size();
  std::vector<double> ref((size_t)np * g.rows), scale((size_t)np * g.rows);
  for (int p = 0; p < np; ++p)
    for (int o = 0; o < g.rows; ++o) {
      double s = d.bias ? d.bias[o] : 0.0, a = std::fabs(s);
      for (int k = 0; k < g.cols; ++k) {
        double t = (double)w[(size_t)o * g.cols + k] * in[g.pixel_base[p] + g.col_offset[k]];
        s += t;
        a += std::fabs(t);
      }
      s = std::min<double>(std::max<double>(s, d.act_min), d.act_max);
      ref[(size_t)p * g.rows + o] = s;
      scale[(size_t)p * g.rows + o] = a;
    }
  for (Isa isa : isas) {
    setenv("NPAS_ISA", IsaName(isa), 1);
    for (KernelKind kind : {KernelKind::kDense, KernelKind::kRowBlock, KernelKind::kPixelVector,
                            KernelKind::kAuto}) {
      std::string err;
      double dms = 0, bms = 0;
      auto packed = PackGemm(d, kind, np, g.pixel_base.data(), g.in_elems, 1, &dms, &bms, &err);
      std::string what = g.name + " " + MaskName(mk) + " d=" + std::to_string(density) + " v" +
                         std::to_string(variant) + " " + IsaName(isa) + " " + KernelKindName(kind);
      if (!packed) {
        Check(false, what + " pack failed: " + err);
        continue;
      }
      if (kind == KernelKind::kAuto) Check(dms > 0 && bms > 0 && bms <= dms * 1.0001, what + " auto times");
      for (int threads : {1, 2}) {
        std::vector<float> out((size_t)np * g.rows, NAN);
        packed->Run(in.data(), g.pixel_base.data(), np, out.data(), SharedThreadPool(), threads);
        double rel;
        bool ok = Compare(out, ref, scale, &rel);
        Check(ok, what + " (" + KernelKindName(packed->kind()) + ") threads=" + std::to_string(threads) +
                      " max_rel=" + std::to_string(rel));
      }
    }
  }
  unsetenv("NPAS_ISA");
}

// ---- depthwise -------------------------------------------------------------------------------------
static void TestDepthwise(int cin, int dm, int stride, double density, int variant,
                          const std::vector<Isa>& isas) {
  const int kh = 3, kw = 3, h = 7, wd = 6, pad = 1;
  const int cout = cin * dm, Hp = h + 2 * pad, Wp = wd + 2 * pad;
  std::vector<float> w((size_t)kh * kw * cout), bias(cout), in((size_t)Hp * Wp * cin);
  for (auto& x : w) x = Uni() * 0.5 + 0.5 < density ? Uni() : 0.f;
  for (auto& x : bias) x = Uni();
  for (auto& x : in) x = Uni();
  std::vector<int32_t> toff, pb;
  for (int ky = 0; ky < kh; ++ky)
    for (int kx = 0; kx < kw; ++kx) toff.push_back((ky * Wp + kx) * cin);
  const int oh = (Hp - kh) / stride + 1, ow = (Wp - kw) / stride + 1;
  for (int oy = 0; oy < oh; ++oy)
    for (int ox = 0; ox < ow; ++ox) pb.push_back((oy * stride * Wp + ox * stride) * cin);
  const int np = (int)pb.size();
  DepthwiseDesc d;
  d.kh = kh;
  d.kw = kw;
  d.cin = cin;
  d.depth_multiplier = dm;
  d.weights = w.data();
  d.bias = (variant & 1) ? bias.data() : nullptr;
  d.tap_offset = toff.data();
  if (variant & 2) {
    d.act_min = -0.5f;
    d.act_max = 0.5f;
  }
  std::vector<double> ref((size_t)np * cout), scale((size_t)np * cout);
  for (int p = 0; p < np; ++p)
    for (int oc = 0; oc < cout; ++oc) {
      double s = d.bias ? d.bias[oc] : 0.0, a = std::fabs(s);
      for (int t = 0; t < kh * kw; ++t) {
        double v = (double)w[(size_t)t * cout + oc] * in[pb[p] + toff[t] + oc / dm];
        s += v;
        a += std::fabs(v);
      }
      ref[(size_t)p * cout + oc] = std::min<double>(std::max<double>(s, d.act_min), d.act_max);
      scale[(size_t)p * cout + oc] = a;
    }
  for (Isa isa : isas) {
    setenv("NPAS_ISA", IsaName(isa), 1);
    std::string err;
    auto packed = PackDepthwise(d, &err);
    std::string what = "depthwise c=" + std::to_string(cin) + " dm=" + std::to_string(dm) + " s=" +
                       std::to_string(stride) + " d=" + std::to_string(density) + " v" +
                       std::to_string(variant) + " " + IsaName(isa);
    if (!packed) {
      Check(false, what + " pack failed: " + err);
      continue;
    }
    for (int threads : {1, 2}) {
      std::vector<float> out((size_t)np * cout, NAN);
      packed->Run(in.data(), pb.data(), np, out.data(), SharedThreadPool(), threads);
      double rel;
      Check(Compare(out, ref, scale, &rel), what + " threads=" + std::to_string(threads) +
                                                " max_rel=" + std::to_string(rel));
    }
  }
  unsetenv("NPAS_ISA");
}

// ---- structure analysis ------------------------------------------------------------------------------
static void TestStructure() {
  struct Case {
    MaskKind mk;
    int rows, cols, kh, cin;
    double density;
    Structure want;
    int br, bc;
  };
  const Case cases[] = {
      {kMDense, 64, 256, 1, 256, 1.0, Structure::kDense, 0, 0},
      {kMBlock, 64, 256, 1, 256, 0.25, Structure::kBlockPunched, 16, 16},
      {kMBlock, 64, 288, 3, 32, 0.5, Structure::kBlockPunched, 16, 16},
      {kMBcr, 64, 256, 1, 256, 0.125, Structure::kBcr, 16, 16},
      {kMBcr, 128, 288, 3, 32, 0.25, Structure::kBcr, 16, 16},
      {kMNM, 64, 256, 1, 256, 0.5, Structure::kNM, 0, 0},
      {kMPattern, 64, 288, 3, 32, 0.35, Structure::kPattern, 0, 0},
      {kMUnstructured, 64, 256, 1, 256, 0.125, Structure::kUnstructured, 0, 0},
      {kMUnstructured, 64, 288, 3, 32, 0.5, Structure::kUnstructured, 0, 0},
      {kMChannel, 64, 256, 1, 256, 0.5, Structure::kBlockPunched, 64, 256},
      {kMFilter, 64, 256, 1, 256, 0.5, Structure::kBcr, 64, 256},
  };
  for (const Case& c : cases) {
    auto mask = MakeMask(c.mk, c.rows, c.cols, c.cin, c.density);
    auto w = Weights(mask);
    StructureInfo s = AnalyzeStructure(w.data(), c.rows, c.cols, c.kh, c.kh, c.cin);
    bool ok = s.kind == c.want;
    if (c.br) ok = ok && s.block_rows == c.br && s.block_cols == c.bc;
    if (c.want == Structure::kNM) ok = ok && s.n == 2 && s.m == 4;
    size_t nnz = 0;
    for (auto x : mask) nnz += x;
    ok = ok && std::fabs(s.density - (double)nnz / mask.size()) < 1e-9;
    Check(ok, std::string("structure ") + MaskName(c.mk) + ": got " + StructureName(s.kind) + " " +
                  std::to_string(s.block_rows) + "x" + std::to_string(s.block_cols) + " n:m " +
                  std::to_string(s.n) + ":" + std::to_string(s.m) + ", want " + StructureName(c.want));
  }
}

static void TestMisc() {
  // Invalid descriptions are rejected with an error, not a crash.
  GemmDesc d;
  std::string err;
  Check(!PackGemm(d, KernelKind::kAuto, 0, nullptr, 0, 1, nullptr, nullptr, &err) && !err.empty(),
        "PackGemm rejects an empty description");
  DepthwiseDesc dd;
  err.clear();
  Check(!PackDepthwise(dd, &err) && !err.empty(), "PackDepthwise rejects an empty description");
  // Thread pool: every task exactly once, concurrent callers.
  std::vector<int> hits(1000, 0);
  SharedThreadPool()->ParallelFor(1000, 2, [&](int t) { hits[t]++; });
  bool once = true;
  for (int h : hits) once = once && h == 1;
  Check(once, "ParallelFor runs every task exactly once");
  Check(std::string(IsaName(DetectIsa())) != "?", "DetectIsa");
  setenv("NPAS_ISA", "scalar", 1);
  Check(DetectIsa() == Isa::kScalar, "NPAS_ISA=scalar forces scalar");
  unsetenv("NPAS_ISA");
}

int main() {
  std::vector<Isa> isas = {Isa::kScalar};
  Isa best = DetectIsa();
  if (best == Isa::kAvx2 || best == Isa::kAvx512) isas.push_back(Isa::kAvx2);
  if (best == Isa::kAvx512) isas.push_back(Isa::kAvx512);
  if (best == Isa::kNeon) isas.push_back(Isa::kNeon);  // aarch64 (run_aarch64.sh: under qemu)
  std::printf("ISAs tested:");
  for (Isa i : isas) std::printf(" %s", IsaName(i));
  std::printf("\n");

  TestMisc();
  TestStructure();

  std::vector<Geometry> geoms = {Fc(37, 53, 1), Fc(70, 300, 5), Fc(50, 70, 3), Conv(33, 40, 1, 1, 7, 6, 1, 1, 0),
                                 Conv(45, 19, 3, 3, 9, 8, 2, 1, 1), Conv(32, 24, 3, 3, 6, 7, 1, 2, 2),
                                 Conv(17, 16, 3, 3, 5, 20, 1, 1, 1)};
  int variant = 0;
  for (const Geometry& g : geoms) {
    TestGemm(g, kMDense, 1.0, variant++ % 8, isas);
    for (double dens : {0.5, 0.25, 0.125}) {
      TestGemm(g, kMBlock, dens, variant++ % 8, isas);
      TestGemm(g, kMBcr, dens, variant++ % 8, isas);
      TestGemm(g, kMUnstructured, dens, variant++ % 8, isas);
    }
    TestGemm(g, kMNM, 0.5, variant++ % 8, isas);
    TestGemm(g, kMFilter, 0.5, variant++ % 8, isas);
    TestGemm(g, kMChannel, 0.5, variant++ % 8, isas);
    if (g.kh == 3) TestGemm(g, kMPattern, 0.35, variant++ % 8, isas);
  }
  for (int c : {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 37})
    for (int dm : {1, 2}) {
      TestDepthwise(c, dm, 1 + (c % 2), c % 3 == 0 ? 0.5 : 1.0, variant++ % 4, isas);
    }
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
