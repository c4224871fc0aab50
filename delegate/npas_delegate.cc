// Exported entry points of libnpas_delegate.so (the TFLite external-delegate interface plus two
// helpers for Python), option parsing and the stats JSON.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "delegate_internal.h"

#define NPAS_EXPORT extern "C" __attribute__((visibility("default")))

namespace npas {
namespace {

std::mutex g_mu;                 // guards g_last_error and g_live
std::string g_last_error;
std::set<const TfLiteDelegate*> g_live;  // delegates created here and not yet destroyed

void SetLastError(const std::string& e) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_last_error = e;
}

bool ParseInt(const char* s, long lo, long hi, long* out) {
  if (s == nullptr || *s == 0) return false;
  errno = 0;
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  while (end && (*end == ' ' || *end == '\t')) ++end;
  if (errno != 0 || end == s || *end != 0 || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool ParseDouble(const char* s, double* out) {
  if (s == nullptr || *s == 0) return false;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s, &end);
  while (end && (*end == ' ' || *end == '\t')) ++end;
  if (errno != 0 || end == s || *end != 0 || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

std::string Trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

const char* kKnownKeys =
    "num_threads, min_sparsity, min_speedup, schemes, kernel, verbose, tuning_cache, fuse";

void JsonString(std::ostringstream& o, const std::string& s) {
  o << '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') o << '\\' << c;
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      o << buf;
    } else o << c;
  }
  o << '"';
}

void JsonCounts(std::ostringstream& o, const std::map<std::string, long>& m) {
  o << '{';
  bool first = true;
  for (const auto& kv : m) {
    if (!first) o << ", ";
    first = false;
    JsonString(o, kv.first);
    o << ": " << kv.second;
  }
  o << '}';
}

}  // namespace

bool ParseOptions(const char* const* keys, const char* const* values, int count, Options* out,
                  std::string* error) {
  for (int i = 0; i < count; ++i) {
    if (keys == nullptr || values == nullptr || keys[i] == nullptr || values[i] == nullptr) {
      *error = "npas delegate: NULL option key or value";
      return false;
    }
    const std::string key = keys[i];
    const char* v = values[i];
    auto bad = [&](const std::string& what) {
      *error = "npas delegate: bad value '" + std::string(v) + "' for option '" + key + "': " + what;
      return false;
    };
    if (key == "num_threads") {
      long n;
      if (!ParseInt(v, 1, 1024, &n)) return bad("expected an integer >= 1");
      out->num_threads = static_cast<int>(n);
    } else if (key == "min_sparsity") {
      double x;
      if (!ParseDouble(v, &x) || x < 0.0 || x >= 1.0) return bad("expected a number in [0, 1)");
      out->min_sparsity = x;
    } else if (key == "min_speedup") {
      double x;
      if (!ParseDouble(v, &x) || x <= 0.0) return bad("expected a number > 0");
      out->min_speedup = x;
    } else if (key == "schemes") {
      unsigned mask = 0;
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ',')) {
        item = Trim(item);
        if (item.empty()) continue;
        if (item == "all") mask |= kAllStructures;
        else if (item == "dense") mask |= StructureBit(Structure::kDense);
        else if (item == "block_punched") mask |= StructureBit(Structure::kBlockPunched);
        else if (item == "bcr") mask |= StructureBit(Structure::kBcr);
        else if (item == "n_m") mask |= StructureBit(Structure::kNM);
        else if (item == "pattern") mask |= StructureBit(Structure::kPattern);
        else if (item == "unstructured") mask |= StructureBit(Structure::kUnstructured);
        else
          return bad("unknown scheme '" + item +
                     "' (known: bcr, block_punched, pattern, n_m, unstructured, dense, all)");
      }
      if (mask == 0) return bad("empty scheme list");
      out->schemes = mask;
    } else if (key == "kernel") {
      const std::string s = v;
      if (s == "auto") out->kernel = KernelKind::kAuto;
      else if (s == "row_block") out->kernel = KernelKind::kRowBlock;
      else if (s == "pixel_vector") out->kernel = KernelKind::kPixelVector;
      else if (s == "dense") out->kernel = KernelKind::kDense;
      else return bad("expected auto, row_block, pixel_vector or dense");
    } else if (key == "verbose") {
      long n;
      if (!ParseInt(v, 0, 2, &n)) return bad("expected 0, 1 or 2");
      out->verbose = static_cast<int>(n);
    } else if (key == "tuning_cache") {
      out->tuning_cache = v;
    } else if (key == "fuse") {
      long n;
      if (!ParseInt(v, 0, 1, &n)) return bad("expected 0 or 1");
      out->fuse = n == 1;
    } else {
      *error = "npas delegate: unknown option '" + key + "' (known: " + kKnownKeys + ")";
      return false;
    }
  }
  return true;
}

std::string StatsJson(DelegateState* d) {
  std::lock_guard<std::recursive_mutex> lock(d->mu);
  std::map<std::string, long> by_op, by_structure, by_kernel, by_reason;
  long claimed = 0, declined = 0;
  size_t packed = 0;
  for (const auto& r : d->records) {
    if (r.claimed) {
      ++claimed;
      ++by_op[r.op];
      ++by_structure[r.structure];
      ++by_kernel[r.kernel];
      packed += r.packed_bytes;
    } else {
      ++declined;
      ++by_reason[r.reason];
    }
  }
  std::ostringstream o;
  o.precision(6);
  o << "{\"claimed\": " << claimed << ", \"declined\": " << declined
    << ", \"packed_bytes\": " << packed << ", \"isa\": ";
  JsonString(o, IsaName(DetectIsa()));
  o << ", \"claimed_by_op\": ";
  JsonCounts(o, by_op);
  o << ", \"claimed_by_structure\": ";
  JsonCounts(o, by_structure);
  o << ", \"claimed_by_kernel\": ";
  JsonCounts(o, by_kernel);
  o << ", \"declined_by_reason\": ";
  JsonCounts(o, by_reason);
  o << ", \"nodes\": [";
  bool first = true;
  for (const auto& r : d->records) {
    if (!first) o << ", ";
    first = false;
    o << "{\"node\": " << r.node << ", \"op\": ";
    JsonString(o, r.op);
    o << ", \"rows\": " << r.rows << ", \"cols\": " << r.cols;
    o << ", \"claimed\": " << (r.claimed ? "true" : "false");
    if (r.claimed) {
      o << ", \"structure\": ";
      JsonString(o, r.structure);
      o << ", \"kernel\": ";
      JsonString(o, r.kernel);
      o << ", \"packed_bytes\": " << r.packed_bytes
        << ", \"from_cache\": " << (r.from_cache ? "true" : "false");
    } else {
      o << ", \"reason\": ";
      JsonString(o, r.reason);
      o << ", \"message\": ";
      JsonString(o, r.message);
      if (!r.structure.empty()) {
        o << ", \"structure\": ";
        JsonString(o, r.structure);
      }
    }
    o << ", \"density\": " << r.density << ", \"dense_ms\": " << r.dense_ms
      << ", \"best_ms\": " << r.best_ms << "}";
  }
  o << "]}";
  return o.str();
}

}  // namespace npas

using npas::DelegateState;

NPAS_EXPORT TfLiteDelegate* tflite_plugin_create_delegate(const char* const* options_keys,
                                                          const char* const* options_values,
                                                          size_t num_options,
                                                          void (*report_error)(const char*)) {
  // Python's loader passes a C int: only the low 32 bits are meaningful.
  const int count = static_cast<int>(static_cast<uint32_t>(num_options & 0xffffffffu));
  npas::Options options;
  std::string error;
  if (count < 0 || !npas::ParseOptions(options_keys, options_values, count, &options, &error)) {
    if (error.empty()) error = "npas delegate: bad option count";
    npas::SetLastError(error);
    if (report_error != nullptr) report_error(error.c_str());
    return nullptr;
  }
  auto* d = new (std::nothrow) DelegateState();
  if (d == nullptr) {
    npas::SetLastError("npas delegate: out of memory");
    if (report_error != nullptr) report_error("npas delegate: out of memory");
    return nullptr;
  }
  d->options = options;
  std::memset(&d->base, 0, sizeof(d->base));
  d->base.data_ = d;
  d->base.Prepare = npas::DelegatePrepare;
  // Needed to claim custom ops unknown to the interpreter, and means input resizes call our
  // kernels' prepare instead of re-applying the delegate.
  d->base.flags = kTfLiteDelegateFlagsAllowDynamicTensors;
  {
    std::lock_guard<std::mutex> lock(npas::g_mu);
    npas::g_live.insert(&d->base);
    npas::g_last_error.clear();
  }
  return &d->base;
}

NPAS_EXPORT void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  if (delegate == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(npas::g_mu);
    if (npas::g_live.erase(delegate) == 0) return;  // not ours, or already destroyed
  }
  delete static_cast<DelegateState*>(delegate->data_);
}

// The message of the last failed tflite_plugin_create_delegate ("" if the last one succeeded).
NPAS_EXPORT const char* npas_delegate_last_error() {
  static thread_local std::string copy;
  std::lock_guard<std::mutex> lock(npas::g_mu);
  copy = npas::g_last_error;
  return copy.c_str();
}

// Writes the stats JSON (NUL-terminated, truncated to size - 1 bytes) and returns its full
// length, so a caller can retry with a larger buffer; -1 for a pointer that is not a live npas
// delegate.
NPAS_EXPORT int npas_delegate_stats(TfLiteDelegate* delegate, char* buf, int size) {
  {
    std::lock_guard<std::mutex> lock(npas::g_mu);
    if (delegate == nullptr || npas::g_live.count(delegate) == 0) return -1;
  }
  const std::string json = npas::StatsJson(static_cast<DelegateState*>(delegate->data_));
  if (buf != nullptr && size > 0) {
    const size_t n = std::min(json.size(), static_cast<size_t>(size - 1));
    std::memcpy(buf, json.data(), n);
    buf[n] = 0;
  }
  return static_cast<int>(json.size());
}
