// NPAS custom ops (NpasSparseFullyConnected, NpasSparseConv2D, NpasSparseDepthwiseConv2D):
// the contract between the delegate core and the compact-weight decoder. The byte layout of
// the options and of the index data is specified in tflite_custom_ops/FORMAT.md; the Python
// writer is npas_keras/export. Nothing here depends on TFLite headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace npas {

enum class CustomOpKind { kFullyConnected, kConv2D, kDepthwiseConv2D };

// What the values tensor stores (options version 1: float32; version 2: int8 or 4-bit packed
// with per-output-channel scales in a fifth input, FORMAT.md "Quantized form").
enum class ValueType { kFloat32 = 0, kInt8 = 1, kInt4 = 2 };

// A constant tensor as the core sees it (data points into the model buffer).
struct RawTensor {
  const void* data = nullptr;
  size_t bytes = 0;
  int tflite_type = 0;      // TfLiteType value (1 = float32, 3 = uint8, 7 = int16, 2 = int32, 9 = int8)
  int num_dims = 0;
  const int* dims = nullptr;
};

// The builtin layer an NPAS custom op stands for, with its weights rebuilt densely so that the
// delegate runs it with exactly the kernels of the standard path.
struct DecodedLayer {
  CustomOpKind kind = CustomOpKind::kFullyConnected;
  // TFLite enum values: padding 1 = SAME, 2 = VALID; activation 0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6.
  int padding = 2, activation = 0;
  int stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1, depth_multiplier = 1;
  int out_channels = 0, kh = 1, kw = 1, in_channels = 0;  // FC: kh = kw = 1, in_channels = in_features
  // Dense weights in the builtin op's layout: FC [out, in], CONV_2D OHWI [out, kh, kw, in],
  // DEPTHWISE_CONV_2D [1, kh, kw, out].
  std::vector<float> weights;                // float32 ops (empty for quantized ones)
  std::string scheme_json;  // the scheme recorded at export (for verbose logs / stats)
  // Quantized ops: the integer weights (4-bit ones unpacked to int8) in the same builtin layout,
  // and the symmetric per-output-channel weight scales [out_channels] (zero point 0).
  ValueType value_type = ValueType::kFloat32;
  std::vector<int8_t> qweights;
  std::vector<float> scales;
};

bool IsNpasCustomOp(const char* custom_name);

// Validates everything (magic, version, sizes, every index inside the weight matrix) and fills
// *out. On any inconsistency returns false with a message in *error; never reads out of bounds.
// `scales` (the fifth input) is required by quantized ops and ignored by float32 ones; the
// overload without it decodes float32 ops only.
bool DecodeNpasCustomOp(const char* custom_name, const void* options, size_t options_size,
                        const RawTensor& values, const RawTensor& indices, const RawTensor* scales,
                        DecodedLayer* out, std::string* error);
bool DecodeNpasCustomOp(const char* custom_name, const void* options, size_t options_size,
                        const RawTensor& values, const RawTensor& indices, DecodedLayer* out,
                        std::string* error);

}  // namespace npas
