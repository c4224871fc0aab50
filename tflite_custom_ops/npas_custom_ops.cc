// Decoder of the NPAS custom ops (NpasSparseFullyConnected, NpasSparseConv2D,
// NpasSparseDepthwiseConv2D): parses the custom options and rebuilds dense weights in the builtin
// op's layout from the compact values + index data. Byte layout: tflite_custom_ops/FORMAT.md.
// Python writer / reference decoder: npas_keras/export/format.py (keep the two in step).
//
// Every size, count and index is validated before use; all reads go through bounds-checked
// helpers; any inconsistency returns false with a message (the delegate then declines the node).
#include "tflite_custom_ops/npas_custom_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

namespace npas {
namespace {

constexpr uint32_t kVersion = 1;               // float32 values
constexpr uint32_t kVersionQuantized = 2;      // int8 / 4-bit values + scales input
constexpr size_t kHeaderSize = 100;            // offset of the scheme string (version 1)
constexpr size_t kHeaderSizeV2 = 108;          // version 2: + value_type, crc_scales
constexpr uint64_t kMaxElements = 1ull << 28;  // largest weight matrix accepted
constexpr uint32_t kMaxSchemeJson = 1u << 16;
constexpr int kTypeFloat32 = 1, kTypeUInt8 = 3, kTypeInt8 = 9;

enum Encoding : int32_t { kBitmap = 1, kGap4 = 2, kBlock = 3, kPattern = 4, kNM = 5 };

struct Options {
  int32_t op_kind, padding, activation, stride_h, stride_w, dilation_h, dilation_w,
      depth_multiplier, out_channels, kh, kw, in_channels, rows, cols, encoding, p0, p1, p2,
      n_values, index_bytes;
  uint32_t crc_values, crc_index;
  int32_t value_type = 0;  // ValueType; version 2 only
  uint32_t crc_scales = 0;
};

uint32_t Crc32(const uint8_t* data, size_t n) {
  static uint32_t table[256];
  static bool init = [] {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    return true;
  }();
  (void)init;
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// Little-endian reads (memcpy keeps them alignment-safe; every target we build for is LE).
uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
int32_t LoadI32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

bool Fail(std::string* error, const std::string& msg) {
  if (error) *error = "NPAS custom op: " + msg;
  return false;
}

std::string Str(int64_t v) { return std::to_string(v); }

const char* KindName(int kind) {
  switch (kind) {
    case 0: return "NpasSparseFullyConnected";
    case 1: return "NpasSparseConv2D";
    case 2: return "NpasSparseDepthwiseConv2D";
  }
  return "";
}

// Reads bits LSB-first from a byte array whose size has been validated by the caller.
struct BitReader {
  const uint8_t* p;
  uint64_t pos = 0;
  explicit BitReader(const uint8_t* data) : p(data) {}
  uint32_t Bit() {
    uint32_t b = (p[pos >> 3] >> (pos & 7)) & 1u;
    ++pos;
    return b;
  }
  uint32_t Bits(int n) {
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) v |= Bit() << i;
    return v;
  }
};

// Checks that `bytes` holds exactly `nbits` bits and that the unused high bits are zero.
bool CheckBitBytes(const uint8_t* idx, uint64_t bytes, uint64_t nbits, const char* what,
                   std::string* error) {
  if (bytes != (nbits + 7) / 8)
    return Fail(error, std::string(what) + ": index data has " + Str(bytes) + " bytes, expected " +
                           Str((nbits + 7) / 8));
  if ((nbits & 7) && (idx[bytes - 1] >> (nbits & 7)) != 0)
    return Fail(error, std::string(what) + ": padding bits in the last index byte are not zero");
  return true;
}

int CeilLog2(int64_t m) {
  int b = 0;
  while ((int64_t{1} << b) < m) ++b;
  return b < 1 ? 1 : b;
}

bool ParseOptions(const uint8_t* o, size_t size, Options* opt, std::string* scheme,
                  std::string* error) {
  if (o == nullptr || size < kHeaderSize + 4)
    return Fail(error, "options truncated (" + Str(size) + " bytes, need at least " +
                           Str(kHeaderSize + 4) + ")");
  if (std::memcmp(o, "NPAS", 4) != 0) return Fail(error, "bad magic in options");
  uint16_t version, header_size;
  std::memcpy(&version, o + 4, 2);
  std::memcpy(&header_size, o + 6, 2);
  if (version != kVersion && version != kVersionQuantized)
    return Fail(error, "unsupported options version " + Str(version) + " (decoder supports " +
                           Str(kVersion) + " and " + Str(kVersionQuantized) + ")");
  const size_t hsize = version == kVersion ? kHeaderSize : kHeaderSizeV2;
  if (header_size != hsize) return Fail(error, "bad header size " + Str(header_size));
  if (size < hsize + 4)
    return Fail(error, "options truncated (" + Str(size) + " bytes, need at least " +
                           Str(hsize + 4) + ")");
  uint32_t slen = LoadU32(o + hsize - 4);
  if (slen > kMaxSchemeJson || uint64_t{hsize} + slen + 4 != size)
    return Fail(error, "scheme string length " + Str(slen) + " does not match options size " +
                           Str(size));
  if (Crc32(o, size - 4) != LoadU32(o + size - 4))
    return Fail(error, "options checksum mismatch (options corrupted)");
  int32_t f[20];
  for (int i = 0; i < 20; ++i) f[i] = LoadI32(o + 8 + 4 * i);
  *opt = Options{f[0],  f[1],  f[2],  f[3],  f[4],  f[5],  f[6],  f[7],  f[8],  f[9],
                 f[10], f[11], f[12], f[13], f[14], f[15], f[16], f[17], f[18], f[19],
                 LoadU32(o + 88), LoadU32(o + 92)};
  if (version == kVersionQuantized) {
    opt->value_type = LoadI32(o + 96);
    opt->crc_scales = LoadU32(o + 100);
    if (opt->value_type != int32_t(ValueType::kInt8) && opt->value_type != int32_t(ValueType::kInt4))
      return Fail(error, "unknown value type " + Str(opt->value_type));
  }
  scheme->assign(reinterpret_cast<const char*>(o + hsize), slen);
  return true;
}

bool ValidateOptions(const Options& o, const char* custom_name, std::string* error) {
  if (o.op_kind < 0 || o.op_kind > 2) return Fail(error, "unknown op kind " + Str(o.op_kind));
  if (std::strcmp(custom_name, KindName(o.op_kind)) != 0)
    return Fail(error, std::string("options describe a ") + KindName(o.op_kind) +
                           " but the op is " + custom_name);
  if (o.activation < 0 || o.activation > 3)
    return Fail(error, "unsupported activation " + Str(o.activation));
  const int32_t positive[] = {o.stride_h,     o.stride_w, o.dilation_h, o.dilation_w,
                              o.depth_multiplier, o.out_channels, o.kh,  o.kw,
                              o.in_channels,  o.rows,     o.cols,       o.n_values,
                              o.index_bytes};
  for (int32_t v : positive)
    if (v <= 0) return Fail(error, "non-positive size or attribute in options");
  if (o.rows != o.out_channels) return Fail(error, "rows != out_channels");
  const int64_t khkw = int64_t{o.kh} * o.kw;
  if (o.op_kind == 0) {
    if (o.padding != 0 || o.kh != 1 || o.kw != 1 || o.cols != o.in_channels)
      return Fail(error, "fully-connected needs padding 0, kh = kw = 1, cols == in_channels");
  } else {
    if (o.padding != 1 && o.padding != 2) return Fail(error, "padding must be 1 or 2");
    if (o.op_kind == 1 && int64_t{o.cols} != khkw * o.in_channels)
      return Fail(error, "conv cols != kh*kw*in_channels");
    if (o.op_kind == 2 &&
        (int64_t{o.cols} != khkw ||
         int64_t{o.out_channels} != int64_t{o.in_channels} * o.depth_multiplier))
      return Fail(error, "depthwise geometry inconsistent (cols != kh*kw or out != in*mult)");
  }
  const uint64_t total = uint64_t(o.rows) * uint64_t(o.cols);
  if (total > kMaxElements)
    return Fail(error, "weight matrix " + Str(o.rows) + "x" + Str(o.cols) + " too large");
  if (uint64_t(o.n_values) > total) return Fail(error, "more values than weights");
  return true;
}

// --- the five index encodings; each fills w (rows*cols, zeroed; T = float or int8) ---------

template <typename T>
bool DecodeBitmap(const Options& o, const T* v, const uint8_t* idx, std::vector<T>& w,
                  std::string* error) {
  const uint64_t total = w.size();
  if (!CheckBitBytes(idx, o.index_bytes, total, "bitmap", error)) return false;
  uint64_t k = 0, n = uint64_t(o.n_values);
  for (uint64_t i = 0; i < total; ++i) {
    if ((idx[i >> 3] >> (i & 7)) & 1) {
      if (k >= n) return Fail(error, "bitmap: more bits set than values");
      w[i] = v[k++];
    }
  }
  if (k != n) return Fail(error, "bitmap: " + Str(k) + " bits set but " + Str(n) + " values");
  return true;
}

template <typename T>
bool DecodeGap4(const Options& o, const T* v, const uint8_t* idx, std::vector<T>& w,
                std::string* error) {
  const uint64_t total = w.size(), nibbles = uint64_t(o.index_bytes) * 2;
  uint64_t q = 0;          // next nibble
  int64_t pos = -1;
  for (int64_t k = 0; k < o.n_values; ++k) {
    uint64_t acc = 0;
    for (;;) {
      if (q >= nibbles) return Fail(error, "gap4: index data ends before all positions");
      uint32_t nib = (idx[q >> 1] >> ((q & 1) * 4)) & 15u;
      ++q;
      acc += nib;
      if (nib != 15) break;
      if (acc > total) return Fail(error, "gap4: position outside the weight matrix");
    }
    pos += int64_t(acc) + 1;
    if (uint64_t(pos) >= total)
      return Fail(error, "gap4: position " + Str(pos) + " outside the " + Str(o.rows) + "x" +
                             Str(o.cols) + " matrix");
    w[pos] = v[k];
  }
  if ((q + 1) / 2 != uint64_t(o.index_bytes))
    return Fail(error, "gap4: " + Str(o.index_bytes) + " index bytes but " + Str(q) +
                           " nibbles used");
  if ((q & 1) && (idx[q >> 1] >> 4) != 0) return Fail(error, "gap4: padding nibble not zero");
  return true;
}

template <typename T>
bool DecodeBlock(const Options& o, const T* v, const uint8_t* idx, std::vector<T>& w,
                 std::string* error) {
  const int64_t rows = o.rows, cols = o.cols, br = o.p0, bc = o.p1, mode = o.p2;
  if (br < 1 || br > rows || bc < 1 || bc > cols || mode < 0 || mode > 2)
    return Fail(error, "block: parameters " + Str(br) + "x" + Str(bc) + " mode " + Str(mode) +
                           " invalid for " + Str(rows) + "x" + Str(cols));
  const bool row_bits = mode != 1, col_bits = mode != 2;  // 1: columns only, 2: rows only
  const int64_t nbr = (rows + br - 1) / br, nbc = (cols + bc - 1) / bc;
  const uint64_t nbits = (row_bits ? uint64_t(nbc) * rows : 0) +
                         (col_bits ? uint64_t(nbr) * cols : 0);
  if (!CheckBitBytes(idx, o.index_bytes, nbits, "block", error)) return false;
  BitReader bits(idx);
  std::vector<int64_t> kept_r, kept_c;
  kept_r.reserve(br);
  kept_c.reserve(bc);
  int64_t k = 0;
  for (int64_t i = 0; i < nbr; ++i) {
    const int64_t r0 = i * br, h = std::min(br, rows - r0);
    for (int64_t j = 0; j < nbc; ++j) {
      const int64_t c0 = j * bc, wd = std::min(bc, cols - c0);
      kept_r.clear();
      kept_c.clear();
      for (int64_t r = 0; r < h; ++r)
        if (!row_bits || bits.Bit()) kept_r.push_back(r0 + r);
      for (int64_t c = 0; c < wd; ++c)
        if (!col_bits || bits.Bit()) kept_c.push_back(c0 + c);
      const int64_t cnt = int64_t(kept_r.size()) * int64_t(kept_c.size());
      if (cnt > o.n_values - k) return Fail(error, "block: blocks select more values than stored");
      for (int64_t r : kept_r)
        for (int64_t c : kept_c) w[r * cols + c] = v[k++];
    }
  }
  if (k != o.n_values)
    return Fail(error, "block: blocks select " + Str(k) + " values but there are " +
                           Str(o.n_values));
  return true;
}

template <typename T>
bool DecodePattern(const Options& o, const T* v, const uint8_t* idx, std::vector<T>& w,
                   std::string* error) {
  const int64_t p = o.p0, g = o.p1, id_bits = o.p2, rows = o.rows, cols = o.cols;
  if (p < 1 || p > 16 || g < 1 || p * g != cols || (id_bits != 4 && id_bits != 8))
    return Fail(error, "pattern: bad parameters");
  const int64_t npat = idx[0];
  const uint64_t kernels = uint64_t(rows) * uint64_t(g);
  const uint64_t need = 1 + 2 * uint64_t(npat) + (kernels * id_bits + 7) / 8;
  if (uint64_t(o.index_bytes) != need)
    return Fail(error, "pattern: " + Str(o.index_bytes) + " index bytes, expected " + Str(need));
  uint16_t table[256] = {0};
  for (int64_t t = 0; t < npat; ++t) {
    uint16_t m;
    std::memcpy(&m, idx + 1 + 2 * t, 2);
    if (m == 0 || (p < 16 && (m >> p) != 0))
      return Fail(error, "pattern: mask outside the kernel positions");
    table[t + 1] = m;
  }
  const uint8_t* ids = idx + 1 + 2 * npat;
  if (id_bits == 4 && (kernels & 1) && (ids[kernels >> 1] >> 4) != 0)
    return Fail(error, "pattern: padding nibble not zero");
  int64_t k = 0;
  for (uint64_t kern = 0; kern < kernels; ++kern) {
    const uint32_t id = id_bits == 4 ? (ids[kern >> 1] >> ((kern & 1) * 4)) & 15u : ids[kern];
    if (id > uint32_t(npat))
      return Fail(error, "pattern: id " + Str(id) + " > " + Str(npat) + " patterns");
    const uint32_t m = table[id];
    const int64_t r = int64_t(kern) / g, gg = int64_t(kern) % g;
    for (int64_t q = 0; q < p; ++q) {
      if ((m >> q) & 1) {
        if (k >= o.n_values) return Fail(error, "pattern: patterns select more values than stored");
        w[r * cols + q * g + gg] = v[k++];
      }
    }
  }
  if (k != o.n_values)
    return Fail(error, "pattern: patterns select " + Str(k) + " values but there are " +
                           Str(o.n_values));
  return true;
}

template <typename T>
bool DecodeNM(const Options& o, const T* v, const uint8_t* idx, std::vector<T>& w,
              std::string* error) {
  const int64_t n = o.p0, m = o.p1, bits = o.p2, rows = o.rows, cols = o.cols;
  if (n < 1 || n >= m || m > 65536 || bits != CeilLog2(m))
    return Fail(error, "n_m: bad parameters");
  const int64_t ng = (cols + m - 1) / m;
  int64_t per_row = 0;
  for (int64_t gi = 0; gi < ng; ++gi) per_row += std::min(n, std::min(m, cols - gi * m));
  if (per_row * rows != o.n_values)
    return Fail(error, "n_m: " + Str(o.n_values) + " values, expected " + Str(per_row * rows));
  if (!CheckBitBytes(idx, o.index_bytes, uint64_t(o.n_values) * bits, "n_m", error)) return false;
  BitReader br(idx);
  int64_t k = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t gi = 0; gi < ng; ++gi) {
      const int64_t width = std::min(m, cols - gi * m), slots = std::min(n, width);
      int64_t prev = -1;
      for (int64_t s = 0; s < slots; ++s) {
        const int64_t pos = br.Bits(int(bits));
        if (pos >= width || pos <= prev)
          return Fail(error, "n_m: position outside its group or not increasing");
        prev = pos;
        w[r * cols + gi * m + pos] = v[k++];
      }
    }
  }
  return true;
}

// Places the stored values (float32, or int8 for both quantized types) into the dense GEMM-view
// matrix with the op's index encoding.
template <typename T>
bool DecodeIndex(const Options& o, const T* v, const uint8_t* idx, std::vector<T>& w,
                 std::string* error) {
  switch (o.encoding) {
    case kBitmap: return DecodeBitmap(o, v, idx, w, error);
    case kGap4: return DecodeGap4(o, v, idx, w, error);
    case kBlock: return DecodeBlock(o, v, idx, w, error);
    case kPattern: return DecodePattern(o, v, idx, w, error);
    case kNM: return DecodeNM(o, v, idx, w, error);
  }
  return Fail(error, "unknown index encoding " + Str(o.encoding));
}

// GEMM view [rows, cols] -> builtin layout (only depthwise differs: [1, kh, kw, out]).
template <typename T>
std::vector<T> BuiltinLayout(const Options& o, std::vector<T>&& w) {
  if (o.op_kind != 2) return std::move(w);  // FC [out, in] and OHWI are the GEMM view already
  const size_t outc = size_t(o.rows), khkw = size_t(o.cols);
  std::vector<T> b(w.size());
  for (size_t r = 0; r < outc; ++r)
    for (size_t q = 0; q < khkw; ++q) b[q * outc + r] = w[r * khkw + q];
  return b;
}

}  // namespace

bool IsNpasCustomOp(const char* custom_name) {
  if (custom_name == nullptr) return false;
  for (int kind = 0; kind < 3; ++kind)
    if (std::strcmp(custom_name, KindName(kind)) == 0) return true;
  return false;
}

bool DecodeNpasCustomOp(const char* custom_name, const void* options, size_t options_size,
                        const RawTensor& values, const RawTensor& indices, DecodedLayer* out,
                        std::string* error) {
  return DecodeNpasCustomOp(custom_name, options, options_size, values, indices, nullptr, out,
                            error);
}

bool DecodeNpasCustomOp(const char* custom_name, const void* options, size_t options_size,
                        const RawTensor& values, const RawTensor& indices, const RawTensor* scales,
                        DecodedLayer* out, std::string* error) {
  if (out == nullptr) return Fail(error, "no output");
  if (!IsNpasCustomOp(custom_name)) return Fail(error, "not an NPAS custom op");
  try {
    Options o;
    std::string scheme;
    if (!ParseOptions(static_cast<const uint8_t*>(options), options_size, &o, &scheme, error))
      return false;
    if (!ValidateOptions(o, custom_name, error)) return false;
    const ValueType vt = static_cast<ValueType>(o.value_type);
    // The constant inputs. Values: float32 [n], int8 [n] or uint8 [ceil(n/2)] (4-bit packed).
    const uint64_t vbytes_expect = vt == ValueType::kFloat32 ? uint64_t(o.n_values) * 4
                                   : vt == ValueType::kInt8  ? uint64_t(o.n_values)
                                                             : (uint64_t(o.n_values) + 1) / 2;
    const int vtype = vt == ValueType::kFloat32 ? kTypeFloat32
                      : vt == ValueType::kInt8  ? kTypeInt8
                                                : kTypeUInt8;
    const char* vname = vt == ValueType::kFloat32 ? "float32"
                        : vt == ValueType::kInt8  ? "int8"
                                                  : "uint8 (4-bit packed)";
    if (values.tflite_type != vtype) return Fail(error, std::string("values tensor is not ") + vname);
    if (values.num_dims != 1 || values.dims == nullptr ||
        uint64_t(values.dims[0]) != (vt == ValueType::kFloat32 ? uint64_t(o.n_values) : vbytes_expect))
      return Fail(error, "values tensor shape is not [" + Str(vt == ValueType::kFloat32 ? o.n_values
                                                                     : int64_t(vbytes_expect)) + "]");
    if (values.bytes != vbytes_expect || values.data == nullptr)
      return Fail(error, "values tensor has " + Str(values.bytes) + " bytes, expected " +
                             Str(int64_t(vbytes_expect)));
    if (indices.tflite_type != kTypeUInt8 && indices.tflite_type != kTypeInt8)
      return Fail(error, "index tensor is not uint8");
    if (indices.num_dims != 1 || indices.dims == nullptr || indices.dims[0] != o.index_bytes)
      return Fail(error, "index tensor shape is not [index_bytes]");
    if (indices.bytes != uint64_t(o.index_bytes) || indices.data == nullptr)
      return Fail(error, "index tensor has " + Str(indices.bytes) + " bytes, expected " +
                             Str(o.index_bytes));
    const uint8_t* vbytes = static_cast<const uint8_t*>(values.data);
    const uint8_t* idx = static_cast<const uint8_t*>(indices.data);
    if (Crc32(vbytes, values.bytes) != o.crc_values)
      return Fail(error, "values checksum mismatch (weights corrupted)");
    if (Crc32(idx, indices.bytes) != o.crc_index)
      return Fail(error, "index checksum mismatch (index data corrupted)");
    std::vector<float> sc;
    if (vt != ValueType::kFloat32) {
      if (scales == nullptr) return Fail(error, "quantized op without a scales input");
      if (scales->tflite_type != kTypeFloat32 || scales->num_dims != 1 || scales->dims == nullptr ||
          scales->dims[0] != o.rows || scales->bytes != uint64_t(o.rows) * 4 ||
          scales->data == nullptr)
        return Fail(error, "scales tensor is not float32 [out_channels]");
      if (Crc32(static_cast<const uint8_t*>(scales->data), scales->bytes) != o.crc_scales)
        return Fail(error, "scales checksum mismatch (scales corrupted)");
      sc.resize(size_t(o.rows));
      std::memcpy(sc.data(), scales->data, scales->bytes);
      for (float f : sc)
        if (!(f > 0.f) || !std::isfinite(f)) return Fail(error, "weight scales must be positive and finite");
    }

    DecodedLayer d;
    const size_t total = size_t(o.rows) * size_t(o.cols);
    if (vt == ValueType::kFloat32) {
      std::vector<float> v(size_t(o.n_values));
      std::memcpy(v.data(), vbytes, values.bytes);  // the model buffer may be unaligned
      std::vector<float> w(total, 0.0f);
      if (!DecodeIndex(o, v.data(), idx, w, error)) return false;
      d.weights = BuiltinLayout(o, std::move(w));
    } else {
      std::vector<int8_t> v(size_t(o.n_values));
      if (vt == ValueType::kInt8) {
        std::memcpy(v.data(), vbytes, values.bytes);
      } else {
        // Two's complement nibbles, low nibble first; an odd count leaves a zero high nibble.
        if ((o.n_values & 1) && (vbytes[values.bytes - 1] >> 4) != 0)
          return Fail(error, "int4 values: padding nibble of the last byte is not zero");
        for (size_t k = 0; k < v.size(); ++k) {
          const int nib = (vbytes[k >> 1] >> ((k & 1) * 4)) & 15;
          v[k] = static_cast<int8_t>((nib ^ 8) - 8);
        }
      }
      std::vector<int8_t> w(total, 0);
      if (!DecodeIndex(o, v.data(), idx, w, error)) return false;
      d.qweights = BuiltinLayout(o, std::move(w));
      d.scales = std::move(sc);
    }
    d.value_type = vt;
    d.kind = o.op_kind == 0 ? CustomOpKind::kFullyConnected
             : o.op_kind == 1 ? CustomOpKind::kConv2D
                              : CustomOpKind::kDepthwiseConv2D;
    d.padding = o.op_kind == 0 ? 2 : o.padding;
    d.activation = o.activation;
    d.stride_h = o.stride_h;
    d.stride_w = o.stride_w;
    d.dilation_h = o.dilation_h;
    d.dilation_w = o.dilation_w;
    d.depth_multiplier = o.depth_multiplier;
    d.out_channels = o.out_channels;
    d.kh = o.kh;
    d.kw = o.kw;
    d.in_channels = o.in_channels;
    d.scheme_json = std::move(scheme);
    *out = std::move(d);
    return true;
  } catch (const std::bad_alloc&) {
    return Fail(error, "out of memory while decoding");
  } catch (...) {
    return Fail(error, "unexpected error while decoding");
  }
}

}  // namespace npas
