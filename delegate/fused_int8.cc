// Fused int8 partitions. In an int8 recurrent network exported unrolled (a GRU: per step two FCs
// and about twelve ADD / SUB / MUL / LOGISTIC / TANH / SPLIT ops on 128 values), the per-op cost of
// whichever runtime executes the small ops, and of handing tensors between it and our FC kernels,
// is most of the time. Here groups of such small int8 ops are claimed together with the int8 FCs
// that feed or read them and run as one delegate kernel: TFLite's int8 arithmetic for each op
// (elementwise_int8.cc), our int8 GEMM kernels for the FCs, partition-internal tensors in buffers
// of our own (TFLite gives the tensors inside a partition no memory).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <tuple>

#include "delegate_internal.h"

namespace npas {
namespace {

// Larger tensors are left alone: there the ops' own speed matters, not the per-op cost.
constexpr int64_t kMaxFusedElements = 4096;
// FCs joined to a fused group regardless of their measured speed-up: up to this many weights
// (an unrolled GRU's 384 x 128), and few rows of input.
constexpr int64_t kMaxForcedGemmWeights = 1 << 17;
constexpr int kMaxForcedGemmPixels = 16;
// Groups with fewer elementwise ops are not worth a partition of their own. Groups with FCs
// of any density are: an unrolled int8 GRU fused ran 1.34x (dense weights), 1.41-1.47x (1/2)
// and 2.1x (1/8) stock XNNPACK on Zen 3, although our elementwise ops (TFLite's reference
// arithmetic) and dense batch-1 FCs are each slower than XNNPACK's: the partition boundaries
// between our FCs and XNNPACK's ops cost more.
constexpr int kMinFusedOps = 4;

bool FusionAvailable() {
  // The elementwise kernels are vectorised for AVX2 and NEON; elsewhere the scalar ones would be
  // slower than the runtime's. (Measured on x86 only: on aarch64 the NEON kernels are tested
  // under qemu, their speed is not.)
  const Isa isa = DetectIsa();
  return isa == Isa::kAvx2 || isa == Isa::kAvx512 || isa == Isa::kNeon;
}

float Sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }
float Tanh(float v) { return std::tanh(v); }

// Per-tensor int8 quantization with a finite positive scale.
bool Int8Params(const TfLiteTensor& t, float* scale, int32_t* zp) {
  if (t.type != kTfLiteInt8) return false;
  const TfLiteAffineQuantization* q = Affine(t);
  if (q == nullptr || q->scale->size != 1) return false;
  *scale = q->scale->data[0];
  *zp = q->zero_point->data[0];
  return *scale > 0 && std::isfinite(*scale) && *zp >= -128 && *zp <= 127;
}

// Static, known dims (no -1 in the signature either) of at most kMaxFusedElements elements.
int64_t StaticElements(const TfLiteTensor& t) {
  if (t.dims_signature != nullptr)
    for (int i = 0; i < t.dims_signature->size; ++i)
      if (t.dims_signature->data[i] < 0) return -1;
  const int64_t n = NumElements(t.dims);
  return n > kMaxFusedElements ? -1 : n;
}

bool ConstInt32(const TfLiteTensor& t, std::vector<int64_t>* values) {
  if (!IsConstant(t) || t.type != kTfLiteInt32) return false;
  const int64_t n = NumElements(t.dims);
  if (n < 0) return false;
  values->assign(t.data.i32, t.data.i32 + n);
  return true;
}

int TensorAt(const TfLiteIntArray* a, int i) {
  return a != nullptr && i < a->size ? a->data[i] : -1;
}

}  // namespace

const char* ElementwiseOpName(int code) {
  switch (code) {
    case kTfLiteBuiltinAdd: return "ADD";
    case kTfLiteBuiltinSub: return "SUB";
    case kTfLiteBuiltinMul: return "MUL";
    case kTfLiteBuiltinLogistic: return "LOGISTIC";
    case kTfLiteBuiltinTanh: return "TANH";
    case kTfLiteBuiltinSplit: return "SPLIT";
    case kTfLiteBuiltinSplitV: return "SPLIT_V";
    default: return nullptr;
  }
}

bool BuildElementwiseSpec(const TfLiteContext* ctx, int node_index, const TfLiteNode* node,
                          const TfLiteRegistration* reg, ElementwiseSpec* spec, std::string* why) {
  auto no = [&](const char* reason) {
    *why = reason;
    return false;
  };
  const int code = reg->builtin_code;
  if (ElementwiseOpName(code) == nullptr) return no("not an elementwise op");
  const int nin = node->inputs ? node->inputs->size : 0;
  const int nout = node->outputs ? node->outputs->size : 0;
  for (int i = 0; i < nin + nout; ++i) {
    const int t = i < nin ? node->inputs->data[i] : node->outputs->data[i - nin];
    if (t < 0 || static_cast<size_t>(t) >= ctx->tensors_size) return no("missing tensor");
  }
  spec->node = node_index;
  spec->code = code;
  const TfLiteTensor* T = ctx->tensors;
  if (code == kTfLiteBuiltinSplit || code == kTfLiteBuiltinSplitV) {
    const bool v = code == kTfLiteBuiltinSplitV;
    const int data = TensorAt(node->inputs, v ? 0 : 1);
    const int axis_t = TensorAt(node->inputs, v ? 2 : 0);
    std::vector<int64_t> axis;
    if (nin != (v ? 3 : 2) || nout < 1 || !ConstInt32(T[axis_t], &axis) || axis.size() != 1)
      return no("split axis not a constant");
    const TfLiteTensor& in = T[data];
    float s;
    int32_t zp;
    if (!Int8Params(in, &s, &zp) || StaticElements(in) < 0) return no("not a small int8 tensor");
    const int rank = in.dims->size;
    int64_t a = axis[0] < 0 ? axis[0] + rank : axis[0];
    if (a < 0 || a >= rank) return no("bad split axis");
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < a; ++i) outer *= in.dims->data[i];
    for (int i = a + 1; i < rank; ++i) inner *= in.dims->data[i];
    int64_t along = 0;
    spec->chunk.clear();
    for (int o = 0; o < nout; ++o) {
      const TfLiteTensor& out = T[node->outputs->data[o]];
      if (out.type != kTfLiteInt8 || StaticElements(out) < 0 || out.dims->size != rank)
        return no("split output not a small int8 tensor");
      along += out.dims->data[a];
      spec->chunk.push_back(static_cast<int64_t>(out.dims->data[a]) * inner);
    }
    if (along != in.dims->data[a]) return no("split sizes do not add up");
    spec->outer = outer;
    spec->inputs = {data};
    spec->outputs.assign(node->outputs->data, node->outputs->data + nout);
    return true;
  }
  const bool binary =
      code == kTfLiteBuiltinAdd || code == kTfLiteBuiltinSub || code == kTfLiteBuiltinMul;
  if (nin != (binary ? 2 : 1) || nout != 1) return no("unexpected inputs");
  float s1, s2 = 0, so;
  int32_t z1, z2 = 0, zo;
  const TfLiteTensor& in1 = T[node->inputs->data[0]];
  const TfLiteTensor& out = T[node->outputs->data[0]];
  if (!Int8Params(in1, &s1, &z1) || !Int8Params(out, &so, &zo))
    return no("not per-tensor int8");
  spec->n = StaticElements(out);
  spec->n1 = StaticElements(in1);
  if (spec->n < 1 || spec->n1 < 1) return no("not a small static tensor");
  spec->inputs.assign(node->inputs->data, node->inputs->data + nin);
  spec->outputs = {node->outputs->data[0]};
  if (!binary) {
    if (spec->n1 != spec->n) return no("shape mismatch");
    spec->table.resize(256);
    MakeLookupInt8(s1, z1, so, zo, code == kTfLiteBuiltinLogistic ? Sigmoid : Tanh,
                   spec->table.data());
    return true;
  }
  const TfLiteTensor& in2 = T[node->inputs->data[1]];
  if (!Int8Params(in2, &s2, &z2)) return no("not per-tensor int8");
  spec->n2 = StaticElements(in2);
  if ((spec->n1 != spec->n && spec->n1 != 1) || (spec->n2 != spec->n && spec->n2 != 1))
    return no("broadcast other than of a single value");
  // ADD / SUB / MUL params all start with the fused activation.
  const int act = node->builtin_data ? *static_cast<const int*>(node->builtin_data) : 0;
  float amin, amax;
  int32_t lo, hi;
  if (!ActivationRange(act, &amin, &amax) ||
      !QuantizedActivationRange(amin, amax, so, zo, &lo, &hi))
    return no("unsupported fused activation");
  if (code == kTfLiteBuiltinMul)
    MakeMulInt8Params(s1, z1, s2, z2, so, zo, lo, hi, &spec->mul);
  else if (!MakeAddInt8Params(s1, z1, s2, z2, so, zo, code == kTfLiteBuiltinSub ? -1 : 1, lo, hi,
                              &spec->add))
    return no("scales TFLite's int8 ADD rejects");
  // With one side a constant single value (a GRU's 1 - z) the op is a function of one byte:
  // its table, made by the op itself on all 256 values, is exact and a quarter of the work.
  const bool const1 = spec->n1 == 1 && IsConstant(in1), const2 = spec->n2 == 1 && IsConstant(in2);
  if (const1 != const2 && (const1 ? spec->n2 : spec->n1) == spec->n) {
    std::vector<int8_t> all(256);
    for (int v = 0; v < 256; ++v) all[v] = static_cast<int8_t>(v);
    const int8_t* c = const1 ? in1.data.int8 : in2.data.int8;
    const int8_t* a = const1 ? c : all.data();
    const int8_t* b = const1 ? all.data() : c;
    const int64_t na = const1 ? 1 : 256, nb = const1 ? 256 : 1;
    spec->table.resize(256);
    if (code == kTfLiteBuiltinMul)
      MulInt8(spec->mul, a, na, b, nb, spec->table.data(), 256);
    else
      AddInt8(spec->add, a, na, b, nb, spec->table.data(), 256);
    spec->inputs = {node->inputs->data[const1 ? 1 : 0]};
  } else if (code != kTfLiteBuiltinMul) {
    FitLinearAdd(&spec->add);
  }
  return true;
}

FusionPlan PlanFusion(TfLiteContext* ctx, const std::vector<int>& plan, const Options& opt) {
  FusionPlan fp;
  if (!opt.fuse || !FusionAvailable()) return fp;
  // Candidates and the int8 FCs next to them (sharing a tensor), joined into groups by
  // union-find over the tensors they share.
  std::map<int, int> parent;
  std::function<int(int)> find = [&](int x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  auto unite = [&](int a, int b) { parent[find(a)] = find(b); };
  std::map<int, std::vector<int>> users;  // tensor -> candidate nodes reading or writing it
  std::map<int, ElementwiseSpec> ew;
  std::vector<int> fcs;
  for (int node_index : plan) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (ctx->GetNodeAndRegistration(ctx, node_index, &node, &reg) != kTfLiteOk || !node || !reg)
      continue;
    ElementwiseSpec spec;
    std::string why;
    const bool ok = BuildElementwiseSpec(ctx, node_index, node, reg, &spec, &why);
    if (!ok && opt.verbose >= 2 && ElementwiseOpName(reg->builtin_code))
      std::fprintf(stderr, "npas: not fusing node %d %s: %s\n", node_index,
                   ElementwiseOpName(reg->builtin_code), why.c_str());
    if (ok) {
      parent[node_index] = node_index;
      for (int t : spec.inputs) users[t].push_back(node_index);
      for (int t : spec.outputs) users[t].push_back(node_index);
      ew.emplace(node_index, std::move(spec));
    } else if (reg->builtin_code == kTfLiteBuiltinFullyConnected) {
      fcs.push_back(node_index);
    }
  }
  for (auto& tu : users)
    for (size_t i = 1; i < tu.second.size(); ++i) unite(tu.second[0], tu.second[i]);
  std::vector<int> joined;
  for (int node_index : fcs) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    ctx->GetNodeAndRegistration(ctx, node_index, &node, &reg);
    const int in = TensorAt(node->inputs, 0), w = TensorAt(node->inputs, 1);
    const int out = TensorAt(node->outputs, 0);
    if (in < 0 || w < 0 || out < 0 || ctx->tensors[in].type != kTfLiteInt8) continue;
    const int64_t nw = NumElements(ctx->tensors[w].dims), nin = NumElements(ctx->tensors[in].dims);
    const int64_t cols = ctx->tensors[w].dims && ctx->tensors[w].dims->size == 2
                             ? ctx->tensors[w].dims->data[1] : 0;
    if (nw < 1 || nw > kMaxForcedGemmWeights || cols < 1 || nin / cols > kMaxForcedGemmPixels ||
        ctx->tensors[w].type != kTfLiteInt8 || !IsConstant(ctx->tensors[w]))
      continue;
    bool any = false;
    for (int t : {in, out}) {
      auto it = users.find(t);
      if (it == users.end()) continue;
      if (!any) parent[node_index] = node_index;
      any = true;
      unite(node_index, it->second[0]);
    }
    if (any) joined.push_back(node_index);
  }
  // Per group: elementwise ops and FCs (a group without an FC is left to the runtime).
  std::map<int, int64_t> ops, fcs_in;
  for (auto& e : ew) ++ops[find(e.first)];
  for (int n : joined) ++fcs_in[find(n)];
  auto worth = [&](int root) { return ops[root] >= kMinFusedOps && fcs_in[root] > 0; };
  for (auto& e : ew)
    if (worth(find(e.first))) fp.elementwise.emplace(e.first, std::move(e.second));
  for (int n : joined)
    if (worth(find(n))) fp.gemms.push_back(n);
  return fp;
}

// ---- the fused delegate kernel ------------------------------------------------------------------
namespace {

// A tensor a step reads or writes: the runtime's (tensor index) or one of our buffers.
struct Operand {
  int tensor = -1;
  int8_t* buffer = nullptr;
  int64_t offset = 0;  // into the buffer or tensor (a SPLIT output read in place)
  bool view = false;   // a SPLIT output that is a view: nothing to copy
  int8_t* Data(TfLiteContext* ctx) const {
    return (buffer ? buffer : ctx->tensors[tensor].data.int8) + offset;
  }
};

struct Step {
  NodeState* gemm = nullptr;             // an FC, or
  const ElementwiseSpec* ew = nullptr;   // an elementwise op
  const int8_t* table_after = nullptr;   // ADD / SUB / MUL: the next op's table, applied here
  std::vector<Operand> in, out;
  // What FusedInvoke reads, copied here when the plan is final: the steps are one contiguous
  // array and the tables another, in execution order (pointer chasing into scattered specs
  // and tables cost cache misses on every invoke).
  int code = 0;
  int64_t n = 0, n1 = 0, n2 = 0;
  AddInt8Params add;
  MulInt8Params mul;
  const int8_t* table = nullptr;  // LOGISTIC, TANH, an op with a constant side
  Operand a, b, c;                // in[0], in[1] (binary ops), out[0]
  const PackedGemmInt8* gemm8 = nullptr;  // an FC's kernel and geometry
  const int32_t* pixel_base = nullptr;
  int64_t in_elems = 0;
  int num_pixels = 0, threads = 1;
};

struct FusedPartition {
  std::vector<std::unique_ptr<NodeState>> gemms;
  std::vector<std::unique_ptr<ElementwiseSpec>> elementwise;
  std::vector<Step> steps;  // execution order
  std::vector<int8_t> arena;  // internal tensors (FusedInit plans their blocks)
  std::vector<int8_t> scratch;  // an ADD / SUB / MUL result before its table_after
  std::vector<int8_t> tables;   // the steps' tables, in execution order
  std::vector<std::pair<int, std::vector<int>>> input_dims;  // partition inputs as fused
};

// Slack after each internal buffer: some int8 GEMM kernels load whole vectors at the end.
constexpr size_t kBufferSlack = 128;

std::vector<int> Dims(const TfLiteTensor& t) {
  return t.dims ? std::vector<int>(t.dims->data, t.dims->data + t.dims->size) : std::vector<int>();
}

void* FusedInit(TfLiteContext* ctx, const char* buffer, size_t) {
  auto* params = reinterpret_cast<const TfLiteDelegateParams*>(buffer);
  if (params == nullptr || params->delegate == nullptr || params->nodes_to_replace == nullptr) {
    ctx->ReportError(ctx, "npas delegate: unexpected partition");
    return nullptr;
  }
  auto* d = static_cast<DelegateState*>(params->delegate->data_);
  std::lock_guard<std::recursive_mutex> lock(d->mu);
  auto part = std::make_unique<FusedPartition>();
  std::vector<int> external_out;
  if (params->output_tensors)
    external_out.assign(params->output_tensors->data,
                        params->output_tensors->data + params->output_tensors->size);
  // nodes_to_replace is in execution order (TFLite keeps a partition's nodes sorted).
  std::vector<std::vector<int>> ins, outs;
  for (int i = 0; i < params->nodes_to_replace->size; ++i) {
    const int node = params->nodes_to_replace->data[i];
    Step step;
    auto g = d->pending.find(node);
    auto e = d->pending_elementwise.find(node);
    if (g != d->pending.end() && g->second->spec.int8 &&
        g->second->spec.op == OpKind::kFullyConnected && !g->second->geo.needs_copy) {
      part->gemms.push_back(std::move(g->second));
      d->pending.erase(g);
      step.gemm = part->gemms.back().get();
      ins.push_back({step.gemm->spec.input_tensor});
      outs.push_back({step.gemm->spec.output_tensor});
    } else if (e != d->pending_elementwise.end()) {
      part->elementwise.push_back(std::make_unique<ElementwiseSpec>(std::move(e->second)));
      d->pending_elementwise.erase(e);
      step.ew = part->elementwise.back().get();
      ins.push_back(step.ew->inputs);
      outs.push_back(step.ew->outputs);
    } else {
      ctx->ReportError(ctx, "npas delegate: node %d was not prepared for fusion", node);
      return nullptr;
    }
    part->steps.push_back(std::move(step));
  }
  auto external = [&](int t) {
    return std::find(external_out.begin(), external_out.end(), t) != external_out.end();
  };
  // An ADD / SUB / MUL whose output only the next step reads, through a table (a GRU gate's
  // pre-activation before LOGISTIC / TANH), applies that table itself: one pass and one
  // intermediate tensor less.
  for (size_t i = 0; i + 1 < part->steps.size(); ++i) {
    Step& s = part->steps[i];
    const Step& next = part->steps[i + 1];
    if (!s.ew || s.table_after || !s.ew->table.empty() || s.ew->code == kTfLiteBuiltinSplit ||
        s.ew->code == kTfLiteBuiltinSplitV || !next.ew || next.ew->table.empty() ||
        ins[i + 1][0] != outs[i][0] || external(outs[i][0]))
      continue;
    int readers = 0;
    for (const auto& in : ins)
      readers += static_cast<int>(std::count(in.begin(), in.end(), outs[i][0]));
    if (readers != 1) continue;
    s.table_after = next.ew->table.data();
    outs[i] = outs[i + 1];
    part->steps.erase(part->steps.begin() + i + 1);
    ins.erase(ins.begin() + i + 1);
    outs.erase(outs.begin() + i + 1);
    part->scratch.resize(std::max<size_t>(part->scratch.size(), s.ew->n));
  }
  // A SPLIT along the outermost axis deals out contiguous slices: its internal outputs are views
  // of its input (tensor, offset), nothing is copied.
  std::map<int, std::pair<int, int64_t>> view_of;
  auto source = [&](int t) {
    auto v = view_of.find(t);
    return v == view_of.end() ? std::make_pair(t, int64_t{0}) : v->second;
  };
  for (size_t i = 0; i < part->steps.size(); ++i) {
    const ElementwiseSpec* e = part->steps[i].ew;
    if (e == nullptr || e->chunk.empty() || e->outer != 1) continue;
    const std::pair<int, int64_t> in = source(ins[i][0]);
    int64_t at = 0;
    for (size_t o = 0; o < outs[i].size(); at += e->chunk[o], ++o)
      if (!external(outs[i][o])) view_of[outs[i][o]] = {in.first, in.second + at};
  }
  // Internal tensors (made here, not a partition output) live in one arena from the step that
  // makes them to the last step that reads them (or a view of them), their blocks reused after
  // that: a 28-step GRU's working set is then a few KB, not one buffer per tensor.
  std::map<int, size_t> last_use;
  for (size_t i = 0; i < part->steps.size(); ++i) {
    for (int t : outs[i])
      if (!external(t) && !view_of.count(t)) last_use[t] = i;
    for (int t : ins[i])
      if (last_use.count(source(t).first)) last_use[source(t).first] = i;
  }
  std::vector<std::pair<size_t, size_t>> blocks;  // (offset, bytes)
  std::vector<size_t> free_blocks;                // indices into blocks
  std::map<int, size_t> block_of;                 // tensor -> block
  size_t arena = 0;
  for (size_t i = 0; i < part->steps.size(); ++i) {
    for (int t : outs[i]) {
      if (!last_use.count(t) || block_of.count(t)) continue;
      const int64_t n = std::max<int64_t>(NumElements(ctx->tensors[t].dims), 1);
      const size_t bytes = (static_cast<size_t>(n) + kBufferSlack + 63) / 64 * 64;
      auto fit = std::find_if(free_blocks.begin(), free_blocks.end(),
                              [&](size_t b) { return blocks[b].second >= bytes; });
      if (fit != free_blocks.end()) {
        block_of[t] = *fit;
        free_blocks.erase(fit);
      } else {
        block_of[t] = blocks.size();
        blocks.emplace_back(arena, bytes);
        arena += bytes;
      }
    }
    for (const auto& lu : last_use)
      if (lu.second == i) free_blocks.push_back(block_of.at(lu.first));
  }
  part->arena.assign(arena + 64, 0);
  int8_t* base = reinterpret_cast<int8_t*>(
      (reinterpret_cast<uintptr_t>(part->arena.data()) + 63) & ~static_cast<uintptr_t>(63));
  for (size_t i = 0; i < part->steps.size(); ++i)
    for (int io = 0; io < 2; ++io)
      for (int t : io ? outs[i] : ins[i]) {
        Operand o;
        std::tie(o.tensor, o.offset) = source(t);
        o.view = io && view_of.count(t);
        auto b = block_of.find(o.tensor);
        if (b != block_of.end()) o.buffer = base + blocks[b->second].first;
        (io ? part->steps[i].out : part->steps[i].in).push_back(o);
      }
  // SPLITs whose outputs are all views have nothing left to do.
  std::vector<Step> kept;
  for (Step& step : part->steps)
    if (step.gemm || !std::all_of(step.out.begin(), step.out.end(),
                                  [](const Operand& o) { return o.view; }))
      kept.push_back(std::move(step));
  part->steps = std::move(kept);
  size_t table_bytes = 0;
  for (const Step& step : part->steps)
    if (step.ew) table_bytes += step.ew->table.size() + (step.table_after ? 256 : 0);
  part->tables.reserve(table_bytes);  // no reallocation: the steps point into it
  auto keep_table = [&](const int8_t* t) {
    part->tables.insert(part->tables.end(), t, t + 256);
    return part->tables.data() + part->tables.size() - 256;
  };
  for (Step& step : part->steps) {
    step.a = step.in[0];
    step.c = step.out[0];
    if (step.gemm) {
      step.gemm8 = step.gemm->gemm8.get();
      step.pixel_base = step.gemm->pixel_base.data();
      step.in_elems = step.gemm->geo.in_elems;
      step.num_pixels = step.gemm->geo.num_pixels;
      step.threads = step.gemm->num_threads;
      continue;
    }
    const ElementwiseSpec& e = *step.ew;
    if (step.in.size() > 1) step.b = step.in[1];
    step.code = e.code;
    step.n = e.n;
    step.n1 = e.n1;
    step.n2 = e.n2;
    step.add = e.add;
    step.mul = e.mul;
    if (!e.table.empty()) step.table = keep_table(e.table.data());
    if (step.table_after) step.table_after = keep_table(step.table_after);
  }
  if (params->input_tensors)
    for (int i = 0; i < params->input_tensors->size; ++i) {
      const int t = params->input_tensors->data[i];
      if (t >= 0 && !IsConstant(ctx->tensors[t])) part->input_dims.emplace_back(t, Dims(ctx->tensors[t]));
    }
  return part.release();
}

void FusedFree(TfLiteContext*, void* buffer) { delete static_cast<FusedPartition*>(buffer); }

TfLiteStatus FusedPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* part = static_cast<FusedPartition*>(node->user_data);
  if (part == nullptr) return kTfLiteError;
  // Shapes were fixed when the group was fused (internal tensors get no shape propagation).
  for (const auto& in : part->input_dims)
    if (Dims(ctx->tensors[in.first]) != in.second) {
      ctx->ReportError(ctx,
                       "npas delegate: an input of a fused int8 partition changed shape; "
                       "resizing is not supported there (delegate option fuse=0 turns fusion off)");
      return kTfLiteError;
    }
  return kTfLiteOk;
}

TfLiteStatus FusedInvoke(TfLiteContext* ctx, TfLiteNode* node) {
  auto* part = static_cast<FusedPartition*>(node->user_data);
  if (part == nullptr) return kTfLiteError;
  ThreadPool* pool = SharedThreadPool();
  for (const Step& s : part->steps) {
    if (s.gemm8) {
      s.gemm8->Run(s.a.Data(ctx), s.in_elems, s.pixel_base, s.num_pixels, s.c.Data(ctx), pool,
                   s.threads);
      continue;
    }
    if (s.table) {  // LOGISTIC, TANH, or an op with a constant side
      LookupInt8(s.table, s.a.Data(ctx), s.c.Data(ctx), s.n);
      continue;
    }
    int8_t* out = s.table_after ? part->scratch.data() : s.c.Data(ctx);
    switch (s.code) {
      case kTfLiteBuiltinAdd:
      case kTfLiteBuiltinSub:
        AddInt8(s.add, s.a.Data(ctx), s.n1, s.b.Data(ctx), s.n2, out, s.n);
        break;
      case kTfLiteBuiltinMul:
        MulInt8(s.mul, s.a.Data(ctx), s.n1, s.b.Data(ctx), s.n2, out, s.n);
        break;
      default: {  // SPLIT, SPLIT_V: rows of the input dealt to the outputs
        const ElementwiseSpec& e = *s.ew;
        const int8_t* src = s.a.Data(ctx);
        for (int64_t r = 0; r < e.outer; ++r)
          for (size_t o = 0; o < s.out.size(); ++o) {
            if (!s.out[o].view)
              std::memcpy(s.out[o].Data(ctx) + r * e.chunk[o], src,
                          static_cast<size_t>(e.chunk[o]));
            src += e.chunk[o];
          }
      }
    }
    if (s.table_after) LookupInt8(s.table_after, out, s.c.Data(ctx), s.n);
  }
  return kTfLiteOk;
}

}  // namespace

TfLiteRegistration MakeFusedRegistration() {
  return DelegateKernelRegistration("NpasFusedInt8", FusedInit, FusedFree, FusedPrepare,
                                    FusedInvoke);
}

}  // namespace npas
