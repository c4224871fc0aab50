// Test-only C shim over npas::DecodeNpasCustomOp, loaded through ctypes by
// tests/test_export_decoder.py (built into a temporary shared library by that test).
#include <cstring>
#include <string>

#include "tflite_custom_ops/npas_custom_ops.h"

namespace {
// A 1-D tensor view of a caller's buffer (dim must outlive the view).
npas::RawTensor Raw1D(const void* data, size_t bytes, int tflite_type, const int* dim) {
  npas::RawTensor t;
  t.data = data;
  t.bytes = bytes;
  t.tflite_type = tflite_type;
  t.num_dims = 1;
  t.dims = dim;
  return t;
}

void CopyError(const std::string& error, char* err, size_t err_cap) {
  if (err && err_cap) {
    std::strncpy(err, error.c_str(), err_cap - 1);
    err[err_cap - 1] = 0;
  }
}
}  // namespace

extern "C" {

// Returns 1 on success; fills weights (capacity in floats), meta (16 ints) and err.
// meta: kind, padding, activation, stride_h, stride_w, dilation_h, dilation_w,
//       depth_multiplier, out_channels, kh, kw, in_channels, n_weights.
int npas_test_decode(const char* name, const void* opts, size_t opts_size, const void* values,
                     size_t values_bytes, int values_type, int values_dim, const void* index,
                     size_t index_bytes, int index_type, int index_dim, float* weights,
                     size_t capacity, int* meta, char* err, size_t err_cap) {
  npas::RawTensor v = Raw1D(values, values_bytes, values_type, &values_dim);
  npas::RawTensor i = Raw1D(index, index_bytes, index_type, &index_dim);
  npas::DecodedLayer d;
  std::string error;
  bool ok = npas::DecodeNpasCustomOp(name, opts, opts_size, v, i, &d, &error);
  CopyError(error, err, err_cap);
  if (!ok) return 0;
  int m[13] = {int(d.kind), d.padding, d.activation, d.stride_h, d.stride_w, d.dilation_h,
               d.dilation_w, d.depth_multiplier, d.out_channels, d.kh, d.kw, d.in_channels,
               int(d.weights.size())};
  std::memcpy(meta, m, sizeof(m));
  if (d.weights.size() <= capacity)
    std::memcpy(weights, d.weights.data(), d.weights.size() * sizeof(float));
  return 1;
}

// Quantized ops (options version 2): as npas_test_decode plus the scales input; fills qweights
// (int8, builtin layout, capacity in elements) and scales_out (out_channels floats, capacity
// scales_cap). meta as above, meta[13] = value type.
int npas_test_decode_q(const char* name, const void* opts, size_t opts_size, const void* values,
                       size_t values_bytes, int values_type, int values_dim, const void* index,
                       size_t index_bytes, int index_type, int index_dim, const void* scales,
                       size_t scales_bytes, int scales_type, int scales_dim, signed char* qweights,
                       size_t capacity, float* scales_out, size_t scales_cap, int* meta, char* err,
                       size_t err_cap) {
  npas::RawTensor v = Raw1D(values, values_bytes, values_type, &values_dim);
  npas::RawTensor i = Raw1D(index, index_bytes, index_type, &index_dim);
  npas::RawTensor s = Raw1D(scales, scales_bytes, scales_type, &scales_dim);
  npas::DecodedLayer d;
  std::string error;
  bool ok = npas::DecodeNpasCustomOp(name, opts, opts_size, v, i, &s, &d, &error);
  CopyError(error, err, err_cap);
  if (!ok) return 0;
  int m[14] = {int(d.kind), d.padding, d.activation, d.stride_h, d.stride_w, d.dilation_h,
               d.dilation_w, d.depth_multiplier, d.out_channels, d.kh, d.kw, d.in_channels,
               int(d.qweights.size()), int(d.value_type)};
  std::memcpy(meta, m, sizeof(m));
  if (d.qweights.size() <= capacity) std::memcpy(qweights, d.qweights.data(), d.qweights.size());
  if (d.scales.size() <= scales_cap)
    std::memcpy(scales_out, d.scales.data(), d.scales.size() * sizeof(float));
  return 1;
}

int npas_test_is_custom(const char* name) { return npas::IsNpasCustomOp(name) ? 1 : 0; }
}
