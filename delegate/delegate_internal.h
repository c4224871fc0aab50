// Internal types of the npas delegate core (node claiming, options, per-node kernels, stats).
// Everything here is hidden (-fvisibility=hidden); only the extern "C" entry points in
// npas_delegate.cc are exported.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/npas_kernels.h"
#include "tflite_abi.h"

namespace npas {

// ---- options ---------------------------------------------------------------------------------
// Bit per Structure value allowed by the `schemes` option.
inline unsigned StructureBit(Structure s) { return 1u << static_cast<unsigned>(s); }
constexpr unsigned kAllStructures = 0x3f;

struct Options {
  int num_threads = 0;         // 0: the context's recommended_num_threads (else 1)
  double min_sparsity = 0.3;   // decline weights with a smaller fraction of zeros
  double min_speedup = 1.2;    // claim only if best_ms * min_speedup <= dense_ms
  unsigned schemes = kAllStructures;
  KernelKind kernel = KernelKind::kAuto;  // forced kernel (bypasses min_speedup)
  int verbose = 0;
  std::string tuning_cache;    // empty: no cache
  bool fuse = true;            // fuse small int8 elementwise ops with the GEMMs around them
};

// Parses the key/value strings of tflite_plugin_create_delegate. False + *error on an unknown
// key or a bad value.
bool ParseOptions(const char* const* keys, const char* const* values, int count, Options* out,
                  std::string* error);

// ---- layers ----------------------------------------------------------------------------------
enum class OpKind { kFullyConnected, kConv2D, kDepthwiseConv2D };

// What a claimed (or candidate) node computes, independent of the input shape. Only tensor
// *indices* are kept: pointers and counts may change between prepares.
struct LayerSpec {
  OpKind op = OpKind::kFullyConnected;
  std::string op_name;        // "FULLY_CONNECTED", ..., or the custom op's name
  bool custom = false;
  int node_index = -1;
  int input_tensor = -1, output_tensor = -1, weights_tensor = -1, bias_tensor = -1;
  // FC: rows = units, cols = in_features. CONV_2D: rows = cout, cols = kh*kw*cin.
  int rows = 0, cols = 0;
  int kh = 1, kw = 1, cin = 0, cout = 0, depth_multiplier = 1;
  int stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  int padding = kTfLitePaddingValid;
  bool keep_num_dims = false;
  float act_min = -INFINITY, act_max = INFINITY;
  std::vector<float> owned_weights;  // custom ops: decoded dense weights (builtin: empty)
  std::string scheme_json;           // custom ops: the scheme recorded at export
  // int8 (TFLite full-integer quantization: builtin ops and quantized NPAS custom ops): int8
  // activations with zero points, int8 symmetric weights (per-channel or per-tensor), int32 bias.
  bool int8 = false;
  int32_t input_zp = 0, output_zp = 0;
  int32_t act_min_q = -128, act_max_q = 127;       // fused activation in quantized space
  std::vector<int32_t> multiplier, shift;          // [rows] (TFLite QuantizeMultiplier)
  std::vector<int8_t> owned_weights8;   // quantized NPAS custom ops: decoded int8 weights
  const int8_t* WeightsInt8(const TfLiteContext* ctx) const;
  const int32_t* BiasInt32(const TfLiteContext* ctx) const;  // nullptr when absent

  const float* Weights(const TfLiteContext* ctx) const;
  const float* Bias(const TfLiteContext* ctx) const;  // nullptr when absent
};

// Everything derived from the current input shape.
struct Geometry {
  std::vector<int> in_dims, out_dims;
  int num_pixels = 0;                // FC: rows of the flattened input; conv: n * oh * ow
  int n = 1, in_h = 1, in_w = 1;     // conv / depthwise
  int out_h = 1, out_w = 1;
  int pad_top = 0, pad_left = 0, hp = 1, wp = 1;
  bool needs_copy = false;           // input must be copied into a zero-padded buffer
  int64_t in_elems = 0;              // elements of the buffer the kernels read
};

// Tensor helpers (layers.cc).
bool IsConstant(const TfLiteTensor& t);
int64_t NumElements(const TfLiteIntArray* dims);  // -1 when unknown
// The per-tensor or per-channel affine quantization of an int8 tensor (nullptr when absent).
const TfLiteAffineQuantization* Affine(const TfLiteTensor& t);
// A fused activation's float range [act_min, act_max] (+-inf: none) in int8 at scale / zp, as
// TFLite's CalculateActivationRangeQuantized. False when the range is empty.
bool QuantizedActivationRange(float act_min, float act_max, float scale, int32_t zp, int32_t* lo,
                              int32_t* hi);
// A fused activation code's float range; false for the ones the delegate does not run.
bool ActivationRange(int act, float* act_min, float* act_max);

// Reads the node; fills *spec or returns false with a short reason code and a message.
bool BuildLayerSpec(TfLiteContext* ctx, int node_index, TfLiteNode* node, TfLiteRegistration* reg,
                    LayerSpec* spec, std::string* reason, std::string* message);
// Computes the geometry for the input tensor's current dims.
bool ComputeGeometry(const TfLiteContext* ctx, const LayerSpec& spec, Geometry* geo,
                     std::string* error);
// col_offset (GEMM) or tap_offset (depthwise) and pixel_base for the geometry.
void BuildOffsets(const LayerSpec& spec, const Geometry& geo, std::vector<int32_t>* col_offset,
                  std::vector<int32_t>* pixel_base);

// ---- per-node kernel state (the delegate kernel's user_data) ----------------------------------
struct NodeState {
  LayerSpec spec;
  int num_threads = 1;
  std::shared_ptr<PackedGemm> gemm;          // FC / CONV_2D (shared by nodes with its weights)
  std::unique_ptr<PackedDepthwise> dw;       // DEPTHWISE_CONV_2D
  KernelKind kind = KernelKind::kDense;
  StructureInfo structure;
  Geometry geo;                              // geometry the offsets/packing were built for
  std::vector<int32_t> col_offset, pixel_base;
  std::vector<float> padded;                 // zero-padded input copy (conv / depthwise)
  std::shared_ptr<PackedGemmInt8> gemm8;     // int8 FC / CONV_2D (shared likewise)
  std::unique_ptr<PackedDepthwiseInt8> dw8;  // int8 DEPTHWISE_CONV_2D
  std::vector<int8_t> padded8;               // int8 input copy padded with input_zp
  double dense_ms = 0, best_ms = 0;
  // Threads chosen by timing the first invokes (KernelInvoke): trials so far, the microseconds
  // of each with all threads [0] and with one [1], the count kept.
  int thread_trials = 0;
  std::vector<double> trial_us[2];
  int run_threads = 1;
};

// The FC / CONV_2D kernel description of a node (weights `w`, its offsets as built).
GemmDesc MakeGemmDesc(const TfLiteContext* ctx, const NodeState& st, const float* w);
GemmInt8Desc MakeGemmInt8Desc(const TfLiteContext* ctx, const NodeState& st, const int8_t* w);
// Packs for the geometry with a fixed kernel kind (no measurement).
bool PackNode(const TfLiteContext* ctx, NodeState* st, KernelKind kind, std::string* error);

// ---- fused int8 partitions (fused_int8.cc) -------------------------------------------------------
// A small int8 elementwise node (ADD, SUB, MUL, LOGISTIC, TANH, SPLIT, SPLIT_V) as run inside a
// fused partition.
struct ElementwiseSpec {
  int node = -1;
  int code = 0;                   // builtin operator
  std::vector<int> inputs, outputs;  // activation tensors (SPLIT / SPLIT_V: the data input)
  int64_t n = 0, n1 = 0, n2 = 0;  // output / input elements (an input of 1 is broadcast)
  AddInt8Params add;              // ADD, SUB
  MulInt8Params mul;              // MUL
  // LOGISTIC, TANH, and ADD / SUB / MUL with a constant single-value side: out = table[(uint8_t)
  // in], 256 entries (inputs then holds the other side only).
  std::vector<int8_t> table;
  int64_t outer = 1;              // SPLIT: rows before the axis; chunk[i] = output i's row
  std::vector<int64_t> chunk;
};
// "ADD", "SUB", ... for the ops the fused path runs, else nullptr.
const char* ElementwiseOpName(int code);
// Reads a candidate node; false (with *why) when it is not one the fused path runs.
bool BuildElementwiseSpec(const TfLiteContext* ctx, int node_index, const TfLiteNode* node,
                          const TfLiteRegistration* reg, ElementwiseSpec* spec, std::string* why);
// The int8 FC nodes joined to groups of elementwise candidates worth fusing (with the candidates
// themselves in *elementwise). Empty when fusion is off or unavailable on this CPU.
struct FusionPlan {
  std::map<int, ElementwiseSpec> elementwise;  // node -> spec
  std::vector<int> gemms;                      // FC nodes to claim whatever their speed-up
};
FusionPlan PlanFusion(TfLiteContext* ctx, const std::vector<int>& plan, const Options& opt);
TfLiteRegistration MakeFusedRegistration();

// ---- tuning cache ----------------------------------------------------------------------------
struct TuningEntry {
  std::string kernel;  // KernelKindName() or "depthwise"
  double dense_ms = 0, best_ms = 0;
};
class TuningCache {
 public:
  void Load(const std::string& path);  // silently empty when missing/unreadable
  bool Lookup(const std::string& key, TuningEntry* e) const;
  void Store(const std::string& key, const TuningEntry& e);
  void SaveIfDirty();
  bool enabled() const { return !path_.empty(); }

 private:
  std::string path_;
  std::map<std::string, TuningEntry> entries_;
  bool loaded_ = false, dirty_ = false;
};

// ---- stats -----------------------------------------------------------------------------------
struct NodeRecord {
  const void* context = nullptr;  // the subgraph's TfLiteContext (a re-prepare replaces its records)
  int node = -1;
  std::string op;
  int rows = 0, cols = 0;  // GEMM view (depthwise: cout x kh*kw); 0 when unknown
  bool claimed = false;
  std::string structure, kernel, reason, message;
  double density = 1.0, dense_ms = 0, best_ms = 0;
  size_t packed_bytes = 0;
  bool from_cache = false;
};

// ---- the delegate ----------------------------------------------------------------------------
struct DelegateState {
  TfLiteDelegate base{};      // handed to TFLite; base.data_ points back here
  Options options;
  std::recursive_mutex mu;    // serialises Prepare (kernel init runs inside it) and stats
  std::map<int, std::unique_ptr<NodeState>> pending;  // node index -> packed, during Prepare
  std::map<int, ElementwiseSpec> pending_elementwise;  // fused elementwise nodes, during Prepare
  // ShareKey -> the first such node (its record, state when claimed, weights and bias tensors),
  // during Prepare.
  struct SharedNode {
    NodeRecord record;
    const NodeState* state = nullptr;
    int weights_tensor = -1, bias_tensor = -1;
  };
  std::map<std::string, SharedNode> shared;
  std::vector<NodeRecord> records;
  TuningCache cache;
};

TfLiteStatus DelegatePrepare(TfLiteContext* ctx, TfLiteDelegate* delegate);
TfLiteRegistration MakeKernelRegistration();
// A delegate kernel registration with these callbacks.
TfLiteRegistration DelegateKernelRegistration(const char* name,
                                              void* (*init)(TfLiteContext*, const char*, size_t),
                                              void (*free)(TfLiteContext*, void*),
                                              TfLiteStatus (*prepare)(TfLiteContext*, TfLiteNode*),
                                              TfLiteStatus (*invoke)(TfLiteContext*, TfLiteNode*));
std::string StatsJson(DelegateState* d);

const char* OpKindName(OpKind op);

}  // namespace npas
