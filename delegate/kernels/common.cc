// Names, ISA detection and weight-structure analysis.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "kernels/npas_internal.h"

namespace npas {

const char* StructureName(Structure s) {
  switch (s) {
    case Structure::kDense: return "dense";
    case Structure::kBlockPunched: return "block_punched";
    case Structure::kBcr: return "bcr";
    case Structure::kNM: return "n_m";
    case Structure::kPattern: return "pattern";
    case Structure::kUnstructured: return "unstructured";
  }
  return "?";
}

const char* KernelKindName(KernelKind k) {
  switch (k) {
    case KernelKind::kAuto: return "auto";
    case KernelKind::kDense: return "dense";
    case KernelKind::kRowBlock: return "row_block";
    case KernelKind::kPixelVector: return "pixel_vector";
  }
  return "?";
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kNeon: return "neon";
  }
  return "?";
}

uint64_t Fnv1a(const void* data, size_t bytes, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

namespace internal {
Isa CpuIsa() {
#if defined(__x86_64__) || defined(__i386__)
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
      return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kScalar;
  }();
  return isa;
#elif defined(__aarch64__)
  return Isa::kNeon;  // Advanced SIMD (NEON) is mandatory in AArch64: no run-time check needed.
#else
  return Isa::kScalar;
#endif
}
}  // namespace internal

Isa DetectIsa() {
  Isa best = internal::CpuIsa();
  const char* env = std::getenv("NPAS_ISA");
  if (env && *env) {
    // The override can only lower the ISA (asking for more than the CPU has gives the CPU's best).
    Isa want = best;
    if (!strcmp(env, "scalar")) want = Isa::kScalar;
    else if (!strcmp(env, "avx2")) want = Isa::kAvx2;
    else if (!strcmp(env, "avx512")) want = Isa::kAvx512;
    else if (!strcmp(env, "neon")) want = Isa::kNeon;
    auto rank = [](Isa i) { return i == Isa::kAvx512 ? 2 : i == Isa::kAvx2 ? 1 : 0; };
    if (want == Isa::kNeon) return best == Isa::kNeon ? best : Isa::kScalar;
    if (best == Isa::kNeon) return want == Isa::kScalar ? want : best;
    return rank(want) <= rank(best) ? want : best;
  }
  return best;
}

// ---- structure analysis -------------------------------------------------------------------------
namespace {

// True if in every br x bc block the nonzeros form (kept rows) x (kept cols); punched: additionally
// every row of the row-block that has a nonzero in the block has the same columns and all rows of a
// row-block share the same kept-column pattern (kept rows = all rows).
bool CheckBlocks(const std::vector<uint8_t>& m, int rows, int cols, int br, int bc, bool punched) {
  std::vector<int> rowcnt(br), colcnt(bc);
  for (int r0 = 0; r0 < rows; r0 += br) {
    int nr = std::min(br, rows - r0);
    for (int c0 = 0; c0 < cols; c0 += bc) {
      int nc = std::min(bc, cols - c0);
      std::fill(rowcnt.begin(), rowcnt.end(), 0);
      std::fill(colcnt.begin(), colcnt.end(), 0);
      int nnz = 0;
      for (int r = 0; r < nr; ++r) {
        const uint8_t* mr = &m[(size_t)(r0 + r) * cols + c0];
        for (int c = 0; c < nc; ++c)
          if (mr[c]) {
            rowcnt[r]++;
            colcnt[c]++;
            nnz++;
          }
      }
      if (!nnz) continue;
      int kr = 0, kc = 0;
      for (int r = 0; r < nr; ++r) kr += rowcnt[r] > 0;
      for (int c = 0; c < nc; ++c) kc += colcnt[c] > 0;
      if (nnz != kr * kc) return false;
      if (punched && kr != nr) return false;
    }
  }
  return true;
}

}  // namespace

StructureInfo AnalyzeStructure(const float* w, int rows, int cols, int kh, int kw, int cin) {
  StructureInfo info;
  if (!w || rows <= 0 || cols <= 0) return info;
  const size_t size = (size_t)rows * cols;
  std::vector<uint8_t> m(size);
  size_t nnz = 0;
  for (size_t i = 0; i < size; ++i) nnz += (m[i] = (w[i] != 0.0f));
  info.density = (double)nnz / (double)size;
  if (nnz == size) return info;  // kDense
  if (nnz == 0) {
    info.kind = Structure::kBlockPunched;
    info.block_rows = rows;
    info.block_cols = cols;
    return info;
  }
  // Zero rows / zero columns only (filter / channel pruning): the nonzeros are
  // (kept rows) x (kept cols) over the whole matrix.
  {
    std::vector<uint8_t> rk(rows, 0), ck(cols, 0);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c)
        if (m[(size_t)r * cols + c]) rk[r] = ck[c] = 1;
    size_t kr = 0, kc = 0;
    for (int r = 0; r < rows; ++r) kr += rk[r];
    for (int c = 0; c < cols; ++c) kc += ck[c];
    if (kr * kc == nnz) {
      // Channel pruning (all rows kept) is block_punched with one block; filter pruning is bcr.
      info.kind = kr == (size_t)rows ? Structure::kBlockPunched : Structure::kBcr;
      info.block_rows = rows;
      info.block_cols = cols;
      return info;
    }
  }
  // Block punched: rows of each br-row block have identical masks; take the largest br, then the
  // narrowest bc in which every block keeps the same number of columns (the scheme's block width).
  static const int kBr[] = {64, 32, 16, 8, 4, 2};
  for (int br : kBr) {
    if (br > rows) continue;
    bool ok = true;
    for (int r0 = 0; r0 < rows && ok; r0 += br)
      for (int r = r0 + 1; r < std::min(rows, r0 + br) && ok; ++r)
        ok = !memcmp(&m[(size_t)r * cols], &m[(size_t)r0 * cols], cols);
    if (!ok) continue;
    int best_bc = cols;  // no finer constant-count chunking found: one block across
    static const int kBc[] = {4, 8, 16, 32, 64};  // the finest width with a constant kept count
    for (int bc : kBc) {
      if (bc > cols) continue;
      // Every full bc-chunk of every row keeps the same number of columns.
      int want = -1;
      bool same = true;
      for (int r0 = 0; r0 < rows && same; r0 += br)
        for (int c0 = 0; c0 + bc <= cols && same; c0 += bc) {
          int cnt = 0;
          for (int c = 0; c < bc; ++c) cnt += m[(size_t)r0 * cols + c0 + c];
          if (want < 0) want = cnt;
          same = cnt == want;
        }
      if (same) {
        best_bc = bc;
        break;
      }
    }
    info.kind = Structure::kBlockPunched;
    info.block_rows = br;
    info.block_cols = best_bc;
    return info;
  }
  // BCR: largest block (by area, then rows) in which nonzeros are (kept rows) x (kept cols), with
  // at least one block that is not a single row or column (otherwise the test is vacuous).
  {
    static const int kB[] = {64, 32, 16, 8, 4};
    int best_area = 0, best_r = 0, best_c = 0;
    for (int br : kB)
      for (int bc : kB) {
        if (br > rows || bc > cols || br * bc <= best_area) continue;
        if (CheckBlocks(m, rows, cols, br, bc, false)) {
          best_area = br * bc;
          best_r = br;
          best_c = bc;
        }
      }
    // Reject when typical blocks hold a single weight (unstructured at very low density passes).
    if (best_area >= 16 && (double)nnz / ((double)size / best_area) >= 2.0) {
      info.kind = Structure::kBcr;
      info.block_rows = best_r;
      info.block_cols = best_c;
      return info;
    }
  }
  // N:M along the reduction (groups of M consecutive columns, aligned).
  static const int kM[] = {4, 8, 16, 32};
  for (int M : kM) {
    if (cols % M) continue;
    int N = 0;
    size_t groups = 0;
    for (int r = 0; r < rows; ++r)
      for (int c0 = 0; c0 < cols; c0 += M) {
        int cnt = 0;
        for (int c = 0; c < M; ++c) cnt += m[(size_t)r * cols + c0 + c];
        N = std::max(N, cnt);
        groups++;
      }
    if (N == 0 || N >= M) continue;
    // Nearly every group keeps exactly N (a kept weight may happen to be zero).
    if ((double)nnz >= 0.97 * (double)N * groups) {
      info.kind = Structure::kNM;
      info.n = N;
      info.m = M;
      return info;
    }
  }
  // Pattern: 3x3 kernels with few distinct kept-position sets.
  if (kh == 3 && kw == 3 && cin > 0 && (size_t)9 * cin == (size_t)cols) {
    std::unordered_map<int, int> patterns;
    bool ok = true;
    int max_kept = 0;
    for (int r = 0; r < rows && ok; ++r)
      for (int c = 0; c < cin && ok; ++c) {
        int bits = 0;
        for (int t = 0; t < 9; ++t)
          if (m[(size_t)r * cols + (size_t)t * cin + c]) bits |= 1 << t;
        if (!bits) continue;  // connectivity-pruned kernel
        max_kept = std::max(max_kept, __builtin_popcount(bits));
        patterns[bits]++;
        if (patterns.size() > 16) ok = false;
      }
    if (ok && max_kept < 9) {
      info.kind = Structure::kPattern;
      return info;
    }
  }
  info.kind = Structure::kUnstructured;
  return info;
}

}  // namespace npas
