// Packing of implicit-GEMM weights into the row-block and pixel-vector formats, the runners that
// split work over the thread pool, ISA dispatch and the kAuto measurement.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/npas_internal.h"

namespace npas {
namespace internal {
namespace {

// 64-byte aligned float buffer.
struct AlignedFloats {
  float* p = nullptr;
  size_t n = 0;
  AlignedFloats() = default;
  explicit AlignedFloats(size_t count) { Resize(count); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  ~AlignedFloats() { std::free(p); }
  void Resize(size_t count) {
    std::free(p);
    n = count;
    size_t bytes = ((count * sizeof(float)) + 63) / 64 * 64 + 64;
    p = static_cast<float*>(AlignedAlloc(64, bytes));
    std::memset(p, 0, bytes);
  }
};

RowBlockFn RowBlockFor(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  if (isa == Isa::kAvx512) return RowBlockAvx512;
  if (isa == Isa::kAvx2) return RowBlockAvx2;
#endif
#if defined(__aarch64__)
  if (isa == Isa::kNeon) return RowBlockNeon;
#endif
  return RowBlockScalar;
}
PixelVectorFn PixelVectorFor(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  if (isa == Isa::kAvx512) return PixelVectorAvx512;
  if (isa == Isa::kAvx2) return PixelVectorAvx2;
#endif
#if defined(__aarch64__)
  if (isa == Isa::kNeon) return PixelVectorNeon;
#endif
  return PixelVectorScalar;
}

inline bool NonZero(const float* w, int cols, int r, int c) { return w[(size_t)r * cols + c] != 0.0f; }

// ---- row block ------------------------------------------------------------------------------------
class RowBlockGemm : public PackedGemm {
 public:
  // compress_lanes: allow the compressed-runs variant (pays only for few pixels, FC batch 1..4:
  // there the layer is memory-bound and the expand per run and pixel is cheap).
  RowBlockGemm(const GemmDesc& d, bool dense, const StructureInfo& info, Isa isa,
               bool compress_lanes = false)
      : dense_(dense), info_(info), isa_(isa), fn_(RowBlockFor(isa)) {
    const int L = LanesFor(isa);
    const int rows = d.rows, cols = d.cols;
    // Row order: original, or (sparse only) rows sorted by their kept-column set so that rows with
    // equal sets share a group (GRIM/PatDNN filter reordering); keep whichever needs fewer columns.
    std::vector<int> order(rows);
    std::iota(order.begin(), order.end(), 0);
    std::vector<uint64_t> sig(rows, 0);
    if (!dense) {
      for (int r = 0; r < rows; ++r) {
        uint64_t h = 1469598103934665603ull;
        for (int c = 0; c < cols; ++c)
          if (NonZero(d.weights, cols, r, c)) h = (h ^ (uint64_t)c) * 1099511628211ull;
        sig[r] = h;
      }
      std::vector<int> sorted = order;
      std::stable_sort(sorted.begin(), sorted.end(), [&](int a, int b) { return sig[a] < sig[b]; });
      if (UnionCost(d, order, L) > UnionCost(d, sorted, L) * 1.02) order = sorted;
    }
    const int ngroups = (rows + L - 1) / L;
    perm_.assign((size_t)ngroups * L, -1);
    for (int i = 0; i < rows; ++i) perm_[i] = order[i];
    kstart_.assign(ngroups + 1, 0);
    contiguous_.assign(ngroups, 1);
    bias_.Resize((size_t)ngroups * L);
    std::vector<std::vector<int>> kept(ngroups);
    for (int g = 0; g < ngroups; ++g) {
      for (int l = 0; l < L; ++l) {
        int r = perm_[g * L + l];
        if (r >= 0 && r != g * L + l) contiguous_[g] = 0;
        if (r >= 0 && d.bias) bias_.p[g * L + l] = d.bias[r];
      }
      for (int c = 0; c < cols; ++c) {
        bool any = dense;
        for (int l = 0; l < L && !any; ++l) {
          int r = perm_[g * L + l];
          any = r >= 0 && NonZero(d.weights, cols, r, c);
        }
        if (any) kept[g].push_back(c);
      }
      kstart_[g + 1] = kstart_[g] + (int)kept[g].size();
    }
    const size_t nk = kstart_[ngroups];
    offs_.resize(nk);
    w_.Resize(nk * L);
    for (int g = 0; g < ngroups; ++g)
      for (size_t j = 0; j < kept[g].size(); ++j) {
        const int c = kept[g][j];
        const size_t k = kstart_[g] + j;
        offs_[k] = d.col_offset[c];
        for (int l = 0; l < L; ++l) {
          int r = perm_[g * L + l];
          if (r >= 0) w_.p[k * L + l] = d.weights[(size_t)r * cols + c];
        }
      }
    // AVX-512: when many lanes of the kept columns are zero (BCR, or rows of a group that
    // disagree), store runs of columns with equal lane masks, only their nonzero lanes packed.
    if (!dense && compress_lanes && isa == Isa::kAvx512 && L == 16) {
      size_t zeros = 0;
      for (size_t i = 0; i < nk * L; ++i) zeros += w_.p[i] == 0.0f;
      if (zeros > nk * L / 4) {
        rstart_.assign(ngroups + 1, 0);
        wstart_.resize(ngroups);
        std::vector<float> packed;
        packed.reserve(nk * L - zeros + 16);
        for (int g = 0; g < ngroups; ++g) {
          wstart_[g] = (int64_t)packed.size();
          for (int k = kstart_[g]; k < kstart_[g + 1]; ++k) {
            uint16_t m = 0;
            for (int l = 0; l < L; ++l)
              if (w_.p[(size_t)k * L + l] != 0.0f) {
                m |= (uint16_t)(1u << l);
                packed.push_back(w_.p[(size_t)k * L + l]);
              }
            if (k > kstart_[g] && lane_mask_.back() == m) {
              run_len_.back()++;
            } else {
              lane_mask_.push_back(m);
              run_len_.push_back(1);
            }
          }
          rstart_[g + 1] = (int32_t)lane_mask_.size();
        }
        w_.Resize(packed.size() + 16);  // the kernel loads 16 lanes from the last column
        if (!packed.empty()) std::memcpy(w_.p, packed.data(), packed.size() * 4);
        view_.rstart = rstart_.data();
        view_.lane_mask = lane_mask_.data();
        view_.run_len = run_len_.data();
        view_.wstart = wstart_.data();
      }
    }
    view_.L = L;
    view_.rows = rows;
    view_.ngroups = ngroups;
    view_.kstart = kstart_.data();
    view_.offs = offs_.data();
    view_.w = w_.p;
    view_.perm = perm_.data();
    view_.bias = bias_.p;
    view_.contiguous = contiguous_.data();
    view_.act_min = d.act_min;
    view_.act_max = d.act_max;
  }

  KernelKind kind() const override { return dense_ ? KernelKind::kDense : KernelKind::kRowBlock; }
  // FMA lanes per pixel (+ the per-run expands of the compressed variant): a proxy for time.
  double EstimatedWork() const {
    return (double)offs_.size() * view_.L + (double)lane_mask_.size() * view_.L * 2;
  }
  StructureInfo structure() const override { return info_; }
  size_t packed_bytes() const override {
    return offs_.size() * 4 + w_.n * 4 + perm_.size() * 4 + bias_.n * 4 + kstart_.size() * 4 +
           lane_mask_.size() * 2 + run_len_.size() * 4 + rstart_.size() * 4 + wstart_.size() * 8;
  }

  void Run(const float* in, const int32_t* pixel_base, int num_pixels, float* out, ThreadPool* pool,
           int num_threads) const override {
    if (num_pixels <= 0) return;
    const int G = view_.ngroups;
    const int T = RowBlockPixelTile(isa_);
    const int ptiles = (num_pixels + T - 1) / T;
    if (num_threads > 1 && !pool) num_threads = 1;
    if (num_threads <= 1) {
      fn_(view_, in, pixel_base, 0, num_pixels, 0, G, out);
      return;
    }
    // Split pixels when there are enough pixel tiles, else rows (FC batch 1 is all rows).
    int tasks_p = 1, tasks_g = 1;
    const int want = num_threads * 2;
    if (ptiles >= want * 2) tasks_p = want;
    else if (ptiles >= num_threads * 2) tasks_p = num_threads;
    else {
      tasks_p = std::max(1, std::min(ptiles, num_threads));
      tasks_g = std::max(1, std::min(G, (want + tasks_p - 1) / tasks_p));
    }
    const int ntasks = tasks_p * tasks_g;
    pool->ParallelFor(ntasks, num_threads, [&](int t) {
      int tp = t / tasks_g, tg = t % tasks_g;
      int p0 = (int)((int64_t)ptiles * tp / tasks_p) * T;
      int p1 = std::min(num_pixels, (int)((int64_t)ptiles * (tp + 1) / tasks_p) * T);
      int g0 = (int)((int64_t)G * tg / tasks_g), g1 = (int)((int64_t)G * (tg + 1) / tasks_g);
      if (p0 < p1 && g0 < g1) fn_(view_, in, pixel_base, p0, p1, g0, g1, out);
    });
  }

 private:
  static size_t UnionCost(const GemmDesc& d, const std::vector<int>& order, int L) {
    size_t cost = 0;
    std::vector<uint8_t> any(d.cols);
    for (size_t g0 = 0; g0 < order.size(); g0 += L) {
      std::fill(any.begin(), any.end(), 0);
      for (size_t i = g0; i < std::min(order.size(), g0 + L); ++i) {
        const float* wr = d.weights + (size_t)order[i] * d.cols;
        for (int c = 0; c < d.cols; ++c) any[c] |= wr[c] != 0.0f;
      }
      for (int c = 0; c < d.cols; ++c) cost += any[c];
    }
    return cost;
  }

  bool dense_;
  StructureInfo info_;
  Isa isa_;
  RowBlockFn fn_;
  std::vector<int32_t> kstart_, offs_, perm_;
  std::vector<uint8_t> contiguous_;
  std::vector<uint16_t> lane_mask_;
  std::vector<int32_t> rstart_, run_len_;
  std::vector<int64_t> wstart_;
  AlignedFloats w_, bias_;
  RowBlockView view_;
};

// ---- pixel vector ---------------------------------------------------------------------------------
class PixelVectorGemm : public PackedGemm {
 public:
  PixelVectorGemm(const GemmDesc& d, const StructureInfo& info, Isa isa)
      : info_(info), isa_(isa), fn_(PixelVectorFor(isa)) {
    const int rows = d.rows, cols = d.cols;
    // Tiles: for BCR-like structure, per (br x bc) block the kept rows x kept cols; otherwise one
    // tile per row (CSR). Rows per tile are capped at kMaxTileRows (a register budget).
    int br = 1, bc = cols;
    if (info.kind == Structure::kBcr || info.kind == Structure::kBlockPunched) {
      br = std::max(1, std::min(info.block_rows, rows));
      bc = std::max(1, std::min(info.block_cols, cols));
    }
    std::vector<int> col_used(cols, -1);
    std::vector<int> used_cols;
    for (int c = 0; c < cols; ++c)
      for (int r = 0; r < rows; ++r)
        if (NonZero(d.weights, cols, r, c)) {
          col_used[c] = (int)used_cols.size();
          used_cols.push_back(c);
          break;
        }
    used_offs_.resize(used_cols.size());
    for (size_t u = 0; u < used_cols.size(); ++u) used_offs_[u] = d.col_offset[used_cols[u]];
    std::vector<float> wv;
    std::vector<int> krows, kcols;
    // Tiles are ordered by column chunk (kChunkCols columns, a multiple of bc) and then by rows,
    // so the gathered inputs of one chunk (kChunkCols * 32 floats) stay in L1 while every row's
    // tiles of that chunk run. CSR rows are cut at chunk boundaries.
    if (bc >= cols) bc = std::min(cols, kChunkCols);
    const int chunk = std::max(bc, kChunkCols / bc * bc);
    for (int cc = 0; cc < cols; cc += chunk)
    for (int r0 = 0; r0 < rows; r0 += br) {
      const int nr = std::min(br, rows - r0);
      for (int c0 = cc; c0 < std::min(cols, cc + chunk); c0 += bc) {
        const int nc = std::min(bc, cols - c0);
        krows.clear();
        kcols.clear();
        for (int r = r0; r < r0 + nr; ++r)
          for (int c = c0; c < c0 + nc; ++c)
            if (NonZero(d.weights, cols, r, c)) {
              krows.push_back(r);
              break;
            }
        if (krows.empty()) continue;
        for (int c = c0; c < c0 + nc; ++c)
          for (int r : krows)
            if (NonZero(d.weights, cols, r, c)) {
              kcols.push_back(c);
              break;
            }
        for (size_t i0 = 0; i0 < krows.size(); i0 += kMaxTileRows) {
          const int tnr = (int)std::min<size_t>(kMaxTileRows, krows.size() - i0);
          PixelTile t;
          t.nr = tnr;
          t.nc = (int)kcols.size();
          t.rs = (int)tile_rows_.size();
          t.cs = (int)tile_cols_.size();
          t.ws = (int)wv.size();
          for (int i = 0; i < tnr; ++i) tile_rows_.push_back(krows[i0 + i]);
          for (int c : kcols) {
            tile_cols_.push_back(col_used[c]);
            for (int i = 0; i < tnr; ++i) wv.push_back(d.weights[(size_t)krows[i0 + i] * cols + c]);
          }
          tiles_.push_back(t);
        }
      }
    }
    w_.Resize(wv.size());
    if (!wv.empty()) std::memcpy(w_.p, wv.data(), wv.size() * 4);
    bias_.Resize(rows);
    if (d.bias) std::memcpy(bias_.p, d.bias, (size_t)rows * 4);
    for (size_t u = 0; u < used_offs_.size();) {
      bool run = u + 16 <= used_offs_.size();
      for (int j = 1; j < 16 && run; ++j) run = used_offs_[u + j] == used_offs_[u] + j;
      if (run) {
        chunk16_.push_back((int32_t)u);
        u += 16;
      } else {
        single_.push_back((int32_t)u);
        u += 1;
      }
    }
    view_.nchunk16 = (int)chunk16_.size();
    view_.chunk16 = chunk16_.data();
    view_.nsingle = (int)single_.size();
    view_.single = single_.data();
    view_.rows = rows;
    view_.nused = (int)used_offs_.size();
    view_.used_offs = used_offs_.data();
    view_.ntiles = (int)tiles_.size();
    view_.tiles = tiles_.data();
    view_.tile_rows = tile_rows_.data();
    view_.tile_cols = tile_cols_.data();
    view_.w = w_.p;
    view_.bias = bias_.p;
    view_.act_min = d.act_min;
    view_.act_max = d.act_max;
  }

  KernelKind kind() const override { return KernelKind::kPixelVector; }
  // Weighted nonzeros per pixel: unstructured (1-row tiles) needs a vector load per FMA, so it
  // counts double; plus the gather/transposes of used columns and the per-tile overhead.
  double EstimatedWork() const {
    double work = 0;
    // (Multi-row tiles run near the FMA rate since the tile kernels keep their accumulators in
    // registers: BCR 16x16 at 1/2 keeps 11x12 of 16x16 and is ~1.5x faster than dense.)
    for (const PixelTile& t : tiles_) work += (double)t.nc * t.nr * (t.nr == 1 ? 2.0 : 1.0) + 2 * t.nr;
    return work + 2.0 * used_offs_.size() + view_.rows;
  }
  StructureInfo structure() const override { return info_; }
  size_t packed_bytes() const override {
    return used_offs_.size() * 4 + tiles_.size() * sizeof(PixelTile) + tile_rows_.size() * 4 +
           tile_cols_.size() * 4 + w_.n * 4 + bias_.n * 4;
  }

  void Run(const float* in, const int32_t* pixel_base, int num_pixels, float* out, ThreadPool* pool,
           int num_threads) const override {
    if (num_pixels <= 0) return;
    const int V = kPixelTileV;
    const int ptiles = (num_pixels + V - 1) / V;
    if (num_threads > 1 && !pool) num_threads = 1;
    const int ntasks = std::min(ptiles, std::max(1, num_threads));
    const size_t scratch_floats = PixelVectorScratchFloats(view_);
    auto task = [&](int t) {
      const int p0 = (int)((int64_t)ptiles * t / ntasks) * V;
      const int p1 = std::min(num_pixels, (int)((int64_t)ptiles * (t + 1) / ntasks) * V);
      if (p0 >= p1) return;
      // Per-call scratch (Run may be called concurrently): thread_local, grown on demand.
      thread_local AlignedFloats scratch;
      if (scratch.n < scratch_floats) scratch.Resize(scratch_floats);
      fn_(view_, in, pixel_base, p0, p1, out, scratch.p);
    };
    if (ntasks <= 1) task(0);
    else pool->ParallelFor(ntasks, num_threads, task);
  }

 private:
  static constexpr int kMaxTileRows = 8;
  static constexpr int kChunkCols = 128;
  StructureInfo info_;
  Isa isa_;
  PixelVectorFn fn_;
  std::vector<int32_t> used_offs_, tile_rows_, tile_cols_, chunk16_, single_;
  std::vector<PixelTile> tiles_;
  AlignedFloats w_, bias_;
  PixelVectorView view_;
};

// Best-of time of g.Run; stops early when the first run is already far slower than `bar_ms`.
constexpr int kFewPixels = 4;

double TimeRunMs(const PackedGemm& g, const float* in, const int32_t* pb, int np, float* out,
                 int threads, double budget_ms, double bar_ms) {
  using clock = std::chrono::steady_clock;
  ThreadPool* pool = SharedThreadPool();
  auto t0 = clock::now();
  g.Run(in, pb, np, out, pool, threads);  // warm-up (touches the output pages)
  double best = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  if (best > 3 * bar_ms) {
    // One slow run may be a preemption on a busy machine: give up only after a second one.
    auto a = clock::now();
    g.Run(in, pb, np, out, pool, threads);
    best = std::min(best, std::chrono::duration<double, std::milli>(clock::now() - a).count());
    if (best > 3 * bar_ms) return best;
  }
  const int reps = (int)std::min(10.0, std::max(1.0, budget_ms / std::max(best, 1e-3)));
  for (int i = 0; i < reps; ++i) {
    auto a = clock::now();
    g.Run(in, pb, np, out, pool, threads);
    best = std::min(best, std::chrono::duration<double, std::milli>(clock::now() - a).count());
  }
  return best;
}

}  // namespace
}  // namespace internal

std::unique_ptr<PackedGemm> PackGemm(const GemmDesc& d, KernelKind kind, int num_pixels,
                                     const int32_t* pixel_base, int64_t in_elems, int num_threads,
                                     double* dense_ms, double* best_ms, std::string* error) {
  using namespace internal;
  auto fail = [&](const char* msg) -> std::unique_ptr<PackedGemm> {
    if (error) *error = msg;
    return nullptr;
  };
  if (d.rows <= 0 || d.cols <= 0) return fail("PackGemm: rows and cols must be positive");
  if (!d.weights) return fail("PackGemm: weights are null");
  if (!d.col_offset) return fail("PackGemm: col_offset is null");
  if (!(d.act_min <= d.act_max)) return fail("PackGemm: act_min > act_max");
  const Isa isa = DetectIsa();
  const StructureInfo info = AnalyzeStructure(d.weights, d.rows, d.cols, d.kh, d.kw, d.cin);
  switch (kind) {
    case KernelKind::kDense:
      return std::unique_ptr<PackedGemm>(new RowBlockGemm(d, true, info, isa));
    case KernelKind::kRowBlock:
      return std::unique_ptr<PackedGemm>(
          new RowBlockGemm(d, false, info, isa, num_pixels > 0 && num_pixels <= kFewPixels));
    case KernelKind::kPixelVector:
      return std::unique_ptr<PackedGemm>(new PixelVectorGemm(d, info, isa));
    case KernelKind::kAuto:
      break;
    default:
      return fail("PackGemm: unknown kernel kind");
  }
  // kAuto: measure the candidates on synthetic input and keep the fastest. Candidates whose
  // estimated work is well above dense are not even packed-and-timed (keeps prepare time small).
  std::vector<std::unique_ptr<PackedGemm>> cands;
  std::unique_ptr<RowBlockGemm> dense(new RowBlockGemm(d, true, info, isa));
  const double dense_work = dense->EstimatedWork();
  cands.emplace_back(std::move(dense));
  const bool few = num_pixels > 0 && num_pixels <= kFewPixels;
  if (info.kind != Structure::kDense) {
    std::unique_ptr<RowBlockGemm> rb(new RowBlockGemm(d, false, info, isa, few));
    // Few pixels: memory-bound, so bytes decide; otherwise FMA work.
    if (few ? rb->packed_bytes() < 0.9 * cands[0]->packed_bytes() : rb->EstimatedWork() < 0.9 * dense_work)
      cands.emplace_back(std::move(rb));
    // The pixel-vector kernel computes 32 pixels at a time: useless for a handful.
    if (num_pixels <= 0 || num_pixels >= 8) {
      std::unique_ptr<PixelVectorGemm> pv(new PixelVectorGemm(d, info, isa));
      if (pv->EstimatedWork() < 0.9 * dense_work) cands.emplace_back(std::move(pv));
    }
  }
  if (num_pixels <= 0 || !pixel_base || in_elems <= 0) {
    // Nothing to measure on: the smallest estimated work wins.
    size_t best = 0;
    double best_work = dense_work;
    for (size_t i = 1; i < cands.size(); ++i) {
      double w = cands[i]->kind() == KernelKind::kPixelVector
                     ? static_cast<PixelVectorGemm*>(cands[i].get())->EstimatedWork()
                     : static_cast<RowBlockGemm*>(cands[i].get())->EstimatedWork();
      if (w < best_work) {
        best = i;
        best_work = w;
      }
    }
    if (dense_ms) *dense_ms = -1;
    if (best_ms) *best_ms = -1;
    return std::move(cands[best]);
  }
  std::vector<float> in((size_t)in_elems);
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& x : in) x = u(rng);
  std::vector<float> out((size_t)num_pixels * d.rows);
  const double budget = 4.0;  // ms of repetitions per candidate and round
  std::vector<double> ms(cands.size(), 1e30);
  double bar = 1e30;
  for (size_t i = 0; i < cands.size(); ++i) {
    ms[i] = TimeRunMs(*cands[i], in.data(), pixel_base, num_pixels, out.data(), num_threads, budget, bar);
    bar = std::min(bar, ms[i]);
  }
  // A second round for the candidates close to the best (the machine may be noisy).
  for (size_t i = 0; i < cands.size(); ++i)
    if (ms[i] < 1.25 * bar)
      ms[i] = std::min(ms[i], TimeRunMs(*cands[i], in.data(), pixel_base, num_pixels, out.data(),
                                        num_threads, budget / 2, bar));
  size_t best = 0;
  for (size_t i = 1; i < cands.size(); ++i)
    if (ms[i] < ms[best]) best = i;
  if (dense_ms) *dense_ms = ms[0];
  if (best_ms) *best_ms = ms[best];
  return std::move(cands[best]);
}

}  // namespace npas
