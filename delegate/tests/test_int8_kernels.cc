// Native tests of the int8 kernels: QuantizeMultiplier / MultiplyByQuantizedMultiplier against an
// independent big-integer formulation, and every int8 kernel kind x ISA x thread count against a
// direct (unpacked) reference of TFLite's int8 conv / FC / depthwise arithmetic, over a grid of
// geometries, zero points, activations and pruned weights. Every ISA of this CPU is forced in turn
// with NPAS_ISA (x86: scalar, avx2, avx512 = VNNI, with the vpermb window kernel if the CPU has
// VBMI and again without it, NPAS_INT8_NO_VBMI=1, and the AMX-INT8 kernel, NPAS_INT8_AMX=1, on
// CPUs with AMX; aarch64: scalar, neon = dot product or plain
// NEON, whichever the CPU has; run_aarch64.sh runs both under qemu). Exit code 0 iff all passed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/int8_internal.h"
#include "kernels/npas_kernels.h"

using namespace npas;

static int g_pass = 0, g_fail = 0;
static std::mt19937 rng(7);
static void Check(bool ok, const std::string& what) {
  if (ok) g_pass++;
  else if (++g_fail <= 40) std::printf("FAIL %s\n", what.c_str());
}
static int RandInt(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

// Reference requantization written from the definition: x * 2^lshift, doubling high multiply
// rounded half away from zero, then a right shift rounded half away from zero (TFLite's
// SaturatingRoundingDoublingHighMul + RoundingDivideByPOT).
static int32_t RefMbqm(int32_t x, int32_t m, int shift) {
  const int ls = shift > 0 ? shift : 0, rs = shift > 0 ? 0 : -shift;
  const int64_t xs = (int64_t)(int32_t)((uint32_t)x << ls);
  const int64_t ab = xs * (int64_t)m;
  // high mul: round(ab / 2^31), ties away from zero, truncating the nudged value toward zero
  int64_t t = ab >= 0 ? ab + (1ll << 30) : ab + 1 - (1ll << 30);
  int64_t h = t >= 0 ? t >> 31 : -((-t) >> 31);
  if (rs == 0) return (int32_t)h;
  // divide by 2^rs, round half away from zero
  const int64_t d = 1ll << rs;
  int64_t q = h >= 0 ? (h + d / 2) / d : -((-h + d / 2) / d);
  return (int32_t)q;
}

static void TestMultiplier() {
  int32_t m;
  int s;
  QuantizeMultiplier(0.5, &m, &s);
  Check(m == (1 << 30) && s == 0, "QuantizeMultiplier(0.5)");
  QuantizeMultiplier(1.0, &m, &s);
  Check(m == (1 << 30) && s == 1, "QuantizeMultiplier(1.0)");
  QuantizeMultiplier(0.75 * std::ldexp(1.0, -8), &m, &s);
  Check(m == (int32_t)(0.75 * 2147483648.0) && s == -8, "QuantizeMultiplier(0.75 * 2^-8)");
  QuantizeMultiplier(std::ldexp(1.0, -40), &m, &s);
  Check(m == 0 && s == 0, "QuantizeMultiplier flushes tiny values");
  QuantizeMultiplier(0.9999999999999, &m, &s);  // rounds up to 2^31 -> halved, shift + 1
  Check(m == (1 << 30) && s == 1, "QuantizeMultiplier rounding to 2^31");
  int bad = 0;
  for (int i = 0; i < 200000; ++i) {
    const double real = std::exp(std::uniform_real_distribution<double>(-14, 1)(rng));
    QuantizeMultiplier(real, &m, &s);
    const int32_t x = (int32_t)std::uniform_int_distribution<int64_t>(-2000000, 2000000)(rng);
    if (MultiplyByQuantizedMultiplier(x, m, s) != RefMbqm(x, m, s)) ++bad;
    // close to the real product too
    if (std::fabs(MultiplyByQuantizedMultiplier(x, m, s) - x * real) > 1.0 + 1e-6 * std::fabs(x * real)) ++bad;
  }
  Check(bad == 0, "MultiplyByQuantizedMultiplier vs reference (" + std::to_string(bad) + " bad)");
  // ties
  Check(MultiplyByQuantizedMultiplier(3, 1 << 30, -1) == 1, "tie 0.75 -> 1");
  Check(MultiplyByQuantizedMultiplier(-3, 1 << 30, -1) == -1, "tie -0.75 -> -1");
  Check(MultiplyByQuantizedMultiplier(2, 1 << 30, -1) == 1, "tie 0.5 -> 1");
  Check(MultiplyByQuantizedMultiplier(-2, 1 << 30, -1) == -1, "tie -0.5 -> -1");
}

// ---- layers ------------------------------------------------------------------------------------
struct Layer {
  std::string name;
  bool depthwise = false;
  int n = 1, h = 1, w = 1, cin = 1, cout = 1, kh = 1, kw = 1, sh = 1, sw = 1, dm = 1;
  bool same = false, fc = false;
};

struct Built {
  int oh, ow, hp, wp, pt, pl, pixels;
  std::vector<int32_t> col_offset, pixel_base;
};

static Built Geometry(const Layer& L) {
  Built b;
  if (L.fc) {
    b.oh = b.ow = 1;
    b.hp = b.wp = 1;
    b.pt = b.pl = 0;
    b.pixels = L.n;
    for (int k = 0; k < L.cin; ++k) b.col_offset.push_back(k);
    for (int p = 0; p < L.n; ++p) b.pixel_base.push_back(p * L.cin);
    return b;
  }
  if (L.same) {
    b.oh = (L.h + L.sh - 1) / L.sh;
    b.ow = (L.w + L.sw - 1) / L.sw;
    const int ph = std::max((b.oh - 1) * L.sh + L.kh - L.h, 0), pw = std::max((b.ow - 1) * L.sw + L.kw - L.w, 0);
    b.pt = ph / 2;
    b.pl = pw / 2;
    b.hp = L.h + ph;
    b.wp = L.w + pw;
  } else {
    b.oh = (L.h - L.kh) / L.sh + 1;
    b.ow = (L.w - L.kw) / L.sw + 1;
    b.pt = b.pl = 0;
    b.hp = L.h;
    b.wp = L.w;
  }
  b.pixels = L.n * b.oh * b.ow;
  for (int ky = 0; ky < L.kh; ++ky)
    for (int kx = 0; kx < L.kw; ++kx) {
      const int tap = (ky * b.wp + kx) * L.cin;
      if (L.depthwise) b.col_offset.push_back(tap);
      else
        for (int c = 0; c < L.cin; ++c) b.col_offset.push_back(tap + c);
    }
  for (int n = 0; n < L.n; ++n)
    for (int y = 0; y < b.oh; ++y)
      for (int x = 0; x < b.ow; ++x)
        b.pixel_base.push_back(((n * b.hp + y * L.sh) * b.wp + x * L.sw) * L.cin);
  return b;
}

// Prunes: 0 dense, 1 block-punched (16-row groups share kept columns), 2 unstructured, 3 filter
static void Prune(std::vector<int8_t>& w, int rows, int cols, int mode, double density) {
  if (mode == 0) return;
  std::uniform_real_distribution<double> u(0, 1);
  if (mode == 1) {
    for (int g = 0; g < rows; g += 16)
      for (int k = 0; k < cols; ++k)
        if (u(rng) > density)
          for (int r = g; r < std::min(rows, g + 16); ++r) w[(size_t)r * cols + k] = 0;
  } else if (mode == 2) {
    for (auto& x : w)
      if (u(rng) > density) x = 0;
  } else {
    for (int r = 0; r < rows; ++r)
      if (u(rng) > density)
        for (int k = 0; k < cols; ++k) w[(size_t)r * cols + k] = 0;
  }
}

struct Forced {
  Isa isa;
  bool no_vbmi;      // NPAS_INT8_NO_VBMI=1: the VNNI kernel without vpermb windows
  bool amx = false;  // NPAS_INT8_AMX=1: the AMX kernel wherever the layer fits it (else =0)
  bool lanes = false;  // NPAS_INT8_LANES=1: the AVX2 pixel-lane kernel wherever it fits (else =0)
};
static std::vector<Forced> g_isas;  // ISAs to force (main)
static void Force(const Forced& f) {
  setenv("NPAS_ISA", IsaName(f.isa), 1);
  if (f.no_vbmi) setenv("NPAS_INT8_NO_VBMI", "1", 1);
  else unsetenv("NPAS_INT8_NO_VBMI");
  setenv("NPAS_INT8_AMX", f.amx ? "1" : "0", 1);
  setenv("NPAS_INT8_LANES", f.lanes ? "1" : "0", 1);
}
static const char* KernelName(const Forced& f) {
  return f.amx ? "avx512-amx" : f.lanes ? "avx2-lanes" : internal::SelectRowBlockInt8().name;
}

static void RunCase(const Layer& L, int in_zp, int out_zp, int act, int prune_mode, double density,
                    int64_t* exact_total) {
  Built b = Geometry(L);
  const int cout = L.depthwise ? L.cin * L.dm : L.cout;
  const int cols = L.depthwise ? L.kh * L.kw : L.kh * L.kw * L.cin;
  std::vector<int8_t> w((size_t)cout * cols);
  for (auto& x : w) x = (int8_t)RandInt(-127, 127);
  // GEMM view [cout, cols]; depthwise stored [taps, cout]
  Prune(w, cout, cols, prune_mode, density);
  std::vector<int8_t> wdw;
  if (L.depthwise) {
    wdw.resize(w.size());
    for (int c = 0; c < cout; ++c)
      for (int t = 0; t < cols; ++t) wdw[(size_t)t * cout + c] = w[(size_t)c * cols + t];
  }
  std::vector<int32_t> bias(cout), mult(cout), shift(cout);
  const double in_scale = 0.02, out_scale = 0.05 + 0.1 * (cols > 100);
  for (int c = 0; c < cout; ++c) {
    bias[c] = RandInt(-20000, 20000);
    const double ws = 0.001 + 0.01 * (c % 7) / 7.0;
    int s;
    QuantizeMultiplier(in_scale * ws / out_scale, &mult[c], &s);
    shift[c] = s;
  }
  int32_t lo = -128, hi = 127;
  if (act == 1) lo = std::max(lo, out_zp);                               // relu
  if (act == 2) { lo = std::max(lo, out_zp); hi = std::min(hi, out_zp + 30); }  // relu6-like
  // input, padded with in_zp
  const int64_t in_elems = L.fc ? (int64_t)L.n * L.cin : (int64_t)L.n * b.hp * b.wp * L.cin;
  std::vector<int8_t> in((size_t)in_elems, (int8_t)in_zp);
  if (L.fc) {
    for (auto& x : in) x = (int8_t)RandInt(-128, 127);
  } else {
    for (int n = 0; n < L.n; ++n)
      for (int y = 0; y < L.h; ++y)
        for (int x = 0; x < L.w; ++x)
          for (int c = 0; c < L.cin; ++c)
            in[(((size_t)n * b.hp + y + b.pt) * b.wp + x + b.pl) * L.cin + c] = (int8_t)RandInt(-128, 127);
  }
  // reference
  std::vector<int8_t> ref((size_t)b.pixels * cout);
  for (int p = 0; p < b.pixels; ++p)
    for (int o = 0; o < cout; ++o) {
      int64_t acc = bias[o];
      for (int k = 0; k < cols; ++k) {
        int32_t x = L.depthwise ? in[b.pixel_base[p] + b.col_offset[k] + o / L.dm]
                                : in[b.pixel_base[p] + b.col_offset[k]];
        acc += (int64_t)w[(size_t)o * cols + k] * (x - in_zp);
      }
      int32_t r = RefMbqm((int32_t)acc, mult[o], shift[o]) + out_zp;
      ref[(size_t)p * cout + o] = (int8_t)std::min(std::max(r, lo), hi);
    }
  for (const Forced& forced : g_isas) {
    const char* isa = IsaName(forced.isa);
    Force(forced);
    const internal::RowBlockInt8Kernel want = internal::SelectRowBlockInt8();
    const char* kname = KernelName(forced);
    for (int threads : {1, 2}) {
      std::vector<KernelKind> kinds = {KernelKind::kDense, KernelKind::kRowBlock, KernelKind::kAuto};
      if (L.depthwise) kinds = {KernelKind::kDense, KernelKind::kRowBlock};
      for (KernelKind kind : kinds) {
        std::vector<int8_t> out((size_t)b.pixels * cout, 99);
        std::string err;
        if (L.depthwise) {
          DepthwiseInt8Desc d;
          d.kh = L.kh; d.kw = L.kw; d.cin = L.cin; d.depth_multiplier = L.dm;
          d.weights = wdw.data(); d.bias = bias.data(); d.tap_offset = b.col_offset.data();
          d.multiplier = mult.data(); d.shift = shift.data();
          d.input_zp = in_zp; d.output_zp = out_zp; d.act_min = lo; d.act_max = hi;
          auto k = PackDepthwiseInt8(d, kind == KernelKind::kRowBlock, &err);
          if (!k) { Check(false, L.name + " pack: " + err); continue; }
          k->Run(in.data(), b.pixel_base.data(), b.pixels, out.data(), SharedThreadPool(), threads);
        } else {
          GemmInt8Desc d;
          d.rows = cout; d.cols = cols; d.kh = L.kh; d.kw = L.kw; d.cin = L.cin;
          d.weights = w.data(); d.bias = bias.data(); d.col_offset = b.col_offset.data();
          d.multiplier = mult.data(); d.shift = shift.data();
          d.input_zp = in_zp; d.output_zp = out_zp; d.act_min = lo; d.act_max = hi;
          double dm = 0, bm = 0;
          auto k = PackGemmInt8(d, kind, b.pixels, b.pixel_base.data(), in_elems, threads, &dm, &bm, &err);
          if (!k) { Check(false, L.name + " pack: " + err); continue; }
          k->Run(in.data(), in_elems, b.pixel_base.data(), b.pixels, out.data(), SharedThreadPool(), threads);
          Check(k->isa() == want.isa, L.name + " NPAS_ISA=" + isa + ": kernel ISA " + IsaName(k->isa()));
          const bool amx_layer = L.name.find("(amx)") != std::string::npos;
          if (!forced.amx || amx_layer)
            Check(internal::IsAmxInt8(*k) == forced.amx,
                  L.name + ": AMX kernel used iff forced (NPAS_INT8_AMX=1)");
          const bool lanes_layer = amx_layer || L.name.find("(lanes)") != std::string::npos;
          if (!forced.lanes || lanes_layer)
            Check(internal::IsLanesInt8(*k) == forced.lanes,
                  L.name + ": pixel-lane kernel used iff forced (NPAS_INT8_LANES=1)");
        }
        size_t bad = 0;
        for (size_t i = 0; i < out.size(); ++i) bad += out[i] != ref[i];
        *exact_total += (int64_t)(out.size() - bad);
        char buf[256];
        std::snprintf(buf, sizeof(buf), "%s zp=%d/%d act=%d prune=%d isa=%s t=%d kind=%s: %zu of %zu differ",
                      L.name.c_str(), in_zp, out_zp, act, prune_mode, kname, threads,
                      KernelKindName(kind), bad, out.size());
        Check(bad == 0, buf);
      }
    }
  }
  unsetenv("NPAS_ISA");
  unsetenv("NPAS_INT8_NO_VBMI");
  unsetenv("NPAS_INT8_AMX");
  unsetenv("NPAS_INT8_LANES");
}

// int8 ADD / SUB / MUL (elementwise_int8.cc: AVX2 on groups of 8 where the CPU has it, scalar
// for the rest) against TFLite's formulas written with RefMbqm, over random scales, zero points,
// activation ranges, lengths and broadcast sides.
static void TestElementwise() {
  auto scale = [] { return (float)std::exp(std::uniform_real_distribution<double>(-7, -1)(rng)); };
  int checked = 0;
  for (int c = 0; c < 400; ++c) {
    const float s1 = scale(), s2 = scale(), so = scale();
    const int z1 = RandInt(-128, 127), z2 = RandInt(-128, 127), zo = RandInt(-128, 127);
    const int lo = RandInt(-128, 0), hi = RandInt(lo, 127);
    const int n = RandInt(1, 70), bcast = RandInt(0, 2), sign = c % 2 ? -1 : 1;
    const int n1 = bcast == 1 ? 1 : n, n2 = bcast == 2 ? 1 : n;
    std::vector<int8_t> a(n1), b(n2), got(n), want(n);
    for (auto& v : a) v = (int8_t)RandInt(-128, 127);
    for (auto& v : b) v = (int8_t)RandInt(-128, 127);
    AddInt8Params ap;
    if (MakeAddInt8Params(s1, z1, s2, z2, so, zo, sign, lo, hi, &ap)) {
      AddInt8(ap, a.data(), n1, b.data(), n2, got.data(), n);
      for (int i = 0; i < n; ++i) {
        const int32_t x = (a[n1 == 1 ? 0 : i] - z1) * (1 << 20);
        const int32_t y = (b[n2 == 1 ? 0 : i] - z2) * (1 << 20);
        const int32_t sum = RefMbqm(x, ap.input1_multiplier, ap.input1_shift) +
                            RefMbqm(y, ap.input2_multiplier, ap.input2_shift);
        const int32_t r = RefMbqm(sum, ap.output_multiplier, ap.output_shift) + zo;
        want[i] = (int8_t)std::min(std::max(r, lo), hi);
      }
      Check(got == want, "ADD/SUB case " + std::to_string(c));
      ++checked;
    } else {
      Check(2.0 * std::max(s1, s2) / ((1 << 20) * (double)so) >= 0.5, "ADD params refused");
    }
    MulInt8Params mp;
    MakeMulInt8Params(s1, z1, s2, z2, so, zo, lo, hi, &mp);
    MulInt8(mp, a.data(), n1, b.data(), n2, got.data(), n);
    for (int i = 0; i < n; ++i) {
      const int32_t prod = (a[n1 == 1 ? 0 : i] - z1) * (b[n2 == 1 ? 0 : i] - z2);
      const int32_t r = RefMbqm(prod, mp.output_multiplier, mp.output_shift) + zo;
      want[i] = (int8_t)std::min(std::max(r, lo), hi);
    }
    Check(got == want, "MUL case " + std::to_string(c));
  }
  Check(checked > 300, "most random ADD scales are accepted");
  // The linear form (AddInt8Params::linear) on the whole domain, all 65536 byte pairs, against
  // TFLite's formulas: random scales, then equal input scales with the output scale a small
  // multiple of them (exact ties, where TFLite's intermediate roundings decide: some of those
  // have no linear form and must keep TFLite's arithmetic).
  std::vector<int8_t> xa(65536), xb(65536), xgot(65536);
  for (int i = 0; i < 65536; ++i) {
    xa[i] = (int8_t)(i >> 8);
    xb[i] = (int8_t)(i & 255);
  }
  int linear = 0, tried = 0;
  for (int c = 0; c < 64; ++c) {
    float s1 = scale(), s2 = scale(), so = scale();
    if (c >= 40) {
      s2 = s1;
      so = s1 * (float)(2 + c % 11);
    }
    const int z1 = RandInt(-128, 127), z2 = RandInt(-128, 127), zo = RandInt(-128, 127);
    const int lo = c % 4 ? -128 : RandInt(-128, 0), hi = c % 4 ? 127 : RandInt(lo, 127);
    AddInt8Params ap;
    if (!MakeAddInt8Params(s1, z1, s2, z2, so, zo, c % 2 ? -1 : 1, lo, hi, &ap)) continue;
    FitLinearAdd(&ap);
    ++tried;
    linear += ap.linear;
    AddInt8(ap, xa.data(), 65536, xb.data(), 65536, xgot.data(), 65536);
    int bad = 0;
    for (int i = 0; i < 65536; ++i) {
      const int32_t sum = RefMbqm((xa[i] - z1) * (1 << 20), ap.input1_multiplier, ap.input1_shift) +
                          RefMbqm((xb[i] - z2) * (1 << 20), ap.input2_multiplier, ap.input2_shift);
      const int32_t r = RefMbqm(sum, ap.output_multiplier, ap.output_shift) + zo;
      bad += xgot[i] != (int8_t)std::min(std::max(r, lo), hi);
    }
    Check(bad == 0, "ADD/SUB on all byte pairs, case " + std::to_string(c) +
                        (ap.linear ? " (linear)" : "") + ": " + std::to_string(bad) + " differ");
  }
  std::printf("  ADD/SUB linear form exact for %d of %d scales\n", linear, tried);
  Check(linear * 2 > tried, "the linear form fits most ADD scales");
  Check(linear < tried, "some ADD scales keep TFLite's arithmetic");
  // SUB's negated multiplier: x - x is zero_point for any x.
  AddInt8Params sub;
  Check(MakeAddInt8Params(0.02f, 3, 0.02f, 3, 0.05f, -7, -1, -128, 127, &sub), "SUB params");
  std::vector<int8_t> x(37), out(37);
  for (int i = 0; i < 37; ++i) x[i] = (int8_t)(i * 7 - 128);
  AddInt8(sub, x.data(), 37, x.data(), 37, out.data(), 37);
  bool zero = true;
  for (int8_t v : out) zero &= v == -7;
  Check(zero, "SUB of a tensor from itself");
  // Table lookups (AVX2 on groups of 32) against indexing the table, every byte value included.
  std::vector<int8_t> table(256);
  for (auto& v : table) v = (int8_t)RandInt(-128, 127);
  for (int n : {1, 31, 32, 256, 300}) {
    std::vector<int8_t> in(n), got(n);
    for (int i = 0; i < n; ++i) in[i] = (int8_t)(n >= 256 ? i - 128 : RandInt(-128, 127));
    LookupInt8(table.data(), in.data(), got.data(), n);
    bool same = true;
    for (int i = 0; i < n; ++i) same &= got[i] == table[(uint8_t)in[i]];
    Check(same, "table lookup of " + std::to_string(n) + " values");
  }
}

int main() {
  TestMultiplier();
  TestElementwise();
  const Isa best = DetectIsa();
  g_isas = {{Isa::kScalar, false}};
  if (best == Isa::kAvx2 || best == Isa::kAvx512) {
    g_isas.push_back({Isa::kAvx2, false});
    g_isas.push_back({Isa::kAvx2, false, false, true});
  }
  if (best == Isa::kAvx512) {
    g_isas.push_back({Isa::kAvx512, false});
    setenv("NPAS_ISA", "avx512", 1);
    if (internal::SelectRowBlockInt8().windows) g_isas.push_back({Isa::kAvx512, true});
#if defined(__x86_64__) || defined(__i386__)
    if (internal::CpuHasAmxInt8()) g_isas.push_back({Isa::kAvx512, false, true});
#endif
  }
  if (best == Isa::kNeon) g_isas.push_back({Isa::kNeon, false});
  std::printf("int8 kernels tested:");
  for (const Forced& f : g_isas) {
    Force(f);
    std::printf(" %s", KernelName(f));
  }
  std::printf("\nint8 depthwise kernels tested:");
  for (const Forced& f : g_isas)
    if (!f.no_vbmi && !f.amx && !f.lanes) {
      Force(f);
      std::printf(" %s", internal::SelectDepthwiseInt8().name);
    }
  unsetenv("NPAS_ISA");
  unsetenv("NPAS_INT8_NO_VBMI");
  unsetenv("NPAS_INT8_AMX");
  unsetenv("NPAS_INT8_LANES");
  std::printf("\n");
  std::vector<Layer> layers;
  auto add = [&](Layer l) { layers.push_back(l); };
  Layer fc; fc.name = "fc 40x70 b3"; fc.fc = true; fc.n = 3; fc.cin = 70; fc.cout = 40; add(fc);
  Layer fc1 = fc; fc1.name = "fc 33x64 b1"; fc1.n = 1; fc1.cin = 64; fc1.cout = 33; add(fc1);
  Layer fc2 = fc1; fc2.name = "fc 150x44 b1 (two chunks of row groups)"; fc2.cin = 44; fc2.cout = 150; add(fc2);
  // >= kOnePixelInt8WeightBytes of int16 weights: the AVX2 one-pixel path reads them as int8
  Layer fc3 = fc1; fc3.name = "fc 136x1030 b1 (int8 weights)"; fc3.cin = 1030; fc3.cout = 136; add(fc3);
  Layer c1; c1.name = "conv1x1 24->40 7x9"; c1.h = 7; c1.w = 9; c1.cin = 24; c1.cout = 40; add(c1);
  Layer c3; c3.name = "conv3x3 same 16->20 8x8"; c3.h = 8; c3.w = 8; c3.cin = 16; c3.cout = 20; c3.kh = c3.kw = 3; c3.same = true; add(c3);
  Layer c3s = c3; c3s.name = "conv3x3 s2 same 12->32 9x7"; c3s.h = 9; c3s.w = 7; c3s.cin = 12; c3s.cout = 32; c3s.sh = c3s.sw = 2; add(c3s);
  Layer c3v = c3; c3v.name = "conv3x3 valid 3->17 9x9 n2"; c3v.same = false; c3v.h = c3v.w = 9; c3v.cin = 3; c3v.cout = 17; c3v.n = 2; add(c3v);
  Layer c3w = c3; c3w.name = "conv3x3 same 80->24 5x6 (windows across taps)"; c3w.h = 5; c3w.w = 6; c3w.cin = 80; c3w.cout = 24; add(c3w);
  // Layers the AMX kernel takes (grid geometry: stride 1, cin % 4 == 0, >= 16 pixels): several
  // super-tiles and a partial one, cin not a multiple of 64, 2 images, a FC batch of 20.
  Layer a3 = c3; a3.name = "conv3x3 same 36->40 11x13 n2 (amx)"; a3.h = 11; a3.w = 13; a3.cin = 36; a3.cout = 40; a3.n = 2; add(a3);
  Layer a1 = c1; a1.name = "conv1x1 132->24 9x10 (amx)"; a1.h = 9; a1.w = 10; a1.cin = 132; a1.cout = 24; add(a1);
  Layer af = fc; af.name = "fc 50x68 b20 (amx)"; af.n = 20; af.cin = 68; af.cout = 50; add(af);
  // Grid layers the pixel-lane kernel takes besides the AMX ones: cin not a multiple of 16 or
  // 4, a valid 5x5 conv (tiles across row ends).
  Layer l3 = c3; l3.name = "conv3x3 same 3->21 12x17 (lanes)"; l3.h = 12; l3.w = 17; l3.cin = 3; l3.cout = 21; add(l3);
  Layer l5 = c3; l5.name = "conv5x5 valid 18->16 12x20 (lanes)"; l5.same = false; l5.kh = l5.kw = 5; l5.h = 12; l5.w = 20; l5.cin = 18; l5.cout = 16; add(l5);
  Layer l1 = c1; l1.name = "conv1x1 33->7 6x6 (lanes)"; l1.h = 6; l1.w = 6; l1.cin = 33; l1.cout = 7; add(l1);
  Layer dw; dw.name = "dw3x3 same 40 8x8"; dw.depthwise = true; dw.h = dw.w = 8; dw.cin = 40; dw.kh = dw.kw = 3; dw.same = true; add(dw);
  Layer dw5 = dw; dw5.name = "dw5x5 s2 same 64 9x7"; dw5.kh = dw5.kw = 5; dw5.cin = 64; dw5.h = 9; dw5.w = 7; dw5.sh = dw5.sw = 2; add(dw5);
  Layer dw3 = dw; dw3.name = "dw3x3 valid 21 6x6 n2"; dw3.same = false; dw3.cin = 21; dw3.h = dw3.w = 6; dw3.n = 2; add(dw3);
  Layer dw2 = dw; dw2.name = "dw3x3 s2 valid 8x2 9x9"; dw2.same = false; dw2.h = dw2.w = 9; dw2.cin = 8; dw2.dm = 2; dw2.sh = dw2.sw = 2; add(dw2);
  int64_t exact = 0;
  const int zps[3] = {0, -128, 37};
  for (const Layer& L : layers)
    for (int zi = 0; zi < 3; ++zi)
      for (int prune = 0; prune < 4; ++prune)
        RunCase(L, zps[zi], zi == 1 ? -5 : 11, (zi + prune) % 3, prune, prune == 0 ? 1.0 : 0.25, &exact);
  std::printf("int8 outputs compared exactly: %lld\n", (long long)exact);
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
