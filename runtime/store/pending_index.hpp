// The part of the per-stream index that is durable in the log but not yet in the on-disk index:
// the writer fills it after each commit and drains it in large sorted batches; readers merge it
// with the on-disk index so a history page never misses an acknowledged append.
#pragma once

#include "runtime/store/write_batch.hpp"

#include <cstdint>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

namespace agner::store {

/// In-memory index entries (stream, seq) -> log position, in two generations: `active` (filled by
/// commits) and `frozen` (sorted, being written to disk slice by slice).
/// Threading: only the writer thread mutates; readers call `collect` from any thread (shared lock).
class pending_index {
public:
  struct entry {
    uint64_t stream;
    uint64_t seq;
    log_position pos;
    bool operator<(const entry& o) const noexcept { return stream != o.stream ? stream < o.stream : seq < o.seq; }
  };
  /// One (seq, position) pair found for a stream.
  struct hit {
    uint64_t seq;
    log_position pos;
  };

  /// Adds entries of one commit. Writer thread, after the commit returned success.
  void add(const std::vector<entry>& entries);
  /// Entries in the active generation. Writer thread.
  size_t active_size() const noexcept { return active_count_; }
  /// Moves the active generation into the (empty) frozen one, sorted. Writer thread.
  void freeze();
  /// The frozen generation, sorted by (stream, seq). Writer thread.
  const std::vector<entry>& frozen() const noexcept { return frozen_; }
  /// Drops the frozen generation once all of it is in the on-disk index. Writer thread.
  void clear_frozen();

  /// Appends to `out` entries of `stream` with lo <= seq < hi: of each generation at most `limit`,
  /// the highest seqs if `highest`, else the lowest. Unordered; the caller merges. Any thread.
  void collect(uint64_t stream, uint64_t lo, uint64_t hi, size_t limit, bool highest, std::vector<hit>& out) const;

private:
  struct run {
    std::vector<hit> hits;
    bool sorted = true; // appends of one stream usually arrive in seq order
  };
  mutable std::shared_mutex mu_;
  std::unordered_map<uint64_t, run> active_;
  size_t active_count_ = 0;
  std::vector<entry> frozen_;
};

} // namespace agner::store
