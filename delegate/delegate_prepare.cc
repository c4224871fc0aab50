// DelegatePrepare (which nodes to claim, packing and measuring them before claiming) and the
// delegate kernel (init / prepare / invoke / free) that runs one claimed node.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>

#include "delegate_internal.h"

namespace npas {
namespace {

bool IsCandidate(const TfLiteRegistration* reg) {
  switch (reg->builtin_code) {
    case kTfLiteBuiltinFullyConnected:
    case kTfLiteBuiltinConv2d:
    case kTfLiteBuiltinDepthwiseConv2d:
      return true;
    case kTfLiteBuiltinCustom:
      return reg->custom_name != nullptr && std::strncmp(reg->custom_name, "Npas", 4) == 0;
    default:
      return false;
  }
}

std::string StructureLabel(Structure s) {
  return s == Structure::kDense ? "dense" : StructureName(s);
}

// Minimum over a few runs (robust against a noisy shared machine).
double TimeMs(const std::function<void()>& fn) {
  using Clock = std::chrono::steady_clock;
  fn();  // warm-up
  double best = 1e30, total = 0;
  for (int i = 0; i < 25; ++i) {
    auto t0 = Clock::now();
    fn();
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    best = std::min(best, ms);
    total += ms;
    if (i >= 3 && total > 40.0) break;
  }
  return best;
}

// Tuning-cache key of a node: a hash of its weights (float32 or int8: `elem_bytes`) and
// offsets, its shape, geometry, threads and ISA (int8 keys carry ":i8").
std::string CacheKey(const NodeState& st, const void* w, size_t elem_bytes) {
  const LayerSpec& s = st.spec;
  size_t wcount = s.op == OpKind::kDepthwiseConv2D
                      ? static_cast<size_t>(s.kh) * s.kw * s.cout
                      : static_cast<size_t>(s.rows) * s.cols;
  uint64_t h = Fnv1a(w, wcount * elem_bytes);
  h = Fnv1a(st.col_offset.data(), st.col_offset.size() * sizeof(int32_t), h);
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%016llx:%s:%dx%d:k%dx%dx%d:s%dx%d:p%d:t%d:%s%s",
                static_cast<unsigned long long>(h), OpKindName(s.op), s.rows, s.cols, s.kh, s.kw,
                s.cin, s.stride_h, s.stride_w, st.geo.num_pixels, st.num_threads,
                IsaName(DetectIsa()), elem_bytes == 1 ? ":i8" : "");
  return buf;
}

bool KindFromName(const std::string& name, KernelKind* k) {
  for (KernelKind c : {KernelKind::kDense, KernelKind::kRowBlock, KernelKind::kPixelVector}) {
    if (name == KernelKindName(c)) {
      *k = c;
      return true;
    }
  }
  return false;
}

// A GEMM node's kernel choice from the tuning cache: kMiss when the cache is off (empty `key`)
// or holds no usable entry; kPacked: `st` packed with the cached kind, timings and from_cache set.
enum class Cached { kMiss, kPacked, kPackFailed };
Cached PackFromCache(const TfLiteContext* ctx, const TuningCache& cache, const std::string& key,
                     NodeState* st, NodeRecord* rec, std::string* err) {
  TuningEntry entry;
  KernelKind kind;
  if (key.empty() || !cache.Lookup(key, &entry) || !KindFromName(entry.kernel, &kind))
    return Cached::kMiss;
  if (!PackNode(ctx, st, kind, err)) return Cached::kPackFailed;
  st->dense_ms = entry.dense_ms;
  st->best_ms = entry.best_ms;
  rec->from_cache = true;
  return Cached::kPacked;
}

// Copies the input rows into the zero-padded buffer (borders were filled once at prepare), split
// over the pool: for cheap layers (depthwise) the copy costs as much as the kernel itself.
template <typename T>
void CopyIntoPadded(const Geometry& g, int cin, const T* src, T* pad, ThreadPool* pool,
                    int num_threads) {
  const size_t row = static_cast<size_t>(g.in_w) * cin;
  const int rows = g.n * g.in_h;
  const int tasks = std::max(1, std::min(num_threads, rows));
  pool->ParallelFor(tasks, tasks, [&](int t) {
    for (int r = rows * t / tasks; r < rows * (t + 1) / tasks; ++r) {
      const int n = r / g.in_h, y = r % g.in_h;
      std::memcpy(pad + ((static_cast<size_t>(n) * g.hp + y + g.pad_top) * g.wp + g.pad_left) * cin,
                  src + static_cast<size_t>(r) * row, row * sizeof(T));
    }
  });
}

// A GEMM node's packed kernel timed on one thread, when it has more (else a huge value): the
// node picks 1 or N threads in place (KernelInvoke), so its claim weighs the faster of the two.
// On a 2-vCPU VM a sparse int8 conv measured 0.053 ms on 2 threads and 0.032 on 1.
double OneThreadMs(const NodeState& st, int threads) {
  if (threads <= 1) return 1e30;
  ThreadPool* pool = SharedThreadPool();
  const int np = st.geo.num_pixels;
  const size_t in_n = static_cast<size_t>(std::max<int64_t>(st.geo.in_elems, 1));
  if (st.gemm8) {
    std::vector<int8_t> in(in_n, 3), out(static_cast<size_t>(np) * st.spec.rows + 16);
    return TimeMs([&] {
      st.gemm8->Run(in.data(), st.geo.in_elems, st.pixel_base.data(), np, out.data(), pool, 1);
    });
  }
  if (st.gemm) {
    std::vector<float> in(in_n, 0.5f), out(static_cast<size_t>(np) * st.spec.rows + 16);
    return TimeMs([&] { st.gemm->Run(in.data(), st.pixel_base.data(), np, out.data(), pool, 1); });
  }
  return 1e30;
}

// Our int8 dense kernel measured 0.5-0.8x as fast as XNNPACK's int8 (benchmarks/quantization.py),
// so a claim must beat our dense by that handicap too, or XNNPACK would have been faster.
constexpr double kInt8DenseHandicap = 2.0;

// How much more padded work XNNPACK's int8 kernel does for this layer than our dense int8 one.
// XNNPACK's int8 convolutions (igemm) pad each tap's input channels to the micro-kernel's
// k-block (4 on NEON dot product and AVX-512 VNNI, 8 on AVX2 and SSE; 4 is assumed, the least
// waste), while our kernels pad the flattened taps x cin columns to quads once: a 3x3 conv with
// cin = 1 costs XNNPACK 4 x 9 multiplies per output for our 12 (3.0). FC and depthwise: 1.
double XnnpackInt8PadFactor(const LayerSpec& s) {
  if (s.op != OpKind::kConv2D || s.cin <= 0) return 1.0;
  auto round4 = [](int n) { return (n + 3) / 4 * 4; };
  const double xnnpack = static_cast<double>(s.kh) * s.kw * round4(s.cin);
  return xnnpack / round4(s.cols);
}

// The int8 half of Evaluate (spec, geometry and offsets are already built): packs with our int8
// kernels and claims under the same rules as float32 (min_sparsity, schemes, min_speedup against
// our own int8 dense kernel); the tuning cache keeps the measured choice as for float32.
std::unique_ptr<NodeState> EvaluateInt8(TfLiteContext* ctx, DelegateState* d,
                                        std::unique_ptr<NodeState> st, int threads, bool fused,
                                        NodeRecord* rec) {
  const Options& opt = d->options;
  auto decline = [&](const std::string& reason, const std::string& message) {
    rec->claimed = false;
    rec->reason = reason;
    rec->message = message;
    return std::unique_ptr<NodeState>();
  };
  const LayerSpec& s = st->spec;
  const int8_t* w = s.WeightsInt8(ctx);
  if (w == nullptr) return decline("weights_not_constant", "weights not available at prepare");
  const bool depthwise = s.op == OpKind::kDepthwiseConv2D;
  const size_t count = depthwise ? static_cast<size_t>(s.kh) * s.kw * s.cout
                                 : static_cast<size_t>(s.rows) * s.cols;
  size_t nz = 0;
  for (size_t i = 0; i < count; ++i) nz += w[i] != 0;
  rec->density = count ? static_cast<double>(nz) / count : 1.0;
  // Quantized NPAS custom ops run nowhere else, and FCs joined to a fused group run inside it:
  // always claimed, the filters below only pick the kernel (the faster of our int8 dense and
  // sparse ones).
  const bool must_claim = s.custom || fused;
  const bool forced = opt.kernel != KernelKind::kAuto;
  // Layers whose XNNPACK form pads enough (few input channels) are worth claiming dense too.
  const double xnnpack_pad = XnnpackInt8PadFactor(s);
  const bool dense_pays = !forced && xnnpack_pad >= kInt8DenseHandicap * opt.min_speedup;
  if (!must_claim && !dense_pays && rec->density > 1.0 - opt.min_sparsity + 1e-9) {
    char buf[128];
    std::snprintf(buf, sizeof(buf), "density %.3f above 1 - min_sparsity (%.3f)", rec->density,
                  1.0 - opt.min_sparsity);
    return decline("below_min_sparsity", buf);
  }
  std::string err;
  ThreadPool* pool = SharedThreadPool();
  if (depthwise) {
    st->kind = forced && opt.kernel == KernelKind::kDense ? KernelKind::kDense : KernelKind::kRowBlock;
    if (!PackNode(ctx, st.get(), st->kind, &err)) return decline("pack_failed", err);
    if (!forced) {
      TuningEntry entry;
      const std::string key = d->cache.enabled() ? CacheKey(*st, w, 1) : std::string();
      if (!key.empty() && d->cache.Lookup(key, &entry) && entry.kernel == "depthwise") {
        st->dense_ms = entry.dense_ms;
        st->best_ms = entry.best_ms;
        rec->from_cache = true;
      } else {
        auto dense = std::unique_ptr<NodeState>(new NodeState());
        dense->spec = s;
        dense->geo = st->geo;
        dense->col_offset = st->col_offset;
        dense->pixel_base = st->pixel_base;
        if (!PackNode(ctx, dense.get(), KernelKind::kDense, &err)) return decline("pack_failed", err);
        std::vector<int8_t> in(static_cast<size_t>(st->geo.in_elems), 3);
        std::vector<int8_t> out(static_cast<size_t>(st->geo.num_pixels) * s.cout);
        st->dense_ms = TimeMs([&] {
          dense->dw8->Run(in.data(), st->pixel_base.data(), st->geo.num_pixels, out.data(), pool,
                          threads);
        });
        st->best_ms = TimeMs([&] {
          st->dw8->Run(in.data(), st->pixel_base.data(), st->geo.num_pixels, out.data(), pool,
                       threads);
        });
        if (!key.empty()) d->cache.Store(key, {"depthwise", st->dense_ms, st->best_ms});
      }
      if (must_claim && st->dense_ms < st->best_ms) {  // claimed anyway: run the faster one
        st->kind = KernelKind::kDense;
        if (!PackNode(ctx, st.get(), st->kind, &err)) return decline("pack_failed", err);
        st->best_ms = st->dense_ms;
      }
    }
  } else if (forced) {
    KernelKind k = opt.kernel == KernelKind::kPixelVector ? KernelKind::kRowBlock : opt.kernel;
    if (!PackNode(ctx, st.get(), k, &err)) return decline("pack_failed", err);
  } else {
    const std::string key = d->cache.enabled() ? CacheKey(*st, w, 1) : std::string();
    const Cached cached = PackFromCache(ctx, d->cache, key, st.get(), rec, &err);
    if (cached == Cached::kPackFailed) return decline("pack_failed", err);
    if (cached == Cached::kMiss) {
      const GemmInt8Desc gd = MakeGemmInt8Desc(ctx, *st, w);
      st->gemm8 = PackGemmInt8(gd, KernelKind::kAuto, st->geo.num_pixels, st->pixel_base.data(),
                               st->geo.in_elems, threads, &st->dense_ms, &st->best_ms, &err);
      if (!st->gemm8) return decline("pack_failed", err);
      st->kind = st->gemm8->kind();
      st->structure = st->gemm8->structure();
      st->best_ms = std::min(st->best_ms, OneThreadMs(*st, threads));
      if (!key.empty()) d->cache.Store(key, {KernelKindName(st->kind), st->dense_ms, st->best_ms});
    }
  }
  rec->structure = StructureLabel(st->structure.kind);
  rec->kernel = depthwise ? "int8_depthwise" : std::string("int8_") + KernelKindName(st->kind);
  rec->dense_ms = st->dense_ms;
  rec->best_ms = st->best_ms;
  if (!must_claim && (opt.schemes & StructureBit(st->structure.kind)) == 0)
    return decline("scheme_not_allowed", "structure " + rec->structure + " not in `schemes`");
  if (!must_claim && !forced && !dense_pays && st->structure.kind == Structure::kDense)
    return decline("dense_weights", "no exploitable zeros (left to the default kernels)");
  // XNNPACK's time estimated as our dense time x its padding / the handicap.
  if (!must_claim && !forced &&
      st->best_ms * opt.min_speedup * kInt8DenseHandicap > st->dense_ms * xnnpack_pad) {
    char buf[224];
    std::snprintf(buf, sizeof(buf),
                  "measured %.4f ms vs int8 dense %.4f ms: below min_speedup %.2f x int8 "
                  "handicap %.1f / XNNPACK padding %.2f",
                  st->best_ms, st->dense_ms, opt.min_speedup, kInt8DenseHandicap, xnnpack_pad);
    return decline("no_speedup", buf);
  }
  rec->claimed = true;
  rec->packed_bytes = depthwise ? st->dw8->packed_bytes() : st->gemm8->packed_bytes();
  return st;
}

// What decides a builtin node's packing and claim besides its input: weights and bias (by
// content: a converter gives each step of an unrolled RNN its own copy of the bias), parameters,
// geometry, threads. Custom ops (weights decoded per node) and non-constant weights: empty.
std::string ShareKey(const TfLiteContext* ctx, const NodeState& st, int threads, bool fused) {
  const LayerSpec& s = st.spec;
  if (s.custom || s.weights_tensor < 0 || !IsConstant(ctx->tensors[s.weights_tensor]))
    return std::string();
  const TfLiteTensor& w = ctx->tensors[s.weights_tensor];
  uint64_t h = Fnv1a(w.data.raw, w.bytes);
  if (s.bias_tensor >= 0) {
    const TfLiteTensor& b = ctx->tensors[s.bias_tensor];
    if (!IsConstant(b)) return std::string();
    h = Fnv1a(b.data.raw, b.bytes, h);
  }
  std::ostringstream o;
  o << OpKindName(s.op) << ":" << h << ":" << s.rows
    << "x" << s.cols << ":k" << s.kh << "x" << s.kw << "x" << s.cin << ":m" << s.depth_multiplier
    << ":s" << s.stride_h << "x" << s.stride_w << ":d" << s.dil_h << "x" << s.dil_w << ":p"
    << s.padding << ":n" << s.keep_num_dims << ":a" << s.act_min << "," << s.act_max << ":q"
    << s.int8 << "," << s.input_zp << "," << s.output_zp << "," << s.act_min_q << ","
    << s.act_max_q << ","
    << Fnv1a(s.multiplier.data(), s.multiplier.size() * sizeof(int32_t)) << ","
    << Fnv1a(s.shift.data(), s.shift.size() * sizeof(int32_t)) << ":g";
  for (int v : st.geo.in_dims) o << v << ",";
  o << ":t" << threads << ":f" << fused;
  return o.str();
}

std::unique_ptr<NodeState> EvaluateFloat(TfLiteContext* ctx, DelegateState* d,
                                         std::unique_ptr<NodeState> st, int threads,
                                         NodeRecord* rec);

// Decides whether to claim one candidate node. Returns the packed state when claimed.
// `fused`: an int8 FC joined to a fused group (claimed whatever its speed-up).
std::unique_ptr<NodeState> Evaluate(TfLiteContext* ctx, DelegateState* d, int node_index,
                                    TfLiteNode* node, TfLiteRegistration* reg, int threads,
                                    bool fused, NodeRecord* rec) {
  auto st = std::make_unique<NodeState>();
  rec->node = node_index;
  rec->op = reg->builtin_code == kTfLiteBuiltinCustom ? reg->custom_name
            : reg->builtin_code == kTfLiteBuiltinFullyConnected ? "FULLY_CONNECTED"
            : reg->builtin_code == kTfLiteBuiltinConv2d        ? "CONV_2D"
                                                               : "DEPTHWISE_CONV_2D";
  auto decline = [&](const std::string& reason, const std::string& message) {
    rec->claimed = false;
    rec->reason = reason;
    rec->message = message;
    return std::unique_ptr<NodeState>();
  };
  std::string reason, message, err;
  if (!BuildLayerSpec(ctx, node_index, node, reg, &st->spec, &reason, &message))
    return decline(reason, message);
  rec->rows = st->spec.rows;
  rec->cols = st->spec.cols;
  st->num_threads = threads;
  if (!ComputeGeometry(ctx, st->spec, &st->geo, &err)) return decline("bad_shape", err);
  BuildOffsets(st->spec, st->geo, &st->col_offset, &st->pixel_base);
  // Nodes with the same weights and parameters (an unrolled float RNN's per-step FCs) share the
  // first one's packing and decision: 28 packed copies of a GRU's weights would not stay in
  // cache. (int8 per-step FCs differ in scales; their packings share the weight part instead.)
  const std::string key = ShareKey(ctx, *st, threads, fused);
  auto same = key.empty() ? d->shared.end() : d->shared.find(key);
  // The key holds a hash of the weights and bias: compare the bytes too.
  auto same_bytes = [&](int a, int b) {
    if (a < 0 || b < 0) return a == b;
    const TfLiteTensor &x = ctx->tensors[a], &y = ctx->tensors[b];
    return x.bytes == y.bytes && std::memcmp(x.data.raw, y.data.raw, x.bytes) == 0;
  };
  if (same != d->shared.end() &&
      !(same_bytes(st->spec.weights_tensor, same->second.weights_tensor) &&
        same_bytes(st->spec.bias_tensor, same->second.bias_tensor)))
    same = d->shared.end();
  if (same != d->shared.end()) {
    const NodeRecord& first = same->second.record;
    *rec = first;
    rec->node = node_index;
    rec->packed_bytes = 0;
    rec->message = (first.message.empty() ? "" : first.message + "; ") + "as node " +
                   std::to_string(first.node);
    if (!first.claimed) return std::unique_ptr<NodeState>();
    const NodeState& src = *same->second.state;
    st->gemm = src.gemm;
    st->gemm8 = src.gemm8;
    st->kind = src.kind;
    st->structure = src.structure;
    st->dense_ms = src.dense_ms;
    st->best_ms = src.best_ms;
    return st;
  }
  const int weights_tensor = st->spec.weights_tensor, bias_tensor = st->spec.bias_tensor;
  std::unique_ptr<NodeState> out =
      st->spec.int8 ? EvaluateInt8(ctx, d, std::move(st), threads, fused, rec)
                    : EvaluateFloat(ctx, d, std::move(st), threads, rec);
  if (!key.empty() && (out == nullptr || out->gemm || out->gemm8) && !d->shared.count(key))
    d->shared[key] = {*rec, out.get(), weights_tensor, bias_tensor};
  return out;
}

// The float32 half of Evaluate (as EvaluateInt8).
std::unique_ptr<NodeState> EvaluateFloat(TfLiteContext* ctx, DelegateState* d,
                                         std::unique_ptr<NodeState> st, int threads,
                                         NodeRecord* rec) {
  const Options& opt = d->options;
  std::string err;
  auto decline = [&](const std::string& reason, const std::string& message) {
    rec->claimed = false;
    rec->reason = reason;
    rec->message = message;
    return std::unique_ptr<NodeState>();
  };
  const LayerSpec& s = st->spec;
  const float* w = s.Weights(ctx);
  if (w == nullptr) return decline("weights_not_constant", "weights not available at prepare");

  const bool forced = opt.kernel != KernelKind::kAuto;
  // NPAS custom ops run nowhere else: always claimed (sparsity, scheme and speed filters only
  // pick the kernel for them, with our dense kernel as the fallback).
  const bool must_claim = s.custom;
  const bool depthwise = s.op == OpKind::kDepthwiseConv2D;
  StructureInfo info;
  if (depthwise) {
    const size_t count = static_cast<size_t>(s.kh) * s.kw * s.cout;
    size_t nz = 0;
    for (size_t i = 0; i < count; ++i) nz += w[i] != 0.f;
    info.density = count ? static_cast<double>(nz) / count : 1.0;
  } else {
    info = s.op == OpKind::kConv2D ? AnalyzeStructure(w, s.rows, s.cols, s.kh, s.kw, s.cin)
                                   : AnalyzeStructure(w, s.rows, s.cols, 1, 1, s.cols);
  }
  rec->density = info.density;
  if (!must_claim && info.density > 1.0 - opt.min_sparsity + 1e-9) {
    char buf[128];
    std::snprintf(buf, sizeof(buf), "density %.3f above 1 - min_sparsity (%.3f)", info.density,
                  1.0 - opt.min_sparsity);
    return decline("below_min_sparsity", buf);
  }

  if (depthwise) {
    if (!PackNode(ctx, st.get(), KernelKind::kAuto, &err)) return decline("pack_failed", err);
    info = st->structure;
  }
  rec->structure = StructureLabel(info.kind);
  if (!must_claim && (opt.schemes & StructureBit(info.kind)) == 0)
    return decline("scheme_not_allowed", "structure " + rec->structure + " not in `schemes`");
  if (!must_claim && !forced && info.kind == Structure::kDense)
    return decline("dense_weights", "no exploitable zeros (left to the default kernels)");

  if (!depthwise) {
    if (forced) {
      if (!PackNode(ctx, st.get(), opt.kernel, &err)) return decline("pack_failed", err);
    } else {
      const std::string key = d->cache.enabled() ? CacheKey(*st, w, sizeof(float)) : std::string();
      const Cached cached = PackFromCache(ctx, d->cache, key, st.get(), rec, &err);
      if (cached == Cached::kPackFailed) return decline("pack_failed", err);
      if (cached == Cached::kMiss) {
        const GemmDesc gd = MakeGemmDesc(ctx, *st, w);
        double dense_ms = 0, best_ms = 0;
        st->gemm = PackGemm(gd, KernelKind::kAuto, st->geo.num_pixels, st->pixel_base.data(),
                            st->geo.in_elems, threads, &dense_ms, &best_ms, &err);
        if (!st->gemm) return decline("pack_failed", err);
        st->kind = st->gemm->kind();
        st->structure = st->gemm->structure();
        st->dense_ms = dense_ms;
        st->best_ms = best_ms = std::min(best_ms, OneThreadMs(*st, threads));
        if (!key.empty()) d->cache.Store(key, {KernelKindName(st->kind), dense_ms, best_ms});
      }
    }
  } else if (!forced) {
    // Our own dense depthwise (same shape, no zeros) is the reference the sparse one must beat.
    TuningEntry entry;
    const std::string key = d->cache.enabled() ? CacheKey(*st, w, sizeof(float)) : std::string();
    if (!key.empty() && d->cache.Lookup(key, &entry) && entry.kernel == "depthwise") {
      st->dense_ms = entry.dense_ms;
      st->best_ms = entry.best_ms;
      rec->from_cache = true;
    } else {
      std::vector<float> ones(static_cast<size_t>(s.kh) * s.kw * s.cout, 1.0f);
      DepthwiseDesc dd;
      dd.kh = s.kh;
      dd.kw = s.kw;
      dd.cin = s.cin;
      dd.depth_multiplier = s.depth_multiplier;
      dd.weights = ones.data();
      dd.tap_offset = st->col_offset.data();
      auto dense = PackDepthwise(dd, &err);
      if (!dense) return decline("pack_failed", err);
      std::vector<float> in(static_cast<size_t>(st->geo.in_elems), 0.5f);
      std::vector<float> out(static_cast<size_t>(st->geo.num_pixels) * s.cout);
      ThreadPool* pool = SharedThreadPool();
      st->dense_ms = TimeMs([&] {
        dense->Run(in.data(), st->pixel_base.data(), st->geo.num_pixels, out.data(), pool, threads);
      });
      // Depthwise layers are too short for our pool to scale, while XNNPACK's does
      // (benchmarks/bench_delegate.py, 2 threads): assume the stock kernel scales perfectly.
      if (threads > 1) {
        const double one_thread_ms = TimeMs([&] {
          dense->Run(in.data(), st->pixel_base.data(), st->geo.num_pixels, out.data(), pool, 1);
        });
        st->dense_ms = std::min(st->dense_ms, one_thread_ms / threads);
      }
      st->best_ms = TimeMs([&] {
        st->dw->Run(in.data(), st->pixel_base.data(), st->geo.num_pixels, out.data(), pool,
                    threads);
      });
      if (!key.empty()) d->cache.Store(key, {"depthwise", st->dense_ms, st->best_ms});
    }
  }
  rec->dense_ms = st->dense_ms;
  rec->best_ms = st->best_ms;
  rec->kernel = depthwise ? "depthwise" : KernelKindName(st->kind);
  rec->structure = StructureLabel(st->structure.kind);
  // XNNPACK pays no padding copy; ours counts against the sparse kernel in the claim decision.
  if (st->geo.needs_copy) {
    std::vector<float> src(static_cast<size_t>(st->geo.n) * st->geo.in_h * st->geo.in_w * s.cin);
    std::vector<float> pad(static_cast<size_t>(st->geo.in_elems));
    st->best_ms += TimeMs([&] {
      CopyIntoPadded(st->geo, s.cin, src.data(), pad.data(), SharedThreadPool(), threads);
    });
    rec->best_ms = st->best_ms;
  }
  if (!must_claim && !forced && st->best_ms * opt.min_speedup > st->dense_ms) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "measured %.4f ms vs dense %.4f ms: below min_speedup %.2f",
                  st->best_ms, st->dense_ms, opt.min_speedup);
    return decline("no_speedup", buf);
  }
  rec->claimed = true;
  rec->packed_bytes = depthwise ? st->dw->packed_bytes() : st->gemm->packed_bytes();
  return st;
}

void Log(const DelegateState* d, const NodeRecord& r) {
  if (d->options.verbose <= 0 || (!r.claimed && d->options.verbose < 2)) return;
  if (r.claimed) {
    std::fprintf(stderr,
                 "npas: claimed node %d %s structure=%s kernel=%s density=%.3f dense=%.4fms "
                 "best=%.4fms%s packed=%zuB\n",
                 r.node, r.op.c_str(), r.structure.c_str(), r.kernel.c_str(), r.density,
                 r.dense_ms, r.best_ms, r.from_cache ? " (tuning cache)" : "", r.packed_bytes);
  } else {
    std::fprintf(stderr, "npas: declined node %d %s: %s (%s)\n", r.node, r.op.c_str(),
                 r.reason.c_str(), r.message.c_str());
  }
}

// ---- the delegate kernel --------------------------------------------------------------------
void* KernelInit(TfLiteContext* ctx, const char* buffer, size_t) {
  auto* params = reinterpret_cast<const TfLiteDelegateParams*>(buffer);
  if (params == nullptr || params->delegate == nullptr || params->nodes_to_replace == nullptr ||
      params->nodes_to_replace->size != 1) {
    ctx->ReportError(ctx, "npas delegate: unexpected partition");
    return nullptr;
  }
  auto* d = static_cast<DelegateState*>(params->delegate->data_);
  std::lock_guard<std::recursive_mutex> lock(d->mu);  // re-entrant: we are inside Prepare
  auto it = d->pending.find(params->nodes_to_replace->data[0]);
  if (it == d->pending.end()) {
    ctx->ReportError(ctx, "npas delegate: node %d was not prepared",
                     params->nodes_to_replace->data[0]);
    return nullptr;
  }
  NodeState* st = it->second.release();
  d->pending.erase(it);
  return st;
}

void KernelFree(TfLiteContext*, void* buffer) { delete static_cast<NodeState*>(buffer); }

bool SameDims(const TfLiteIntArray* a, const std::vector<int>& b) {
  if (a == nullptr || a->size != static_cast<int>(b.size())) return false;
  for (int i = 0; i < a->size; ++i)
    if (a->data[i] != b[i]) return false;
  return true;
}

TfLiteStatus KernelPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* st = static_cast<NodeState*>(node->user_data);
  if (st == nullptr) {
    ctx->ReportError(ctx, "npas delegate: kernel not initialised");
    return kTfLiteError;
  }
  const TfLiteTensor& in = ctx->tensors[st->spec.input_tensor];
  if (!SameDims(in.dims, st->geo.in_dims)) {
    Geometry geo;
    std::string err;
    if (!ComputeGeometry(ctx, st->spec, &geo, &err)) {
      ctx->ReportError(ctx, "npas delegate: node %d (%s): %s", st->spec.node_index,
                       st->spec.op_name.c_str(), err.c_str());
      return kTfLiteError;
    }
    const bool repack = st->spec.op != OpKind::kFullyConnected && geo.wp != st->geo.wp;
    st->geo = geo;
    BuildOffsets(st->spec, st->geo, &st->col_offset, &st->pixel_base);
    if (repack) {  // col_offset is baked into the packed indices
      KernelKind kind = st->kind;
      if (!PackNode(ctx, st, kind, &err)) {
        ctx->ReportError(ctx, "npas delegate: repacking node %d failed: %s", st->spec.node_index,
                         err.c_str());
        return kTfLiteError;
      }
    }
  }
  if (st->spec.int8) {
    // Padding holds the input zero point (the value 0.0 in quantized space).
    if (st->geo.needs_copy)
      st->padded8.assign(static_cast<size_t>(st->geo.in_elems), static_cast<int8_t>(st->spec.input_zp));
    else
      std::vector<int8_t>().swap(st->padded8);
  } else if (st->geo.needs_copy) {
    if (st->padded.size() != static_cast<size_t>(st->geo.in_elems))
      st->padded.assign(static_cast<size_t>(st->geo.in_elems), 0.f);
  } else {
    std::vector<float>().swap(st->padded);
  }
  TfLiteTensor& out = ctx->tensors[st->spec.output_tensor];
  if (!SameDims(out.dims, st->geo.out_dims)) {
    const int rank = static_cast<int>(st->geo.out_dims.size());
    auto* dims = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (1 + rank)));
    if (dims == nullptr) return kTfLiteError;
    dims->size = rank;
    for (int i = 0; i < rank; ++i) dims->data[i] = st->geo.out_dims[i];
    return ctx->ResizeTensor(ctx, &out, dims);  // takes ownership of dims
  }
  return kTfLiteOk;
}

TfLiteStatus RunNode(TfLiteContext* ctx, NodeState* st, int threads) {
  const TfLiteTensor& in = ctx->tensors[st->spec.input_tensor];
  TfLiteTensor& out = ctx->tensors[st->spec.output_tensor];
  if (st->spec.int8) {
    const int8_t* src8 = in.data.int8;
    int8_t* dst8 = out.data.int8;
    if (src8 == nullptr || dst8 == nullptr) {
      ctx->ReportError(ctx, "npas delegate: node %d has unallocated tensors", st->spec.node_index);
      return kTfLiteError;
    }
    const Geometry& g = st->geo;
    ThreadPool* pool = SharedThreadPool();
    if (g.needs_copy) {
      CopyIntoPadded(g, st->spec.cin, src8, st->padded8.data(), pool, threads);
      src8 = st->padded8.data();
    }
    if (st->gemm8)
      st->gemm8->Run(src8, g.in_elems, st->pixel_base.data(), g.num_pixels, dst8, pool,
                     threads);
    else if (st->dw8)
      st->dw8->Run(src8, st->pixel_base.data(), g.num_pixels, dst8, pool, threads);
    else
      return kTfLiteError;
    return kTfLiteOk;
  }
  const float* src = in.data.f;
  float* dst = out.data.f;
  if (src == nullptr || dst == nullptr) {
    ctx->ReportError(ctx, "npas delegate: node %d has unallocated tensors", st->spec.node_index);
    return kTfLiteError;
  }
  const Geometry& g = st->geo;
  ThreadPool* pool = SharedThreadPool();
  if (g.needs_copy) {
    CopyIntoPadded(g, st->spec.cin, src, st->padded.data(), pool, threads);
    src = st->padded.data();
  }
  if (st->gemm)
    st->gemm->Run(src, st->pixel_base.data(), g.num_pixels, dst, pool, threads);
  else
    st->dw->Run(src, st->pixel_base.data(), g.num_pixels, dst, pool, threads);
  return kTfLiteOk;
}

// The first invokes of a node with more than one thread alternate between one thread and all
// of them, timed, and the node keeps the faster (median of kThreadTrials each, after a warm-up
// pair). Timing a node alone at prepare does not show what the runtime's other threads do
// between our nodes: on a 2-vCPU VM, XNNPACK's spinning workers made our 2-thread convs 2x
// slower than 1-thread ones inside the int8 CNN, while alone they were faster.
constexpr int kThreadTrials = 7;

TfLiteStatus KernelInvoke(TfLiteContext* ctx, TfLiteNode* node) {
  auto* st = static_cast<NodeState*>(node->user_data);
  if (st == nullptr) return kTfLiteError;
  if (st->num_threads <= 1) return RunNode(ctx, st, 1);
  const int k = st->thread_trials++;
  if (k >= 2 * (kThreadTrials + 1)) return RunNode(ctx, st, st->run_threads);
  const bool single = k % 2 == 1;
  const auto t0 = std::chrono::steady_clock::now();
  const TfLiteStatus status = RunNode(ctx, st, single ? 1 : st->num_threads);
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  if (k >= 2) st->trial_us[single].push_back(us);
  if (k == 2 * (kThreadTrials + 1) - 1) {
    auto median = [](std::vector<double> v) {
      std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
      return v[v.size() / 2];
    };
    st->run_threads = median(st->trial_us[1]) < median(st->trial_us[0]) ? 1 : st->num_threads;
  }
  return status;
}

const char* KernelProfilingString(const TfLiteContext*, const TfLiteNode* node) {
  auto* st = static_cast<const NodeState*>(node->user_data);
  return st ? st->spec.op_name.c_str() : "npas";
}

}  // namespace

TfLiteRegistration DelegateKernelRegistration(const char* name,
                                              void* (*init)(TfLiteContext*, const char*, size_t),
                                              void (*free)(TfLiteContext*, void*),
                                              TfLiteStatus (*prepare)(TfLiteContext*, TfLiteNode*),
                                              TfLiteStatus (*invoke)(TfLiteContext*, TfLiteNode*)) {
  TfLiteRegistration r;
  std::memset(&r, 0, sizeof(r));
  r.init = init;
  r.free = free;
  r.prepare = prepare;
  r.invoke = invoke;
  r.builtin_code = kTfLiteBuiltinDelegate;
  r.custom_name = name;
  r.version = 1;
  return r;
}

TfLiteRegistration MakeKernelRegistration() {
  TfLiteRegistration r = DelegateKernelRegistration("NpasDelegate", KernelInit, KernelFree,
                                                    KernelPrepare, KernelInvoke);
  r.profiling_string = KernelProfilingString;
  return r;
}

TfLiteStatus DelegatePrepare(TfLiteContext* ctx, TfLiteDelegate* delegate) {
  auto* d = static_cast<DelegateState*>(delegate->data_);
  std::lock_guard<std::recursive_mutex> lock(d->mu);
  TfLiteIntArray* plan_ptr = nullptr;
  if (ctx->GetExecutionPlan(ctx, &plan_ptr) != kTfLiteOk || plan_ptr == nullptr)
    return kTfLiteError;
  // Copy first: later calls into the context invalidate the runtime's array.
  const std::vector<int> plan(plan_ptr->data, plan_ptr->data + plan_ptr->size);
  const int threads = d->options.num_threads > 0        ? d->options.num_threads
                      : ctx->recommended_num_threads > 0 ? ctx->recommended_num_threads
                                                         : 1;
  if (!d->options.tuning_cache.empty()) d->cache.Load(d->options.tuning_cache);

  std::vector<int> claimed, fused;
  d->pending.clear();
  d->pending_elementwise.clear();
  d->shared.clear();
  FusionPlan fusion = PlanFusion(ctx, plan, d->options);
  // The runtime may undo and redo delegation on the same graph: keep one set of records each.
  d->records.erase(std::remove_if(d->records.begin(), d->records.end(),
                                  [ctx](const NodeRecord& r) { return r.context == ctx; }),
                   d->records.end());
  for (int node_index : plan) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (ctx->GetNodeAndRegistration(ctx, node_index, &node, &reg) != kTfLiteOk || !node || !reg)
      continue;
    NodeRecord rec;
    rec.context = ctx;
    auto ew = fusion.elementwise.find(node_index);
    if (ew != fusion.elementwise.end()) {
      rec.node = node_index;
      rec.op = ElementwiseOpName(reg->builtin_code);
      rec.claimed = true;
      rec.structure = "elementwise";
      rec.kernel = "int8_fused";
      d->pending_elementwise[node_index] = std::move(ew->second);
      fused.push_back(node_index);
    } else {
      if (!IsCandidate(reg)) continue;
      const bool in_group = std::find(fusion.gemms.begin(), fusion.gemms.end(), node_index) !=
                            fusion.gemms.end();
      // A fused group's FCs are a microsecond or less: one thread (waking the pool costs more).
      auto st = Evaluate(ctx, d, node_index, node, reg, in_group ? 1 : threads, in_group, &rec);
      if (st) {
        d->pending[node_index] = std::move(st);
        (in_group ? fused : claimed).push_back(node_index);
      }
    }
    Log(d, rec);
    if (d->records.size() < 100000) d->records.push_back(rec);
  }
  d->cache.SaveIfDirty();

  // One partition per claimed node (a partition's internal tensors get no memory from TFLite);
  // the fused groups below allocate theirs.
  const TfLiteRegistration reg = MakeKernelRegistration();
  auto* nodes = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * 2));
  if (nodes == nullptr) return kTfLiteError;
  TfLiteStatus status = kTfLiteOk;
  for (int idx : claimed) {
    nodes->size = 1;
    nodes->data[0] = idx;
    status = ctx->ReplaceNodeSubsetsWithDelegateKernels(ctx, reg, nodes, delegate);
    if (status != kTfLiteOk) break;
  }
  std::free(nodes);
  // The fused groups in one call: TFLite splits them into partitions it can schedule.
  if (status == kTfLiteOk && !fused.empty()) {
    TfLiteIntArray* group =
        static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (1 + fused.size())));
    if (group == nullptr) return kTfLiteError;
    group->size = static_cast<int>(fused.size());
    std::copy(fused.begin(), fused.end(), group->data);
    status = ctx->ReplaceNodeSubsetsWithDelegateKernels(ctx, MakeFusedRegistration(), group,
                                                        delegate);
    std::free(group);
  }
  d->pending.clear();
  d->pending_elementwise.clear();
  d->shared.clear();
  return status;
}

}  // namespace npas
