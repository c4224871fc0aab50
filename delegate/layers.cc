// Reading TFLite nodes into LayerSpecs (with the reasons to decline), geometry and offsets.
#include <cmath>
#include <cstring>
#include <limits>

#include "delegate_internal.h"
#include "tflite_custom_ops/npas_custom_ops.h"

namespace npas {

bool IsConstant(const TfLiteTensor& t) {
  return (t.allocation_type == kTfLiteMmapRo || t.allocation_type == kTfLitePersistentRo) &&
         t.data.raw != nullptr;
}

int64_t NumElements(const TfLiteIntArray* dims) {
  if (dims == nullptr) return -1;
  int64_t n = 1;
  for (int i = 0; i < dims->size; ++i) {
    if (dims->data[i] < 0) return -1;
    n *= dims->data[i];
  }
  return n;
}

const TfLiteAffineQuantization* Affine(const TfLiteTensor& t) {
  if (t.quantization.type != kTfLiteAffineQuantization || t.quantization.params == nullptr)
    return nullptr;
  auto* a = static_cast<const TfLiteAffineQuantization*>(t.quantization.params);
  if (a->scale == nullptr || a->zero_point == nullptr || a->scale->size < 1 ||
      a->zero_point->size != a->scale->size)
    return nullptr;
  return a;
}

bool QuantizedActivationRange(float act_min, float act_max, float scale, int32_t zp, int32_t* lo,
                              int32_t* hi) {
  auto quantize = [&](float f) { return zp + static_cast<int32_t>(std::round(f / scale)); };
  *lo = std::isfinite(act_min) ? std::max<int32_t>(-128, quantize(act_min)) : -128;
  *hi = std::isfinite(act_max) ? std::min<int32_t>(127, quantize(act_max)) : 127;
  return *lo <= *hi;
}

bool ActivationRange(int act, float* act_min, float* act_max) {
  switch (act) {
    case kTfLiteActNone: *act_min = -INFINITY; *act_max = INFINITY; return true;
    case kTfLiteActRelu: *act_min = 0.f; *act_max = INFINITY; return true;
    case kTfLiteActReluN1To1: *act_min = -1.f; *act_max = 1.f; return true;
    case kTfLiteActRelu6: *act_min = 0.f; *act_max = 6.f; return true;
    default: return false;
  }
}

namespace {

std::vector<int> DimsOf(const TfLiteTensor& t) {
  std::vector<int> d;
  if (t.dims != nullptr) d.assign(t.dims->data, t.dims->data + t.dims->size);
  return d;
}

bool SetActivation(int act, LayerSpec* spec) {
  return ActivationRange(act, &spec->act_min, &spec->act_max);
}

const TfLiteTensor* Input(const TfLiteContext* ctx, const TfLiteNode* node, int i) {
  if (node->inputs == nullptr || i >= node->inputs->size) return nullptr;
  int idx = node->inputs->data[i];
  if (idx < 0 || static_cast<size_t>(idx) >= ctx->tensors_size) return nullptr;
  return &ctx->tensors[idx];
}

int InputIndex(const TfLiteNode* node, int i) {
  if (node->inputs == nullptr || i >= node->inputs->size) return -1;
  return node->inputs->data[i];
}

#define DECLINE(code, msg)  \
  do {                      \
    *reason = (code);       \
    *message = (msg);       \
    return false;           \
  } while (0)

// Common checks: float32 activation in/out, constant float32 weights without sparse metadata,
// absent or constant float32 bias.
bool CheckTensors(TfLiteContext* ctx, TfLiteNode* node, int weights_input, int bias_input,
                  LayerSpec* spec, std::string* reason, std::string* message) {
  if (node->outputs == nullptr || node->outputs->size != 1)
    DECLINE("unsupported_signature", "expected exactly one output");
  const TfLiteTensor* in = Input(ctx, node, 0);
  int out_idx = node->outputs->data[0];
  if (in == nullptr || out_idx < 0 || static_cast<size_t>(out_idx) >= ctx->tensors_size)
    DECLINE("unsupported_signature", "missing input or output tensor");
  const TfLiteTensor& out = ctx->tensors[out_idx];
  // int8 in / int8 out: TFLite full-integer quantization (checked further in FinishInt8; an
  // NPAS custom op must then be a quantized one). Everything else that is not float32 (uint8,
  // int16 activations, hybrid) stays declined.
  const bool q8 = in->type == kTfLiteInt8 && out.type == kTfLiteInt8;
  if (!q8 && (in->type != kTfLiteFloat32 || out.type != kTfLiteFloat32))
    DECLINE("not_float32", "activation input/output are not float32");
  spec->int8 = q8;
  const TfLiteType wtype = q8 ? kTfLiteInt8 : kTfLiteFloat32;
  const TfLiteType btype = q8 ? kTfLiteInt32 : kTfLiteFloat32;
  spec->input_tensor = node->inputs->data[0];
  spec->output_tensor = out_idx;
  if (weights_input >= 0) {
    const TfLiteTensor* w = Input(ctx, node, weights_input);
    if (w == nullptr) DECLINE("unsupported_signature", "missing weights tensor");
    if (w->type != wtype)
      DECLINE(q8 ? "unsupported_quantization" : "not_float32",
              q8 ? "int8 activations need int8 weights" : "weights are not float32");
    if (!IsConstant(*w)) DECLINE("weights_not_constant", "weights are not a constant tensor");
    if (w->sparsity != nullptr)
      DECLINE("sparse_weights_metadata", "weights carry TFLite sparsity metadata");
    spec->weights_tensor = InputIndex(node, weights_input);
  }
  int bias_idx = InputIndex(node, bias_input);
  if (bias_idx >= 0) {
    const TfLiteTensor* b = Input(ctx, node, bias_input);
    if (b == nullptr) DECLINE("unsupported_signature", "bad bias tensor index");
    if (b->type != btype)
      DECLINE(q8 ? "unsupported_quantization" : "not_float32",
              q8 ? "int8 layer bias is not int32" : "bias is not float32");
    if (!IsConstant(*b)) DECLINE("bias_not_constant", "bias is not a constant tensor");
    spec->bias_tensor = bias_idx;
  }
  return true;
}

bool CheckBiasSize(const TfLiteContext* ctx, const LayerSpec& spec, std::string* reason,
                   std::string* message) {
  if (spec.bias_tensor >= 0 && NumElements(ctx->tensors[spec.bias_tensor].dims) != spec.rows)
    DECLINE("bad_shape", "bias size differs from the output channel count");
  return true;
}

bool CheckStridesDilation(LayerSpec* spec, std::string* reason, std::string* message) {
  if (spec->stride_h < 1 || spec->stride_w < 1 || spec->dil_h < 1 || spec->dil_w < 1)
    DECLINE("bad_params", "stride/dilation must be >= 1");
  if (spec->padding != kTfLitePaddingSame && spec->padding != kTfLitePaddingValid)
    DECLINE("bad_params", "unknown padding");
  return true;
}

// Activation, padding, strides and dilation: the fields CONV_2D and DEPTHWISE_CONV_2D share.
template <typename Params>
bool ReadSpatialParams(const Params* p, const char* op, LayerSpec* spec, std::string* reason,
                       std::string* message) {
  if (p == nullptr) DECLINE("bad_params", std::string("missing ") + op + " params");
  if (!SetActivation(p->activation, spec))
    DECLINE("unsupported_activation", "unsupported fused activation");
  spec->padding = p->padding;
  spec->stride_h = p->stride_height;
  spec->stride_w = p->stride_width;
  spec->dil_h = p->dilation_height_factor;
  spec->dil_w = p->dilation_width_factor;
  return CheckStridesDilation(spec, reason, message);
}


// int8 layers: per-tensor int8 input/output with zero points, symmetric int8 weights with
// `nsc` scales (1: per tensor, else one per output channel). Computes TFLite's per-channel
// multiplier/shift (input_scale * weight_scale / output_scale, in double) and the fused
// activation's clamp in quantized space (as CalculateActivationRangeQuantized).
bool FinishInt8Scales(const TfLiteContext* ctx, const float* wscale, int nsc, LayerSpec* spec,
                      std::string* reason, std::string* message) {
  const TfLiteTensor& in = ctx->tensors[spec->input_tensor];
  const TfLiteTensor& out = ctx->tensors[spec->output_tensor];
  const TfLiteAffineQuantization* qi = Affine(in);
  const TfLiteAffineQuantization* qo = Affine(out);
  if (!qi || !qo) DECLINE("unsupported_quantization", "int8 tensor without affine quantization");
  if (qi->scale->size != 1 || qo->scale->size != 1)
    DECLINE("unsupported_quantization", "per-channel quantized activations");
  const float in_scale = qi->scale->data[0], out_scale = qo->scale->data[0];
  const int32_t in_zp = qi->zero_point->data[0], out_zp = qo->zero_point->data[0];
  if (!(in_scale > 0) || !(out_scale > 0) || !std::isfinite(in_scale) || !std::isfinite(out_scale))
    DECLINE("unsupported_quantization", "non-positive activation scale");
  if (in_zp < -128 || in_zp > 127 || out_zp < -128 || out_zp > 127)
    DECLINE("unsupported_quantization", "activation zero point outside int8");
  const int nch = spec->rows;
  if (nsc != 1 && nsc != nch)
    DECLINE("unsupported_quantization", "weight scales are neither per-tensor nor per output channel");
  for (int i = 0; i < nsc; ++i)
    if (!(wscale[i] > 0) || !std::isfinite(wscale[i]))
      DECLINE("unsupported_quantization", "non-positive weight scale");
  if (spec->bias_tensor >= 0) {
    const TfLiteTensor& b = ctx->tensors[spec->bias_tensor];
    if (b.type != kTfLiteInt32) DECLINE("unsupported_quantization", "int8 layer bias is not int32");
  }
  spec->multiplier.assign(nch, 0);
  spec->shift.assign(nch, 0);
  for (int c = 0; c < nch; ++c) {
    const double ws = static_cast<double>(wscale[nsc == 1 ? 0 : c]);
    const double real = static_cast<double>(in_scale) * ws / static_cast<double>(out_scale);
    int sh = 0;
    QuantizeMultiplier(real, &spec->multiplier[c], &sh);
    if (sh > 30) DECLINE("unsupported_quantization", "effective output scale too large");
    spec->shift[c] = sh;
  }
  spec->input_zp = in_zp;
  spec->output_zp = out_zp;
  if (!QuantizedActivationRange(spec->act_min, spec->act_max, out_scale, out_zp, &spec->act_min_q,
                                &spec->act_max_q))
    DECLINE("unsupported_quantization", "empty quantized activation range");
  return true;
}

// Builtin int8 ops: the weight scales are on the weights tensor (per output channel along
// `channel_dim`, or per tensor), with zero point 0.
bool FinishInt8(const TfLiteContext* ctx, int channel_dim, LayerSpec* spec, std::string* reason,
                std::string* message) {
  const TfLiteAffineQuantization* qw = Affine(ctx->tensors[spec->weights_tensor]);
  if (!qw) DECLINE("unsupported_quantization", "int8 tensor without affine quantization");
  const int nsc = qw->scale->size;
  if (nsc != 1 && (nsc != spec->rows || qw->quantized_dimension != channel_dim))
    DECLINE("unsupported_quantization", "weight scales are neither per-tensor nor per output channel");
  for (int i = 0; i < nsc; ++i)
    if (qw->zero_point->data[i] != 0)
      DECLINE("asymmetric_weights", "int8 weights with a nonzero zero point");
  return FinishInt8Scales(ctx, qw->scale->data, nsc, spec, reason, message);
}

bool BuildCustom(TfLiteContext* ctx, TfLiteNode* node, TfLiteRegistration* reg, LayerSpec* spec,
                 std::string* reason, std::string* message) {
  spec->custom = true;
  spec->op_name = reg->custom_name;
  if (node->inputs == nullptr || node->inputs->size < 3)
    DECLINE("unsupported_signature", "NPAS custom op needs activation, values and indices inputs");
  if (!CheckTensors(ctx, node, -1, 3, spec, reason, message)) return false;
  // Inputs 1 values, 2 index and (quantized ops only) 4 scales: constant tensors.
  RawTensor raw[3];
  const int nraw = node->inputs->size >= 5 && InputIndex(node, 4) >= 0 ? 3 : 2;
  for (int i = 0; i < nraw; ++i) {
    const TfLiteTensor* t = Input(ctx, node, i < 2 ? 1 + i : 4);
    if (t == nullptr) DECLINE("unsupported_signature", "missing compact weight tensor");
    if (!IsConstant(*t)) DECLINE("weights_not_constant", "compact weights are not constant");
    raw[i].data = t->data.raw_const;
    raw[i].bytes = t->bytes;
    raw[i].tflite_type = t->type;
    raw[i].num_dims = t->dims ? t->dims->size : 0;
    raw[i].dims = t->dims ? t->dims->data : nullptr;
  }
  DecodedLayer dec;
  std::string err;
  if (!DecodeNpasCustomOp(reg->custom_name, node->custom_initial_data,
                          static_cast<size_t>(node->custom_initial_data_size), raw[0], raw[1],
                          nraw == 3 ? &raw[2] : nullptr, &dec, &err))
    DECLINE("custom_op_decode_failed", "cannot decode " + spec->op_name + ": " + err);
  const bool quantized = dec.value_type != ValueType::kFloat32;
  if (quantized && (!spec->int8 || node->inputs->size != 5))
    DECLINE("unsupported_quantization",
            "a quantized NPAS custom op needs int8 activations and 5 inputs");
  if (!quantized && spec->int8)
    DECLINE("not_float32", "a float32 NPAS custom op with int8 activations");
  if (!SetActivation(dec.activation, spec))
    DECLINE("unsupported_activation", "unsupported fused activation in custom op");
  spec->padding = dec.padding;
  spec->stride_h = dec.stride_h;
  spec->stride_w = dec.stride_w;
  spec->dil_h = dec.dilation_h;
  spec->dil_w = dec.dilation_w;
  spec->kh = dec.kh;
  spec->kw = dec.kw;
  spec->scheme_json = dec.scheme_json;
  const TfLiteTensor& in = ctx->tensors[spec->input_tensor];
  if (dec.out_channels <= 0 || dec.kh <= 0 || dec.kw <= 0 || dec.in_channels <= 0)
    DECLINE("custom_op_decode_failed", "decoded layer has non-positive sizes");
  size_t expect = 0;
  switch (dec.kind) {
    case CustomOpKind::kFullyConnected:
      spec->op = OpKind::kFullyConnected;
      spec->rows = dec.out_channels;
      spec->cols = spec->cin = dec.in_channels;
      spec->kh = spec->kw = 1;
      spec->keep_num_dims = in.dims != nullptr && in.dims->size > 2;
      expect = static_cast<size_t>(spec->rows) * spec->cols;
      break;
    case CustomOpKind::kConv2D:
      spec->op = OpKind::kConv2D;
      spec->rows = spec->cout = dec.out_channels;
      spec->cin = dec.in_channels;
      spec->cols = dec.kh * dec.kw * dec.in_channels;
      expect = static_cast<size_t>(spec->rows) * spec->cols;
      break;
    case CustomOpKind::kDepthwiseConv2D:
      spec->op = OpKind::kDepthwiseConv2D;
      spec->cin = dec.in_channels;
      spec->depth_multiplier = dec.depth_multiplier;
      spec->rows = spec->cout = dec.out_channels;
      if (dec.depth_multiplier < 1 || spec->cout != spec->cin * dec.depth_multiplier)
        DECLINE("custom_op_decode_failed", "depthwise channels inconsistent with multiplier");
      expect = static_cast<size_t>(dec.kh) * dec.kw * spec->cout;
      break;
  }
  if ((quantized ? dec.qweights.size() : dec.weights.size()) != expect)
    DECLINE("custom_op_decode_failed", "decoded weights have the wrong size");
  if (spec->op != OpKind::kFullyConnected && !CheckStridesDilation(spec, reason, message))
    return false;
  if (quantized) {
    // The decoded integers with the op's scales are the int8 layer TFLite would run.
    spec->owned_weights8 = std::move(dec.qweights);
    if (!FinishInt8Scales(ctx, dec.scales.data(), static_cast<int>(dec.scales.size()), spec,
                          reason, message))
      return false;
  } else {
    spec->owned_weights = std::move(dec.weights);
  }
  return CheckBiasSize(ctx, *spec, reason, message);
}

}  // namespace

const char* OpKindName(OpKind op) {
  switch (op) {
    case OpKind::kFullyConnected: return "FULLY_CONNECTED";
    case OpKind::kConv2D: return "CONV_2D";
    case OpKind::kDepthwiseConv2D: return "DEPTHWISE_CONV_2D";
  }
  return "?";
}

const float* LayerSpec::Weights(const TfLiteContext* ctx) const {
  if (!owned_weights.empty()) return owned_weights.data();
  if (weights_tensor < 0 || static_cast<size_t>(weights_tensor) >= ctx->tensors_size) return nullptr;
  return ctx->tensors[weights_tensor].data.f;
}

const int8_t* LayerSpec::WeightsInt8(const TfLiteContext* ctx) const {
  if (int8 && !owned_weights8.empty()) return owned_weights8.data();
  if (!int8 || weights_tensor < 0 || static_cast<size_t>(weights_tensor) >= ctx->tensors_size)
    return nullptr;
  return ctx->tensors[weights_tensor].data.int8;
}

const int32_t* LayerSpec::BiasInt32(const TfLiteContext* ctx) const {
  if (!int8 || bias_tensor < 0 || static_cast<size_t>(bias_tensor) >= ctx->tensors_size)
    return nullptr;
  return ctx->tensors[bias_tensor].data.i32;
}

const float* LayerSpec::Bias(const TfLiteContext* ctx) const {
  if (bias_tensor < 0 || static_cast<size_t>(bias_tensor) >= ctx->tensors_size) return nullptr;
  return ctx->tensors[bias_tensor].data.f;
}

bool BuildLayerSpec(TfLiteContext* ctx, int node_index, TfLiteNode* node, TfLiteRegistration* reg,
                    LayerSpec* spec, std::string* reason, std::string* message) {
  spec->node_index = node_index;
  const int code = reg->builtin_code;
  if (code == kTfLiteBuiltinCustom && reg->custom_name != nullptr &&
      std::strncmp(reg->custom_name, "Npas", 4) == 0 && IsNpasCustomOp(reg->custom_name)) {
    return BuildCustom(ctx, node, reg, spec, reason, message);
  }
  if (code == kTfLiteBuiltinFullyConnected) {
    spec->op = OpKind::kFullyConnected;
    spec->op_name = "FULLY_CONNECTED";
    auto* p = static_cast<const TfLiteFullyConnectedParams*>(node->builtin_data);
    if (p == nullptr) DECLINE("bad_params", "missing FULLY_CONNECTED params");
    if (p->weights_format != kTfLiteFullyConnectedWeightsFormatDefault)
      DECLINE("unsupported_weights_format", "shuffled FULLY_CONNECTED weights");
    if (!SetActivation(p->activation, spec))
      DECLINE("unsupported_activation", "unsupported fused activation");
    spec->keep_num_dims = p->keep_num_dims;
    if (node->inputs == nullptr || node->inputs->size < 2)
      DECLINE("unsupported_signature", "FULLY_CONNECTED needs input and weights");
    if (!CheckTensors(ctx, node, 1, 2, spec, reason, message)) return false;
    const TfLiteTensor& w = ctx->tensors[spec->weights_tensor];
    if (w.dims == nullptr || w.dims->size != 2 || w.dims->data[0] <= 0 || w.dims->data[1] <= 0)
      DECLINE("bad_shape", "FULLY_CONNECTED weights are not [units, in]");
    spec->rows = spec->cout = w.dims->data[0];
    spec->cols = spec->cin = w.dims->data[1];
    if (spec->int8 && !FinishInt8(ctx, 0, spec, reason, message)) return false;
    return CheckBiasSize(ctx, *spec, reason, message);
  }
  if (code == kTfLiteBuiltinConv2d) {
    spec->op = OpKind::kConv2D;
    spec->op_name = "CONV_2D";
    auto* p = static_cast<const TfLiteConvParams*>(node->builtin_data);
    if (!ReadSpatialParams(p, "CONV_2D", spec, reason, message)) return false;
    if (node->inputs == nullptr || node->inputs->size < 2)
      DECLINE("unsupported_signature", "CONV_2D needs input and filter");
    if (!CheckTensors(ctx, node, 1, 2, spec, reason, message)) return false;
    const TfLiteTensor& w = ctx->tensors[spec->weights_tensor];
    const TfLiteTensor& in = ctx->tensors[spec->input_tensor];
    if (w.dims == nullptr || w.dims->size != 4 || NumElements(w.dims) <= 0)
      DECLINE("bad_shape", "CONV_2D filter is not [cout, kh, kw, cin]");
    if (in.dims == nullptr || in.dims->size != 4) DECLINE("bad_shape", "CONV_2D input is not NHWC");
    spec->cout = spec->rows = w.dims->data[0];
    spec->kh = w.dims->data[1];
    spec->kw = w.dims->data[2];
    spec->cin = w.dims->data[3];
    if (in.dims->data[3] != spec->cin)
      DECLINE("grouped_convolution", "filter channels differ from input channels (grouped conv)");
    spec->cols = spec->kh * spec->kw * spec->cin;
    if (spec->int8 && !FinishInt8(ctx, 0, spec, reason, message)) return false;
    return CheckBiasSize(ctx, *spec, reason, message);
  }
  if (code == kTfLiteBuiltinDepthwiseConv2d) {
    spec->op = OpKind::kDepthwiseConv2D;
    spec->op_name = "DEPTHWISE_CONV_2D";
    auto* p = static_cast<const TfLiteDepthwiseConvParams*>(node->builtin_data);
    if (!ReadSpatialParams(p, "DEPTHWISE_CONV_2D", spec, reason, message)) return false;
    if (node->inputs == nullptr || node->inputs->size < 2)
      DECLINE("unsupported_signature", "DEPTHWISE_CONV_2D needs input and filter");
    if (!CheckTensors(ctx, node, 1, 2, spec, reason, message)) return false;
    const TfLiteTensor& w = ctx->tensors[spec->weights_tensor];
    const TfLiteTensor& in = ctx->tensors[spec->input_tensor];
    if (w.dims == nullptr || w.dims->size != 4 || w.dims->data[0] != 1 || NumElements(w.dims) <= 0)
      DECLINE("bad_shape", "DEPTHWISE_CONV_2D filter is not [1, kh, kw, cout]");
    if (in.dims == nullptr || in.dims->size != 4 || in.dims->data[3] <= 0)
      DECLINE("bad_shape", "DEPTHWISE_CONV_2D input is not NHWC");
    spec->kh = w.dims->data[1];
    spec->kw = w.dims->data[2];
    spec->cout = spec->rows = w.dims->data[3];
    spec->cin = in.dims->data[3];
    if (spec->cout % spec->cin != 0)
      DECLINE("bad_shape", "depthwise output channels are not a multiple of input channels");
    spec->depth_multiplier = spec->cout / spec->cin;
    spec->cols = spec->kh * spec->kw;
    if (spec->int8 && !FinishInt8(ctx, 3, spec, reason, message)) return false;
    return CheckBiasSize(ctx, *spec, reason, message);
  }
  DECLINE("unsupported_op", "not a claimable op");
}

bool ComputeGeometry(const TfLiteContext* ctx, const LayerSpec& spec, Geometry* geo,
                     std::string* error) {
  if (spec.input_tensor < 0 || static_cast<size_t>(spec.input_tensor) >= ctx->tensors_size) {
    *error = "bad input tensor";
    return false;
  }
  const TfLiteTensor& in = ctx->tensors[spec.input_tensor];
  geo->in_dims = DimsOf(in);
  const int64_t total = NumElements(in.dims);
  if (total < 0 || geo->in_dims.empty()) {
    *error = "input shape unknown";
    return false;
  }
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (spec.op == OpKind::kFullyConnected) {
    if (total % spec.cols != 0) {
      *error = "input size is not a multiple of in_features";
      return false;
    }
    const int64_t rows = total / spec.cols;
    if (rows * std::max(spec.cols, spec.rows) > kMax) {
      *error = "tensor too large for 32-bit offsets";
      return false;
    }
    geo->num_pixels = static_cast<int>(rows);
    geo->in_elems = total;
    geo->needs_copy = false;
    const auto& d = geo->in_dims;
    if (spec.keep_num_dims && d.back() == spec.cols) {
      geo->out_dims = d;
      geo->out_dims.back() = spec.rows;
    } else if (spec.custom && d.size() > 2 && d.back() == spec.cols) {
      geo->out_dims = d;
      geo->out_dims.back() = spec.rows;
    } else {
      geo->out_dims = {geo->num_pixels, spec.rows};
    }
    return true;
  }
  // CONV_2D / DEPTHWISE_CONV_2D: NHWC.
  const auto& d = geo->in_dims;
  if (d.size() != 4 || d[3] != spec.cin) {
    *error = "input is not NHWC with the filter's channel count";
    return false;
  }
  geo->n = d[0];
  geo->in_h = d[1];
  geo->in_w = d[2];
  const int eff_h = (spec.kh - 1) * spec.dil_h + 1, eff_w = (spec.kw - 1) * spec.dil_w + 1;
  int pad_h_total = 0, pad_w_total = 0;
  if (spec.padding == kTfLitePaddingSame) {
    geo->out_h = (geo->in_h + spec.stride_h - 1) / spec.stride_h;
    geo->out_w = (geo->in_w + spec.stride_w - 1) / spec.stride_w;
    pad_h_total = std::max((geo->out_h - 1) * spec.stride_h + eff_h - geo->in_h, 0);
    pad_w_total = std::max((geo->out_w - 1) * spec.stride_w + eff_w - geo->in_w, 0);
  } else {
    geo->out_h = geo->in_h >= eff_h ? (geo->in_h - eff_h) / spec.stride_h + 1 : 0;
    geo->out_w = geo->in_w >= eff_w ? (geo->in_w - eff_w) / spec.stride_w + 1 : 0;
  }
  if (geo->out_h <= 0 || geo->out_w <= 0 || geo->n <= 0) {
    *error = "empty output (input smaller than the filter)";
    return false;
  }
  geo->pad_top = pad_h_total / 2;  // TFLite puts the odd extra row/column after
  geo->pad_left = pad_w_total / 2;
  geo->hp = std::max(geo->in_h + pad_h_total, (geo->out_h - 1) * spec.stride_h + eff_h);
  geo->wp = std::max(geo->in_w + pad_w_total, (geo->out_w - 1) * spec.stride_w + eff_w);
  geo->needs_copy = geo->hp != geo->in_h || geo->wp != geo->in_w;
  geo->in_elems = static_cast<int64_t>(geo->n) * geo->hp * geo->wp * spec.cin;
  const int64_t pixels = static_cast<int64_t>(geo->n) * geo->out_h * geo->out_w;
  if (geo->in_elems > kMax || pixels * spec.cout > kMax) {
    *error = "tensor too large for 32-bit offsets";
    return false;
  }
  geo->num_pixels = static_cast<int>(pixels);
  geo->out_dims = {geo->n, geo->out_h, geo->out_w, spec.cout};
  return true;
}

void BuildOffsets(const LayerSpec& spec, const Geometry& geo, std::vector<int32_t>* col_offset,
                  std::vector<int32_t>* pixel_base) {
  col_offset->clear();
  pixel_base->resize(geo.num_pixels);
  if (spec.op == OpKind::kFullyConnected) {
    col_offset->resize(spec.cols);
    for (int k = 0; k < spec.cols; ++k) (*col_offset)[k] = k;
    for (int p = 0; p < geo.num_pixels; ++p) (*pixel_base)[p] = p * spec.cols;
    return;
  }
  // Both conv kinds: one offset per tap (times cin for CONV_2D's columns).
  for (int ky = 0; ky < spec.kh; ++ky)
    for (int kx = 0; kx < spec.kw; ++kx) {
      const int32_t tap = (ky * spec.dil_h * geo.wp + kx * spec.dil_w) * spec.cin;
      if (spec.op == OpKind::kConv2D) {
        for (int c = 0; c < spec.cin; ++c) col_offset->push_back(tap + c);
      } else {
        col_offset->push_back(tap);
      }
    }
  int p = 0;
  for (int n = 0; n < geo.n; ++n)
    for (int oy = 0; oy < geo.out_h; ++oy)
      for (int ox = 0; ox < geo.out_w; ++ox)
        (*pixel_base)[p++] =
            ((n * geo.hp + oy * spec.stride_h) * geo.wp + ox * spec.stride_w) * spec.cin;
}

// The fields GemmDesc and GemmInt8Desc share: shape, column order, weights and offsets.
template <typename Desc, typename W>
static Desc GemmShapeOf(const NodeState& st, const W* w) {
  const LayerSpec& s = st.spec;
  Desc d;
  d.rows = s.rows;
  d.cols = s.cols;
  d.kh = s.op == OpKind::kConv2D ? s.kh : 1;
  d.kw = s.op == OpKind::kConv2D ? s.kw : 1;
  d.cin = s.op == OpKind::kConv2D ? s.cin : s.cols;
  d.weights = w;
  d.col_offset = st.col_offset.data();
  return d;
}

// The int8 arithmetic GemmInt8Desc and DepthwiseInt8Desc share: bias, requantization, zero
// points and the quantized activation range.
template <typename Desc>
static void SetInt8Quantization(const TfLiteContext* ctx, const LayerSpec& s, Desc* d) {
  d->bias = s.BiasInt32(ctx);
  d->multiplier = s.multiplier.data();
  d->shift = s.shift.data();
  d->input_zp = s.input_zp;
  d->output_zp = s.output_zp;
  d->act_min = s.act_min_q;
  d->act_max = s.act_max_q;
}

GemmDesc MakeGemmDesc(const TfLiteContext* ctx, const NodeState& st, const float* w) {
  const LayerSpec& s = st.spec;
  GemmDesc d = GemmShapeOf<GemmDesc>(st, w);
  d.bias = s.Bias(ctx);
  d.act_min = s.act_min;
  d.act_max = s.act_max;
  return d;
}

GemmInt8Desc MakeGemmInt8Desc(const TfLiteContext* ctx, const NodeState& st, const int8_t* w) {
  const LayerSpec& s = st.spec;
  GemmInt8Desc d = GemmShapeOf<GemmInt8Desc>(st, w);
  SetInt8Quantization(ctx, s, &d);
  return d;
}

bool PackNodeInt8(const TfLiteContext* ctx, NodeState* st, KernelKind kind, std::string* error) {
  const LayerSpec& s = st->spec;
  const int8_t* w = s.WeightsInt8(ctx);
  if (w == nullptr) {
    *error = "weights not available";
    return false;
  }
  if (s.op == OpKind::kDepthwiseConv2D) {
    DepthwiseInt8Desc d;
    d.kh = s.kh;
    d.kw = s.kw;
    d.cin = s.cin;
    d.depth_multiplier = s.depth_multiplier;
    d.weights = w;
    d.tap_offset = st->col_offset.data();
    SetInt8Quantization(ctx, s, &d);
    st->dw8 = PackDepthwiseInt8(d, kind != KernelKind::kDense, error);
    if (!st->dw8) return false;
    st->structure = st->dw8->structure();
    return true;
  }
  const GemmInt8Desc d = MakeGemmInt8Desc(ctx, *st, w);
  st->gemm8 = PackGemmInt8(d, kind, st->geo.num_pixels, st->pixel_base.data(), st->geo.in_elems,
                           st->num_threads, nullptr, nullptr, error);
  if (!st->gemm8) return false;
  st->kind = st->gemm8->kind();
  st->structure = st->gemm8->structure();
  return true;
}

bool PackNode(const TfLiteContext* ctx, NodeState* st, KernelKind kind, std::string* error) {
  const LayerSpec& s = st->spec;
  if (s.int8) return PackNodeInt8(ctx, st, kind, error);
  const float* w = s.Weights(ctx);
  if (w == nullptr) {
    *error = "weights not available";
    return false;
  }
  if (s.op == OpKind::kDepthwiseConv2D) {
    DepthwiseDesc d;
    d.kh = s.kh;
    d.kw = s.kw;
    d.cin = s.cin;
    d.depth_multiplier = s.depth_multiplier;
    d.weights = w;
    d.bias = s.Bias(ctx);
    d.tap_offset = st->col_offset.data();
    d.act_min = s.act_min;
    d.act_max = s.act_max;
    st->dw = PackDepthwise(d, error);
    if (!st->dw) return false;
    st->structure = st->dw->structure();
    return true;
  }
  const GemmDesc d = MakeGemmDesc(ctx, *st, w);
  st->gemm = PackGemm(d, kind, st->geo.num_pixels, st->pixel_base.data(), st->geo.in_elems,
                      st->num_threads, nullptr, nullptr, error);
  if (!st->gemm) return false;
  st->kind = st->gemm->kind();
  st->structure = st->gemm->structure();
  return true;
}

}  // namespace npas
