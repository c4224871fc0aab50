// A small text file remembering measured kernel choices, so that Prepare does not re-measure
// layers it has seen before. One entry a line: "<key> <kernel> <dense_ms> <best_ms>"; keys hash
// the weights, the offsets and the geometry/threads/ISA. Unreadable or malformed lines are
// ignored (the cache is only ever an optimisation).
#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "delegate_internal.h"

namespace npas {


void TuningCache::Load(const std::string& path) {
  if (loaded_ && path == path_) return;
  path_ = path;
  loaded_ = true;
  entries_.clear();
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    std::string key;
    TuningEntry e;
    if (ss >> key >> e.kernel >> e.dense_ms >> e.best_ms) entries_[key] = e;
  }
}

bool TuningCache::Lookup(const std::string& key, TuningEntry* e) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;
  *e = it->second;
  return true;
}

void TuningCache::Store(const std::string& key, const TuningEntry& e) {
  entries_[key] = e;
  dirty_ = true;
}

void TuningCache::SaveIfDirty() {
  if (!dirty_ || path_.empty()) return;
  dirty_ = false;
  // Merge with what another process may have written meanwhile, then replace atomically.
  std::map<std::string, TuningEntry> merged;
  {
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream ss(line);
      std::string key;
      TuningEntry e;
      if (ss >> key >> e.kernel >> e.dense_ms >> e.best_ms) merged[key] = e;
    }
  }
  for (const auto& kv : entries_) merged[kv.first] = kv.second;
  const std::string tmp = path_ + ".tmp" + std::to_string(static_cast<long>(getpid()));
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return;
    out << "# npas delegate tuning cache v1: key kernel dense_ms best_ms\n";
    out.precision(6);
    for (const auto& kv : merged)
      out << kv.first << ' ' << kv.second.kernel << ' ' << kv.second.dense_ms << ' '
          << kv.second.best_ms << '\n';
    if (!out) {
      std::remove(tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0) std::remove(tmp.c_str());
}

}  // namespace npas
