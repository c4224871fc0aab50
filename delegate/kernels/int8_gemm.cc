// int8 implicit GEMM and depthwise (TFLite full-integer arithmetic): multiplier helpers, packing
// into the int8 row-block format (int8_internal.h), the choice of row-block kernel per ISA,
// runners with thread split, kAuto timing, and the scalar kernels.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <cstdlib>
#include <vector>
#include <string>
#include <mutex>
#include <memory>
#include <map>

#include "kernels/int8_internal.h"

namespace npas {

void QuantizeMultiplier(double real, int32_t* multiplier, int* shift) {
  if (real == 0.0 || !std::isfinite(real)) {
    *multiplier = 0;
    *shift = 0;
    return;
  }
  int e = 0;
  const double q = std::frexp(real, &e);
  int64_t q_fixed = (int64_t)std::llround(q * (double)(1ll << 31));
  if (q_fixed == (1ll << 31)) {
    q_fixed /= 2;
    ++e;
  }
  if (e < -31) {  // everything would be shifted out: TFLite flushes to zero
    e = 0;
    q_fixed = 0;
  }
  *multiplier = (int32_t)q_fixed;
  *shift = e;
}

int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int shift) {
  return internal::RequantInt8(x, multiplier, shift > 0 ? shift : 0, shift > 0 ? 0 : -shift);
}

namespace internal {
namespace {

struct Aligned {
  void* p = nullptr;
  Aligned() = default;
  explicit Aligned(size_t bytes) : p(AlignedAlloc(64, std::max<size_t>(bytes, 64))) {
    if (p) std::memset(p, 0, std::max<size_t>(bytes, 64));
  }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
  Aligned(Aligned&& o) noexcept : p(o.p) { o.p = nullptr; }
  Aligned& operator=(Aligned&& o) noexcept {
    std::swap(p, o.p);
    return *this;
  }
  ~Aligned() { free(p); }
};

double BestMs(const std::function<void()>& fn, double budget_ms, double bar_ms) {
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  fn();
  double best = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  if (best > 3 * bar_ms) return best;
  const int reps = (int)std::min(10.0, std::max(2.0, budget_ms / std::max(best, 1e-3)));
  for (int i = 0; i < reps; ++i) {
    auto a = clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double, std::milli>(clock::now() - a).count());
  }
  return best;
}

// The part of a row-block packing that depends only on the weights, their offsets and the
// kernel: shared by packings of the same weights with other scales, bias or zero points (an
// unrolled int8 RNN's per-step FCs, each with its own output scale).
struct RowBlockWeights {
  std::vector<int32_t> qstart, qmid, qoffs, wbeg, woff, wqend;
  std::vector<uint32_t> qidx;
  Aligned w, w16, w8;
  bool wants_w8 = false;
  size_t wbytes = 0;
  std::vector<int64_t> row_sum;  // sum of each row's weights (folded into the bias)
  std::vector<int8_t> source;    // the weights and offsets packed (the cache compares them)
  std::vector<int32_t> source_offsets;
  bool ok(const RowBlockInt8Kernel& k) const {
    return w.p && (k.input != Int8Input::kS16 || (w16.p && (w8.p || !wants_w8)));
  }
};

std::shared_ptr<const RowBlockWeights> PackRowBlockWeights(const GemmInt8Desc& d, bool sparse,
                                                           const RowBlockInt8Kernel& kernel) {
  auto pw = std::make_shared<RowBlockWeights>();
  RowBlockWeights& P = *pw;
  const int G = (d.rows + 15) / 16;
  P.qstart.assign(G + 1, 0);
  P.qmid.assign(G, 0);
  P.wbeg.assign(G + 1, 0);
  P.row_sum.assign(d.rows, 0);
  P.source.assign(d.weights, d.weights + (size_t)d.rows * d.cols);
  P.source_offsets.assign(d.col_offset, d.col_offset + d.cols);
  for (int r = 0; r < d.rows; ++r)
    for (int k = 0; k < d.cols; ++k) P.row_sum[r] += d.weights[(size_t)r * d.cols + k];
  std::vector<int32_t>& offs = P.qoffs;
  std::vector<uint32_t>& qidx = P.qidx;
  std::vector<int8_t> w;
  std::vector<uint8_t> used(d.cols);
  for (int g = 0; g < G; ++g) {
    const int r0 = g * 16, r1 = std::min(d.rows, r0 + 16);
    for (int k = 0; k < d.cols; ++k) {
      uint8_t u = sparse ? 0 : 1;
      for (int r = r0; r < r1 && !u; ++r) u = d.weights[(size_t)r * d.cols + k] != 0;
      used[k] = u;
    }
    auto push_quad = [&](const int* cols, int n) {
      const int32_t safe = d.col_offset[cols[0]];
      for (int j = 0; j < 4; ++j) offs.push_back(j < n ? d.col_offset[cols[j]] : safe);
      size_t base = w.size();
      w.resize(base + 64, 0);
      for (int l = 0; l < 16; ++l) {
        const int r = r0 + l;
        if (r >= r1) continue;
        for (int j = 0; j < n; ++j) w[base + 4 * l + j] = d.weights[(size_t)r * d.cols + cols[j]];
      }
    };
    // Contiguous quads: runs of 4 columns with consecutive offsets holding enough used
    // columns (dense: any; sparse: >= 2, or all 4 for a window kernel); the rest are gathered.
    const int min_used = !sparse ? 1 : kernel.windows ? 4 : 2;
    std::vector<int> singles;
    int k = 0;
    while (k < d.cols) {
      bool run = k + 3 < d.cols;
      for (int j = 1; j < 4 && run; ++j) run = d.col_offset[k + j] == d.col_offset[k] + j;
      if (run) {
        const int n = used[k] + used[k + 1] + used[k + 2] + used[k + 3];
        if (n >= min_used) {
          int cols4[4] = {k, k + 1, k + 2, k + 3};
          push_quad(cols4, 4);
        } else {
          for (int j = 0; j < 4; ++j)
            if (used[k + j]) singles.push_back(k + j);
        }
        k += 4;
      } else {
        if (used[k]) singles.push_back(k);
        ++k;
      }
    }
    P.qmid[g] = (int32_t)(offs.size() / 4);
    qidx.resize(offs.size() / 4, 0);
    // Gathered quads by window: the singles sorted by offset, cut into windows of columns
    // within kWindowSpan of each other. The cut minimises the kernel's work per pixel, by
    // dynamic programming: 2 per quad (vpermb + vpdpbusd; a window of n columns has
    // ceil(n / 4) quads) + 1 per window load, 2 when the window leaves its 64-aligned block
    // (two cache lines when the pixel base is aligned: cin a multiple of 64, or a FC). At
    // density 1/8 this gives ~77 quads per group of 288 kept columns where fixed aligned
    // blocks give ~86.
    std::stable_sort(singles.begin(), singles.end(),
                     [&](int a, int b) { return d.col_offset[a] < d.col_offset[b]; });
    // A window starts at its 64-aligned block when it fits in one (offsets >= 0: the load
    // must not start before the pixel's data), else at its first column.
    auto in_block = [](int32_t first, int32_t last) {
      return first >= 0 && last - (first & ~(kWindowSpan - 1)) < kWindowSpan;
    };
    auto window_base = [&](int32_t first, int32_t last) {
      return in_block(first, last) ? first & ~(kWindowSpan - 1) : first;
    };
    std::vector<std::pair<size_t, size_t>> windows;  // [i, e) of singles
    {
      const size_t n = singles.size();
      auto off = [&](size_t i) { return d.col_offset[singles[i]]; };
      std::vector<int64_t> best(n + 1, INT64_MAX);
      std::vector<size_t> from(n + 1, 0);
      best[0] = 0;
      for (size_t j = 1; j <= n; ++j)
        for (size_t i = j; i-- > 0 && off(j - 1) - off(i) < kWindowSpan;) {
          const int64_t c = best[i] + 2 * (int64_t)((j - i + 3) / 4) +
                            (in_block(off(i), off(j - 1)) ? 1 : 2);
          if (c < best[j]) best[j] = c, from[j] = i;
        }
      for (size_t j = n; j > 0; j = from[j]) windows.push_back({from[j], j});
      std::reverse(windows.begin(), windows.end());
    }
    for (const auto& win : windows) {
      const int32_t base = window_base(d.col_offset[singles[win.first]],
                                       d.col_offset[singles[win.second - 1]]);
      for (size_t i = win.first; i < win.second;) {
        int cols4[4];
        const int n = (int)std::min<size_t>(4, win.second - i);
        uint32_t idx = 0;
        for (int j = 0; j < 4; ++j) {
          cols4[j] = singles[i + std::min(j, n - 1)];
          idx |= (uint32_t)(d.col_offset[cols4[j]] - base) << (8 * j);
        }
        push_quad(cols4, n);
        qidx.push_back(idx);
        i += n;
      }
      P.woff.push_back(base);
      P.wqend.push_back((int32_t)(offs.size() / 4));
    }
    P.wbeg[g + 1] = (int32_t)P.woff.size();
    P.qstart[g + 1] = (int32_t)(offs.size() / 4);
  }
  P.w = Aligned(w.size());
  if (P.w.p && !w.empty()) std::memcpy(P.w.p, w.data(), w.size());
  P.wbytes = w.size();
  if (kernel.input == Int8Input::kS16) {  // AVX2: int16 copy in vpmaddwd order
    P.w16 = Aligned(w.size() * 2);
    int16_t* w16 = (int16_t*)P.w16.p;
    if (w16)
      for (size_t q = 0; q < w.size() / 64; ++q)
        for (int h = 0; h < 2; ++h)
          for (int pr = 0; pr < 2; ++pr)
            for (int l = 0; l < 8; ++l)
              for (int j = 0; j < 2; ++j)
                w16[64 * q + 32 * h + 16 * pr + 2 * l + j] = w[64 * q + 4 * (8 * h + l) + 2 * pr + j];
    P.wbytes += w.size() * 2;
    // With one pixel every weight is read once per call: from L2 or beyond, bytes are the cost.
    // Large layers also get w16's values as int8 (same order) for the one-pixel path (FC
    // 1024x1024 at 1/8, batch 1, 262 KB of int16: 1.3x faster; the GRU's 12-24 KB FCs: 1-3 %
    // slower, so they keep int16).
    P.wants_w8 = w.size() * 2 >= kOnePixelInt8WeightBytes;
    if (P.wants_w8) {
      P.w8 = Aligned(w.size());
      if (P.w8.p && w16)
        for (size_t i = 0; i < w.size(); ++i) ((int8_t*)P.w8.p)[i] = (int8_t)w16[i];
      P.wbytes += w.size();
    }
  }
  return pw;
}

// PackRowBlockWeights through a process-wide cache of the packings still in use, keyed by the
// weights, offsets, sparsity and kernel.
std::shared_ptr<const RowBlockWeights> SharedRowBlockWeights(const GemmInt8Desc& d, bool sparse,
                                                             const RowBlockInt8Kernel& kernel) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<const RowBlockWeights>> cache;
  uint64_t h = Fnv1a(d.weights, (size_t)d.rows * d.cols);
  h = Fnv1a(d.col_offset, sizeof(int32_t) * d.cols, h);
  const std::string key = std::to_string(h) + ":" + std::to_string(d.rows) + "x" +
                          std::to_string(d.cols) + ":" + (sparse ? "s" : "d") + ":" + kernel.name;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end())
    if (auto p = it->second.lock())  // the key holds a hash: compare the bytes too
      if (std::equal(p->source.begin(), p->source.end(), d.weights) &&
          std::equal(p->source_offsets.begin(), p->source_offsets.end(), d.col_offset))
        return p;
  for (auto e = cache.begin(); e != cache.end();)  // drop the expired ones
    e = e->second.expired() ? cache.erase(e) : std::next(e);
  auto p = PackRowBlockWeights(d, sparse, kernel);
  if (p->ok(kernel)) cache[key] = p;
  return p;
}

class RowBlockInt8 : public PackedGemmInt8 {
 public:
  RowBlockInt8(const GemmInt8Desc& d, bool sparse, StructureInfo info) : info_(info) {
    sparse_ = sparse;
    kernel_ = SelectRowBlockInt8();
    weights_ = SharedRowBlockWeights(d, sparse, kernel_);
    const RowBlockWeights& P = *weights_;
    const int64_t zero = d.input_zp + (kernel_.input == Int8Input::kU8 ? 128 : 0);
    const int G = (d.rows + 15) / 16;
    bias_ = Aligned(sizeof(int32_t) * G * 16);
    mult_ = Aligned(sizeof(int32_t) * G * 16);
    lsh_ = Aligned(sizeof(int32_t) * G * 16);
    rsh_ = Aligned(sizeof(int32_t) * G * 16);
    if (!ok()) return;
    int32_t* bias = (int32_t*)bias_.p;
    int32_t* mult = (int32_t*)mult_.p;
    int32_t* lsh = (int32_t*)lsh_.p;
    int32_t* rsh = (int32_t*)rsh_.p;
    for (int r = 0; r < d.rows; ++r) {  // rows past d.rows stay 0 (Aligned zeroes)
      bias[r] = (int32_t)((d.bias ? d.bias[r] : 0) - zero * P.row_sum[r]);
      mult[r] = d.multiplier[r];
      lsh[r] = d.shift[r] > 0 ? d.shift[r] : 0;
      rsh[r] = d.shift[r] > 0 ? 0 : -d.shift[r];
    }
    v_.rows = d.rows;
    v_.ngroups = G;
    v_.qstart = P.qstart.data();
    v_.qmid = P.qmid.data();
    v_.qoffs = P.qoffs.data();
    v_.w = (const int8_t*)P.w.p;
    v_.w16 = (const int16_t*)P.w16.p;
    v_.w8 = (const int8_t*)P.w8.p;
    v_.wbeg = P.wbeg.data();
    v_.woff = P.woff.data();
    v_.wqend = P.wqend.data();
    v_.qidx = P.qidx.data();
    v_.bias = bias;
    v_.mult = mult;
    v_.lshift = lsh;
    v_.rshift = rsh;
    v_.out_zp = d.output_zp;
    v_.act_min = d.act_min;
    v_.act_max = d.act_max;
  }

  bool ok() const {
    return weights_ && weights_->ok(kernel_) && bias_.p && mult_.p && lsh_.p && rsh_.p;
  }
  KernelKind kind() const override { return sparse_ ? KernelKind::kRowBlock : KernelKind::kDense; }
  Int8Input input() const { return kernel_.input; }
  StructureInfo structure() const override { return info_; }
  Isa isa() const override { return kernel_.isa; }
  // The shared weights counted in each packing that uses them.
  size_t packed_bytes() const override {
    const RowBlockWeights& P = *weights_;
    return P.wbytes + P.qoffs.size() * 4 + P.qidx.size() * 4 +
           (P.qstart.size() + P.qmid.size() + P.wbeg.size() + 2 * P.woff.size()) * 4 +
           (size_t)v_.ngroups * 16 * 16;
  }
  size_t quads() const { return weights_->qoffs.size() / 4; }

  void Run(const int8_t* in, int64_t in_elems, const int32_t* pixel_base, int num_pixels,
           int8_t* out, ThreadPool* pool, int num_threads) const override {
    if (num_pixels <= 0) return;
    // The input in the kernel's encoding: per-call scratch, thread_local so concurrent nodes do
    // not share it (kS8 reads `in` itself).
    static thread_local std::vector<uint8_t> u8;
    static thread_local std::vector<int16_t> s16;
    const void* src = in;
    if (kernel_.input == Int8Input::kU8) {
      // 64-byte aligned, so windows at multiples of 64 from a 64-aligned pixel never split lines.
      const size_t need = (size_t)in_elems + kWindowSlack + 64;
      if (u8.size() < need) u8.resize(need);
      uint8_t* dst = (uint8_t*)(((uintptr_t)u8.data() + 63) & ~(uintptr_t)63);
#if defined(__x86_64__) || defined(__i386__)
      ToU8Avx512(in, dst, in_elems);  // kU8 = a VNNI kernel: the CPU has AVX-512BW
#else
      for (int64_t i = 0; i < in_elems; ++i) dst[i] = (uint8_t)in[i] ^ 0x80u;
#endif
      src = dst;
    } else if (kernel_.input == Int8Input::kS16) {
      if (s16.size() < (size_t)in_elems) s16.resize((size_t)in_elems);
      for (int64_t i = 0; i < in_elems; ++i) s16[i] = in[i];
      src = s16.data();
    }
    const RowBlockInt8Fn fn = kernel_.fn;
    const int G = v_.ngroups, T = kInt8PixelTile;
    const int ptiles = (num_pixels + T - 1) / T;
    if (num_threads > 1 && !pool) num_threads = 1;
    if (num_threads <= 1) {
      fn(v_, src, pixel_base, 0, num_pixels, 0, G, out);
      return;
    }
    int tasks_p = std::max(1, std::min(ptiles, num_threads * 2)), tasks_g = 1;
    if (ptiles < num_threads * 2) tasks_g = std::max(1, std::min(G, num_threads * 2 / tasks_p));
    pool->ParallelFor(tasks_p * tasks_g, num_threads, [&](int t) {
      const int tp = t / tasks_g, tg = t % tasks_g;
      const int p0 = (int)((int64_t)ptiles * tp / tasks_p) * T;
      const int p1 = std::min(num_pixels, (int)((int64_t)ptiles * (tp + 1) / tasks_p) * T);
      const int g0 = (int)((int64_t)G * tg / tasks_g), g1 = (int)((int64_t)G * (tg + 1) / tasks_g);
      if (p0 < p1 && g0 < g1) fn(v_, src, pixel_base, p0, p1, g0, g1, out);
    });
  }

 private:
  StructureInfo info_;
  bool sparse_ = false;
  RowBlockInt8Kernel kernel_;
  std::shared_ptr<const RowBlockWeights> weights_;
  Aligned bias_, mult_, lsh_, rsh_;
  RowBlockInt8View v_;
};

#if defined(__x86_64__) || defined(__i386__)
// The grid geometry of the planar kernels: every column is a tap shift (a multiple of cin) plus
// its channel and every pixel base a multiple of cin, so each input element sits at grid
// position offset / cin and a stride-1 conv's neighbouring pixels are neighbouring positions.
struct GridMap {
  int taps = 0;
  int64_t positions = 0;           // in_elems / cin
  std::vector<int32_t> tap_shift;  // [taps], in grid positions
  int32_t max_shift = 0;
  std::vector<int32_t> at;         // grid position -> pixel, or -1
  int64_t gmin = 0, gmax = -1;     // first and last position holding a pixel
};

// False when the layer is not a grid layer.
bool MakeGridMap(const GemmInt8Desc& d, int num_pixels, const int32_t* pixel_base,
                 int64_t in_elems, GridMap* m) {
  const int cin = d.cin;
  if (cin <= 0 || d.cols % cin != 0 || in_elems % cin != 0 || in_elems / cin > INT32_MAX / 2)
    return false;
  m->taps = d.cols / cin;
  m->positions = in_elems / cin;
  m->tap_shift.assign(m->taps, 0);
  for (int t = 0; t < m->taps; ++t) {
    const int32_t o = d.col_offset[(size_t)t * cin];
    if (o < 0 || o % cin != 0) return false;
    for (int c = 1; c < cin; ++c)
      if (d.col_offset[(size_t)t * cin + c] != o + c) return false;
    m->tap_shift[t] = o / cin;
    m->max_shift = std::max(m->max_shift, m->tap_shift[t]);
  }
  m->at.assign((size_t)m->positions, -1);
  m->gmin = m->positions;
  m->gmax = -1;
  for (int p = 0; p < num_pixels; ++p) {
    const int32_t b = pixel_base[p];
    if (b < 0 || b % cin != 0 || b / cin >= m->positions || m->at[b / cin] >= 0) return false;
    m->at[b / cin] = p;
    m->gmin = std::min<int64_t>(m->gmin, b / cin);
    m->gmax = std::max<int64_t>(m->gmax, b / cin);
  }
  return m->gmax >= 0;
}

// What the planar int8 kernels (AMX, pixel lanes) share. Each is packed for one pixel map, the
// node's (a Run with another goes to the row-block packing of the same weights, `fallback`), and
// per call copies the input into channel planes, then runs tiles of 16 grid positions x groups
// of 16 rows, both steps split over the threads.
class PlanarInt8 : public PackedGemmInt8 {
 public:
  // Gives the row-block packing back (when the planar one lost the timing).
  std::unique_ptr<RowBlockInt8> TakeFallback() { return std::move(fallback_); }
  const RowBlockInt8* fallback() const { return fallback_.get(); }
  KernelKind kind() const override { return fallback_->kind(); }
  StructureInfo structure() const override { return fallback_->structure(); }

  void Run(const int8_t* in, int64_t in_elems, const int32_t* pixel_base, int num_pixels,
           int8_t* out, ThreadPool* pool, int num_threads) const override {
    if (num_pixels <= 0) return;
    if (in_elems != in_elems_ || (size_t)num_pixels != pixel_base_.size() ||
        std::memcmp(pixel_base, pixel_base_.data(), sizeof(int32_t) * num_pixels) != 0) {
      fallback_->Run(in, in_elems, pixel_base, num_pixels, out, pool, num_threads);
      return;
    }
    void* planes = Scratch();
    if (num_threads > 1 && !pool) num_threads = 1;
    const int T = ntiles_, G = ngroups_;
    if (num_threads <= 1) {
      ToPlanar(in, 0, grid_, planes);
      Tiles(planes, 0, T, 0, G, out);
      return;
    }
    const int64_t blocks = (grid_ + 15) / 16;
    pool->ParallelFor(num_threads, num_threads, [&](int i) {
      const int64_t b0 = blocks * i / num_threads, b1 = blocks * (i + 1) / num_threads;
      ToPlanar(in, b0 * 16, std::min(grid_, b1 * 16), planes);
    });
    int tasks_t = std::max(1, std::min(T, num_threads * 2)), tasks_g = 1;
    if (T < num_threads * 2) tasks_g = std::max(1, std::min(G, num_threads * 2 / tasks_t));
    pool->ParallelFor(tasks_t * tasks_g, num_threads, [&](int k) {
      const int a = k / tasks_g, b = k % tasks_g;
      const int t0 = (int)((int64_t)T * a / tasks_t), t1 = (int)((int64_t)T * (a + 1) / tasks_t);
      const int g0 = (int)((int64_t)G * b / tasks_g), g1 = (int)((int64_t)G * (b + 1) / tasks_g);
      if (t0 < t1 && g0 < g1) Tiles(planes, t0, t1, g0, g1, out);
    });
  }

 protected:
  // This thread's planar scratch, ready for ToPlanar (thread_local: concurrent nodes do not
  // share it).
  virtual void* Scratch() const = 0;
  // Grid positions [p0, p1) of the input into the planes.
  virtual void ToPlanar(const int8_t* in, int64_t p0, int64_t p1, void* planes) const = 0;
  // Tiles [t0, t1) x row groups [g0, g1) of the output.
  virtual void Tiles(const void* planes, int t0, int t1, int g0, int g1, int8_t* out) const = 0;

  // Ends Make: the pixel map packed for, the tile and group counts, the fallback.
  void Adopt(const int32_t* pixel_base, int num_pixels, int64_t in_elems, int ntiles,
             int ngroups, std::unique_ptr<RowBlockInt8>* fallback) {
    pixel_base_.assign(pixel_base, pixel_base + num_pixels);
    in_elems_ = in_elems;
    ntiles_ = ntiles;
    ngroups_ = ngroups;
    fallback_ = std::move(*fallback);
  }

  int cin_ = 0;
  int64_t grid_ = 0, plane_ = 0;  // positions in the grid; elements per plane
  std::unique_ptr<RowBlockInt8> fallback_;

 private:
  int ntiles_ = 0, ngroups_ = 0;
  int64_t in_elems_ = 0;
  std::vector<int32_t> pixel_base_;
};

// The AMX-INT8 kernel (int8_internal.h, AmxInt8View) for the layers it fits: a grid geometry
// (every column = tap offset + channel, cin % 4 == 0, pixel bases multiples of cin, at most 1.5x
// the pixels computed on the grid's 16-position tiles: stride-1 convs, 1x1 convs, FC batches of
// >= 16). Holds the VNNI packing of the same weights (`fallback`) for Run calls with another
// pixel map than the one packed for.
class AmxInt8 : public PlanarInt8 {
 public:
  // Returns null when the layer does not fit (then `fallback` is handed back untouched).
  static std::unique_ptr<AmxInt8> Make(const GemmInt8Desc& d, bool sparse, int num_pixels,
                                       const int32_t* pixel_base, int64_t in_elems,
                                       std::unique_ptr<RowBlockInt8>* fallback) {
    const int cin = d.cin;
    GridMap grid;
    if (!CpuHasAmxInt8() || DetectIsa() != Isa::kAvx512 || num_pixels < 16 || cin <= 0 ||
        cin % 4 != 0 || !MakeGridMap(d, num_pixels, pixel_base, in_elems, &grid) ||
        grid.positions > INT32_MAX / 8)
      return nullptr;
    const int taps = grid.taps;
    const int64_t G = grid.positions;
    const std::vector<int32_t>& tapg = grid.tap_shift;
    const int32_t maxd = grid.max_shift;
    const std::vector<int32_t>& at = grid.at;  // grid position -> pixel
    const int64_t gmin = grid.gmin, gmax = grid.gmax;
    std::unique_ptr<AmxInt8> m(new AmxInt8());
    for (int64_t s = gmin; s <= gmax; s += 64) {
      int nsub = 0;
      for (int k = 0; k < 4; ++k) {
        bool any = false;
        for (int64_t i = s + 16 * k; i < std::min(s + 16 * k + 16, gmax + 1); ++i) any |= at[i] >= 0;
        if (any) nsub = k + 1;
      }
      if (nsub == 0) continue;
      m->tile_start_.push_back((int32_t)s);
      m->tile_nsub_.push_back(nsub);
      for (int64_t i = s; i < s + 64; ++i)
        m->tile_pix_.push_back(i <= gmax && i < s + 16 * nsub ? at[i] : -1);
    }
    int64_t computed = 0;
    for (int n : m->tile_nsub_) computed += 16 * n;
    if (computed > 1.5 * num_pixels + 16) return nullptr;
    m->cin_ = cin;
    m->grid_ = G;
    // Bytes per plane: every position a super-tile reads (start + 64 + the largest tap shift).
    // The stride is 9 cache lines modulo 4 KB: planes at multiples of 4 KB would all map to the
    // same L1 sets, and a super-tile reads the same few lines of every plane.
    m->plane_ = ((std::max<int64_t>(G, gmax + 64 + maxd) + 15) / 16 + 1) * 64;
    m->plane_ += ((9 - (m->plane_ / 64) % 64) + 64) % 64 * 64;
    const int cq_n = cin / 4, G16 = (d.rows + 15) / 16;
    const int64_t zero = d.input_zp + 128;  // u8 input
    m->cstart_.assign(G16 + 1, 0);
    std::vector<int8_t> a;
    auto weight = [&](int r, int t, int c) { return d.weights[(size_t)r * d.cols + (size_t)t * cin + c]; };
    for (int g = 0; g < G16; ++g) {
      const int r0 = g * 16, r1 = std::min(d.rows, r0 + 16);
      // Rows of 4 slots: (tap, channel) per slot, channel % 4 == slot; -1 = empty.
      std::vector<std::array<std::pair<int, int>, 4>> rowsv;
      std::vector<std::pair<int, int>> singles[4];
      // Direct chunks: a tap's block of 16 planes (64 channels) where the group keeps >= 16
      // columns is read by tileloadd straight from the planar input (row stride = the plane):
      // a gathered row costs about as much as 4 tdpbsud rows, so from 16 of 64 columns on the
      // whole block is cheaper. Dense layers are all direct chunks (when cin % 64 == 0).
      std::vector<uint8_t> direct((size_t)taps * (cq_n / 16), 0);
      for (int t = 0; t < taps; ++t)
        for (int b = 0; b < cq_n / 16; ++b) {
          int kept = 0;
          for (int c = 64 * b; c < 64 * b + 64; ++c) {
            bool used = !sparse;
            for (int r = r0; r < r1 && !used; ++r) used = weight(r, t, c) != 0;
            kept += used;
          }
          if (kept < 16) continue;
          direct[(size_t)t * (cq_n / 16) + b] = 1;
          a.resize(a.size() + 1024, 0);
          const size_t abase = a.size() - 1024;
          for (int r = r0; r < r1; ++r)
            for (int c = 0; c < 64; ++c) a[abase + 64 * (r - r0) + c] = weight(r, t, 64 * b + c);
          const int32_t off = (int32_t)(16 * b * m->plane_ + 4 * tapg[t]);
          for (int i = 0; i < 64; ++i) m->boff_.push_back(off);
          m->cdirect_.push_back(off);
        }
      const bool any_direct = (int64_t)a.size() / 1024 > m->cstart_[g];
      for (int t = 0; t < taps; ++t)
        for (int q = 0; q < cq_n; ++q) {
          if (q / 16 < cq_n / 16 && direct[(size_t)t * (cq_n / 16) + q / 16]) continue;
          int n = 0;
          bool used[4];
          for (int j = 0; j < 4; ++j) {
            used[j] = !sparse;
            for (int r = r0; r < r1 && !used[j]; ++r) used[j] = weight(r, t, 4 * q + j) != 0;
            n += used[j];
          }
          if (n >= 2) {
            std::array<std::pair<int, int>, 4> row;
            for (int j = 0; j < 4; ++j) row[j] = used[j] ? std::make_pair(t, 4 * q + j) : std::make_pair(-1, -1);
            rowsv.push_back(row);
          } else if (n == 1) {
            for (int j = 0; j < 4; ++j)
              if (used[j]) singles[j].push_back({t, 4 * q + j});
          }
        }
      // Singles into empty slots of the rows above, then into new rows.
      for (int j = 0; j < 4; ++j) {
        size_t k = 0;
        for (auto& row : rowsv) {
          if (k == singles[j].size()) break;
          if (row[j].first < 0) row[j] = singles[j][k++];
        }
        for (size_t r = 0; k < singles[j].size(); ++r) {
          if (r == rowsv.size()) {
            std::array<std::pair<int, int>, 4> empty;
            empty.fill({-1, -1});
            rowsv.push_back(empty);
          }
          if (rowsv[r][j].first < 0) rowsv[r][j] = singles[j][k++];
        }
      }
      const size_t nrows =
          any_direct ? (rowsv.size() + 15) / 16 * 16 : std::max<size_t>(16, (rowsv.size() + 15) / 16 * 16);
      for (size_t i = 0; i < nrows; ++i) {
        if (i % 16 == 0) {
          a.resize(a.size() + 1024, 0);
          m->cdirect_.push_back(-1);
        }
        const size_t abase = a.size() - 1024;
        int32_t any_off = 0;  // an empty slot reads a valid place (its weight is 0)
        if (i < rowsv.size())
          for (int j = 0; j < 4; ++j)
            if (rowsv[i][j].first >= 0) {
              any_off = (int32_t)((rowsv[i][j].second / 4) * m->plane_ + 4 * tapg[rowsv[i][j].first]);
              break;
            }
        for (int j = 0; j < 4; ++j) {
          const bool real = i < rowsv.size() && rowsv[i][j].first >= 0;
          if (!real) {
            m->boff_.push_back(any_off);
            continue;
          }
          const int t = rowsv[i][j].first, c = rowsv[i][j].second;
          m->boff_.push_back((int32_t)((c / 4) * m->plane_ + 4 * tapg[t]));
          for (int r = r0; r < r1; ++r) a[abase + 64 * (r - r0) + 4 * (i % 16) + j] = weight(r, t, c);
        }
      }
      m->cstart_[g + 1] = (int32_t)(a.size() / 1024);
    }
    if ((int64_t)cq_n * m->plane_ > INT32_MAX - 64) return nullptr;
    m->a_ = Aligned(a.size());
    if (!m->a_.p) return nullptr;
    if (!a.empty()) std::memcpy(m->a_.p, a.data(), a.size());
    for (auto* v : {&m->bias_, &m->mult_, &m->lsh_, &m->rsh_}) *v = Aligned(sizeof(int32_t) * G16 * 16);
    int32_t* bias = (int32_t*)m->bias_.p;
    for (int r = 0; r < d.rows; ++r) {
      int64_t sum = 0;
      for (int k = 0; k < d.cols; ++k) sum += d.weights[(size_t)r * d.cols + k];
      bias[r] = (int32_t)((d.bias ? d.bias[r] : 0) - zero * sum);
      ((int32_t*)m->mult_.p)[r] = d.multiplier[r];
      ((int32_t*)m->lsh_.p)[r] = d.shift[r] > 0 ? d.shift[r] : 0;
      ((int32_t*)m->rsh_.p)[r] = d.shift[r] > 0 ? 0 : -d.shift[r];
    }
    AmxInt8View& v = m->v_;
    v.rows = d.rows;
    v.ngroups = G16;
    v.ntiles = (int)m->tile_start_.size();
    v.cstart = m->cstart_.data();
    v.a = (const int8_t*)m->a_.p;
    v.boff = m->boff_.data();
    v.cdirect = m->cdirect_.data();
    v.plane = m->plane_;
    v.tile_start = m->tile_start_.data();
    v.tile_nsub = m->tile_nsub_.data();
    v.tile_pix = m->tile_pix_.data();
    v.bias = bias;
    v.mult = (const int32_t*)m->mult_.p;
    v.lshift = (const int32_t*)m->lsh_.p;
    v.rshift = (const int32_t*)m->rsh_.p;
    v.out_zp = d.output_zp;
    v.act_min = d.act_min;
    v.act_max = d.act_max;
    m->abytes_ = a.size();
    m->Adopt(pixel_base, num_pixels, in_elems, v.ntiles, v.ngroups, fallback);
    return m;
  }

  Isa isa() const override { return Isa::kAvx512; }
  size_t packed_bytes() const override {
    return abytes_ + boff_.size() * 4 + (size_t)v_.ngroups * 16 * 16 + fallback_->packed_bytes();
  }

 protected:
  // u8 planes, 4 channels interleaved per position, 64-byte aligned. Positions past the grid are
  // never read for a stored output; they start as zeros.
  void* Scratch() const override {
    static thread_local std::vector<uint8_t> planar;
    const size_t need = (size_t)(cin_ / 4) * plane_ + 128;
    if (planar.size() < need) planar.resize(need);
    return (void*)(((uintptr_t)planar.data() + 63) & ~(uintptr_t)63);
  }
  void ToPlanar(const int8_t* in, int64_t p0, int64_t p1, void* planes) const override {
    ToPlanarU8Avx512(in, p0, p1, cin_, (uint8_t*)planes, plane_);
  }
  void Tiles(const void* planes, int t0, int t1, int g0, int g1, int8_t* out) const override {
    RowBlockInt8Amx(v_, (const uint8_t*)planes, t0, t1, g0, g1, out);
  }

 private:
  AmxInt8() = default;
  std::vector<int32_t> cstart_, boff_, cdirect_, tile_start_, tile_nsub_, tile_pix_;
  Aligned a_, bias_, mult_, lsh_, rsh_;
  size_t abytes_ = 0;
  AmxInt8View v_;
};

// The AVX2 pixel-lane kernel (int8_internal.h, LanesInt8View) for grid layers with at most 1.5x
// the pixels computed on 16-position tiles. Holds the row-block packing (`fallback`) for Run
// calls with another pixel map than the one packed for.
class LanesInt8 : public PlanarInt8 {
 public:
  // Returns null when the layer does not fit (then `fallback` is handed back untouched).
  static std::unique_ptr<LanesInt8> Make(const GemmInt8Desc& d, bool sparse, int num_pixels,
                                         const int32_t* pixel_base, int64_t in_elems,
                                         std::unique_ptr<RowBlockInt8>* fallback) {
    GridMap grid;
    if ((*fallback)->input() != Int8Input::kS16 || num_pixels < kLaneTile ||
        !MakeGridMap(d, num_pixels, pixel_base, in_elems, &grid))
      return nullptr;
    const int T = kLaneTile, cin = d.cin;
    std::unique_ptr<LanesInt8> m(new LanesInt8());
    for (int64_t s = grid.gmin; s <= grid.gmax; s += T) {
      bool any = false;
      for (int64_t i = s; i < std::min(s + T, grid.gmax + 1); ++i) any |= grid.at[i] >= 0;
      if (!any) continue;
      m->tile_start_.push_back((int32_t)s);
      for (int64_t i = s; i < s + T; ++i) m->tile_pix_.push_back(i <= grid.gmax ? grid.at[i] : -1);
    }
    if ((double)m->tile_start_.size() * T > 1.5 * num_pixels + T) return nullptr;
    // Elements per plane: every position a tile reads (the last tile's end + the largest shift),
    // the stride kept off multiples of 4 KB (planes would share L1 sets) as for AMX.
    m->read_end_ = std::max<int64_t>(grid.positions, grid.gmax + T + grid.max_shift);
    m->plane_ = ((m->read_end_ + 31) / 32 + 1) * 32;
    m->plane_ += ((9 - (m->plane_ / 32) % 64) + 64) % 64 * 32;
    if ((int64_t)cin * m->plane_ > INT32_MAX - T) return nullptr;
    m->cin_ = cin;
    m->grid_ = grid.positions;
    const int G = (d.rows + 15) / 16;
    auto weight = [&](int r, int k) { return d.weights[(size_t)r * d.cols + k]; };
    m->cstart_.assign(G + 1, 0);
    m->pstart_.push_back(0);
    std::vector<int> kept;
    for (int g = 0; g < G; ++g) {
      const int r0 = g * 16, nl = std::min(16, d.rows - r0);
      // Chunks of kLaneRows rows and one of the rest (16 rows: 6 + 6 + 4; the kernel has
      // register-allocated forms for 6 and 4).
      for (int row = 0; row < nl;) {
        const int n = std::min(kLaneRows, nl - row);
        kept.clear();
        for (int k = 0; k < d.cols; ++k) {
          bool used = !sparse;
          for (int r = r0 + row; r < r0 + row + n && !used; ++r) used = weight(r, k) != 0;
          if (used) kept.push_back(k);
        }
        for (size_t i = 0; i < kept.size(); i += 2) {
          const int k1 = kept[i], k2 = i + 1 < kept.size() ? kept[i + 1] : kept[i];
          for (int k : {k1, k2})
            m->poff_.push_back((int32_t)((k % cin) * m->plane_ + grid.tap_shift[k / cin]));
          for (int r = 0; r < kLaneRows; ++r) {
            int32_t pair = 0;
            if (r < n) {
              const int16_t lo = weight(r0 + row + r, k1);
              const int16_t hi = k2 != k1 ? weight(r0 + row + r, k2) : 0;
              pair = (int32_t)((uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16));
            }
            m->pw_.push_back(pair);
          }
        }
        m->crow_.push_back(row);
        m->cnum_.push_back(n);
        m->pstart_.push_back((int32_t)(m->poff_.size() / 2));
        row += n;
      }
      m->cstart_[g + 1] = (int32_t)m->crow_.size();
    }
    for (auto* v : {&m->bias_, &m->mult_, &m->lsh_, &m->rsh_}) v->assign((size_t)G * 16, 0);
    for (int r = 0; r < d.rows; ++r) {
      int64_t sum = 0;
      for (int k = 0; k < d.cols; ++k) sum += weight(r, k);
      m->bias_[r] = (int32_t)((d.bias ? d.bias[r] : 0) - (int64_t)d.input_zp * sum);
      m->mult_[r] = d.multiplier[r];
      m->lsh_[r] = d.shift[r] > 0 ? d.shift[r] : 0;
      m->rsh_[r] = d.shift[r] > 0 ? 0 : -d.shift[r];
    }
    LanesInt8View& v = m->v_;
    v.rows = d.rows;
    v.ngroups = G;
    v.ntiles = (int)m->tile_start_.size();
    v.cstart = m->cstart_.data();
    v.crow = m->crow_.data();
    v.cnum = m->cnum_.data();
    v.pstart = m->pstart_.data();
    v.poff = m->poff_.data();
    v.pw = m->pw_.data();
    v.tile_start = m->tile_start_.data();
    v.tile_pix = m->tile_pix_.data();
    v.bias = m->bias_.data();
    v.mult = m->mult_.data();
    v.lshift = m->lsh_.data();
    v.rshift = m->rsh_.data();
    v.out_zp = d.output_zp;
    v.act_min = d.act_min;
    v.act_max = d.act_max;
    m->Adopt(pixel_base, num_pixels, in_elems, v.ntiles, v.ngroups, fallback);
    return m;
  }

  Isa isa() const override { return Isa::kAvx2; }
  size_t packed_bytes() const override {
    return (poff_.size() + pw_.size() + pstart_.size() + 2 * crow_.size()) * 4 +
           fallback_->packed_bytes();
  }

 protected:
  // int16 planes, one per channel. Positions [grid_, read_end_) are read by tiles whose outputs
  // there are not stored, but must be zeros (finite); the rest of a plane's stride is never read
  // (zeroing it cost 8 % of an int8 CNN's time).
  void* Scratch() const override {
    static thread_local std::vector<int16_t> planar;
    const size_t need = (size_t)cin_ * plane_ + kLaneTile;
    if (planar.size() < need) planar.resize(need);
    int16_t* x = planar.data();
    for (int c = 0; c < cin_; ++c)
      std::memset(x + c * plane_ + grid_, 0, sizeof(int16_t) * (read_end_ - grid_));
    return x;
  }
  void ToPlanar(const int8_t* in, int64_t p0, int64_t p1, void* planes) const override {
    ToPlanarS16Avx2(in, p0, p1, cin_, (int16_t*)planes, plane_);
  }
  void Tiles(const void* planes, int t0, int t1, int g0, int g1, int8_t* out) const override {
    LanesInt8Avx2(v_, (const int16_t*)planes, t0, t1, g0, g1, out);
  }

 private:
  LanesInt8() = default;
  std::vector<int32_t> cstart_, crow_, cnum_, pstart_, poff_, pw_, tile_start_, tile_pix_;
  std::vector<int32_t> bias_, mult_, lsh_, rsh_;
  int64_t read_end_ = 0;  // positions a tile may read: [0, read_end_) of every plane
  LanesInt8View v_;
};

// `alt` when it measures faster than its row-block fallback or `env` is "1", else the fallback.
std::unique_ptr<PackedGemmInt8> FasterOf(std::unique_ptr<PlanarInt8> alt, const char* env,
                                         int rows, int num_pixels, const int32_t* pixel_base,
                                         int64_t in_elems, int num_threads) {
  const char* mode = getenv(env);
  if (mode && *mode == '1') return alt;
  std::vector<int8_t> in((size_t)std::max<int64_t>(in_elems, 1), 3);
  std::vector<int8_t> out((size_t)num_pixels * rows + 16);
  ThreadPool* pool = SharedThreadPool();
  // The fallback first (its time bounds the candidate's early exit).
  const RowBlockInt8* rb = alt->fallback();
  const double tr = BestMs([&] { rb->Run(in.data(), in_elems, pixel_base, num_pixels, out.data(),
                                         pool, num_threads); }, 2.0, 1e30);
  const double ta = BestMs([&] { alt->Run(in.data(), in_elems, pixel_base, num_pixels, out.data(),
                                          pool, num_threads); }, 2.0, tr);
  if (ta < tr) return alt;
  return alt->TakeFallback();
}
#endif

// `p`, or a planar packing of the same weights where the layer fits one and it measured faster:
// AMX (AVX-512 machines with AMX-INT8) or pixel lanes (the AVX2 kernel).
std::unique_ptr<PackedGemmInt8> WithPlanar(std::unique_ptr<RowBlockInt8> p, const GemmInt8Desc& d,
                                           int num_pixels, const int32_t* pixel_base,
                                           int64_t in_elems, int num_threads) {
#if defined(__x86_64__) || defined(__i386__)
  const bool sparse = p->kind() == KernelKind::kRowBlock;
  if (auto amx = AmxInt8::Make(d, sparse, num_pixels, pixel_base, in_elems, &p))
    return FasterOf(std::move(amx), "NPAS_INT8_AMX", d.rows, num_pixels, pixel_base, in_elems,
                    num_threads);
  const char* lanes_mode = getenv("NPAS_INT8_LANES");
  if (lanes_mode && *lanes_mode == '0') return p;
  if (auto lanes = LanesInt8::Make(d, sparse, num_pixels, pixel_base, in_elems, &p))
    return FasterOf(std::move(lanes), "NPAS_INT8_LANES", d.rows, num_pixels, pixel_base, in_elems,
                    num_threads);
  return p;
#else
  (void)d; (void)num_pixels; (void)pixel_base; (void)in_elems; (void)num_threads;
  return p;
#endif
}

}  // namespace

bool IsAmxInt8(const PackedGemmInt8& p) {
#if defined(__x86_64__) || defined(__i386__)
  return dynamic_cast<const AmxInt8*>(&p) != nullptr;
#else
  (void)p;
  return false;
#endif
}

bool IsLanesInt8(const PackedGemmInt8& p) {
#if defined(__x86_64__) || defined(__i386__)
  return dynamic_cast<const LanesInt8*>(&p) != nullptr;
#else
  (void)p;
  return false;
#endif
}

RowBlockInt8Kernel SelectRowBlockInt8() {
  const Isa isa = DetectIsa();
#if defined(__x86_64__) || defined(__i386__)
  if (isa == Isa::kAvx512 && CpuHasAvx512Vnni()) {
    if (CpuHasAvx512Vbmi())
      return {RowBlockInt8VnniVbmi, Isa::kAvx512, Int8Input::kU8, "avx512-vnni-vbmi", true};
    return {RowBlockInt8Vnni, Isa::kAvx512, Int8Input::kU8, "avx512-vnni"};
  }
  if (isa == Isa::kAvx512 || isa == Isa::kAvx2)  // AVX-512 without VNNI: the AVX2 kernel
    return {RowBlockInt8Avx2, Isa::kAvx2, Int8Input::kS16, "avx2"};
#elif defined(__aarch64__)
  if (isa == Isa::kNeon) {
    if (CpuHasDotProd()) return {RowBlockInt8NeonDot, Isa::kNeon, Int8Input::kS8, "neon-dotprod"};
    return {RowBlockInt8Neon, Isa::kNeon, Int8Input::kS8, "neon"};
  }
#endif
  (void)isa;
  return {RowBlockInt8Scalar, Isa::kScalar, Int8Input::kS8, "scalar"};
}

void RowBlockInt8Scalar(const RowBlockInt8View& v, const void* input, const int32_t* pb, int p0,
                        int p1, int g0, int g1, int8_t* out) {
  const int8_t* in = (const int8_t*)input;  // Int8Input::kS8
  for (int g = g0; g < g1; ++g) {
    const int q0 = v.qstart[g], q1 = v.qstart[g + 1];
    const int nl = std::min(16, v.rows - g * 16);
    for (int p = p0; p < p1; ++p) {
      int32_t acc[16];
      for (int l = 0; l < 16; ++l) acc[l] = v.bias[g * 16 + l];
      const int8_t* x = in + pb[p];
      for (int q = q0; q < q1; ++q) {
        const int32_t* o = v.qoffs + 4 * q;
        const int32_t a0 = x[o[0]], a1 = x[o[1]], a2 = x[o[2]], a3 = x[o[3]];
        const int8_t* w = v.w + 64 * q;
        for (int l = 0; l < 16; ++l)
          acc[l] += a0 * w[4 * l] + a1 * w[4 * l + 1] + a2 * w[4 * l + 2] + a3 * w[4 * l + 3];
      }
      int8_t* dst = out + (size_t)p * v.rows + g * 16;
      for (int l = 0; l < nl; ++l) {
        const int i = g * 16 + l;
        int32_t r = RequantInt8(acc[l], v.mult[i], v.lshift[i], v.rshift[i]) + v.out_zp;
        dst[l] = (int8_t)std::min(std::max(r, v.act_min), v.act_max);
      }
    }
  }
}

}  // namespace internal

std::unique_ptr<PackedGemmInt8> PackGemmInt8(const GemmInt8Desc& d, KernelKind kind,
                                             int num_pixels, const int32_t* pixel_base,
                                             int64_t in_elems, int num_threads, double* dense_ms,
                                             double* best_ms, std::string* error) {
  using namespace internal;
  auto fail = [&](const char* msg) -> std::unique_ptr<PackedGemmInt8> {
    if (error) *error = msg;
    return nullptr;
  };
  if (d.rows <= 0 || d.cols <= 0) return fail("PackGemmInt8: rows and cols must be positive");
  if (!d.weights || !d.col_offset || !d.multiplier || !d.shift)
    return fail("PackGemmInt8: weights, col_offset, multiplier and shift are required");
  if (d.act_min > d.act_max || d.act_min < -128 || d.act_max > 127)
    return fail("PackGemmInt8: bad activation range");
  if (d.input_zp < -128 || d.input_zp > 127 || d.output_zp < -128 || d.output_zp > 127)
    return fail("PackGemmInt8: zero point out of int8 range");
  for (int r = 0; r < d.rows; ++r)
    if (d.shift[r] > 30 || d.shift[r] < -31 || d.multiplier[r] < 0)
      return fail("PackGemmInt8: multiplier/shift out of range");
  if (kind == KernelKind::kPixelVector) return fail("PackGemmInt8: no int8 pixel-vector kernel");
  // Structure of the zeros (the fp32 analyser on a 0/1 copy).
  std::vector<float> nz((size_t)d.rows * d.cols);
  for (size_t i = 0; i < nz.size(); ++i) nz[i] = d.weights[i] != 0 ? 1.f : 0.f;
  const StructureInfo info = AnalyzeStructure(nz.data(), d.rows, d.cols, d.kh, d.kw,
                                              d.cin > 0 ? d.cin : d.cols);
  std::vector<float>().swap(nz);
  if (kind == KernelKind::kDense || kind == KernelKind::kRowBlock) {
    auto p = std::make_unique<RowBlockInt8>(d, kind == KernelKind::kRowBlock, info);
    if (!p->ok()) return fail("PackGemmInt8: out of memory");
    return WithPlanar(std::move(p), d, num_pixels, pixel_base, in_elems, num_threads);
  }
  auto dense_rb = std::make_unique<RowBlockInt8>(d, false, info);
  auto sparse_rb = std::make_unique<RowBlockInt8>(d, true, info);
  if (!dense_rb->ok() || !sparse_rb->ok()) return fail("PackGemmInt8: out of memory");
  const bool worth = sparse_rb->quads() < dense_rb->quads() * 0.9;
  std::unique_ptr<PackedGemmInt8> dense =
      WithPlanar(std::move(dense_rb), d, num_pixels, pixel_base, in_elems, num_threads);
  std::unique_ptr<PackedGemmInt8> sparse =
      worth ? WithPlanar(std::move(sparse_rb), d, num_pixels, pixel_base, in_elems, num_threads)
            : std::move(sparse_rb);
  double td = 0, ts = 0;
  if (worth || dense_ms || best_ms) {
    std::vector<int8_t> in((size_t)std::max<int64_t>(in_elems, 1), 3);
    std::vector<int8_t> out((size_t)num_pixels * d.rows + 16);
    ThreadPool* pool = SharedThreadPool();
    td = BestMs([&] { dense->Run(in.data(), in_elems, pixel_base, num_pixels, out.data(), pool,
                                 num_threads); }, 4.0, 1e30);
    ts = worth ? BestMs([&] { sparse->Run(in.data(), in_elems, pixel_base, num_pixels, out.data(),
                                          pool, num_threads); }, 4.0, td)
               : td;
  }
  if (dense_ms) *dense_ms = td;
  const bool pick_sparse = worth && ts < td;
  if (best_ms) *best_ms = pick_sparse ? ts : td;
  if (pick_sparse) return sparse;
  return dense;
}

// ---- depthwise --------------------------------------------------------------------------------
namespace internal {

DepthwiseInt8Kernel SelectDepthwiseInt8() {
  const Isa isa = DetectIsa();
#if defined(__x86_64__) || defined(__i386__)
  if (isa == Isa::kAvx512) return {DepthwiseInt8Avx512, Isa::kAvx512, "avx512"};
  if (isa == Isa::kAvx2) return {DepthwiseInt8Avx2, Isa::kAvx2, "avx2"};
#elif defined(__aarch64__)
  if (isa == Isa::kNeon) return {DepthwiseInt8Neon, Isa::kNeon, "neon"};
#endif
  (void)isa;
  return {DepthwiseInt8Scalar, Isa::kScalar, "scalar"};
}

void DepthwiseInt8GroupScalar(const DepthwiseInt8View& v, const int8_t* x, int g, int8_t* dst) {
  const int nl = std::min(16, v.cout - g * 16);
  int32_t acc[16];
  for (int l = 0; l < 16; ++l) acc[l] = v.bias[g * 16 + l];
  for (int j = v.tstart[g]; j < v.tstart[g + 1]; ++j) {
    const int8_t* xc = x + v.toffs[j] + g * 16;
    const int32_t* w = v.w + (size_t)j * 16;
    for (int l = 0; l < nl; ++l) acc[l] += w[l] * (int32_t)xc[l];
  }
  for (int l = 0; l < nl; ++l) {
    const int c = g * 16 + l;
    const int32_t r = RequantInt8(acc[l], v.mult[c], v.lshift[c], v.rshift[c]) + v.out_zp;
    dst[c] = (int8_t)std::min(std::max(r, v.act_min), v.act_max);
  }
}

void DepthwiseInt8Scalar(const DepthwiseInt8View& v, const int8_t* in, const int32_t* pb, int p0,
                         int p1, int8_t* out) {
  for (int p = p0; p < p1; ++p)
    for (int g = 0; g < v.ngroups; ++g)
      DepthwiseInt8GroupScalar(v, in + pb[p], g, out + (size_t)p * v.cout);
}

}  // namespace internal

namespace {

class DepthwiseInt8Impl : public PackedDepthwiseInt8 {
 public:
  DepthwiseInt8Impl(const DepthwiseInt8Desc& d, bool sparse) {
    const int T = d.kh * d.kw;
    cout_ = d.cin * d.depth_multiplier;
    dm_ = d.depth_multiplier;
    G_ = (cout_ + 15) / 16;
    tstart_.assign(G_ + 1, 0);
    bias_.assign((size_t)G_ * 16, 0);
    mult_.assign((size_t)G_ * 16, 0);
    lsh_.assign((size_t)G_ * 16, 0);
    rsh_.assign((size_t)G_ * 16, 0);
    size_t nz = 0;
    for (int g = 0; g < G_; ++g) {
      for (int t = 0; t < T; ++t) {
        bool any = !sparse;
        for (int l = 0; l < 16 && !any; ++l) {
          const int c = g * 16 + l;
          any = c < cout_ && d.weights[(size_t)t * cout_ + c] != 0;
        }
        if (!any) continue;
        toffs_.push_back(d.tap_offset[t]);
        for (int l = 0; l < 16; ++l) {
          const int c = g * 16 + l;
          w_.push_back(c < cout_ ? d.weights[(size_t)t * cout_ + c] : 0);
          w16_.push_back((int16_t)w_.back());
        }
      }
      tstart_[g + 1] = (int32_t)toffs_.size();
      for (int l = 0; l < 16; ++l) {
        const int c = g * 16 + l;
        if (c >= cout_) continue;
        int64_t sum = 0;
        for (int t = 0; t < T; ++t) {
          sum += d.weights[(size_t)t * cout_ + c];
          nz += d.weights[(size_t)t * cout_ + c] != 0;
        }
        bias_[c] = (int32_t)((d.bias ? d.bias[c] : 0) - (int64_t)d.input_zp * sum);
        mult_[c] = d.multiplier[c];
        lsh_[c] = d.shift[c] > 0 ? d.shift[c] : 0;
        rsh_[c] = d.shift[c] > 0 ? 0 : -d.shift[c];
      }
    }
    info_.kind = Structure::kDense;
    info_.density = (double)nz / std::max<size_t>(1, (size_t)T * cout_);
    if (nz < (size_t)T * cout_) info_.kind = Structure::kUnstructured;
    out_zp_ = d.output_zp;
    act_min_ = d.act_min;
    act_max_ = d.act_max;
    v_.cout = cout_;
    v_.ngroups = G_;
    v_.tstart = tstart_.data();
    v_.toffs = toffs_.data();
    v_.w = w_.data();
    v_.w16 = w16_.data();
    v_.bias = bias_.data();
    v_.mult = mult_.data();
    v_.lshift = lsh_.data();
    v_.rshift = rsh_.data();
    v_.out_zp = d.output_zp;
    v_.act_min = d.act_min;
    v_.act_max = d.act_max;
    // depth_multiplier > 1 reads each input channel for several outputs: only Compute does that.
    const internal::DepthwiseInt8Kernel k = internal::SelectDepthwiseInt8();
    fn_ = dm_ == 1 ? k.fn : nullptr;
    if (fn_ && k.isa == Isa::kAvx512) PackPairs(d, sparse);
  }
  // The AVX-512 tap-pair layout (int8_internal.h, DepthwiseInt8View).
  void PackPairs(const DepthwiseInt8Desc& d, bool sparse) {
    const int T = d.kh * d.kw, G32 = (cout_ + 31) / 32;
    pstart_.assign(G32 + 1, 0);
    for (auto* a : {&pbias_, &pmult_, &plsh_, &prsh_}) a->assign((size_t)G32 * 32, 0);
    for (int k = 0; k < G32; ++k) {
      std::vector<int> taps;
      for (int t = 0; t < T; ++t) {
        bool any = !sparse;
        for (int c = k * 32; c < std::min(cout_, k * 32 + 32) && !any; ++c)
          any = d.weights[(size_t)t * cout_ + c] != 0;
        if (any) taps.push_back(t);
      }
      for (size_t j = 0; j < taps.size(); j += 2) {
        const int t0 = taps[j];
        const int t1 = j + 1 < taps.size() ? taps[j + 1] : -1;
        poffs_.push_back(d.tap_offset[t0]);
        poffs_.push_back(d.tap_offset[t1 >= 0 ? t1 : t0]);
        for (int h = 0; h < 2; ++h)
          for (int m = 0; m < 16; ++m) {
            const int c = k * 32 + internal::PairLaneChannel(h, m);
            const bool ok = c < cout_;
            pw_.push_back(ok ? d.weights[(size_t)t0 * cout_ + c] : 0);
            pw_.push_back(ok && t1 >= 0 ? d.weights[(size_t)t1 * cout_ + c] : 0);
          }
      }
      pstart_[k + 1] = (int32_t)(poffs_.size() / 2);
      for (int h = 0; h < 2; ++h)
        for (int m = 0; m < 16; ++m) {
          const int c = k * 32 + internal::PairLaneChannel(h, m);
          if (c >= cout_) continue;
          const size_t i = (size_t)k * 32 + 16 * h + m;
          pbias_[i] = bias_[c];
          pmult_[i] = mult_[c];
          plsh_[i] = lsh_[c];
          prsh_[i] = rsh_[c];
        }
    }
    v_.ngroups32 = G32;
    v_.pstart = pstart_.data();
    v_.poffs = poffs_.data();
    v_.pw = pw_.data();
    v_.pbias = pbias_.data();
    v_.pmult = pmult_.data();
    v_.plsh = plsh_.data();
    v_.prsh = prsh_.data();
  }
  StructureInfo structure() const override { return info_; }
  size_t packed_bytes() const override {
    return w_.size() * 6 + toffs_.size() * 4 + tstart_.size() * 4 + bias_.size() * 16 +
           pw_.size() * 2 + (poffs_.size() + pstart_.size()) * 4 + pbias_.size() * 16;
  }
  void Run(const int8_t* in, const int32_t* pb, int num_pixels, int8_t* out, ThreadPool* pool,
           int num_threads) const override {
    if (num_pixels <= 0) return;
    auto part = [&](int p0, int p1) {
      if (fn_) fn_(v_, in, pb, p0, p1, out);
      else Compute(in, pb, p0, p1, out);
    };
    if (num_threads <= 1 || !pool) {
      part(0, num_pixels);
      return;
    }
    const int tasks = std::min(num_pixels, num_threads * 2);
    pool->ParallelFor(tasks, num_threads, [&](int t) {
      part((int)((int64_t)num_pixels * t / tasks), (int)((int64_t)num_pixels * (t + 1) / tasks));
    });
  }

 private:
  // Any depth multiplier (scalar).
  void Compute(const int8_t* in, const int32_t* pb, int p0, int p1, int8_t* out) const {
    int32_t cidx[16];
    for (int p = p0; p < p1; ++p) {
      const int8_t* x = in + pb[p];
      int8_t* dst = out + (size_t)p * cout_;
      for (int g = 0; g < G_; ++g) {
        int32_t acc[16];
        const int nl = std::min(16, cout_ - g * 16);
        for (int l = 0; l < 16; ++l) {
          acc[l] = bias_[g * 16 + l];
          cidx[l] = l < nl ? (g * 16 + l) / dm_ : 0;
        }
        for (int j = tstart_[g]; j < tstart_[g + 1]; ++j) {
          const int8_t* xt = x + toffs_[j];
          const int32_t* w = w_.data() + (size_t)j * 16;
          for (int l = 0; l < nl; ++l) acc[l] += w[l] * (int32_t)xt[cidx[l]];
        }
        for (int l = 0; l < nl; ++l) {
          const int c = g * 16 + l;
          int32_t r = internal::RequantInt8(acc[l], mult_[c], lsh_[c], rsh_[c]) + out_zp_;
          dst[c] = (int8_t)std::min(std::max(r, act_min_), act_max_);
        }
      }
    }
  }
  StructureInfo info_;
  int cout_ = 0, dm_ = 1, G_ = 0;
  std::vector<int32_t> tstart_, toffs_, w_, bias_, mult_, lsh_, rsh_;
  std::vector<int16_t> w16_, pw_;
  std::vector<int32_t> pstart_, poffs_, pbias_, pmult_, plsh_, prsh_;
  int32_t out_zp_ = 0, act_min_ = -128, act_max_ = 127;
  internal::DepthwiseInt8View v_;
  internal::DepthwiseInt8Fn fn_ = nullptr;
};

}  // namespace

std::unique_ptr<PackedDepthwiseInt8> PackDepthwiseInt8(const DepthwiseInt8Desc& d, bool sparse,
                                                       std::string* error) {
  auto fail = [&](const char* msg) -> std::unique_ptr<PackedDepthwiseInt8> {
    if (error) *error = msg;
    return nullptr;
  };
  if (d.kh <= 0 || d.kw <= 0 || d.cin <= 0 || d.depth_multiplier <= 0)
    return fail("PackDepthwiseInt8: sizes must be positive");
  if (!d.weights || !d.tap_offset || !d.multiplier || !d.shift)
    return fail("PackDepthwiseInt8: weights, tap_offset, multiplier and shift are required");
  if (d.act_min > d.act_max || d.act_min < -128 || d.act_max > 127)
    return fail("PackDepthwiseInt8: bad activation range");
  const int cout = d.cin * d.depth_multiplier;
  for (int c = 0; c < cout; ++c)
    if (d.shift[c] > 30 || d.shift[c] < -31 || d.multiplier[c] < 0)
      return fail("PackDepthwiseInt8: multiplier/shift out of range");
  return std::make_unique<DepthwiseInt8Impl>(d, sparse);
}

}  // namespace npas
