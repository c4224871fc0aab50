// npas kernel library: the contract between the delegate core (node claiming, TFLite ABI)
// and the sparse micro-kernels. Nothing here knows about TFLite.
//
// Every CONV_2D and FULLY_CONNECTED is run as an *implicit GEMM*:
//
//   out[p * rows + o] = act( bias[o] + sum_k W[o, k] * in[pixel_base[p] + col_offset[k]] )
//
// W is the GEMM view of DESIGN.md (rows = output channels, cols = reduction, row-major; for
// a conv the column order is TFLite's OHWI: k = (ky * kw + kx) * cin + c). The core turns the
// geometry into offsets once at prepare time:
//   FULLY_CONNECTED: col_offset[k] = k, pixel_base[p] = p * cols (p = batch row).
//   CONV_2D (input copied into a zero-padded NHWC buffer of width Wp): col_offset[k] =
//   (ky * dil_h * Wp + kx * dil_w) * cin + c, pixel_base[p] = ((n * Hp + oy * sh) * Wp + ox * sw) * cin.
// so the kernels never see padding, strides or dilation, and packing can bake col_offset into
// its indices (no index arithmetic on the hot path).
//
// DEPTHWISE_CONV_2D is its own family (vectorised over channels):
//   out[p * cout + oc] = act( bias[oc] + sum_t W[t, oc] * in[pixel_base[p] + tap_offset[t] + oc / depth_multiplier] )
// with W in TFLite's [1, kh, kw, cout] layout (t = ky * kw + kx).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace npas {

// ---- threads --------------------------------------------------------------------------------
// One pool shared by every claimed node of every delegate instance in the process.
class ThreadPool {
 public:
  // Runs fn(task) for task in [0, num_tasks) on up to `num_threads` threads (the caller's
  // thread included) and returns when all are done. num_threads <= 1 runs inline.
  virtual void ParallelFor(int num_tasks, int num_threads, const std::function<void(int)>& fn) = 0;
  virtual ~ThreadPool() = default;
};
ThreadPool* SharedThreadPool();

// ---- structure ------------------------------------------------------------------------------
// What the analyser recognised in a weight's zeros (reported in claim counters and verbose logs).
enum class Structure {
  kDense,          // (almost) no zeros
  kBlockPunched,   // blocks of br x bc whose rows share the same kept columns
  kBcr,            // blocks whose kept entries are (kept rows) x (kept columns)
  kNM,             // N of every M consecutive weights along the reduction kept
  kPattern,        // 3x3 kernels with few distinct kept-position patterns
  kUnstructured,   // anything else with zeros
};
const char* StructureName(Structure s);

struct StructureInfo {
  Structure kind = Structure::kDense;
  int block_rows = 0, block_cols = 0;  // for block kinds
  int n = 0, m = 0;                    // for kNM
  double density = 1.0;                // nonzeros / size
};

// kh, kw, cin describe the column order (FC: 1, 1, cols). Pure analysis, no allocation kept.
StructureInfo AnalyzeStructure(const float* w, int rows, int cols, int kh, int kw, int cin);

// ---- implicit GEMM (CONV_2D, FULLY_CONNECTED) ----------------------------------------------
struct GemmDesc {
  int rows = 0, cols = 0;
  int kh = 1, kw = 1, cin = 0;        // column order, for structure analysis
  const float* weights = nullptr;     // [rows, cols]; only read during PackGemm
  const float* bias = nullptr;        // [rows] or nullptr; copied by PackGemm
  const int32_t* col_offset = nullptr;// [cols]; copied/baked by PackGemm
  float act_min = -INFINITY, act_max = INFINITY;  // fused activation as a clamp
};

enum class KernelKind { kAuto, kDense, kRowBlock, kPixelVector };
const char* KernelKindName(KernelKind k);

class PackedGemm {
 public:
  virtual ~PackedGemm() = default;
  virtual KernelKind kind() const = 0;
  virtual StructureInfo structure() const = 0;
  virtual size_t packed_bytes() const = 0;
  // out: [num_pixels, rows]. Safe to call concurrently from different nodes (no shared scratch
  // without locking). Uses `pool` with up to `num_threads` threads.
  virtual void Run(const float* in, const int32_t* pixel_base, int num_pixels, float* out,
                   ThreadPool* pool, int num_threads) const = 0;
};

// Packs W once into the compact format of `kind`. kAuto measures the candidate kernels on
// synthetic input of `num_pixels` pixels (in_elems = input elements to allocate for that
// measurement) and keeps the fastest; *dense_ms / *best_ms (if non-null) receive the measured
// times of the dense kernel and the chosen one so the core can decline nodes where sparsity
// does not pay. Returns nullptr (with *error set) if the description is invalid.
std::unique_ptr<PackedGemm> PackGemm(const GemmDesc& d, KernelKind kind, int num_pixels,
                                     const int32_t* pixel_base, int64_t in_elems,
                                     int num_threads, double* dense_ms, double* best_ms,
                                     std::string* error);

// ---- depthwise ------------------------------------------------------------------------------
struct DepthwiseDesc {
  int kh = 0, kw = 0, cin = 0, depth_multiplier = 1;  // cout = cin * depth_multiplier
  const float* weights = nullptr;      // [kh * kw, cout]
  const float* bias = nullptr;         // [cout] or nullptr
  const int32_t* tap_offset = nullptr; // [kh * kw]: (ky * dil_h * Wp + kx * dil_w) * cin
  float act_min = -INFINITY, act_max = INFINITY;
};

class PackedDepthwise {
 public:
  virtual ~PackedDepthwise() = default;
  virtual StructureInfo structure() const = 0;
  virtual size_t packed_bytes() const = 0;
  virtual void Run(const float* in, const int32_t* pixel_base, int num_pixels, float* out,
                   ThreadPool* pool, int num_threads) const = 0;
};

std::unique_ptr<PackedDepthwise> PackDepthwise(const DepthwiseDesc& d, std::string* error);

// ---- ISA --------------------------------------------------------------------------------------
enum class Isa { kScalar, kAvx2, kAvx512, kNeon };
Isa DetectIsa();            // best available on this CPU (overridable with NPAS_ISA=scalar|avx2|avx512)
// FNV-1a over bytes (cache keys of packings and tuning entries).
uint64_t Fnv1a(const void* data, size_t bytes, uint64_t h = 1469598103934665603ull);
const char* IsaName(Isa);

// ---- int8 (TFLite full-integer quantization; int8_*.cc) ---------------------------------------
// The same implicit GEMM / depthwise geometry with TFLite's int8 arithmetic (reference kernels):
//   acc = bias[o] + sum_k W[o, k] * (in[...] - input_zp)                       (int32, exact)
//   out = clamp(MultiplyByQuantizedMultiplier(acc, multiplier[o], shift[o]) + output_zp,
//               act_min, act_max)                                               (int8)
// Weights are int8 symmetric (zero point 0), per-channel or per-tensor (then pass the same
// multiplier/shift for every row); bias int32 at scale input_scale * weight_scale[o].
// The input buffer given to Run is int8; a padded conv input must be padded with input_zp (not 0).
// Kernels may read the input as u8 (x + 128, AVX-512 VNNI): packing folds -input_zp * sum(W)
// (and -128 * sum(W)) into the bias, so Run needs the element count of the input buffer.

// TFLite's QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31).
void QuantizeMultiplier(double real, int32_t* multiplier, int* shift);
// TFLite's MultiplyByQuantizedMultiplier (SaturatingRoundingDoublingHighMul + RoundingDivideByPOT).
int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int shift);

struct GemmInt8Desc {
  int rows = 0, cols = 0;
  int kh = 1, kw = 1, cin = 0;          // column order (as GemmDesc)
  const int8_t* weights = nullptr;      // [rows, cols]; only read during packing
  const int32_t* bias = nullptr;        // [rows] or nullptr
  const int32_t* col_offset = nullptr;  // [cols]
  const int32_t* multiplier = nullptr;  // [rows]
  const int32_t* shift = nullptr;       // [rows]
  int32_t input_zp = 0, output_zp = 0;
  int32_t act_min = -128, act_max = 127;  // fused activation, quantized
};

class PackedGemmInt8 {
 public:
  virtual ~PackedGemmInt8() = default;
  virtual KernelKind kind() const = 0;  // kDense or kRowBlock
  virtual StructureInfo structure() const = 0;
  virtual size_t packed_bytes() const = 0;
  virtual Isa isa() const = 0;
  // in: int8 buffer of in_elems elements; out: [num_pixels, rows] int8.
  virtual void Run(const int8_t* in, int64_t in_elems, const int32_t* pixel_base, int num_pixels,
                   int8_t* out, ThreadPool* pool, int num_threads) const = 0;
};

// kDense: every column; kRowBlock: per 16-row group only the columns some row keeps; kAuto: packs
// both, times them on synthetic input and keeps the faster (*dense_ms / *best_ms as PackGemm).
std::unique_ptr<PackedGemmInt8> PackGemmInt8(const GemmInt8Desc& d, KernelKind kind,
                                             int num_pixels, const int32_t* pixel_base,
                                             int64_t in_elems, int num_threads, double* dense_ms,
                                             double* best_ms, std::string* error);

struct DepthwiseInt8Desc {
  int kh = 0, kw = 0, cin = 0, depth_multiplier = 1;
  const int8_t* weights = nullptr;       // [kh * kw, cout]
  const int32_t* bias = nullptr;         // [cout] or nullptr
  const int32_t* tap_offset = nullptr;   // [kh * kw]
  const int32_t* multiplier = nullptr;   // [cout]
  const int32_t* shift = nullptr;        // [cout]
  int32_t input_zp = 0, output_zp = 0;
  int32_t act_min = -128, act_max = 127;
};

class PackedDepthwiseInt8 {
 public:
  virtual ~PackedDepthwiseInt8() = default;
  virtual StructureInfo structure() const = 0;
  virtual size_t packed_bytes() const = 0;
  virtual void Run(const int8_t* in, const int32_t* pixel_base, int num_pixels, int8_t* out,
                   ThreadPool* pool, int num_threads) const = 0;
};

// sparse = false keeps every tap (the dense reference the delegate times against).
std::unique_ptr<PackedDepthwiseInt8> PackDepthwiseInt8(const DepthwiseInt8Desc& d, bool sparse,
                                                       std::string* error);

// ---- int8 elementwise (elementwise_int8.cc) ---------------------------------------------------
// TFLite's int8 ADD / SUB / MUL arithmetic and its LOGISTIC / TANH lookup tables, for the small
// ops the delegate runs inside a fused partition with its GEMMs (an unrolled GRU's gates).
struct AddInt8Params {  // ADD, and SUB with input 2's multiplier negated (as TFLite does)
  int32_t input1_offset = 0, input2_offset = 0;  // -zero points
  int32_t input1_multiplier = 0, input2_multiplier = 0, output_multiplier = 0;
  int input1_shift = 0, input2_shift = 0, output_shift = 0;  // all <= 0
  int32_t output_offset = 0, act_min = -128, act_max = 127;
  // The same op as one multiply-add per input and one shift, where that gives TFLite's output for
  // every one of the 65536 pairs of input bytes (set by FitLinearAdd, which tries all of them):
  // out = clamp(((linear_bias + in1 * linear1 + in2 * linear2) >> linear_shift) + output_offset),
  // in1 / in2 the stored bytes. A quarter of the work of TFLite's three rescalings.
  bool linear = false;
  int32_t linear1 = 0, linear2 = 0, linear_bias = 0;
  int linear_shift = 0;
};
// TFLite's int8 ADD (sign 1) or SUB (sign -1) parameters (inputs scaled by 2^20, as add.cc /
// sub.cc prepare them). False when a multiplier would need a left shift (TFLite rejects those).
bool MakeAddInt8Params(float scale1, int32_t zp1, float scale2, int32_t zp2, float scale_out,
                       int32_t zp_out, int sign, int32_t act_min, int32_t act_max,
                       AddInt8Params* p);
// Sets p->linear where a linear form is exact (about 0.1-1 ms: it runs the op on all pairs).
void FitLinearAdd(AddInt8Params* p);
struct MulInt8Params {
  int32_t input1_offset = 0, input2_offset = 0, output_multiplier = 0;
  int output_shift = 0;
  int32_t output_offset = 0, act_min = -128, act_max = 127;
};
void MakeMulInt8Params(float scale1, int32_t zp1, float scale2, int32_t zp2, float scale_out,
                       int32_t zp_out, int32_t act_min, int32_t act_max, MulInt8Params* p);
// out[i] = in1[i] op in2[i] for i < n; an input of 1 element (n1 or n2 == 1) is broadcast.
void AddInt8(const AddInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2, int64_t n2,
             int8_t* out, int64_t n);
void MulInt8(const MulInt8Params& p, const int8_t* in1, int64_t n1, const int8_t* in2, int64_t n2,
             int8_t* out, int64_t n);
// TFLite's int8 table for f (activations.cc PopulateLookupTable, in float as there), indexed by
// the input byte: table[(uint8_t)q].
void MakeLookupInt8(float in_scale, int32_t in_zp, float out_scale, int32_t out_zp,
                    float (*f)(float), int8_t table[256]);
void LookupInt8(const int8_t* table, const int8_t* in, int8_t* out, int64_t n);

}  // namespace npas
