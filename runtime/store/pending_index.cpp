// Readers hold the shared lock only while copying a handful of (seq, position) pairs; the writer
// holds the exclusive lock only to insert one commit's entries or to swap generations.
#include "runtime/store/pending_index.hpp"

#include <algorithm>
#include <mutex>

namespace agner::store {

void pending_index::add(const std::vector<entry>& entries) {
  if (entries.empty())
    return;
  std::unique_lock lk(mu_);
  for (const auto& e : entries) {
    auto& r = active_[e.stream];
    if (!r.hits.empty() && r.hits.back().seq > e.seq)
      r.sorted = false;
    r.hits.push_back({e.seq, e.pos});
  }
  active_count_ += entries.size();
}

void pending_index::freeze() {
  // Build the sorted run without the lock: only the writer mutates, readers only read.
  std::vector<entry> sorted;
  sorted.reserve(active_count_);
  for (const auto& [stream, r] : active_)
    for (const auto& h : r.hits)
      sorted.push_back({stream, h.seq, h.pos});
  std::sort(sorted.begin(), sorted.end());
  std::unordered_map<uint64_t, run> old;
  {
    std::unique_lock lk(mu_);
    frozen_ = std::move(sorted);
    old.swap(active_);
    active_count_ = 0;
  }
  // `old` is freed here, outside the lock.
}

void pending_index::clear_frozen() {
  std::vector<entry> old;
  std::unique_lock lk(mu_);
  old.swap(frozen_);
}

void pending_index::collect(uint64_t stream, uint64_t lo, uint64_t hi, size_t limit, bool highest,
                            std::vector<hit>& out) const {
  // Appends the nearest `limit` of a sorted range [b, e).
  auto take = [&](auto b, auto e, auto to_hit) {
    size_t n = static_cast<size_t>(e - b);
    if (n > limit) {
      if (highest)
        b = e - static_cast<std::ptrdiff_t>(limit);
      else
        e = b + static_cast<std::ptrdiff_t>(limit);
    }
    for (; b != e; ++b)
      out.push_back(to_hit(*b));
  };
  std::shared_lock lk(mu_);
  if (auto it = active_.find(stream); it != active_.end()) {
    const auto& hits = it->second.hits;
    if (it->second.sorted) {
      auto by_seq = [](const hit& h, uint64_t s) { return h.seq < s; };
      auto b = std::lower_bound(hits.begin(), hits.end(), lo, by_seq);
      auto e = std::lower_bound(b, hits.end(), hi, by_seq);
      take(b, e, [](const hit& h) { return h; });
    } else {
      // Rare (a producer appended a stream out of seq order): scan, the caller trims.
      for (const auto& h : hits)
        if (h.seq >= lo && h.seq < hi)
          out.push_back(h);
    }
  }
  auto b = std::lower_bound(frozen_.begin(), frozen_.end(), entry{stream, lo, 0});
  auto e = std::lower_bound(b, frozen_.end(), entry{stream, hi, 0});
  take(b, e, [](const entry& x) { return hit{x.seq, x.pos}; });
}

} // namespace agner::store
